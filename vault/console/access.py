"""Who is at the console: login, logout, the session of a request, CSRF, and
console errors as pages.

Invariants: every page but the login page needs a live session; every POST
but the login needs the session's CSRF token; a tenant's session ends as soon
as its key is revoked (asked of the auth service on every request).
"""

from __future__ import annotations

import functools
import math
from typing import Awaitable, Callable

from aiohttp import web

from .. import errors as E
from ..http import SERVICES, status_of
from .render import esc, page
from .sessions import LoginThrottle, Session, Sessions

COOKIE = "objvault_console"
SESSIONS: web.AppKey[Sessions] = web.AppKey("console_sessions", Sessions)
THROTTLE: web.AppKey[LoginThrottle] = web.AppKey("console_throttle", LoginThrottle)
SESSION = "objvault.console.session"

# Nothing but the server itself: no outside request can be made by a console page.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    # Not no-referrer: with it, browsers send "Origin: null" on the login form's POST.
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def html(body: str, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html",
                        headers={**SECURITY_HEADERS, **(headers or {})})


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={**SECURITY_HEADERS, "Location": location})


def session(request: web.Request) -> Session:
    """The request's session (set by :func:`signed_in`)."""
    return request[SESSION]


def signed_in(handler: Handler) -> Handler:
    """Run ``handler`` for a live session (else to the login page); a POST must
    carry the session's CSRF token (else 403). Domain errors become pages."""

    @functools.wraps(handler)
    async def run(request: web.Request) -> web.StreamResponse:
        found = _live_session(request)
        if found is None:
            return redirect("/console/login")
        request[SESSION] = found
        try:
            if request.method == "POST" and not found.csrf_ok((await request.post()).get("csrf")):  # type: ignore[arg-type]
                raise E.Forbidden("the form's CSRF token is missing or stale: reload the page")
            return await handler(request)
        except E.VaultError as e:
            return html(page("Error", f'<p class="error" role="alert">{esc(e.detail)}</p>', found.who, found.csrf),
                        status_of(e))

    return run


def _live_session(request: web.Request) -> Session | None:
    sessions = request.app[SESSIONS]
    sid = request.cookies.get(COOKIE)
    found = sessions.find(sid)
    services = request.app.get(SERVICES)
    if found is not None and (services is None or not services.auth.still_valid(found.who)):
        sessions.end(sid)
        return None
    return found


def login_page(message: str = "", status: int = 200, headers: dict | None = None) -> web.Response:
    note = f'<p class="error" role="alert">{esc(message)}</p>' if message else ""
    body = (f'{note}<form method="post" action="/console/login" class="login">'
            f'<label for="secret">Admin token or vault key</label>'
            f'<input id="secret" name="secret" type="password" autocomplete="current-password" required autofocus>'
            f'<button type="submit">Log in</button></form>'
            f'<p class="muted">The admin token signs in as the operator; a vault key shows its own vault.</p>')
    return html(page("Log in", body, None), status, headers)


async def show_login(request: web.Request) -> web.Response:
    return login_page()


async def login(request: web.Request) -> web.Response:
    """One password field: the admin token or a vault key's secret. Failures
    are throttled per client address (429 with Retry-After while blocked)."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        return login_page("Log in from the console's own page.", 403)
    throttle, address = request.app[THROTTLE], request.remote or ""
    wait = throttle.wait(address)
    if wait > 0:
        return login_page(f"Too many failed logins: try again in {math.ceil(wait)} s.", 429,
                          {"Retry-After": str(math.ceil(wait))})
    secret = (await request.post()).get("secret")
    try:
        who = request.app[SERVICES].auth.authenticate(secret if isinstance(secret, str) else None)
    except E.Unauthorized:
        throttle.failed(address)
        return login_page("That is not the admin token or a vault key.", 401)
    throttle.succeeded(address)
    sid, _ = request.app[SESSIONS].start(who)
    resp = redirect("/console/")
    resp.set_cookie(COOKIE, sid, path="/console", httponly=True, samesite="Strict", secure=request.secure)
    return resp


@signed_in
async def logout(request: web.Request) -> web.Response:
    request.app[SESSIONS].end(request.cookies.get(COOKIE))
    resp = redirect("/console/login")
    resp.del_cookie(COOKIE, path="/console")
    return resp
