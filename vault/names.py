"""Validation of every name a client sends: vaults, chunk ids, object keys.

Percent-decoding is done exactly once, by :func:`decode_path_segment`,
before validation and before authorization; nothing decodes again later.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote_to_bytes

from .errors import BadName

# Matched with fullmatch: "$" would also accept a trailing newline.
VAULT_RE = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
CHUNK_RE = re.compile(r"[0-9a-f]{64}")
MAX_KEY_BYTES = 1024


def vault_name(name: str) -> str:
    if not VAULT_RE.fullmatch(name):
        raise BadName(f"invalid vault name {name!r}: 3-63 chars of a-z, 0-9 and '-', "
                      "starting and ending with a letter or digit")
    return name


def chunk_id(cid: str) -> bytes:
    """Validate a hex chunk id and return its 32 raw bytes."""
    if not CHUNK_RE.fullmatch(cid):
        raise BadName(f"invalid chunk id {cid[:80]!r}: expected 64 lowercase hex characters")
    return bytes.fromhex(cid)


def decode_path_segment(raw: str) -> str:
    """Percent-decode ``raw`` once into UTF-8 text; invalid UTF-8 is a bad name."""
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise BadName("name is not valid UTF-8") from None


# Unicode's category Cc: exactly these code points.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def has_control(text: str) -> bool:
    """Whether ``text`` holds a control character (C0, DEL, C1): no key may
    (an XML 1.0 listing cannot carry most of them; a version's name uses NUL
    as its separator)."""
    return _CONTROL.search(text) is not None


def object_key(key: str) -> str:
    """Validate an (already decoded) object key and return it."""
    raw = key.encode("utf-8", "surrogatepass")
    if not 1 <= len(raw) <= MAX_KEY_BYTES:
        raise BadName(f"object key must be 1-{MAX_KEY_BYTES} bytes of UTF-8")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise BadName("object key is not valid UTF-8") from None
    if unicodedata.normalize("NFC", key) != key:
        raise BadName("object key must be in Unicode NFC")
    if has_control(key):
        raise BadName("object key must not contain control characters")
    if key.startswith("/"):
        raise BadName("object key must not start with '/'")
    for seg in key.split("/"):
        if seg in ("", ".", ".."):
            raise BadName("object key must not contain empty, '.' or '..' segments")
    return key
