"""chrono_forge dashboard: a small web application over chrono_forge's
views and actions, connecting as the signed-in database role."""

from .app import create_app, shutdown

__all__ = ["create_app", "shutdown"]
__version__ = "0.14.0"
