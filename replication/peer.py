"""Another objvault as a target (``kind = "objvault"``), through its HTTP API.

Each vault goes to the same-named vault on the peer, created there if missing
(``POST /v1/vaults`` with the peer's admin ``token``). Before chunks travel
the worker asks the peer which of them it lacks (``POST chunks/missing``, up
to :attr:`PeerReplica.chunk_batch` ids at a time), so only absent chunks are
sent; an object whose chunks the peer lacks (409 ``missing_chunks``) gets them
sent and is put again.

What the peer does differently from a bucket:

* chunk deletes are not sent: the peer counts references itself and its own
  GC removes chunks no object needs any more;
* the vault's ``append_only`` and ``retention_days`` are copied; its
  ``quota_bytes`` is not (a replica holds more than the primary while deletes
  wait out ``delete_delay_seconds``);
* a delete the peer refuses because its vault is locked (403 ``append_only`` or
  ``retention``, 409 ``vault_locked``) is logged and not retried: the peer's
  own policy decides.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from datetime import datetime
from typing import Any, Callable, Iterable
from urllib.parse import quote

import aiohttp
from yarl import URL

from vault.config import TargetConfig
from vault.workers import Backoff

from .target import ChunkLoader, LayoutError, Manifest, Skip, TargetError

log = logging.getLogger("objvault.replication")

ATTEMPTS = 3
REQUEST_RETRY = Backoff(base=0.2, factor=3.0, cap=10.0)
"""Between attempts of one request; the outbox worker retries behind that."""
KNOWN_MAX = 1_000_000


def _ts(s: str | None) -> float:
    if not s:
        return 0.0
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


class PeerReplica:
    """A replica on another objvault server."""

    chunk_batch = 1000

    def __init__(self, cfg: TargetConfig) -> None:
        self.name = cfg.name
        self.kind = "objvault"
        self.base = cfg.url.rstrip("/")
        self.token = cfg.token
        self.concurrency = max(1, cfg.concurrency)
        self._session: aiohttp.ClientSession | None = None
        self._known: dict[str, set[bytes]] = {}

    def _url(self, path: str) -> URL:
        return URL(self.base + path, encoded=True)

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300),
                connector=aiohttp.TCPConnector(limit=self.concurrency * 2 + 4))
        return self._session

    async def _req(self, method: str, path: str, *, body: Any = None, data: bytes | None = None
                   ) -> tuple[int, Any, bytes]:
        """One request, retried on transport errors and 5xx; returns (status, json-or-None, raw)."""
        s = await self._http()
        last: Exception | None = None
        for attempt in range(ATTEMPTS):
            try:
                kw: dict[str, Any] = {}
                if body is not None:
                    kw["data"] = json.dumps(body).encode()
                    kw["headers"] = {"Content-Type": "application/json"}
                elif data is not None:
                    kw["data"] = data
                    kw["headers"] = {"Content-Type": "application/octet-stream"}
                async with s.request(method, self._url(path), **kw) as r:
                    raw = await r.read()
                    doc = None
                    if r.content_type in ("application/json", "application/problem+json") and raw:
                        doc = json.loads(raw)
                    if r.status >= 500 and r.status != 507:
                        last = TargetError(f"target {self.name!r}: {method} {path}: {r.status} "
                                           f"{(doc or {}).get('detail', raw[:200])}")
                    else:
                        return r.status, doc, raw
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
                last = TargetError(f"target {self.name!r}: {method} {path}: {type(e).__name__}: {e}")
            if attempt < ATTEMPTS - 1:
                await asyncio.sleep(REQUEST_RETRY.delay(attempt))
        assert last is not None
        raise last

    def _fail(self, method: str, path: str, status: int, doc: Any) -> TargetError:
        doc = doc or {}
        return TargetError(f"target {self.name!r}: {method} {path}: {status} {doc.get('code', '')}: "
                           f"{doc.get('detail', '')}")

    @staticmethod
    def _v(vault: str) -> str:
        return "/v1/vaults/" + quote(vault, safe="")

    def _o(self, vault: str, key: str) -> str:
        return self._v(vault) + "/objects/" + quote(key, safe="/")

    # -- Replica ----------------------------------------------------------------------

    async def open(self) -> None:
        status, doc, _ = await self._req("GET", "/v1/vaults")
        if status in (401, 403):
            raise LayoutError(f"target {self.name!r}: the peer refuses the configured token ({status})")
        if status != 200:
            raise self._fail("GET", "/v1/vaults", status, doc)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _ensure_vault(self, vault: str, doc: dict | None = None) -> None:
        fields = {}
        if doc is not None:
            fields = {k: doc[k] for k in ("append_only", "retention_days") if k in doc}
        status, body, _ = await self._req("POST", "/v1/vaults", body={"name": vault, **fields})
        if status == 201:
            return
        if status == 409 and (body or {}).get("code") == "vault_exists":
            if fields:
                status, body, _ = await self._req("PATCH", self._v(vault), body=fields)
                if status != 200:
                    raise self._fail("PATCH", self._v(vault), status, body)
            return
        raise self._fail("POST", "/v1/vaults", status, body)

    async def put_vault(self, vault: str, doc: dict) -> None:
        await self._ensure_vault(vault, doc)

    async def get_vault(self, vault: str) -> dict | None:
        status, doc, _ = await self._req("GET", self._v(vault))
        if status == 404:
            return None
        if status != 200:
            raise self._fail("GET", self._v(vault), status, doc)
        return {"name": doc["name"], "created": _ts(doc.get("created")), "quota_bytes": doc.get("quota_bytes"),
                "append_only": doc.get("append_only", False), "retention_days": doc.get("retention_days", 0)}

    async def list_vaults(self) -> list[str]:
        status, doc, _ = await self._req("GET", "/v1/vaults")
        if status != 200:
            raise self._fail("GET", "/v1/vaults", status, doc)
        return sorted(v["name"] for v in doc["vaults"])

    async def prepare(self, vault: str, digests: list[bytes]) -> None:
        path = self._v(vault) + "/chunks/missing"
        status, doc, _ = await self._req("POST", path, body={"ids": [d.hex() for d in digests]})
        if status == 404:
            return
        if status != 200:
            raise self._fail("POST", path, status, doc)
        missing = {bytes.fromhex(h) for h in doc["missing"]}
        known = self._known.setdefault(vault, set())
        if len(known) > KNOWN_MAX:
            known.clear()
        known.update(d for d in digests if d not in missing)

    async def put_chunk(self, vault: str, digest: bytes, data: bytes | None, load: ChunkLoader) -> bool:
        known = self._known.get(vault)
        if known is not None and digest in known:
            return False
        if data is None:
            data = await load(digest)
            if data is None:
                raise Skip(f"vault {vault!r}: chunk {digest.hex()} is gone")
        path = f"{self._v(vault)}/chunks/{digest.hex()}"
        for _ in range(2):
            status, doc, _ = await self._req("PUT", path, data=data)
            if status in (200, 201):
                return True
            if status == 404 and (doc or {}).get("code") == "no_such_vault":
                await self._ensure_vault(vault)
                continue
            raise self._fail("PUT", path, status, doc)
        raise TargetError(f"target {self.name!r}: PUT {path}: the vault keeps disappearing")

    async def get_chunk(self, vault: str, digest: bytes) -> bytes | None:
        path = f"{self._v(vault)}/chunks/{digest.hex()}"
        status, doc, raw = await self._req("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise self._fail("GET", path, status, doc)
        return raw

    async def delete_chunk(self, vault: str, digest: bytes) -> None:
        # The peer's own refcounts and GC decide when a chunk goes.
        return None

    async def put_object(self, vault: str, m: Manifest, load: ChunkLoader) -> None:
        path = self._o(vault, m.key)
        body = {"chunks": [c.hex() for c in m.chunks], "meta": base64.b64encode(m.meta).decode()}
        for _ in range(4):
            status, doc, _ = await self._req("PUT", path, body=body)
            if status == 201:
                return
            code = (doc or {}).get("code")
            if status == 404 and code == "no_such_vault":
                await self._ensure_vault(vault)
                continue
            if status == 409 and code == "missing_chunks":
                missing = [bytes.fromhex(h) for h in doc.get("missing", [])]
                known = self._known.get(vault)
                if known is not None:
                    known.difference_update(missing)
                sem = asyncio.Semaphore(4)

                async def send(d: bytes) -> None:
                    async with sem:
                        await self.put_chunk(vault, d, None, load)
                await asyncio.gather(*(send(d) for d in missing))
                continue
            raise self._fail("PUT", path, status, doc)
        raise TargetError(f"target {self.name!r}: PUT {path}: still refused after sending its chunks")

    async def delete_object(self, vault: str, key: str) -> None:
        path = self._o(vault, key)
        status, doc, _ = await self._req("DELETE", path)
        if status in (204, 404):
            return
        code = (doc or {}).get("code")
        if status == 403 and code in ("append_only", "retention"):
            log.warning("the peer keeps an object: its vault is locked",
                        extra={"target": self.name, "vault": vault, "key": key, "code": code})
            return
        raise self._fail("DELETE", path, status, doc)

    async def object_handles(self, vault: str) -> list[str]:
        keys: list[str] = []
        after = ""
        while True:
            path = f"{self._v(vault)}/objects?limit=10000"
            if after:
                path += "&start_after=" + quote(after, safe="")
            status, doc, _ = await self._req("GET", path)
            if status == 404:
                return keys
            if status != 200:
                raise self._fail("GET", path, status, doc)
            keys.extend(o["key"] for o in doc["objects"])
            if not doc.get("next"):
                return keys
            after = doc["next"]

    async def get_object(self, vault: str, handle: str) -> Manifest | None:
        path = self._o(vault, handle)
        status, doc, _ = await self._req("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise self._fail("GET", path, status, doc)
        return Manifest(doc["key"], _ts(doc.get("created")), doc["size"], [bytes.fromhex(c) for c in doc["chunks"]],
                        base64.b64decode(doc.get("meta") or ""))

    async def purge_vault(self, vault: str, keep_object: Callable[[str], bool] | None,
                          keep_chunks: Callable[[], Iterable[bytes]] | None) -> None:
        if keep_chunks is None:
            path = self._v(vault)
            status, doc, _ = await self._req("DELETE", path)
            if status in (204, 404):
                return
            if status == 409 and (doc or {}).get("code") == "vault_locked":
                log.warning("the peer keeps a deleted vault: it is locked there",
                            extra={"target": self.name, "vault": vault})
                return
            raise self._fail("DELETE", path, status, doc)
        for key in await self.object_handles(vault):
            if keep_object is None or not keep_object(key):
                await self.delete_object(vault, key)
