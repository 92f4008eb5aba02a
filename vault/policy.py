"""Policy: who may do what to a vault, and what its locks and quota refuse.

One module every front door reaches through the services: roles, the
append-only lock, the retention floor and the quota. Functions here are pure
(no I/O, no clock of their own): they take the records and the time and
either return or raise a domain error, so the same rule holds inside a
committer op and in the cheap pre-checks made before a body is read.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import errors as E
from .timefmt import iso

ROLES = ("read", "append", "full")
_RANK = {r: i for i, r in enumerate(ROLES)}
DAY = 86400.0


@dataclass(frozen=True)
class Principal:
    """Who is calling: the operator (admin) or one key of one vault."""

    admin: bool
    vault: str = ""
    vid: int = 0
    role: str = ""
    key_id: str = ""

    @property
    def who(self) -> str:
        return "admin" if self.admin else f"key:{self.key_id}"

    @property
    def effective_role(self) -> str:
        """The role the caller acts with in its vault: the admin has every right."""
        return "full" if self.admin else self.role


def valid_role(role: object) -> str:
    if role not in ROLES:
        raise E.BadRequest(f"role must be one of {', '.join(ROLES)}")
    return role


def has_role(role: str, need: str) -> bool:
    return _RANK[role] >= _RANK[need]


def require_role(who: Principal, vault: str, need: str) -> None:
    """Raise Forbidden unless ``who`` acts in ``vault`` with at least ``need``."""
    if not who.admin and not has_role(who.role, need):
        raise E.Forbidden(f"vault {vault!r}: key {who.key_id} has role {who.role!r}, this needs {need!r}")


def retained_until(retention_days: int, created: float) -> float:
    return created + retention_days * DAY


def may_overwrite(vault: str, append_only: bool, retention_days: int, key: str, old_created: float | None,
                  role: str, if_none_match: bool, now: float) -> None:
    """Raise unless an object may be written where one created at ``old_created`` (or none) is."""
    if old_created is None:
        return
    if if_none_match:
        raise E.PreconditionFailed(f"vault {vault!r}: object {key!r} exists")
    if append_only:
        raise E.AppendOnly(f"vault {vault!r} is append-only: object {key!r} cannot be overwritten")
    if not has_role(role, "full"):
        raise E.Forbidden(f"vault {vault!r}: overwriting object {key!r} needs role 'full'")
    if retention_days and now < retained_until(retention_days, old_created):
        raise E.RetentionLocked(f"vault {vault!r}: object {key!r} is under retention")


def may_delete(vault: str, append_only: bool, retention_days: int, key: str, created: float, now: float,
               ephemeral: bool = False) -> None:
    """Raise unless the object ``key`` created at ``created`` may be deleted now.

    ``ephemeral`` marks an object that is not backup data (a restic lock
    file): neither lock holds it, because a lock that cannot be removed would
    block its repository for good.
    """
    if ephemeral:
        return
    if append_only:
        raise E.AppendOnly(f"vault {vault!r} is append-only: object {key!r} cannot be deleted")
    if retention_days and now < retained_until(retention_days, created):
        raise E.RetentionLocked(f"vault {vault!r}: object {key!r} is under retention until "
                                f"{iso(retained_until(retention_days, created))}")


def may_remove_locked(vault: str, name: str, mode: str, retain_until: float, legal_hold: bool, bypass: bool,
                      now: float) -> None:
    """Raise ObjectLocked unless an S3 version with this Object Lock state may
    be deleted or replaced: a legal hold holds it until released; COMPLIANCE
    retention until its date, for everyone; GOVERNANCE retention unless a
    ``full`` key asks to bypass it (``bypass``)."""
    if legal_hold:
        raise E.ObjectLocked(f"vault {vault!r}: {name!r} is under a legal hold")
    if mode and now < retain_until and not (mode == "GOVERNANCE" and bypass):
        raise E.ObjectLocked(f"vault {vault!r}: {name!r} is under {mode} retention until {iso(retain_until)}")


def may_change_retention(name: str, mode: str, until: float, new_mode: str, new_until: float, bypass: bool,
                         now: float) -> None:
    """Raise ObjectLocked unless a version retained in ``mode`` until ``until``
    may be given ``new_mode`` until ``new_until`` ("" for none): COMPLIANCE
    can only be extended; GOVERNANCE can be extended; shortening, removing or
    changing its mode needs ``bypass``."""
    if not mode or now >= until:
        return
    if mode == "COMPLIANCE" and (new_mode != "COMPLIANCE" or new_until < until):
        raise E.ObjectLocked(f"{name!r} is under COMPLIANCE retention until {iso(until)}: it can only be extended")
    if mode == "GOVERNANCE" and (new_mode != mode or new_until < until) and not bypass:
        raise E.ObjectLocked(f"{name!r} is under GOVERNANCE retention until {iso(until)}: shortening, removing "
                             "or changing it needs x-amz-bypass-governance-retention")


def may_delete_vault(vault: str, append_only: bool, retention_days: int) -> None:
    if append_only or retention_days > 0:
        raise E.VaultLocked(f"vault {vault!r} is append-only or under retention")


def check_quota(vault: str, quota_bytes: int | None, stored: int, held: int, adding: int, what: str = "",
                note: str = "") -> None:
    """Raise QuotaExceeded if ``adding`` bytes on top of ``stored`` (and ``held``
    by uploads in flight) would pass the quota."""
    if quota_bytes is None or stored + held + adding <= quota_bytes:
        return
    inflight = f", {held} held by uploads in progress" if held else ""
    raise E.QuotaExceeded(f"vault {vault!r}: storing {what or f'{adding} bytes'} would exceed the quota of "
                          f"{quota_bytes} bytes ({stored} used{inflight}){note}")


def lock_weakened(before: dict, append_only: bool, retention_days: int) -> bool:
    """True if a settings change lowered a lock (audited as a warning)."""
    return (before.get("append_only") is True and append_only is False) or \
        ("retention_days" in before and retention_days < before["retention_days"])
