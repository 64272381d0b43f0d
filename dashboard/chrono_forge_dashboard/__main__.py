"""Command line: serve the dashboard with Flask's own (werkzeug, threaded)
server until SIGINT or SIGTERM, then exit 0.

    python3 -m chrono_forge_dashboard --database "host=... dbname=..." [--listen 127.0.0.1:8080]
    python3 -m chrono_forge_dashboard --single-user "DSN"    (or CHRONO_FORGE_DASHBOARD_DSN)
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any

from werkzeug.serving import make_server

from .app import create_app, shutdown


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 -m chrono_forge_dashboard",
                                description="chrono_forge's web dashboard")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--database", metavar="CONNINFO",
                      help="sign-in mode: every user signs in with a PostgreSQL role and "
                           "password; the dashboard connects to this database as that role")
    mode.add_argument("--single-user", metavar="DSN",
                      help="single-user mode: no sign-in, every page uses this DSN's role "
                           "(default: $CHRONO_FORGE_DASHBOARD_DSN)")
    p.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                   help="address to serve on (default 127.0.0.1:8080; port 0: any free port)")
    p.add_argument("--idle-timeout", type=int, default=1800, metavar="SECONDS",
                   help="close a session (and its connection) idle this long (default 1800)")
    a = p.parse_args(argv)
    if not a.database and not a.single_user:
        a.single_user = os.environ.get("CHRONO_FORGE_DASHBOARD_DSN")
        if not a.single_user:
            p.error("give --database (sign-in mode) or --single-user / "
                    "CHRONO_FORGE_DASHBOARD_DSN (single-user mode)")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse(sys.argv[1:] if argv is None else argv)
    host, _, port = a.listen.rpartition(":")
    if not host or not port.isdigit():
        print(f"--listen: expected HOST:PORT, got {a.listen!r}", file=sys.stderr)
        return 2
    config: dict[str, Any] = {"IDLE_SECONDS": a.idle_timeout}
    if a.database:
        config["DATABASE"] = a.database
    else:
        config["SINGLE_USER_DSN"] = a.single_user
    app = create_app(config)
    server = make_server(host.strip("[]"), int(port), app, threaded=True)

    def stop(_sig: int, _frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    shown = f"[{server.host}]" if ":" in server.host else server.host
    print(f"chrono_forge dashboard: http://{shown}:{server.server_port}/", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        shutdown(app)
    return 0


if __name__ == "__main__":
    sys.exit(main())
