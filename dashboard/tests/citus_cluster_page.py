"""The Cluster page against a Citus coordinator (after chrono_forge.distribute()):
a standalone check for the Citus suite, not collected by pytest.

    /usr/bin/python3 dashboard/tests/citus_cluster_page.py CONNINFO GROUPS KEY [ROLE]

CONNINFO is a libpq conninfo of the coordinator's database.  ROLE (default:
the conninfo's user, else PGUSER) signs in through the login form without a
password: the server must let it in by trust (the password check is off
here).  It must not be a superuser or BYPASSRLS (the dashboard refuses those),
must see KEY's run, and at least one completed run.

Builds the app as tests/conftest.py does, signs in with Flask's test client
and checks: /cluster answers 200 and shows every node group of GROUPS
(comma-separated); KEY's run is listed with its node (under /cluster?key=KEY,
as the newest runs of the cluster need not hold it): its node group one of
GROUPS and the one its id names (ids are node-ranged: id >> 48); and
/cluster?state=completed lists only completed runs, at least one.  Prints
"ok" and exits 0, else prints what failed and exits 1.
"""

from __future__ import annotations

import html
import os
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from markupsafe import escape
from psycopg.conninfo import conninfo_to_dict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chrono_forge_dashboard import create_app, shutdown  # noqa: E402

ROW = re.compile(r'<tr data-run-id="(\d+)" data-state="(\w+)" data-node-group="(\d+)">(.*?)</tr>',
                 re.S)


def runs(page: str) -> list[dict[str, Any]]:
    """The rows of the page's runs table: id, state, node group, node, key."""
    out = []
    for rid, state, group, cells in ROW.findall(page):
        node = re.search(r'<td class="nowrap">([^<]*)</td>', cells)
        key = re.search(r'<td class="key">(.*?)</td>', cells, re.S)
        out.append({"id": int(rid), "state": state, "group": int(group),
                    "node": node.group(1) if node else "", "key": key.group(1) if key else None})
    return out


def check(dsn: str, groups: list[int], key: str, role: str) -> list[str]:
    failed: list[str] = []
    app = create_app({"DATABASE": dsn, "TESTING": True, "REQUIRE_PASSWORD": False})
    try:
        c = app.test_client()
        m = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").get_data(as_text=True))
        if not m:
            return ["no CSRF token in the sign-in page"]
        # trust lets the role in whatever the password; the form wants one
        r = c.post("/login", data={"csrf_token": m.group(1), "role": role, "password": "trust"})
        if r.status_code != 303:
            why = re.findall(r'data-testid="flash-error"[^>]*>([^<]*)<', r.get_data(as_text=True))
            return [f"sign-in as {role}: status {r.status_code}: " + html.unescape(" ".join(why))]

        r = c.get("/cluster")
        page = r.get_data(as_text=True)
        if r.status_code != 200:
            return [f"/cluster: status {r.status_code}: " + re.sub(r"\s+", " ", page)[-400:]]
        if 'href="/cluster"' not in page:
            failed.append("/cluster: no Cluster entry in the navigation")
        shown = {int(g) for g in re.findall(r'data-testid="cluster-node" data-node-group="(\d+)"',
                                            page)}
        failed += [f"/cluster: node group {g} not shown (shown: {sorted(shown)})"
                   for g in groups if g not in shown]
        errors = re.findall(r'data-testid="node-error">([^<]*)<', page)
        if errors:
            failed.append("/cluster: nodes reported errors: " + html.unescape("; ".join(errors)))

        url = "/cluster?" + urlencode({"key": key})
        r = c.get(url)
        mine = [x for x in runs(r.get_data(as_text=True)) if x["key"] == str(escape(key))]
        if r.status_code != 200 or not mine:
            failed.append(f"{url}: status {r.status_code}, run of key {key!r} not listed")
        for x in mine:
            if x["group"] not in groups or x["group"] != x["id"] >> 48 or not x["node"]:
                failed.append(f"{url}: run {x['id']} of key {key!r} listed with node group "
                              f"{x['group']} ({x['node']!r}); its id names group {x['id'] >> 48}")

        r = c.get("/cluster?state=completed")
        listed = runs(r.get_data(as_text=True))
        other = sorted({x["state"] for x in listed} - {"completed"})
        if r.status_code != 200 or not listed or other:
            failed.append(f"/cluster?state=completed: status {r.status_code}, {len(listed)} runs, "
                          f"other states listed: {other}")
    finally:
        shutdown(app)
    return failed


def main(argv: list[str]) -> int:
    if len(argv) not in (4, 5):
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 1
    dsn, groups, key = argv[1], argv[2], argv[3]
    role = argv[4] if len(argv) == 5 else \
        conninfo_to_dict(dsn).get("user") or os.environ.get("PGUSER") or ""
    try:
        failed = check(dsn, [int(g) for g in groups.split(",") if g.strip()], key, role)
    except Exception as e:   # any failure is a failed check, with its reason
        failed = [f"{type(e).__name__}: {e}"]
    for f in failed:
        print("FAIL:", f)
    if not failed:
        print("ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
