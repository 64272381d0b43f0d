"""The dashboard's actions on a run: a GET shows a confirmation page, a
POST of the same URL (CSRF token checked in app.py, confirm=yes) acts
through the extension's own function as the signed-in role, then
redirects to the run's page with a flash message."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from flask import Flask, flash, g, redirect, render_template, request, url_for

from . import queries
from .pages import load_run

ACTIONS = {
    "retry": "Retry",
    "wake": "Wake",
    "cancel": "Cancel",
    "force-unlock": "Force unlock",
    "event": "Send an event",
}
EXPLAIN = {
    "retry": "Re-run this failed or stalled run by replay: completed steps keep their "
             "results, the failed step gets one more attempt.",
    "wake": "Schedule a pass of this run now (a parked run re-checks what it waits for).",
    "cancel": "Cancel this run for good: its lock is cleared, its wake-ups deleted, a pass "
              "in flight is stopped.",
    "force-unlock": "Clear this running run's lock and make it idle, scheduling nothing "
                    "(wake it to resume).",
    "event": "Deliver a durable event to this run and wake it; it is kept until an "
             "await_event step of that name consumes it.",
    "retry-blocked": "Retry every failed or stalled child of this branch (and every "
                     "cancelled one unless the run itself is cancelled).",
}
MAX_PAYLOAD = 65536


def register(app: Flask) -> None:
    app.add_url_rule("/runs/<int:run_id>/<any(retry, wake, cancel, 'force-unlock', event):action>",
                     "action", action, methods=["GET", "POST"])
    app.add_url_rule("/runs/<int:run_id>/branches/<path:branch>/retry-blocked",
                     "retry_blocked", retry_blocked, methods=["GET", "POST"])


def _confirm_page(run: dict[str, Any], action: str, label: str, status: int = 200,
                  error: str | None = None, **extra: Any) -> Any:
    return render_template("confirm.html", title=f"{label}: run {run['id']}", run=run,
                           action=action, label=label, explain=EXPLAIN[action], error=error,
                           form=request.form, **extra), status


def _acts_on(run: dict[str, Any]) -> bool:
    """Whether the (workflow, key) functions reach this very run for this
    role (its own run of the same key would come first)."""
    return queries.resolves_to(g.sess.conn, run["workflow"], run["key"]) == run["id"]


def _do(run: dict[str, Any], action: str, **kw: Any) -> Any:
    if not _acts_on(run):
        flash("Refused: your role has its own run of this workflow and key (or several roles "
              "do), so the actions would not reach this run. SET ROLE to its owner in psql.",
              "error")
        return None, False
    try:
        return queries.act(g.sess.conn, action, run["workflow"], run["key"], **kw), True
    except psycopg.Error as e:
        if g.sess.conn.broken:
            raise
        flash(f"{e.sqlstate}: {e.diag.message_primary}", "error")
        return None, False


def action(run_id: int, action: str) -> Any:
    run = load_run(run_id)
    label = ACTIONS[action]
    if request.method == "GET":
        return _confirm_page(run, action, label)
    if request.form.get("confirm") != "yes":
        return _confirm_page(run, action, label, 400, "Confirm first.")
    kw: dict[str, Any] = {}
    if action == "cancel":
        kw = {"reason": f"cancelled from the dashboard by {g.sess.role}",
              "children": request.form.get("children") in ("on", "yes", "1", "true")}
    elif action == "event":
        name = request.form.get("name", "").strip()
        raw = request.form.get("payload", "").strip()
        if not name or len(name) > 200:
            return _confirm_page(run, action, label, 400, "Give the event's name (1–200 characters).")
        try:
            if len(raw) > MAX_PAYLOAD:
                raise ValueError("too long")
            payload = json.loads(raw) if raw else None
        except ValueError:
            return _confirm_page(run, action, label, 400, "The payload is not valid JSON "
                                 f"(at most {MAX_PAYLOAD:,} characters).")
        kw = {"name": name, "payload": payload}
    value, ok = _do(run, action, **kw)
    if ok:
        flash(_message(action, value), "ok")
    return redirect(url_for("run", run_id=run_id), 303)


def _message(action: str, v: Any) -> str:
    if action == "retry":
        return "Retry scheduled: the run is idle and its next pass replays it."
    if action == "wake":
        return "Woken: a pass is scheduled." if v else "Not woken: the run has ended."
    if action == "cancel":
        return f"Cancelled {v} run{'s' if v != 1 else ''}."
    if action == "force-unlock":
        return ("Unlocked: the run is idle; wake it to resume." if v else
                "Not unlocked: the run is not running, or a pass holds it right now.")
    if action == "event":
        return "Event delivered; the run is woken." if v else \
            "Not delivered: the run has ended."
    return f"Retried {v} blocked child run{'s' if v != 1 else ''}."


def retry_blocked(run_id: int, branch: str) -> Any:
    run = load_run(run_id)
    label = f"Retry the blocked children of branch {branch}"
    if request.method == "GET":
        return _confirm_page(run, "retry-blocked", label, branch=branch)
    if request.form.get("confirm") != "yes":
        return _confirm_page(run, "retry-blocked", label, 400, "Confirm first.", branch=branch)
    value, ok = _do(run, "retry-blocked", branch=branch)
    if ok:
        flash(_message("retry-blocked", value), "ok")
    return redirect(url_for("run", run_id=run_id), 303)

