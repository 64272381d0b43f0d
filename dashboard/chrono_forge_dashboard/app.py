"""The dashboard's Flask application: configuration, sign-in, the session
cookie, CSRF, database errors and server timing.  The pages are in
pages.py, the actions in actions.py, the SQL in queries.py.

create_app(config) takes:
  DATABASE         base conninfo of sign-in mode (role and password added
                   per user with psycopg's make_conninfo)
  SINGLE_USER_DSN  conninfo of single-user mode (no sign-in)
  SECRET_KEY       signs the cookie (random per process if unset)
  IDLE_SECONDS     idle sessions are closed after this (default 1800)
  STATEMENT_TIMEOUT_MS  per statement (default 10000)
  REQUIRE_PASSWORD sign-in refused when the server let the role in without
                   asking its password (trust, peer): default True
  MAX_SESSIONS     signed-in sessions (each one connection) at most: 100
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import psycopg
from flask import (Flask, flash, g, redirect, render_template, request,
                   session, url_for)
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from werkzeug.exceptions import HTTPException

from . import queries
from .sessions import Session, SessionStore

PUBLIC_ENDPOINTS = {"login", "static"}


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    cfg = dict(config or {})
    if not cfg.get("DATABASE") and not cfg.get("SINGLE_USER_DSN"):
        dsn = os.environ.get("CHRONO_FORGE_DASHBOARD_DSN")
        if dsn:
            cfg["SINGLE_USER_DSN"] = dsn
    app.config.update(
        SECRET_KEY=os.environ.get("CHRONO_FORGE_DASHBOARD_SECRET") or secrets.token_hex(32),
        SESSION_COOKIE_NAME="cf_dashboard",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        IDLE_SECONDS=1800,
        STATEMENT_TIMEOUT_MS=10000,
        REQUIRE_PASSWORD=True,
        MAX_SESSIONS=100,
        DATABASE=None,
        SINGLE_USER_DSN=None,
    )
    app.config.update(cfg)
    if not app.config["DATABASE"] and not app.config["SINGLE_USER_DSN"]:
        raise ValueError("give DATABASE (sign-in mode) or SINGLE_USER_DSN (single-user mode)")
    store = SessionStore(float(app.config["IDLE_SECONDS"]))
    store.start_sweeper(min(30.0, float(app.config["IDLE_SECONDS"])))
    app.extensions["cf_sessions"] = store

    _install_request_hooks(app, store)
    _install_auth(app, store)
    _install_errors(app, store)
    from . import actions, pages
    pages.register(app)
    actions.register(app)
    # Every template compiled now (about 70 ms), not by the first request
    # that renders it.
    for name in app.jinja_env.list_templates():
        app.jinja_env.get_template(name)
    return app


def single_user(app: Flask) -> bool:
    return bool(app.config["SINGLE_USER_DSN"])


def connect(app: Flask, base: str, **kw: Any) -> psycopg.Connection[Any]:
    """A connection for one session: autocommit, a statement timeout, and
    no password from a password file or the environment."""
    options = (conninfo_to_dict(base).get("options") or "") + \
        f" -c statement_timeout={int(app.config['STATEMENT_TIMEOUT_MS'])}"
    conninfo = make_conninfo(base, application_name="chrono_forge dashboard",
                             options=options, connect_timeout=10, **kw)
    return psycopg.connect(conninfo, autocommit=True)


_single_lock = threading.Lock()


def single_session(app: Flask) -> Session:
    """Single-user mode: one session, one connection, shared by every
    request (each holds its lock in turn), opened again if it broke."""
    with _single_lock:
        sess = app.extensions.get("cf_single")
        if sess is None or sess.conn.closed or sess.conn.broken:
            if sess is not None:
                sess.close()
            conn = connect(app, app.config["SINGLE_USER_DSN"])
            sess = Session("single", queries.whoami(conn)["role"], conn, time.monotonic())
            app.extensions["cf_single"] = sess
        return sess


def csrf_token() -> str:
    tok = session.get("csrf")
    if not tok:
        tok = session["csrf"] = secrets.token_urlsafe(32)
    return tok


def _install_request_hooks(app: Flask, store: SessionStore) -> None:
    @app.before_request
    def start_timer() -> None:
        g.t0 = time.perf_counter()

    @app.before_request
    def refuse_nul() -> Any:
        """PostgreSQL text cannot hold NUL: refuse it in any input up front."""
        if "\x00" in request.path or any("\x00" in k or "\x00" in v for src in
                                          (request.args, request.form)
                                          for k, v in src.items(multi=True)):
            return render_template("error.html", title="Refused", sqlstate=None,
                                   message="The request holds a NUL character."), 400
        return None

    @app.before_request
    def check_csrf() -> Any:
        if request.method != "POST":
            return None
        sent = request.form.get("csrf_token", "")
        want = session.get("csrf", "")
        if not sent or not want or not hmac.compare_digest(sent, want):
            return render_template("error.html", title="Refused",
                                   sqlstate=None, message="CSRF token missing or wrong: "
                                   "the form was not sent by this dashboard session. "
                                   "Nothing was done; reload the page and try again."), 400
        return None

    @app.after_request
    def timing(resp: Any) -> Any:
        sess = g.pop("sess", None)
        if sess is not None and sess.lock.locked():
            sess.lock.release()
        ms = (time.perf_counter() - g.get("t0", time.perf_counter())) * 1000
        resp.headers["Server-Timing"] = f"app;dur={ms:.1f}"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'")
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.teardown_request
    def release(_exc: BaseException | None) -> None:
        sess = g.pop("sess", None)
        if sess is not None and sess.lock.locked():
            sess.lock.release()

    @app.context_processor
    def template_globals() -> dict[str, Any]:
        sess = g.get("sess")
        held = sess is not None
        sess = sess or _signed_in_session(app, store)
        return {"csrf_token": csrf_token, "whoami": g.get("who"),
                "role": sess.role if sess else None, "single_user": single_user(app),
                "cluster": _cluster(sess) if held else bool(sess and sess.cluster)}


def _signed_in_session(app: Flask, store: SessionStore) -> Session | None:
    """The session of a page rendered before the request took it (a CSRF
    or NUL refusal): an error page keeps the signed-in nav."""
    if single_user(app):
        return app.extensions.get("cf_single")
    return store.get(session.get("sid"))


def _cluster(sess: Session) -> bool:
    """Whether the navigation shows the Cluster page: asked once per
    session (the Cluster page asks again)."""
    if sess.cluster is None:
        try:
            sess.cluster = queries.is_cluster(sess.conn)
        except psycopg.Error:
            return False
    return bool(sess.cluster)


def _install_auth(app: Flask, store: SessionStore) -> None:
    @app.before_request
    def require_session() -> Any:
        if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
            return None
        sess = single_session(app) if single_user(app) else store.get(session.get("sid"))
        if sess is None:
            if session.get("sid"):
                session.pop("sid", None)
                flash("Your session ended (idle too long, or the server restarted): "
                      "sign in again.", "error")
            return redirect(url_for("login", next=request.full_path
                                    if request.method == "GET" else None), 303)
        sess.lock.acquire()
        g.sess = sess
        g.who = sess.role
        return None

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        if single_user(app):
            return redirect(url_for("overview"), 303)
        if request.method == "GET":
            csrf_token()
            return render_template("login.html", title="Sign in")
        role = request.form.get("role", "").strip()
        password = request.form.get("password", "")
        error = _sign_in(app, store, role, password)
        del password
        if error:
            flash(error, "error")
            return render_template("login.html", title="Sign in", role_value=role[:63]), 401
        nxt = request.args.get("next") or ""
        parts = urlsplit(nxt)
        if not nxt.startswith("/") or nxt.startswith("//") or parts.scheme or parts.netloc:
            nxt = url_for("overview")
        return redirect(nxt, 303)

    @app.route("/logout", methods=["POST"])
    def logout() -> Any:
        sess = g.pop("sess", None)
        if sess is not None:
            sess.lock.release()
            store.remove(sess.sid)
        session.clear()
        if single_user(app):
            return redirect(url_for("overview"), 303)
        flash("Signed out.", "ok")
        return redirect(url_for("login"), 303)


def _sign_in(app: Flask, store: SessionStore, role: str, password: str) -> str | None:
    """Open the role's connection and start its session; an error text or None."""
    if not role or not password:
        return "Give a role and its password."
    if len(role) > 63 or "\x00" in role or "\x00" in password or len(password) > 1000:
        return "Sign-in failed: no such role, or a wrong password."
    if store.count() >= int(app.config["MAX_SESSIONS"]):
        store.sweep()
        if store.count() >= int(app.config["MAX_SESSIONS"]):
            return "Too many sessions are open: try again later (or sign out elsewhere)."
    try:
        conn = connect(app, app.config["DATABASE"], user=role, password=password,
                       passfile=os.devnull)
    except psycopg.Error:
        # The server's reason is not shown: it would tell a role that exists
        # from one that does not.
        return "Sign-in failed: no such role, or a wrong password."
    try:
        if app.config["REQUIRE_PASSWORD"] and not conn.pgconn.used_password:
            conn.close()
            return ("Sign-in refused: the server let this role in without asking for its "
                    "password (pg_hba.conf trust or peer); the dashboard needs password "
                    "authentication (scram-sha-256 or md5) for its connections.")
        who = queries.whoami(conn)
        if who["privileged"]:
            conn.close()
            return ("Sign-in refused: superusers and BYPASSRLS roles may not sign in; use a "
                    "role that is a member of chrono_forge_admin to see every run.")
    except psycopg.Error as e:
        conn.close()
        return f"Sign-in failed: {e.sqlstate}: {e.diag.message_primary}"
    store.remove(session.get("sid"))
    sess = store.add(who["role"], conn)
    session.clear()
    session["sid"] = sess.sid
    session["csrf"] = secrets.token_urlsafe(32)   # a new token per signed-in session
    return None


