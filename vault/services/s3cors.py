"""S3 bucket CORS: the rules a bucket keeps and which cross-origin requests
they allow.

Rules are kept in the bucket's record (``settings["cors"]``, the plain form
of :class:`CorsRule`). A preflight (``OPTIONS``) is unauthenticated in S3:
:func:`allowing` answers it from the rules alone, and answers the same
(nothing allowed) for a bucket that does not exist, belongs to a deleted
vault or keeps no rules, so a preflight tells no one more than whether that
origin may make that request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import msgspec

from .. import errors as E
from ..meta import Index
from .vaults import VaultsService

SETTING = "cors"
METHODS = ("GET", "PUT", "HEAD", "POST", "DELETE")


class CorsRule(msgspec.Struct, omit_defaults=True):
    origins: list[str]
    methods: list[str]
    headers: list[str] = msgspec.field(default_factory=list)  # allowed request headers
    expose: list[str] = msgspec.field(default_factory=list)
    max_age: int | None = None
    id: str = ""

    def allows(self, origin: str, method: str, headers: Iterable[str] = ()) -> bool:
        return method in self.methods and any(_wildcard(o).fullmatch(origin) for o in self.origins) \
            and all(any(_wildcard(a.lower()).fullmatch(h.lower()) for a in self.headers) for h in headers)


@lru_cache(maxsize=1024)
def _wildcard(pattern: str) -> re.Pattern[str]:
    """``pattern`` with ``*`` standing for any run of characters."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def dump(rules: list[CorsRule]) -> list[dict[str, Any]]:
    return msgspec.to_builtins(rules)


def load(value: Any) -> list[CorsRule]:
    return msgspec.convert(value or [], list[CorsRule])


def rules_of(index: Index, vaults: VaultsService, bucket: str) -> list[CorsRule]:
    """The CORS rules of ``bucket``; none for a bucket that does not exist
    (or whose vault is gone) as for one without rules."""
    rec = index.bucket(bucket) if bucket else None
    if rec is None or SETTING not in rec.settings:
        return []
    try:
        if vaults.get(rec.vault).vid != rec.vid:
            return []
    except E.NoSuchVault:
        return []
    return load(rec.settings[SETTING])


def allowing(rules: Iterable[CorsRule], origin: str, method: str, headers: Iterable[str] = ()) -> CorsRule | None:
    """The first rule that allows the request (S3 uses the first match)."""
    wanted = list(headers)
    return next((r for r in rules if r.allows(origin, method, wanted)), None)
