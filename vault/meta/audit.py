"""The audit log: who changed what, kept in the index next to the change.

Keys in the ``meta`` column family (prefix in :mod:`vault.meta.schema`)::

    audit: seq(8)  → AuditRec   one line, in commit order

``seq`` comes from a persistent counter (``meta counter:audit``). A line is
written by the op that makes the change, so the change and its line are
durable together; the newest :data:`KEEP` lines are kept (writing line
``seq`` deletes line ``seq - KEEP``, so the log never grows past that).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from . import schema as S
from .records import jdump

if TYPE_CHECKING:
    from .engine import Index, Txn

KEEP = 100_000
# A line's details are cut to this size: the log stays bounded per line too.
MAX_DETAILS_BYTES = 4 << 10

# The actions, as the API and the console name them.
VAULT_CREATED, VAULT_UPDATED, VAULT_LOCK_WEAKENED, VAULT_DELETED = (
    "vault.created", "vault.updated", "vault.lock_weakened", "vault.deleted")
KEY_CREATED, KEY_REVOKED = "key.created", "key.revoked"
ACTIONS = (VAULT_CREATED, VAULT_UPDATED, VAULT_LOCK_WEAKENED, VAULT_DELETED, KEY_CREATED, KEY_REVOKED)


@dataclass(frozen=True)
class AuditRec:
    """One line: ``who`` (a principal's name) did ``action`` to ``vault`` at ``at`` (Unix time)."""

    seq: int
    at: float
    who: str
    action: str
    vault: str
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, raw: bytes) -> "AuditRec":
        return cls(**json.loads(raw))

    def document(self) -> dict[str, Any]:
        return asdict(self)


def _key(seq: int) -> bytes:
    return S.AUDIT + seq.to_bytes(8, "big")


def record(txn: Txn, who: str, action: str, vault: str, details: dict[str, Any]) -> AuditRec:
    """Add a line in ``txn`` (the op that makes the change)."""
    if len(jdump(details)) > MAX_DETAILS_BYTES:
        details = {"truncated": True}
    rec = AuditRec(txn.counter("audit"), txn.now, who, action, vault, details)
    txn.put_marker(_key(rec.seq), jdump(asdict(rec)))
    if rec.seq > KEEP:
        txn.delete_marker(_key(rec.seq - KEEP))
    return rec


@dataclass(frozen=True)
class Filter:
    """Which lines to show: all of ``vault``'s, actions equal to or under ``action``
    (``vault`` covers ``vault.created``...), from ``since`` until ``until`` (Unix times)."""

    vault: str | None = None
    action: str | None = None
    since: float | None = None
    until: float | None = None

    def keeps(self, rec: AuditRec) -> bool:
        return ((self.vault is None or rec.vault == self.vault)
                and (self.action is None or rec.action == self.action or rec.action.startswith(self.action + "."))
                and (self.until is None or rec.at <= self.until))


def lines(index: Index, limit: int, where: Filter = Filter()) -> list[AuditRec]:
    """The newest ``limit`` lines ``where`` keeps, newest first."""
    out: list[AuditRec] = []
    for _, raw in index.iter_prefix_newest(S.META, S.AUDIT):
        rec = AuditRec.load(raw)
        if where.since is not None and rec.at < where.since:
            break  # older lines are older still
        if where.keeps(rec):
            out.append(rec)
            if len(out) >= limit:
                break
    return out
