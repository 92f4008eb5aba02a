"""Authentication and keys: who is calling, and may they act on this vault."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass

from .. import errors as E
from .. import policy
from ..events import Event, KeyChanged, VaultDeleted, VaultPut
from ..meta import Index, KeyRec, Txn, VaultRec
from ..policy import Principal
from ..secretbox import SealedSecretError, SecretBox
from ..timefmt import iso
from ..meta import audit as A
from .vaults import CACHE_ENTRIES, VaultsService, audited, vault_in

log = logging.getLogger("objvault")

KEY_PREFIX = "ovk_"
MAX_LABEL_CHARS = 256
# An S3 access key id is this and the key's id in upper case: the key record
# is found from it without an index of its own.
S3_ACCESS_PREFIX = "OVK"

_SHA256 = hashlib.sha256()


def secret_hash(secret: str) -> bytes:
    h = _SHA256.copy()  # copying a template skips OpenSSL's per-call algorithm lookup
    h.update(secret.encode("utf-8", "surrogatepass"))  # short: hashed without releasing the GIL
    return h.digest()


@dataclass(frozen=True)
class S3Credentials:
    access_key_id: str
    secret_access_key: str


@dataclass(frozen=True)
class NewKey:
    """A key just created: the only time its secrets are seen."""

    id: str
    secret: str
    role: str
    label: str
    created: str
    s3: S3Credentials


def s3_access_key_id(key_id: str) -> str:
    return S3_ACCESS_PREFIX + key_id.upper()


class AuthService:
    def __init__(self, index: Index, vaults: VaultsService, admin_token: str | None, box: SecretBox) -> None:
        self.index = index
        self.vaults = vaults
        self.box = box
        self.admin_hash = secret_hash(admin_token) if admin_token else None
        # A read-through cache of the key records, cleared like the vaults'
        # one, so a revoked key fails on the next request. Secrets are still
        # compared (constant time) on every call.
        self._keys: dict[str, KeyRec] = {}

    def invalidate_caches_on(self, txn: Txn, event: Event) -> None:
        """The index's event hook that keeps the key cache true."""
        if isinstance(event, (VaultPut, VaultDeleted, KeyChanged)):
            txn.after.append(self._keys.clear)

    def authenticate(self, secret: str | None) -> Principal:
        """Map a presented secret to a principal; raise Unauthorized otherwise."""
        if not secret:
            raise E.Unauthorized("credentials required")
        digest = secret_hash(secret)
        if self.admin_hash is not None and hmac.compare_digest(digest, self.admin_hash):
            return Principal(admin=True)
        if secret.startswith(KEY_PREFIX):
            key_id = secret[len(KEY_PREFIX):].split("_", 1)[0]
            rec = self._key(key_id)
            if rec is not None and hmac.compare_digest(digest, rec.hash):
                return Principal(False, rec.vault, rec.vid, rec.role, key_id)
        raise E.Unauthorized("invalid credentials")

    def still_valid(self, who: Principal) -> bool:
        """False once the key ``who`` authenticated with is revoked or its vault
        replaced; sessions that keep a principal ask on every request."""
        if who.admin:
            return True
        rec = self._key(who.key_id)
        return rec is not None and rec.vid == who.vid and rec.role == who.role

    def _key(self, key_id: str) -> KeyRec | None:
        rec = self._keys.get(key_id)
        if rec is None and key_id.isalnum():
            rec = self.index.key(key_id)
            if rec is not None and len(self._keys) < CACHE_ENTRIES:
                self._keys[key_id] = rec
        return rec

    def s3_secret(self, access_key_id: str) -> tuple[str, Principal] | None:
        """The S3 secret of ``access_key_id`` and the principal it signs as;
        None for an unknown, revoked or pre-S3 key. Asked on every request, so
        a revoked key fails on the next one."""
        if not access_key_id.startswith(S3_ACCESS_PREFIX):
            return None
        key_id = access_key_id[len(S3_ACCESS_PREFIX):].lower()
        rec = self._key(key_id)
        if rec is None or not rec.s3_sealed or s3_access_key_id(key_id) != access_key_id:
            return None
        try:
            secret = self.box.open(access_key_id, rec.s3_sealed)
        except SealedSecretError:
            log.error("S3 secret does not open under the master key", extra={"key": key_id})
            return None
        return secret, Principal(False, rec.vault, rec.vid, rec.role, key_id)

    def vault_for(self, who: Principal, name: str, role: str = "read") -> VaultRec:
        """The vault ``name`` if ``who`` may act on it with ``role``.

        A key of another vault gets exactly what a missing vault gets (404),
        so keys cannot probe for other tenants.
        """
        rec = self.vaults.get(name)
        if not who.admin and (who.vault != name or who.vid != rec.vid):
            raise E.NoSuchVault(f"no such vault {name!r}")
        policy.require_role(who, name, role)
        return rec

    async def create_key(self, name: str, role: object, label: object, who: Principal) -> NewKey:
        """``role`` and ``label`` as the client sent them: checked here (BadRequest)."""
        role = policy.valid_role(role)
        if not isinstance(label, str) or len(label) > MAX_LABEL_CHARS:
            raise E.BadRequest(f"label must be a string of at most {MAX_LABEL_CHARS} characters")
        key_id = secrets.token_hex(8)
        secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        s3 = S3Credentials(s3_access_key_id(key_id), secrets.token_urlsafe(30))
        sealed = self.box.seal(s3.access_key_id, s3.secret_access_key)

        def op(txn: Txn) -> KeyRec:
            rec = vault_in(txn, name)
            key = KeyRec(key_id, name, rec.vid, role, label, iso(txn.now), secret_hash(secret), sealed)
            txn.put_key(key)
            txn.emit(KeyChanged(name))
            audited(txn, who, A.KEY_CREATED, name, key=key_id, role=role)
            return key

        key = await self.index.run(op)
        return NewKey(key_id, secret, role, key.label, key.created, s3)

    def list_keys(self, rec: VaultRec) -> list[KeyRec]:
        return sorted((k for k in self.index.keys() if k.vid == rec.vid), key=lambda k: (k.created, k.id))

    async def revoke_key(self, name: str, key_id: str, who: Principal) -> None:
        def op(txn: Txn) -> None:
            key = txn.key(key_id) if key_id.isalnum() else None
            if key is None or key.vault != name:
                raise E.NoSuchKey(f"vault {name!r}: no such key {key_id!r}")
            txn.delete_key(key_id)
            txn.emit(KeyChanged(name))
            audited(txn, who, A.KEY_REVOKED, name, key=key_id)

        await self.index.run(op)
