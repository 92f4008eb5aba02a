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
from ..timefmt import iso
from .vaults import CACHE_ENTRIES, VaultsService, vault_in

audit = logging.getLogger("objvault.audit")

KEY_PREFIX = "ovk_"
MAX_LABEL_CHARS = 256

_SHA256 = hashlib.sha256()


def secret_hash(secret: str) -> bytes:
    h = _SHA256.copy()  # copying a template skips OpenSSL's per-call algorithm lookup
    h.update(secret.encode("utf-8", "surrogatepass"))  # short: hashed without releasing the GIL
    return h.digest()


@dataclass(frozen=True)
class NewKey:
    """A key just created: the only time its secret is seen."""

    id: str
    secret: str
    role: str
    label: str
    created: str


class AuthService:
    def __init__(self, index: Index, vaults: VaultsService, admin_token: str | None) -> None:
        self.index = index
        self.vaults = vaults
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
            rec = self._keys.get(key_id)
            if rec is None and key_id.isalnum():
                rec = self.index.key(key_id)
                if rec is not None and len(self._keys) < CACHE_ENTRIES:
                    self._keys[key_id] = rec
            if rec is not None and hmac.compare_digest(digest, rec.hash):
                return Principal(False, rec.vault, rec.vid, rec.role, key_id)
        raise E.Unauthorized("invalid credentials")

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

        def op(txn: Txn) -> KeyRec:
            rec = vault_in(txn, name)
            key = KeyRec(key_id, name, rec.vid, role, label, iso(txn.now), secret_hash(secret))
            txn.put_key(key)
            txn.emit(KeyChanged(name))
            return key

        key = await self.index.run(op)
        audit.info("key created", extra={"who": who.who, "vault": name, "key": key_id, "role": role})
        return NewKey(key_id, secret, role, key.label, key.created)

    def list_keys(self, rec: VaultRec) -> list[KeyRec]:
        return sorted((k for k in self.index.keys() if k.vid == rec.vid), key=lambda k: (k.created, k.id))

    async def revoke_key(self, name: str, key_id: str, who: Principal) -> None:
        def op(txn: Txn) -> None:
            key = txn.key(key_id) if key_id.isalnum() else None
            if key is None or key.vault != name:
                raise E.NoSuchKey(f"vault {name!r}: no such key {key_id!r}")
            txn.delete_key(key_id)
            txn.emit(KeyChanged(name))

        await self.index.run(op)
        audit.info("key revoked", extra={"who": who.who, "vault": name, "key": key_id})
