"""Console sessions and the login throttle, both in memory and bounded.

A session maps a random id (the cookie) to the principal that logged in and
a CSRF token for its forms. Sessions end after :data:`IDLE_SECONDS` without a
request or :data:`MAX_AGE_SECONDS` after login, at logout, or when the store
is full (the least recently used goes first). A restart logs everyone out.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from ..policy import Principal

IDLE_SECONDS = 3600.0
MAX_AGE_SECONDS = 12 * 3600.0
MAX_SESSIONS = 10_000

# Failed logins per client address: the first FREE_FAILURES cost nothing,
# each further one blocks the address for twice as long as the one before.
FREE_FAILURES = 3
MAX_BLOCK_SECONDS = 300.0
MAX_ADDRESSES = 10_000


@dataclass
class Session:
    who: Principal
    created: float
    seen: float
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    flash: str = ""  # a one-line result shown on the next page, after a redirect

    def csrf_ok(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())


class Sessions:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        # Least recently used first: a full store drops from the front.
        self._live: OrderedDict[str, Session] = OrderedDict()

    def start(self, who: Principal) -> tuple[str, Session]:
        """A new session for ``who``: its cookie value and the session."""
        now = self.clock()
        sid = secrets.token_urlsafe(32)
        self._live[sid] = session = Session(who, now, now)
        while len(self._live) > MAX_SESSIONS:
            self._live.popitem(last=False)
        return sid, session

    def find(self, sid: str | None) -> Session | None:
        """The live session of cookie ``sid``, its idle clock restarted; None if none or expired."""
        session = self._live.get(sid) if sid else None
        if session is None:
            return None
        now = self.clock()
        if now - session.seen > IDLE_SECONDS or now - session.created > MAX_AGE_SECONDS:
            self.end(sid)
            return None
        session.seen = now
        self._live.move_to_end(sid)  # type: ignore[arg-type]  # sid is a key of _live here
        return session

    def end(self, sid: str | None) -> None:
        if sid:
            self._live.pop(sid, None)


@dataclass
class _Failures:
    count: int = 0
    blocked_until: float = 0.0


class LoginThrottle:
    """Backoff on failed logins per client address; a success forgets the address."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._seen: OrderedDict[str, _Failures] = OrderedDict()

    def wait(self, address: str) -> float:
        """Seconds ``address`` must still wait before its next attempt (0: go ahead)."""
        f = self._seen.get(address)
        return max(0.0, f.blocked_until - self.clock()) if f else 0.0

    def failed(self, address: str) -> None:
        f = self._seen.pop(address, None) or _Failures()
        f.count += 1
        if f.count > FREE_FAILURES:
            f.blocked_until = self.clock() + min(MAX_BLOCK_SECONDS, 2.0 ** (f.count - FREE_FAILURES - 1))
        self._seen[address] = f
        while len(self._seen) > MAX_ADDRESSES:
            self._seen.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._seen.pop(address, None)
