"""S3 buckets: global names, each owned by one vault, and the listing of their objects.

A bucket's objects are the vault's objects named ``s3/<bucket>/<key>``
(:data:`vault.services.objects.S3_PREFIX`): dedup, refcounts, GC, quota,
usage, locks and replication apply to them as to every object. A bucket of
another vault is refused exactly like one the caller may not touch, so
nothing of it is revealed.
"""

from __future__ import annotations

import dataclasses
import heapq
import ipaddress
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .. import errors as E
from .. import policy
from ..events import BucketChanged
from ..meta import BucketRec, Index, ObjectMeta, Txn, VaultRec
from ..policy import Principal
from .objects import UPLOAD_PREFIX, ObjectService, delete_object
from .s3meta import POSITION_CHARS, VERSIONS_PREFIX, object_name, unpack_meta
from .vaults import VaultsService, live_vault

VERSIONING_STATES = ("Enabled", "Suspended")

# S3's rules (general purpose buckets): 3-63 of a-z, 0-9, '.', '-', a letter
# or digit at both ends, no '..', not an IP address, no reserved affixes.
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# The bucket setting that says Object Lock was enabled when it was created.
_RESERVED_AFFIXES = (("xn--", "sthree-", "amzn-s3-demo-"), ("-s3alias", "--ol-s3", ".mrap", "--x-s3"))


def bucket_name(name: str) -> str:
    """Validate a bucket name; raise BadBucketName."""
    if not _BUCKET_RE.fullmatch(name) or ".." in name or ".-" in name or "-." in name \
            or name.startswith(_RESERVED_AFFIXES[0]) or name.endswith(_RESERVED_AFFIXES[1]) or _is_ip(name):
        raise E.BadBucketName(f"invalid bucket name {name[:80]!r}: 3-63 characters of a-z, 0-9, '.' and '-', "
                              "starting and ending with a letter or digit")
    return name


