"""Where alerts open and resolve: at the mechanism that changes the state.

* :class:`AlertHook`, an index event hook, runs inside the op that changes a
  vault: a chunk put that takes its usage past a quota level, a quota
  change, a lock weakened, a chunk quarantined, an object put (the vault's
  last write). Its transitions join that op's batch.
* :class:`Evaluator`, a job, looks every ``evaluate_interval_seconds`` at
  what changes with time or outside the index: stale vaults, replication
  backlog and failing targets, failed or full data directories; and it
  resolves what the hook opened once it is over (a vault without chunks in
  quarantine, a lock weakened longer ago than ``lock_weakened_hold_seconds``).

An alert is keyed by kind and subject: :func:`vault.meta.alerts.open_alert`
does nothing while one is open, so a condition that persists announces
itself once, and once more when it ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from .. import policy
from ..config import AlertsConfig
from ..events import (CHUNK_CORRUPT, DATA_DIR_FAILED, DATA_DIR_LOW_SPACE, LOCK_WEAKENED, QUOTA_FULL, QUOTA_WARNING,
                      REPLICATION_BACKLOG, TARGET_FAILING, VAULT_STALE, ChunkDeleted, ChunkPut, ChunkQuarantined,
                      Event, ObjectPut, VaultDeleted, VaultPut)
from ..meta import Index, Txn, VaultRec
from ..meta import alerts as A
from ..store import Store
from ..workers import Job

DAY = 86400.0
# Transitions kept for GET /v1/admin/alerts.
HISTORY_KEEP = 1000
# Kinds whose open and resolve the evaluator owns: whatever it does not find is over.
EVALUATED = (VAULT_STALE, REPLICATION_BACKLOG, TARGET_FAILING, DATA_DIR_FAILED, DATA_DIR_LOW_SPACE)
_VAULT_KINDS = (QUOTA_WARNING, QUOTA_FULL, VAULT_STALE, CHUNK_CORRUPT, LOCK_WEAKENED)


class AlertHook:
    """Index event hook; see the module docstring. ``wake`` is called (on the
    committer thread, once the batch is durable) after a batch that queued deliveries."""

    def __init__(self, cfg: AlertsConfig, hooks: Sequence[A.Webhook], wake: Callable[[], None]) -> None:
        self.cfg = cfg
        self.hooks = hooks
        self.wake = wake

    def __call__(self, txn: Txn, event: Event) -> None:
        if isinstance(event, ChunkPut):
            self._quota(txn, event.rec, growing=True)
        elif isinstance(event, ChunkDeleted) and event.rec is not None and event.rec.quota_bytes is not None:
            self._quota(txn, event.rec)  # a quota removed resolves with its VaultPut
        elif isinstance(event, ObjectPut):
            A.note_write(txn, event.rec.vid)
        elif isinstance(event, VaultPut):
            self._quota(txn, event.rec)
            if event.before is not None:
                self._lock(txn, event.before, event.rec)
        elif isinstance(event, VaultDeleted):
            self._deleted(txn, event.rec)
        elif isinstance(event, ChunkQuarantined):
            self._corrupt(txn, event)

    def open(self, txn: Txn, rec: A.AlertRec) -> bool:
        """Open ``rec`` (False if one of its kind and subject is open)."""
        return self._woken(txn, A.open_alert(txn, self.hooks, rec))

    def resolve(self, txn: Txn, kind: str, subject: str, message: str) -> bool:
        """Resolve the open alert of ``kind`` about ``subject`` (False if none is open)."""
        return self._woken(txn, A.resolve_alert(txn, self.hooks, kind, subject, message))

    def _woken(self, txn: Txn, changed: bool) -> bool:
        if changed and self.hooks and self.wake not in txn.after:
            txn.after.append(self.wake)
        return changed

    def _quota(self, txn: Txn, rec: VaultRec, growing: bool = False) -> None:
        """Open or resolve the vault's quota alerts. A growing vault can only open
        them, and only past the warning level: most chunk puts read nothing more."""
        quota = rec.quota_bytes
        warn = None if quota is None else quota * self.cfg.quota_warn_percent / 100
        used = 0 if quota is None else txn.usage(rec.vid).stored_bytes
        if growing and (warn is None or used < warn):
            return
        for kind, level in ((QUOTA_WARNING, warn), (QUOTA_FULL, quota)):
            if level is not None and used >= level:
                pct = round(100 * used / quota, 1) if quota else 100.0
                self.open(txn, A.AlertRec(kind, rec.name, rec.name,
                                          f"vault {rec.name!r} uses {pct} % of its quota ({used} of {quota} bytes)",
                                          {"stored_bytes": used, "quota_bytes": quota}))
            else:
                self.resolve(txn, kind, rec.name, f"vault {rec.name!r} is below the level again")

    def _lock(self, txn: Txn, before: VaultRec, rec: VaultRec) -> None:
        was = {"append_only": before.append_only, "retention_days": before.retention_days}
        if policy.lock_weakened(was, rec.append_only, rec.retention_days):
            now = {"append_only": rec.append_only, "retention_days": rec.retention_days}
            self.open(txn, A.AlertRec(LOCK_WEAKENED, rec.name, rec.name,
                                      f"vault {rec.name!r}: a lock was weakened", {"before": was, "after": now}))

    def _corrupt(self, txn: Txn, event: ChunkQuarantined) -> None:
        """One alert per vault while any of its chunks is in quarantine (the first one names its chunk)."""
        name, chunk = event.rec.name, event.digest.hex()
        what = "damaged: no target holds a good copy" if event.damaged else event.reason
        self.open(txn, A.AlertRec(CHUNK_CORRUPT, name, name, f"vault {name!r}: chunk {chunk} is corrupt ({what})",
                                  {"chunk": chunk, "reason": event.reason, "damaged": event.damaged}))

    def _deleted(self, txn: Txn, rec: VaultRec) -> None:
        for kind in _VAULT_KINDS:
            self.resolve(txn, kind, rec.name, f"vault {rec.name!r} was deleted")
        A.forget_vault(txn, rec.vid)


Wanted = dict[tuple[str, str], A.AlertRec]


class Evaluator(Job):
    """The periodic half of detection (a :class:`vault.workers.Job`); see the module docstring.

    ``targets`` returns the replication targets' status (``Replication.status``)."""

    name = "alerts_evaluate"

    def __init__(self, cfg: AlertsConfig, index: Index, store: Store, data_dirs: list[str],
                 targets: Callable[[], list[dict[str, Any]]], hook: AlertHook) -> None:
        super().__init__()
        self.cfg = cfg
        self.index = index
        self.store = store
        self.data_dirs = data_dirs
        self.targets = targets
        self.hook = hook

    def run_once(self) -> dict:
        now = time.time()
        want: Wanted = {**self._stale(now), **self._replication(), **self._data_dirs()}
        over = self._over(now)
        opened, resolved = self.index.run_sync(lambda txn: self._reconcile(txn, want, over))
        return {"opened": opened, "resolved": resolved}

    def _stale(self, now: float) -> Wanted:
        last = A.last_writes(self.index)
        out: Wanted = {}
        for rec in self.index.vaults():
            since = last.get(rec.vid, rec.created)
            days = (now - since) / DAY
            if days > (rec.stale_after_days or self.cfg.stale_after_days):
                out[(VAULT_STALE, rec.name)] = A.AlertRec(
                    VAULT_STALE, rec.name, rec.name, f"vault {rec.name!r} got no new data for {days:.1f} days",
                    {"last_write": since})
        return out

    def _replication(self) -> Wanted:
        out: Wanted = {}
        for t in self.targets():
            name, oldest = t["name"], t["oldest_pending_seconds"]
            if oldest > self.cfg.replication_backlog_seconds:
                out[(REPLICATION_BACKLOG, name)] = A.AlertRec(
                    REPLICATION_BACKLOG, name, "", f"target {name!r}: the oldest pending change is {oldest:.0f} s old",
                    {"oldest_pending_seconds": oldest, "pending_entries": t["pending_entries"]})
            if t["last_error"] is not None:
                out[(TARGET_FAILING, name)] = A.AlertRec(
                    TARGET_FAILING, name, "", f"target {name!r} is failing: {t['last_error']}",
                    {"last_error": t["last_error"], "last_error_at": t["last_error_at"]})
        return out

    def _data_dirs(self) -> Wanted:
        out: Wanted = {}
        for i in sorted(self.store.failed_dirs):
            d = self.data_dirs[i]
            out[(DATA_DIR_FAILED, d)] = A.AlertRec(DATA_DIR_FAILED, d, "", f"data dir {d} failed", {})
        floor = self.cfg.data_dir_min_free_bytes
        for d, free in self.store.free_bytes() if floor else ():
            if free < floor:
                out[(DATA_DIR_LOW_SPACE, d)] = A.AlertRec(
                    DATA_DIR_LOW_SPACE, d, "", f"data dir {d} has {free} bytes free (below {floor})",
                    {"free_bytes": free, "min_free_bytes": floor})
        return out

    def _over(self, now: float) -> list[tuple[str, str, str]]:
        """``(kind, subject, message)`` of open alerts of the hook's kinds whose condition has passed."""
        names = {rec.vid: rec.name for rec in self.index.vaults()}
        quarantined = {names[vid] for vid in A.quarantined_vaults(self.index) if vid in names}
        over = []
        for rec in A.open_alerts(self.index):
            if rec.kind == CHUNK_CORRUPT and rec.subject not in quarantined:
                over.append((rec.kind, rec.subject, f"vault {rec.subject!r}: no chunk in quarantine (repaired)"))
            elif rec.kind == LOCK_WEAKENED and now - rec.opened > self.cfg.lock_weakened_hold_seconds:
                over.append((rec.kind, rec.subject, f"vault {rec.subject!r}: the notice has been held long enough"))
        return over

    def _reconcile(self, txn: Txn, want: Wanted, over: list[tuple[str, str, str]]) -> tuple[int, int]:
        """Open what is wanted, resolve evaluated alerts no longer wanted and those ``over``."""
        opened = sum(self.hook.open(txn, rec) for rec in want.values())
        gone = [(r.kind, r.subject, f"{r.kind} of {r.subject} is over") for r in A.open_in(txn)
                if r.kind in EVALUATED and (r.kind, r.subject) not in want]
        resolved = sum(self.hook.resolve(txn, *what) for what in gone + over)
        A.trim_history(txn, HISTORY_KEEP)
        return opened, resolved
