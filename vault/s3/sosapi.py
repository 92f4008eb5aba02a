"""Veeam's Smart Object Storage API (SOSAPI): two documents under a reserved
folder of every bucket, generated on the fly.

``<bucket>/.system-d26a9498-cb7c-4a87-a44a-8ae204f5ba6c/system.xml`` says what
the storage can do and recommends a block size; ``.../capacity.xml`` gives the
vault's capacity, free and used bytes (:mod:`vault.services.capacity`). Veeam
reads them with GetObject/HeadObject like any object, signed by the
repository's key: any role may read them. Nothing is stored, so they are in
no listing, no usage and no replica.

The folder is the server's: every other method on the two documents, and
every write of any key in the folder (PUT, copy onto it, multipart upload,
DELETE), is refused with AccessDenied. Veeam never writes them; a client
that did would otherwise store an object no GET could reach. Reading a key
of the folder other than the two documents is an ordinary read (NoSuchKey).

The format follows the open implementations (MinIO, SeaweedFS, Scality);
Veeam gives the specification itself only to its partners.
"""

from __future__ import annotations

import hashlib
import time
from email.utils import formatdate
from xml.etree.ElementTree import Element, SubElement, tostring

from aiohttp import web

from ..http import parse_range
from ..services.capacity import vault_capacity
from .errors import S3Error
from .front import Call, Handler

FOLDER = ".system-d26a9498-cb7c-4a87-a44a-8ae204f5ba6c/"
SYSTEM = FOLDER + "system.xml"
CAPACITY = FOLDER + "capacity.xml"
PROTOCOL_VERSION = '"1.0"'  # the quotes are part of the value
MODEL_NAME = '"objvault"'
# Veeam's recommended block size for object storage (its "Local target
# (large blocks)", 4 MiB before compression): each Veeam block is one object,
# so larger blocks mean fewer PUTs and index entries per TiB, and a block of
# ~2 MiB after compression is stored as one chunk here (chunks go to 128 MiB).
KB_BLOCK_SIZE = 4096
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


def route(method: str, key: str, subresource: str) -> Handler | None:
    """The handler of a request for ``key`` when the folder is concerned;
    None for every other request (routed as usual)."""
    if not key.startswith(FOLDER):
        return None
    if key in (SYSTEM, CAPACITY):
        return get_document if method in ("GET", "HEAD") and not subresource else refuse
    return None if method in ("GET", "HEAD") else refuse


def system_document() -> bytes:
    root = Element("SystemInfo")
    _add(root, "ProtocolVersion", PROTOCOL_VERSION)
    _add(root, "ModelName", MODEL_NAME)
    caps = SubElement(root, "ProtocolCapabilities")
    for name, on in (("CapacityInfo", True), ("UploadSessions", False), ("IAMSTS", False)):
        _add(caps, name, "true" if on else "false")
    _add(SubElement(root, "SystemRecommendations"), "KbBlockSize", str(KB_BLOCK_SIZE))
    return _DECLARATION + tostring(root)


def capacity_document(capacity: int, available: int, used: int) -> bytes:
    root = Element("CapacityInfo")
    for name, value in (("Capacity", capacity), ("Available", available), ("Used", used)):
        _add(root, name, str(value))
    return _DECLARATION + tostring(root)


def _add(parent: Element, tag: str, text: str) -> None:
    SubElement(parent, tag).text = text


async def get_document(call: Call) -> web.StreamResponse:
    """GetObject/HeadObject of a document (Range served as for objects)."""
    where = call.services.buckets.target(call.who, call.bucket, "read")
    if call.key == SYSTEM:
        body = system_document()
    else:
        room = vault_capacity(call.services.vaults, call.services.chunks, where.vault)
        body = capacity_document(room.capacity, room.available, room.used)
    headers = {"ETag": f'"{hashlib.md5(body).hexdigest()}"', "Accept-Ranges": "bytes",
               "Last-Modified": formatdate(int(time.time()), usegmt=True), "Content-Type": "application/xml"}
    status, rng = 200, parse_range(call.headers.get("Range"), len(body))
    if rng is not None:
        status = 206
        headers["Content-Range"] = f"bytes {rng[0]}-{rng[1] - 1}/{len(body)}"
        body = body[rng[0]:rng[1]]
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_length = len(body)
    await resp.prepare(call.request)
    if call.request.method == "GET":
        await resp.write(body)
    await resp.write_eof()
    return resp


async def refuse(call: Call) -> web.StreamResponse:
    call.services.buckets.target(call.who, call.bucket, "read")
    raise S3Error("AccessDenied", f"{FOLDER} is the server's (Veeam SOSAPI): its documents are generated, "
                  "only GET and HEAD are served", resource=f"/{call.bucket}/{call.key}")
