"""ACL documents, Object Ownership controls and key characters through S3,
against a real server: a vault's ACL can only name the vault itself, and
what it refuses tells nothing about other vaults."""

from __future__ import annotations

import pytest

from tests.gchelpers import GC_ENV
from tests.s3tenant import Tenant, bucket, code_of, tenant, unchanged  # noqa: F401
from tests.server import Server


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("s3acl"), env=GC_ENV).start()
    yield s
    s.stop()


def _policy(owner: str, *grants: dict) -> dict:
    return {"Owner": {"ID": owner, "DisplayName": owner}, "Grants": list(grants)}


def _owner_full(owner: str) -> dict:
    return {"Grantee": {"ID": owner, "Type": "CanonicalUser"}, "Permission": "FULL_CONTROL"}


def test_an_acl_document_that_keeps_the_vault_private_is_accepted(tenant, bucket):
    s3 = tenant.client()
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    s3.put_bucket_acl(Bucket=bucket, AccessControlPolicy=_policy(tenant.vault, _owner_full(tenant.vault)))
    s3.put_object_acl(Bucket=bucket, Key="k", AccessControlPolicy=_policy(tenant.vault, _owner_full(tenant.vault)))
    grants = s3.get_bucket_acl(Bucket=bucket)["Grants"]
    assert grants == [{"Grantee": {"ID": tenant.vault, "DisplayName": tenant.vault, "Type": "CanonicalUser"},
                       "Permission": "FULL_CONTROL"}]


def test_an_acl_document_that_lets_anyone_else_in_is_refused(srv, tenant, bucket):
    s3, me = tenant.client(), tenant.vault
    other = Tenant(srv).vault  # an existing vault: refused exactly as a name no vault has
    for grantee in (other, "no-such-vault-anywhere"):
        grant = {"Grantee": {"ID": grantee, "Type": "CanonicalUser"}, "Permission": "READ"}
        assert code_of(lambda: s3.put_bucket_acl(Bucket=bucket, AccessControlPolicy=_policy(
            me, _owner_full(me), grant))) == (400, "InvalidArgument")
    everyone = {"Grantee": {"URI": "http://acs.amazonaws.com/groups/global/AllUsers", "Type": "Group"},
                "Permission": "READ"}
    assert code_of(lambda: s3.put_bucket_acl(Bucket=bucket, AccessControlPolicy=_policy(
        me, _owner_full(me), everyone))) == (403, "AccessDenied")
    by_email = {"Grantee": {"EmailAddress": "someone@example.com", "Type": "AmazonCustomerByEmail"},
                "Permission": "READ"}
    assert code_of(lambda: s3.put_bucket_acl(Bucket=bucket, AccessControlPolicy=_policy(
        me, _owner_full(me), by_email))) == (400, "UnresolvableGrantByEmailAddress")
    # the vault cannot give up its own full control
    read_only = {"Grantee": {"ID": me, "Type": "CanonicalUser"}, "Permission": "READ"}
    assert code_of(lambda: s3.put_bucket_acl(Bucket=bucket, AccessControlPolicy=_policy(me, read_only))) == \
        (501, "NotImplemented")
    # an append key may not change ACLs at all
    assert code_of(lambda: tenant.client("append").put_bucket_acl(
        Bucket=bucket, AccessControlPolicy=_policy(me, _owner_full(me))))[0] == 403


def test_ownership_controls_are_kept_and_answered(tenant):
    s3 = tenant.client()
    name = f"own-{tenant.vault}"
    s3.create_bucket(Bucket=name, ObjectOwnership="ObjectWriter")
    assert s3.get_bucket_ownership_controls(Bucket=name)["OwnershipControls"]["Rules"] == \
        [{"ObjectOwnership": "ObjectWriter"}]
    s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls={"Rules": [
        {"ObjectOwnership": "BucketOwnerEnforced"}]})
    assert s3.get_bucket_ownership_controls(Bucket=name)["OwnershipControls"]["Rules"] == \
        [{"ObjectOwnership": "BucketOwnerEnforced"}]
    s3.delete_bucket_ownership_controls(Bucket=name)
    assert code_of(lambda: s3.get_bucket_ownership_controls(Bucket=name)) == \
        (404, "OwnershipControlsNotFoundError")
    assert code_of(lambda: s3.create_bucket(Bucket=name + "-x", ObjectOwnership="Anyone")) == \
        (400, "InvalidArgument")
    assert code_of(lambda: s3.head_bucket(Bucket=name + "-x"))[0] == 404  # nothing created
    assert code_of(lambda: tenant.client("append").put_bucket_ownership_controls(
        Bucket=name, OwnershipControls={"Rules": [{"ObjectOwnership": "ObjectWriter"}]}))[0] == 403


@pytest.mark.parametrize("key", ["a\x01b", "tab\there", "nul\x00", "del\x7f", "c1\u008a-"])
def test_a_key_with_control_characters_is_refused(tenant, bucket, unchanged, key):
    s3 = tenant.client()
    assert code_of(lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"x")) == (400, "InvalidURI")
    assert code_of(lambda: s3.get_object(Bucket=bucket, Key=key)) == (400, "InvalidURI")
