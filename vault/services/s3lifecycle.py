"""S3 bucket lifecycle: the rules a bucket keeps, which objects they apply
to, when those expire, and the worker that applies them.

A bucket's rules are kept in its record (``settings["lifecycle"]``, the
plain form of :class:`Rule`), so they survive restarts and travel with the
bucket. The worker (:class:`S3Lifecycle`, one job under the runner) passes
over every bucket with rules and, for each enabled one, does each action of
:data:`ACTIONS`: a function ``(pass, target, rules) -> None`` that counts
what it did in the pass's stats. Expiring current objects and aborting
stale multipart uploads, expiring noncurrent versions
(NoncurrentVersionExpiration) and removing expired delete markers
(ExpiredObjectDeleteMarker) are its four actions.

In a versioned bucket Expiration adds a delete marker over the current
version instead of deleting it. A noncurrent version's NoncurrentDays count
from when it became noncurrent: the creation of the version that followed
it; NewerNoncurrentVersions keeps that many of the newest noncurrent
versions whatever their age. A delete marker that is the only version of
its key is removed by ExpiredObjectDeleteMarker, or by an Expiration whose
Days or Date the marker has reached.

The worker never deletes what a lock holds: every delete goes through the
one delete path of the core, which refuses a version under Object Lock
retention or legal hold or in an append-only vault (``skipped_locked``) and
one younger than its vault's ``retention_days`` floor
(``skipped_retention``); the worker checks first to spare a write, and the
committer op that deletes checks again, so a lock that appears meanwhile
still holds. A version is deleted only if it is still the one the rules were
evaluated on (same creation time): a fresh upload under the key is never
expired by a rule that matched the old one.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from email.utils import formatdate
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .. import errors as E
from .. import policy
from ..meta import Index, ObjectMeta, Txn, VaultRec
from ..policy import Principal
from ..workers import Job
from .buckets import Target, object_name, versioning
from .objects import delete_object
from .s3meta import POSITION_CHARS, VERSIONS_PREFIX, S3Meta, is_locked
from .s3objects import S3ObjectService, unpack_meta
from .vaults import live_vault

SETTING = "lifecycle"
DAY = 86400


class Filter(msgspec.Struct, omit_defaults=True):
    """Which objects a rule applies to: every condition must hold.

    ``form`` is how the rule stated it, so it is answered back the same way:
    ``legacy`` (the rule's own Prefix), ``empty`` (an empty Filter), ``prefix``,
    ``tag``, ``gt``, ``lt`` (one condition in a Filter), ``and``."""

    form: str = "legacy"
    prefix: str = ""
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    size_gt: int | None = None
    size_lt: int | None = None

    def matches(self, key: str, size: int, tags: dict[str, str]) -> bool:
        return key.startswith(self.prefix) and all(tags.get(k) == v for k, v in self.tags.items()) \
            and (self.size_gt is None or size > self.size_gt) and (self.size_lt is None or size < self.size_lt)


class Rule(msgspec.Struct, omit_defaults=True):
    """One lifecycle rule; None: the action (or its field) is not given."""

    id: str
    enabled: bool
    filter: Filter = msgspec.field(default_factory=Filter)
    days: int | None = None  # Expiration/Days
    date: float | None = None  # Expiration/Date, at midnight UTC
    delete_marker: bool | None = None  # Expiration/ExpiredObjectDeleteMarker
    noncurrent_days: int | None = None  # NoncurrentVersionExpiration/NoncurrentDays
    newer_noncurrent: int | None = None  # NoncurrentVersionExpiration/NewerNoncurrentVersions
    abort_days: int | None = None  # AbortIncompleteMultipartUpload/DaysAfterInitiation

    @property
    def expires(self) -> bool:
        return self.days is not None or self.date is not None


def dump(rules: list[Rule]) -> list[dict[str, Any]]:
    """The plain form a bucket record keeps."""
    return msgspec.to_builtins(rules)


def load(value: Any) -> list[Rule]:
    """The rules of a bucket's kept setting (none: an empty list)."""
    return msgspec.convert(value or [], list[Rule])


def midnight_after(ts: float) -> float:
    """The first midnight UTC at or after ``ts``."""
    return math.ceil(ts / DAY) * DAY


def after_days(start: float, days: int, day: float = DAY) -> float:
    """``start`` plus ``days`` rounded up to midnight UTC (with a shortened
    ``day``, a test setting, not rounded)."""
    due = start + days * day
    return midnight_after(due) if day == DAY else due


def expiry(rule: Rule, created: float, day: float = DAY) -> float | None:
    """When the rule's Expiration ends an object created at ``created``: its
    Date, or ``created`` plus Days (see :func:`after_days`)."""
    if rule.date is not None:
        return rule.date
    if rule.days is None:
        return None
    return after_days(created, rule.days, day)


def expiration(rules: Iterable[Rule], key: str, size: int, tags: dict[str, str], created: float,
               day: float = DAY) -> tuple[float, str] | None:
    """``(expiry, rule id)`` of the earliest enabled Expiration that applies to the object."""
    found = [(when, rule.id) for rule in rules
             if rule.enabled and rule.expires and rule.filter.matches(key, size, tags)
             and (when := expiry(rule, created, day)) is not None]
    return min(found) if found else None


def header(settings: dict[str, Any], key: str, size: int, tags: dict[str, str], created: float,
           day: float = DAY) -> dict[str, str]:
    """``x-amz-expiration`` of an object an Expiration rule of the bucket's
    ``settings`` applies to (else nothing)."""
    if SETTING not in settings:
        return {}
    found = expiration(load(settings[SETTING]), key, size, tags, created, day)
    if found is None:
        return {}
    when, rule_id = found
    shown = "".join(c for c in rule_id if c.isprintable() and c not in '"\\')
    return {"x-amz-expiration": f'expiry-date="{formatdate(when, usegmt=True)}", rule-id="{shown}"'}


@dataclass
class Pass:
    """One pass of the worker: its clock, its bounds, and its counts."""

    now: float
    day: float
    budget: int  # objects it may still look at
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("buckets", "scanned", "expired", "aborted", "skipped_locked", "skipped_retention",
         "noncurrent_expired", "delete_markers_removed"), 0))

    def count(self, what: str, n: int = 1) -> None:
        self.stats[what] += n