def db_error_status(sqlstate: str | None) -> int:
    if sqlstate in ("CF014", "CF008", "42704"):
        return 404
    if sqlstate == "42501":
        return 403
    if sqlstate and (sqlstate.startswith("22") or sqlstate in ("CF012", "2201W", "CF005")):
        return 400
    return 500


def _install_errors(app: Flask, store: SessionStore) -> None:
    @app.errorhandler(psycopg.Error)
    def db_error(e: psycopg.Error) -> Any:
        sess = g.get("sess")
        if sess is not None and (sess.conn.closed or sess.conn.broken):
            g.pop("sess", None)
            sess.lock.release()
            if single_user(app):
                sess.close()      # the next request opens it again
            else:
                store.remove(sess.sid)
                session.pop("sid", None)
            msg = "The database connection was lost."
            if not single_user(app):
                flash(msg + " Sign in again.", "error")
                return redirect(url_for("login"), 303)
            return render_template("error.html", title="Database error", sqlstate=None,
                                   message=msg + " Reload to reconnect."), 503
        return render_template("error.html", title="Database error", sqlstate=e.sqlstate,
                               message=e.diag.message_primary or str(e),
                               detail=e.diag.message_detail, hint=e.diag.message_hint), \
            db_error_status(e.sqlstate)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> Any:
        return render_template("error.html", title=e.name, sqlstate=None,
                               message=e.description), e.code or 500

    @app.errorhandler(Exception)
    def other_error(e: Exception) -> Any:
        app.logger.exception("dashboard error")   # the trace goes to the log, not the page
        return render_template("error.html", title="Internal error", sqlstate=None,
                               message="The dashboard failed on this page; its log has "
                               "the details."), 500


def shutdown(app: Flask) -> None:
    """Close every session's connection (at the process's end)."""
    app.extensions["cf_sessions"].close_all()
    with _single_lock:
        sess = app.extensions.pop("cf_single", None)
    if sess is not None:
        sess.close()
