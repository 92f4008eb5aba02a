"""The policy rules in process: roles, locks, retention and quota, as every front door meets them."""

from __future__ import annotations

import pytest

from vault import errors as E
from vault import policy
from vault.policy import Principal
from vault.services import VaultSettings

DAY = 86400.0
KEY = Principal(False, "acme", 1, "append", "k1")


@pytest.mark.parametrize("role,need,ok", [("read", "read", True), ("read", "append", False),
                                          ("append", "append", True), ("append", "full", False),
                                          ("full", "full", True)])
def test_roles_are_ranked(role, need, ok):
    who = Principal(False, "acme", 1, role, "k")
    if ok:
        policy.require_role(who, "acme", need)
    else:
        with pytest.raises(E.Forbidden):
            policy.require_role(who, "acme", need)


def test_the_admin_has_every_role():
    policy.require_role(Principal(admin=True), "acme", "full")
    assert Principal(admin=True).effective_role == "full" and KEY.effective_role == "append"


def test_unknown_role_is_a_bad_request():
    with pytest.raises(E.BadRequest):
        policy.valid_role("owner")


def test_overwrite_rules_in_order():
    now = 10 * DAY
    policy.may_overwrite("v", True, 30, "k", None, "read", True, now)  # nothing there: always fine
    with pytest.raises(E.PreconditionFailed):
        policy.may_overwrite("v", True, 30, "k", now, "full", True, now)
    with pytest.raises(E.AppendOnly):
        policy.may_overwrite("v", True, 0, "k", 0.0, "full", False, now)
    with pytest.raises(E.Forbidden):
        policy.may_overwrite("v", False, 0, "k", 0.0, "append", False, now)
    with pytest.raises(E.RetentionLocked):
        policy.may_overwrite("v", False, 30, "k", now - 29 * DAY, "full", False, now)
    policy.may_overwrite("v", False, 30, "k", now - 31 * DAY, "full", False, now)


def test_delete_rules_and_the_ephemeral_exception():
    now = 100 * DAY
    with pytest.raises(E.AppendOnly):
        policy.may_delete("v", True, 0, "k", 0.0, now)
    with pytest.raises(E.RetentionLocked, match="until"):
        policy.may_delete("v", False, 7, "k", now - DAY, now)
    policy.may_delete("v", False, 7, "k", now - 8 * DAY, now)
    policy.may_delete("v", True, 7, "lock", now, now, ephemeral=True)


def test_a_locked_vault_cannot_be_deleted():
    for append_only, days in ((True, 0), (False, 1)):
        with pytest.raises(E.VaultLocked):
            policy.may_delete_vault("v", append_only, days)
    policy.may_delete_vault("v", False, 0)


def test_quota_counts_what_uploads_in_flight_hold():
    policy.check_quota("v", None, 10**15, 10**15, 10**15)
    policy.check_quota("v", 100, 60, 20, 20)
    with pytest.raises(E.QuotaExceeded, match="20 held by uploads in progress"):
        policy.check_quota("v", 100, 60, 20, 21)


def test_lock_weakened_only_when_a_lock_is_lowered():
    assert policy.lock_weakened({"append_only": True}, False, 0)
    assert policy.lock_weakened({"retention_days": 30}, False, 10)
    assert not policy.lock_weakened({"retention_days": 10}, False, 30)
    assert not policy.lock_weakened({"quota_bytes": 5}, True, 0)


@pytest.mark.parametrize("fields", [{"quota_bytes": -1}, {"quota_bytes": True}, {"quota_bytes": 1 << 62},
                                    {"append_only": 1}, {"retention_days": 36501}, {"retention_days": "1"}])
def test_vault_settings_refuse_bad_values(fields):
    with pytest.raises(E.BadRequest):
        VaultSettings(**fields)


def test_vault_settings_keep_only_what_was_given():
    assert VaultSettings(quota_bytes=None).given() == {"quota_bytes": None}
    assert VaultSettings().given() == {}