class S3Lifecycle(Job):
    """Applies every bucket's lifecycle rules; see the module docstring.

    A pass looks at no more than ``scan_limit`` objects; where a bucket's
    scan stopped, the next pass goes on (kept in memory: a restart starts
    over, which only costs a re-read)."""

    name = "s3_lifecycle"
    PAGE = 1000

    def __init__(self, index: Index, s3: S3ObjectService, day_seconds: float = DAY,
                 scan_limit: int = 1_000_000, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.index = index
        self.s3 = s3
        self.day = float(day_seconds)
        self.scan_limit = scan_limit
        self.clock = clock
        self.resume: dict[str, str] = {}  # bucket -> key the last pass stopped after

    async def run_once(self) -> dict:
        run = Pass(self.clock(), self.day, self.scan_limit)
        for bucket in list(self.index.buckets()):
            rules = [r for r in load(bucket.settings.get(SETTING)) if r.enabled]
            if not rules or run.budget <= 0:
                continue
            try:
                vault = self.s3.objects.vaults.get(bucket.vault)
            except E.NoSuchVault:
                continue
            if vault.vid != bucket.vid:
                continue
            run.count("buckets")
            target = Target(vault, bucket)
            for action in ACTIONS:
                await action(self, run, target, rules)
        return run.stats

    # -- current objects ---------------------------------------------------------

    async def expire_current(self, run: Pass, target: Target, rules: list[Rule]) -> None:
        expiring = [r for r in rules if r.expires]
        if not expiring:
            return
        name = target.bucket.name
        versioned = bool(versioning(target.bucket))
        base = object_name(name, "")
        prefix = _common_prefix(r.filter.prefix for r in expiring)
        last = self.resume.pop(name, None)
        while True:
            # Read a page, then act on it: no index iterator stays open across a delete.
            page = list(itertools.islice(self.index.objects(target.bucket.vid, base + prefix,
                                                            last and base + last), min(self.PAGE, run.budget)))
            for full, raw in page:
                key = last = full[len(base):]
                run.budget -= 1
                run.count("scanned")
                obj = ObjectMeta.unpack(raw)
                meta = unpack_meta(obj.meta)
                if meta.marker:
                    continue  # expired delete markers: remove_delete_markers
                found = expiration(expiring, key, obj.size, meta.tags, obj.created, run.day)
                if found is None or found[0] > run.now:
                    continue
                if versioned:
                    reason = await self._hide(target, key, obj.created)
                else:
                    reason = _held(target.vault, obj.created, run.now) or \
                        await self._expire(target, key, obj.created)
                if reason is not None:
                    run.count(reason)
            if run.budget <= 0 and page and last is not None:
                self.resume[name] = last  # the next pass goes on after it
                return
            if len(page) < self.PAGE:
                return
            await asyncio.sleep(0)

    async def _expire(self, target: Target, key: str, created: float) -> str | None:
        """Delete the object if it is still the one created at ``created``;
        the stat a lock adds instead (None when deleted or gone)."""
        vault, name = target.vault, object_name(target.bucket.name, key)

        def op(txn: Txn, released: list[int]) -> bool:
            raw = txn.object_packed(vault.vid, name)
            if raw is None or ObjectMeta.header(raw)[0] != created:
                return False
            return delete_object(txn, vault, live_vault(txn, vault), name, False, released)

        return await _refused(self.s3.objects.run_releasing(op), "expired")

    async def _hide(self, target: Target, key: str, created: float) -> str | None:
        """Expiration in a versioned bucket: a delete marker over the current
        version if it is still the one created at ``created`` (while versioning
        is suspended the marker replaces the null version, which a lock may
        refuse); the stat it adds."""

        def same(raw: bytes | None) -> None:
            if raw is None or ObjectMeta.header(raw)[0] != created:
                raise E.PreconditionFailed(f"{key!r} changed since it was judged")

        try:
            return await _refused(self.s3.add_marker(LIFECYCLE, target, key, same), "expired")
        except E.PreconditionFailed:
            return None

    async def _remove(self, target: Target, key: str, version_id: str, created: float, done: str) -> str | None:
        """Remove a version through the core's one delete path if it is still
        the one created at ``created``; the stat it adds (``done``, or the lock
        that refused it; None when it changed or went meanwhile)."""
        removed = self.s3.remove_version(target, key, version_id, still=lambda obj, _: obj.created == created)
        return await _refused(removed, done)

    # -- multipart uploads ---------------------------------------------------------

    async def abort_uploads(self, run: Pass, target: Target, rules: list[Rule]) -> None:
        aborting = [r for r in rules if r.abort_days is not None]
        if not aborting:
            return
        for upload in list(itertools.islice(self.index.uploads(target.bucket.vid, target.bucket.name),
                                            max(run.budget, 0))):
            run.budget -= 1
            due = any(upload.key.startswith(r.filter.prefix) and upload.created + (r.abort_days or 0) * run.day
                      <= run.now for r in aborting)
            if not due:
                continue
            try:
                await self.s3.end_upload(target.vault, upload)
                run.count("aborted")
            except (E.NoSuchUpload, E.NoSuchVault):
                pass  # ended or gone meanwhile

    # -- versions ----------------------------------------------------------------------

    async def expire_noncurrent(self, run: Pass, target: Target, rules: list[Rule]) -> None:
        """NoncurrentVersionExpiration (counted in ``noncurrent_expired``): the
        older versions of each key, newest first, each noncurrent since the
        creation of the one after it (the current version for the newest)."""
        expiring = [r for r in rules if r.noncurrent_days is not None or r.newer_noncurrent is not None]
        if not expiring:
            return
        name = target.bucket.name
        base = f"{VERSIONS_PREFIX}{name}/"
        prefix = _common_prefix(r.filter.prefix for r in expiring)
        resume = f"{name}\0noncurrent"
        last = self.resume.pop(resume, None)
        key_before = last  # where the key being walked started: a pass that stops resumes there
        key, successor, rank = "", 0.0, 0
        while True:
            page = list(itertools.islice(self.index.objects(target.bucket.vid, base + prefix, last),
                                         min(self.PAGE, run.budget)))
            for full, raw in page:
                rest = full[len(base):]
                if len(rest) <= POSITION_CHARS or rest[-POSITION_CHARS - 1] != "\0":
                    last = full
                    continue
                if rest[:-POSITION_CHARS - 1] != key or rank == 0:
                    key, key_before, rank = rest[:-POSITION_CHARS - 1], last, 0
                    current = self.index.object_packed(target.bucket.vid, object_name(name, key))
                    successor = ObjectMeta.header(current)[0] if current is not None else 0.0
                last = full
                run.budget -= 1
                run.count("scanned")
                obj = ObjectMeta.unpack(raw)
                meta = unpack_meta(obj.meta)
                rank += 1
                since, successor = successor or obj.created, obj.created
                if not any(_noncurrent_due(r, key, obj, meta, since, rank, run) for r in expiring):
                    continue
                reason = _lock_of(target.vault, obj, meta, run.now) or \
                    await self._remove(target, key, meta.version_id, obj.created, "noncurrent_expired")
                if reason is not None:
                    run.count(reason)
            if run.budget <= 0 and page:
                if key_before is not None:
                    self.resume[resume] = key_before
                return
            if len(page) < self.PAGE:
                return
            await asyncio.sleep(0)

    async def remove_delete_markers(self, run: Pass, target: Target, rules: list[Rule]) -> None:
        """ExpiredObjectDeleteMarker, and Expiration once a marker reaches its
        Days or Date (counted in ``delete_markers_removed``): a delete marker
        that is the only version of its key is removed."""
        removing = [r for r in rules if r.delete_marker or r.expires]
        if not removing or not versioning(target.bucket):
            return
        name = target.bucket.name
        base = object_name(name, "")
        prefix = _common_prefix(r.filter.prefix for r in removing)
        last = None
        while run.budget > 0:
            page = list(itertools.islice(self.index.objects(target.bucket.vid, base + prefix,
                                                            last and base + last), min(self.PAGE, run.budget)))
            for full, raw in page:
                key = last = full[len(base):]
                run.budget -= 1
                obj = ObjectMeta.unpack(raw)
                meta = unpack_meta(obj.meta)
                if not meta.marker or not any(_marker_due(r, key, obj.created, run) for r in removing):
                    continue
                if self.s3.has_older(target, key):
                    continue
                reason = await self._remove(target, key, meta.version_id, obj.created, "delete_markers_removed")
                if reason is not None:
                    run.count(reason)
            if len(page) < self.PAGE:
                return
            await asyncio.sleep(0)


Action = Callable[[S3Lifecycle, Pass, Target, list[Rule]], Any]
ACTIONS: tuple[Action, ...] = (S3Lifecycle.expire_current, S3Lifecycle.abort_uploads,
                               S3Lifecycle.expire_noncurrent, S3Lifecycle.remove_delete_markers)

# What a refused delete counts as: the lock that refused it.
SKIPPED = {"append_only": "skipped_locked", "object_locked": "skipped_locked", "retention": "skipped_retention"}

# Who the worker acts as: the operator's rights over objects, which no lock yields to.
LIFECYCLE = Principal(admin=True)


async def _refused(deleting: Any, done: str) -> str | None:
    """Await a delete: ``done`` if it happened, None if there was nothing to
    do, the stat of the lock that refused it."""
    try:
        return done if await deleting else None
    except E.VaultError as e:
        reason = SKIPPED.get(e.code)
        if reason is None:
            raise
        return reason


def _noncurrent_due(rule: Rule, key: str, obj: ObjectMeta, meta: S3Meta, since: float, rank: int,
                    run: Pass) -> bool:
    """Whether the rule's NoncurrentVersionExpiration ends a version noncurrent
    since ``since``, the ``rank``-th newest noncurrent one of its key."""
    return rule.filter.matches(key, obj.size, meta.tags) \
        and (rule.newer_noncurrent is None or rank > rule.newer_noncurrent) \
        and after_days(since, rule.noncurrent_days or 0, run.day) <= run.now


def _marker_due(rule: Rule, key: str, created: float, run: Pass) -> bool:
    """Whether the rule removes a lone delete marker created at ``created``."""
    if not rule.filter.matches(key, 0, {}):
        return False
    if rule.delete_marker:
        return True
    when = expiry(rule, created, run.day)
    return when is not None and when <= run.now


def _lock_of(vault: VaultRec, obj: ObjectMeta, meta: S3Meta, now: float) -> str | None:
    """The stat of a lock that holds a version (None: none does); delete
    markers are held by none."""
    if meta.marker:
        return None
    if is_locked(obj.meta, now):
        return "skipped_locked"
    return _held(vault, obj.created, now)


def _held(vault: VaultRec, created: float, now: float) -> str | None:
    """The stat of a lock that holds an object created at ``created`` (None: none does)."""
    try:
        policy.may_delete(vault.name, vault.append_only, vault.retention_days, "", created, now)
    except E.VaultError as e:
        return SKIPPED.get(e.code, "skipped_locked")
    return None


def _common_prefix(prefixes: Iterable[str]) -> str:
    """The longest prefix every one of ``prefixes`` starts with."""
    found: str | None = None
    for p in prefixes:
        if found is None:
            found = p
        while not p.startswith(found):
            found = found[:-1]
    return found or ""
