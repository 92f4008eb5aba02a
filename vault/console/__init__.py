"""The web console at ``/console/``: the operator's and tenants' front door
over the same services, runner and reports as the admin API.

Server-rendered HTML (:mod:`.render`), sessions and login (:mod:`.access`,
:mod:`.sessions`), pages and actions (:mod:`.pages`); its stylesheet and
script ship in ``static/`` and are served from memory. A page makes no
request to anywhere but this server (its Content-Security-Policy says so).
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from . import access, pages
from .access import SECURITY_HEADERS
from .pages import ALERTS, DISKS, TRENDS
from .sessions import LoginThrottle, Sessions

__all__ = ["ALERTS", "DISKS", "TRENDS", "add_routes"]

_STATIC_TYPES = {"console.css": "text/css", "console.js": "text/javascript", "favicon.svg": "image/svg+xml"}


def _static_handler(name: str):
    body = (resources.files(__package__) / "static" / name).read_bytes()
    headers = {**SECURITY_HEADERS, "Cache-Control": "max-age=3600"}

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=_STATIC_TYPES[name], headers=headers)

    return serve


async def _to_console(request: web.Request) -> web.Response:
    return access.redirect("/console/")


def add_routes(app: web.Application) -> None:
    """The console's routes and its in-memory session and login-throttle state."""
    app[access.SESSIONS] = Sessions()
    app[access.THROTTLE] = LoginThrottle()
    r = app.router
    r.add_get("/console", _to_console)
    r.add_get("/console/", pages.overview)
    r.add_get("/console/login", access.show_login)
    r.add_post("/console/login", access.login)
    r.add_post("/console/logout", access.logout)
    r.add_get("/console/vaults", pages.vaults)
    r.add_post("/console/vaults", pages.create_vault)
    r.add_get("/console/vaults/{vault}", pages.vault_page)
    r.add_post("/console/vaults/{vault}/keys", pages.create_key)
    r.add_post("/console/vaults/{vault}/keys/{key_id}/revoke", pages.revoke_key)
    r.add_post("/console/vaults/{vault}/settings", pages.change_settings)
    r.add_get("/console/replication", pages.replication)
    r.add_get("/console/jobs", pages.jobs)
    r.add_post("/console/jobs/gc", pages.run_gc)
    r.add_post("/console/jobs/scrub", pages.run_scrub)
    r.add_get("/console/audit", pages.audit)
    for name in _STATIC_TYPES:
        r.add_get(f"/console/static/{name}", _static_handler(name))
