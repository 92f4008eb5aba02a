"""The alerts' storage: open alerts, their history and the webhooks' delivery queues.

Keys in the ``meta`` column family (prefixes in :mod:`vault.meta.schema`)::

    alert: kind 0 subject            → AlertRec   an open alert (deleted when it resolves)
    alert_hist: seq(8)               → AlertRec   every opening and resolution, in commit order
    alert_q: webhook id(8) seq(8)    → document   what one webhook still has to receive
    last_write: vid(8)               → float      when the vault last got an object

``seq`` comes from one persistent counter (``meta counter:alert``): it is the
id of a transition, the same in the history and in every delivery of it.
An opening or resolution, its history entry and its deliveries are written
by one op, so the state change and what announces it are durable together
(the replication outbox's rule). Which events open or resolve what is
:mod:`vault.alerts`'s business.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Iterator

from ..config import WebhookConfig
from . import schema as S
from .records import jdump

if TYPE_CHECKING:
    from .engine import Index, Txn

OPENED, RESOLVED = "opened", "resolved"
# A delivery's document is cut to this size: webhooks get bounded bodies.
MAX_DETAILS_BYTES = 16 << 10
_TIME = struct.Struct(">d")


@dataclass(frozen=True)
class AlertRec:
    """One alert: ``kind`` (:data:`vault.events.ALERT_KINDS`) about ``subject``
    (a vault, target or data directory); ``vault`` names the tenant it is about, if any."""

    kind: str
    subject: str
    vault: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    opened: float = 0.0
    seq: int = 0
    resolved: float | None = None

    @property
    def state(self) -> str:
        return OPENED if self.resolved is None else RESOLVED

    @classmethod
    def load(cls, raw: bytes) -> "AlertRec":
        return cls(**json.loads(raw))

    def dump(self) -> bytes:
        return jdump(asdict(self))

    def document(self) -> dict[str, Any]:
        """What the API shows and a webhook receives (``id``: the transition's seq)."""
        doc = {k: v for k, v in asdict(self).items() if k != "seq"}
        return {"id": self.seq, "event": f"alert.{self.state}", **doc}


@dataclass(frozen=True)
class Webhook:
    """A configured webhook and the id its queue is kept under."""

    cfg: WebhookConfig
    hid: bytes

    @classmethod
    def of(cls, cfg: WebhookConfig) -> "Webhook":
        return cls(cfg, hashlib.sha256(b"objvault-webhook\0" + cfg.url.encode()).digest()[:8])


def _open_key(kind: str, subject: str) -> bytes:
    return S.ALERT_OPEN + kind.encode() + b"\0" + subject.encode()


def _hist_key(seq: int) -> bytes:
    return S.ALERT_HIST + seq.to_bytes(8, "big")


def _queue_prefix(hid: bytes) -> bytes:
    return S.ALERT_QUEUE + hid


def _bounded(details: dict[str, Any]) -> dict[str, Any]:
    return details if len(jdump(details)) <= MAX_DETAILS_BYTES else {"truncated": True}


# -- transitions (in a committer op) -------------------------------------------------------


def open_alert(txn: Txn, hooks: Sequence[Webhook], rec: AlertRec) -> bool:
    """Open ``rec`` unless an alert of its kind and subject is open; False if one is."""
    key = _open_key(rec.kind, rec.subject)
    if txn.marker(key) is not None:
        return False
    rec = replace(rec, seq=txn.counter("alert"), opened=txn.now, details=_bounded(rec.details))
    txn.put_marker(key, rec.dump())
    _announce(txn, hooks, rec)
    return True


def resolve_alert(txn: Txn, hooks: Sequence[Webhook], kind: str, subject: str, message: str) -> bool:
    """Resolve the open alert of ``kind`` about ``subject``; False if none is open."""
    key = _open_key(kind, subject)
    raw = txn.marker(key)
    if raw is None:
        return False
    rec = replace(AlertRec.load(raw), seq=txn.counter("alert"), resolved=txn.now, message=message)
    txn.delete_marker(key)
    _announce(txn, hooks, rec)
    return True


def _announce(txn: Txn, hooks: Sequence[Webhook], rec: AlertRec) -> None:
    """The history entry and one delivery per webhook that wants the kind, in the same batch."""
    txn.put_marker(_hist_key(rec.seq), rec.dump())
    body = jdump(rec.document())
    for hook in hooks:
        if hook.cfg.wants(rec.kind):
            txn.put_marker(_queue_prefix(hook.hid) + rec.seq.to_bytes(8, "big"), body)


def open_in(txn: Txn) -> Iterator[AlertRec]:
    """The committed open alerts (not this batch's)."""
    return (AlertRec.load(v) for _, v in txn.items(S.META, S.ALERT_OPEN))


def trim_history(txn: Txn, keep: int) -> int:
    """Drop all but the newest ``keep`` history entries; returns how many went."""
    keys = [k for k, _ in txn.items(S.META, S.ALERT_HIST)]
    for k in keys[:max(0, len(keys) - keep)]:
        txn.delete_marker(k)
    return max(0, len(keys) - keep)


def dequeue(txn: Txn, key: bytes) -> None:
    txn.delete_marker(key)


def forget_webhooks(txn: Txn, keep: set[bytes]) -> int:
    """Drop the queues of webhooks no longer configured; returns how many entries went."""
    n = 0
    for k, _ in txn.items(S.META, S.ALERT_QUEUE):
        if k[len(S.ALERT_QUEUE):len(S.ALERT_QUEUE) + 8] not in keep:
            txn.delete_marker(k)
            n += 1
    return n


def note_write(txn: Txn, vid: int) -> None:
    txn.put_marker(S.LAST_WRITE + S.vid_bytes(vid), _TIME.pack(txn.now))


def forget_vault(txn: Txn, vid: int) -> None:
    txn.delete_marker(S.LAST_WRITE + S.vid_bytes(vid))


# -- reads (committed state, any thread) ---------------------------------------------------


def open_alerts(index: Index) -> list[AlertRec]:
    return [AlertRec.load(v) for _, v in index.markers(S.ALERT_OPEN)]


def history(index: Index, limit: int) -> list[AlertRec]:
    """The newest ``limit`` transitions, newest first (the history is kept short by :func:`trim_history`)."""
    recs = [AlertRec.load(v) for _, v in index.markers(S.ALERT_HIST)]
    return recs[::-1][:limit]


def queued(index: Index, hook: Webhook, limit: int) -> list[tuple[bytes, bytes]]:
    """Up to ``limit`` of the webhook's deliveries as ``(key, document)``, oldest first."""
    out = []
    for k, v in index.markers(_queue_prefix(hook.hid)):
        out.append((k, v))
        if len(out) >= limit:
            break
    return out


def queue_length(index: Index, hook: Webhook) -> int:
    return sum(1 for _ in index.markers(_queue_prefix(hook.hid)))


def last_writes(index: Index) -> dict[int, float]:
    """When each vault last got an object, by vault id."""
    return {S.vid_of(k[len(S.LAST_WRITE):]): _TIME.unpack(v)[0] for k, v in index.markers(S.LAST_WRITE)}


def quarantined_vaults(index: Index) -> set[int]:
    """Ids of the vaults that have a chunk in quarantine (being repaired or damaged)."""
    return {S.quarantine_chunk(k)[0] for k, _ in index.markers(S.QUARANTINE)}