def _is_ip(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


def versioning(bucket: BucketRec) -> str:
    """The bucket's versioning state: "" (never versioned), Enabled or Suspended."""
    return str(bucket.settings.get("versioning", ""))


LOCATION = "location"  # the setting that keeps the LocationConstraint a bucket was created with


def location(bucket: BucketRec) -> str:
    """The LocationConstraint the bucket was created with, "" when none was given."""
    return str(bucket.settings.get(LOCATION, ""))


def object_lock(bucket: BucketRec) -> dict | None:
    """The bucket's Object Lock configuration (``{"rule": ...}``), None when not enabled."""
    return bucket.settings.get("object_lock")


def is_marker(raw: bytes) -> bool:
    """Whether a packed S3 object record is a delete marker (they hold no chunks)."""
    return ObjectMeta.header(raw)[2] == 0 and unpack_meta(ObjectMeta.unpack(raw).meta).marker


@dataclass(frozen=True)
class Target:
    """A bucket the caller may act on, and its vault as it was just read."""

    vault: VaultRec
    bucket: BucketRec


@dataclass(frozen=True)
class Version:
    """One version in a ListObjectVersions page: its key, record and whether it is the current one."""

    key: str
    raw: bytes
    latest: bool


@dataclass(frozen=True)
class VersionsPage:
    """One page of ListObjectVersions, and where the next begins (None at the end)."""

    versions: list[Version]
    prefixes: list[str]
    next_key_marker: str | None
    next_version_marker: str | None


@dataclass(frozen=True)
class Page:
    """One page of a listing: ``(key, record)`` of objects, common prefixes,
    and the marker to continue after (None at the end)."""

    objects: list[tuple[str, bytes]]
    prefixes: list[str]
    next_marker: str | None


class BucketService:
    def __init__(self, index: Index, vaults: VaultsService, objects: ObjectService) -> None:
        self.index = index
        self.vaults = vaults
        self.objects = objects

    def target(self, who: Principal, name: str, role: str) -> Target:
        """The bucket ``name`` if ``who`` may act on it with ``role``.

        Raises NoSuchBucket, or Forbidden for a bucket of another vault (as
        for one it may not touch: nothing says whose it is)."""
        bucket = self.index.bucket(name)
        if bucket is None:
            raise E.NoSuchBucket(f"no such bucket {name!r}")
        if not who.admin and who.vid != bucket.vid:
            raise E.Forbidden(f"bucket {name!r}: access denied")
        vault = self.vaults.get(bucket.vault)
        if vault.vid != bucket.vid:
            raise E.NoSuchBucket(f"no such bucket {name!r}")
        policy.require_role(who, vault.name, role)
        return Target(vault, bucket)

    def list(self, vid: int) -> list[BucketRec]:
        """The buckets of the vault ``vid``, by name."""
        return sorted((b for b in self.index.buckets() if b.vid == vid), key=lambda b: b.name)

    async def create(self, who: Principal, vault_name: str, name: str, object_lock: bool = False,
                     settings: Mapping[str, Any] | None = None) -> BucketRec:
        """Create the bucket ``name`` in the vault ``vault_name`` (a key of it with
        role ``full``, or the admin); ``object_lock`` enables Object Lock and
        versioning, for good; ``settings`` are more of its settings, kept as
        given in the same op (the caller checked them: its LocationConstraint,
        its Object Ownership). Raises BadBucketName, BucketOwned, BucketExists
        (another vault's), NoSuchVault."""
        bucket_name(name)
        vault = self.vaults.get(vault_name)
        if not who.admin and who.vid != vault.vid:
            raise E.NoSuchVault(f"no such vault {vault_name!r}")
        policy.require_role(who, vault.name, "full")

        def op(txn: Txn) -> BucketRec:
            live = live_vault(txn, vault)
            cur = txn.bucket(name)
            if cur is not None and cur.vid == live.vid:
                raise E.BucketOwned(f"vault {vault.name!r} already has bucket {name!r}")
            if cur is not None:
                raise E.BucketExists(f"bucket name {name!r} is taken")
            kept: dict[str, Any] = {"versioning": "Enabled", "object_lock": {}} if object_lock else {}
            rec = BucketRec(name, live.name, live.vid, txn.now, {**kept, **(settings or {})})
            txn.put_bucket(rec)
            txn.emit(BucketChanged(live))
            return rec

        return await self.index.run(op)

    async def restore(self, vault: VaultRec, name: str, created: float, settings: dict[str, Any]) -> None:
        """Put back a bucket record a replica kept (``objvault restore``, the
        operator's): its creation time and settings as they were. Raises
        BadBucketName, BucketExists (a name another vault here owns)."""
        bucket_name(name)

        def op(txn: Txn) -> None:
            live = live_vault(txn, vault)
            cur = txn.bucket(name)
            if cur is not None and cur.vid != live.vid:
                raise E.BucketExists(f"bucket name {name!r} is taken")
            txn.put_bucket(BucketRec(name, live.name, live.vid, created, dict(settings)))
            txn.emit(BucketChanged(live))

        await self.index.run(op)

    async def set_setting(self, who: Principal, name: str, kind: str, value: Any) -> None:
        """Keep (or with None drop) the bucket's ``kind`` document (role ``full``).

        Versioning once enabled can only be suspended, never turned off, and
        not at all while Object Lock is on; Object Lock can be enabled only in a
        versioned bucket and is never turned off (InvalidBucketState)."""
        target = self.target(who, name, "full")

        def op(txn: Txn) -> None:
            live = live_vault(txn, target.vault)
            cur = txn.bucket(name)
            if cur is None or cur.vid != target.bucket.vid:
                raise E.NoSuchBucket(f"no such bucket {name!r}")
            _may_set(cur, kind, value)
            settings = {k: v for k, v in cur.settings.items() if k != kind}
            if value is not None:
                settings[kind] = value
            txn.put_bucket(dataclasses.replace(cur, settings=settings))
            txn.emit(BucketChanged(live))

        await self.index.run(op)

    async def delete(self, who: Principal, name: str) -> None:
        """Delete a bucket without objects (role ``full``; else BucketNotEmpty),
        ending its multipart uploads as S3 does: their parts go to GC."""
        target = self.target(who, name, "full")
        vid = target.bucket.vid
        uploads = list(self.index.uploads(vid, name))
        parts = [part for upload in uploads for part, _ in self.index.objects(vid, f"{UPLOAD_PREFIX}{upload.id}/")]

        def op(txn: Txn, released: list[int]) -> None:
            live = live_vault(txn, target.vault)
            if txn.bucket(name) != target.bucket:
                raise E.NoSuchBucket(f"no such bucket {name!r}")
            if txn.has_objects(vid, object_name(name, "")) or txn.has_objects(vid, f"{VERSIONS_PREFIX}{name}/"):
                raise E.BucketNotEmpty(f"bucket {name!r} is not empty")
            for part in parts:
                delete_object(txn, target.vault, live, part, True, released)
            for upload in uploads:
                txn.delete_upload(upload)
            if any(u not in uploads for u in self.index.uploads(vid, name)):
                raise E.Conflict(f"bucket {name!r}: a multipart upload began meanwhile; retry")
            txn.delete_bucket(name)
            txn.emit(BucketChanged(live))

        await self.objects.run_releasing(op)

    def list_objects(self, target: Target, prefix: str, delimiter: str, marker: str,
                     limit: int) -> Page:
        """Up to ``limit`` objects and common prefixes (each counts as one) under
        ``prefix``, after ``marker``, in key order.

        A marker that is a common prefix of this listing (it ends with the
        delimiter, and has no other delimiter after ``prefix``) continues
        after every key under it, so a page never repeats a prefix and
        pages never loop or skip.
        """
        objects: list[tuple[str, bytes]] = []
        prefixes: list[str] = []
        entries = self._entries(target, prefix, delimiter, marker)
        for key, raw in entries:
            if len(objects) + len(prefixes) == limit:
                return Page(objects, prefixes, _last(objects, prefixes))
            if raw is None:
                prefixes.append(key)
            else:
                objects.append((key, raw))
        return Page(objects, prefixes, None)

    def _entries(self, target: Target, prefix: str, delimiter: str,
                 marker: str) -> Iterator[tuple[str, bytes | None]]:
        """Keys with their records, and common prefixes with None, in order."""
        base = object_name(target.bucket.name, "")
        vid = target.bucket.vid
        after, past = (None, marker) if is_common_prefix(marker, prefix, delimiter) else (marker, None)
        while True:
            for name, raw in self.index.objects(vid, base + prefix, after and base + after,
                                                past and base + past):
                key = name[len(base):]
                cut = key.find(delimiter, len(prefix)) if delimiter else -1
                if cut < 0:
                    if not is_marker(raw):
                        yield key, raw
                    continue
                past, after = key[:cut + len(delimiter)], None
                yield past, None
                break  # on past every key under this common prefix
            else:
                return


    def list_versions(self, target: Target, prefix: str, delimiter: str, key_marker: str, version_marker: str,
                      limit: int) -> VersionsPage:
        """Up to ``limit`` versions and common prefixes under ``prefix``, by key
        and newest first, after ``key_marker`` (and, with ``version_marker``, after
        that version of it): the merge of two range scans, current versions and
        older ones."""
        versions: list[Version] = []
        prefixes: list[str] = []
        for key, raw, latest in self._version_entries(target, prefix, delimiter, key_marker, version_marker):
            if len(versions) + len(prefixes) == limit:
                last = versions[-1] if versions else None
                if prefixes and (last is None or prefixes[-1] > last.key):
                    return VersionsPage(versions, prefixes, prefixes[-1], None)
                assert last is not None
                return VersionsPage(versions, prefixes, last.key,
                                    unpack_meta(ObjectMeta.unpack(last.raw).meta).version_id)
            if raw is None:
                prefixes.append(key)
            else:
                versions.append(Version(key, raw, latest))
        return VersionsPage(versions, prefixes, None, None)

    def _version_entries(self, target: Target, prefix: str, delimiter: str, key_marker: str,
                         version_marker: str) -> Iterator[tuple[str, bytes | None, bool]]:
        """``(key, record, latest)`` of versions and ``(prefix, None, False)`` of common prefixes, in order."""
        bucket, vid = target.bucket.name, target.bucket.vid
        base, old_base = object_name(bucket, ""), f"{VERSIONS_PREFIX}{bucket}/"
        after: str | None = key_marker or None  # of current versions
        old_after: str | None = None
        past: str | None = None
        if is_common_prefix(key_marker, prefix, delimiter):
            after, past = None, key_marker
        elif key_marker and version_marker:
            old_after = self._after_version(target, key_marker, version_marker)
        elif key_marker:
            old_after = key_marker + "\0\uffff"
        while True:
            current = ((name[len(base):], "", raw) for name, raw in
                       self.index.objects(vid, base + prefix, after and base + after, past and base + past))
            older = ((name[len(old_base):-POSITION_CHARS - 1], name[-POSITION_CHARS:], raw) for name, raw in
                     self.index.objects(vid, old_base + prefix, old_after and old_base + old_after,
                                        past and old_base + past)
                     if name[-POSITION_CHARS - 1] == "\0")
            for key, pos, raw in heapq.merge(current, older, key=lambda e: (e[0], e[1])):
                cut = key.find(delimiter, len(prefix)) if delimiter else -1
                if cut < 0:
                    yield key, raw, not pos
                    continue
                past, after, old_after = key[:cut + len(delimiter)], None, None
                yield past, None, False
                break  # on past every key under this common prefix
            else:
                return

    def _after_version(self, target: Target, key: str, version_id: str) -> str:
        """Where the older versions continue after the version ``version_id`` of ``key``
        (relative to the bucket's older versions)."""
        bucket, vid = target.bucket.name, target.bucket.vid
        current = self.index.object_packed(vid, object_name(bucket, key))
        if current is not None and unpack_meta(ObjectMeta.unpack(current).meta).version_id == version_id:
            return key  # every older version of the key follows
        if version_id == "null":
            for name, raw in self.index.objects(vid, f"{VERSIONS_PREFIX}{bucket}/{key}\0"):
                if not unpack_meta(ObjectMeta.unpack(raw).meta).version:
                    return name[len(f"{VERSIONS_PREFIX}{bucket}/"):]
            return key + "\0\uffff"
        return f"{key}\0{version_id}"


def _may_set(bucket: BucketRec, kind: str, value: Any) -> None:
    """Refuse a change of the versioning or Object Lock state the bucket's state does not allow."""
    if kind == "versioning" and value != "Enabled" and object_lock(bucket) is not None:
        raise E.InvalidBucketState(f"bucket {bucket.name!r} has Object Lock: versioning stays enabled")
    if kind == "versioning" and value is None and versioning(bucket):
        raise E.InvalidBucketState(f"bucket {bucket.name!r}: versioning can be suspended, not turned off")
    if kind == "object_lock" and value is None and object_lock(bucket) is not None:
        raise E.InvalidBucketState(f"bucket {bucket.name!r}: Object Lock is never turned off")
    if kind == "object_lock" and versioning(bucket) != "Enabled":
        raise E.InvalidBucketState(f"bucket {bucket.name!r}: Object Lock needs versioning enabled")


def is_common_prefix(marker: str, prefix: str, delimiter: str) -> bool:
    return bool(delimiter and marker and marker.startswith(prefix)
                and marker.find(delimiter, len(prefix)) == len(marker) - len(delimiter))


def _last(objects: list[tuple[str, bytes]], prefixes: list[str]) -> str:
    """The greatest key or prefix of a page (both lists are in order)."""
    return max(objects[-1][0] if objects else "", prefixes[-1] if prefixes else "")

