"""``aws-chunked`` request bodies, decoded as they arrive.

The body is a run of chunks, each ``<hex size>[;chunk-signature=<sig>]\\r\\n
<data>\\r\\n``, closed by a chunk of size 0; the ``-TRAILER`` forms then carry
trailing headers (``x-amz-checksum-<alg>:<b64>``, and for the signed form
``x-amz-trailer-signature:<sig>``) and an empty line. For the signed forms
every chunk's signature chains from the previous one, the first from the
request's seed signature, and the trailer's from the last chunk's.

:class:`ChunkedBody` yields the decoded bytes in pieces of at most
``piece_bytes``, so no chunk is ever held whole. Bytes yielded are not yet
authenticated: a chunk's signature is checked once its last byte has been
read. The consumer must keep nothing unless iteration ends without an error.

Every length read is bounded: a chunk header line by :data:`MAX_LINE`, a
chunk by what ``x-amz-decoded-content-length`` still allows, the trailer by
:data:`MAX_TRAILER`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable

from .errors import S3Error
from .sigv4 import Payload, Signing

MAX_LINE = 1024  # a chunk header is ~90 bytes: 16 hex digits, the signature
MAX_TRAILER = 16 * 1024  # a checksum and a signature take ~150 bytes
MAX_HEX_DIGITS = 16
SIGNATURE_PREFIX = "chunk-signature="
TRAILER_SIGNATURE = "x-amz-trailer-signature"

Read = Callable[[int], Awaitable[bytes]]


class _Source:
    """A buffered reader over ``read(n)`` (up to n bytes, b"" at the end)."""

    def __init__(self, read: Read) -> None:
        self._read = read
        self._buf = bytearray()

    async def line(self, limit: int, too_long: str = "InvalidRequest") -> bytes:
        """The next CRLF-terminated line without its CRLF; IncompleteBody at
        the end, the error ``too_long`` beyond ``limit`` bytes."""
        while (end := self._buf.find(b"\r\n")) < 0 and len(self._buf) <= limit + 1:
            self._buf += await self._more(MAX_LINE)
        if not 0 <= end <= limit:
            raise S3Error(too_long, f"aws-chunked: a line is longer than {limit} bytes")
        line = bytes(self._buf[:end])
        del self._buf[:end + 2]
        return line

    async def upto(self, n: int) -> bytes:
        """Between 1 and ``n`` bytes; IncompleteBody at the end."""
        if not self._buf:
            return await self._more(n)
        piece = bytes(self._buf[:n])
        del self._buf[:n]
        return piece

    async def at_end(self) -> bool:
        """True when nothing is left to read."""
        if not self._buf:
            self._buf += await self._read(MAX_LINE)
        return not self._buf

    async def _more(self, n: int) -> bytes:
        data = await self._read(n)
        if not data:
            raise S3Error("IncompleteBody")
        return data


class ChunkedBody:
    """One ``aws-chunked`` body: iterate to get its decoded bytes, then read
    :attr:`trailers` (lower-case names, the trailer signature left out)."""

    def __init__(self, read: Read, payload: Payload, decoded_length: int, *,
                 signing: Signing | None = None, seed_signature: str = "",
                 trailer: str | None = None, piece_bytes: int = 1 << 20) -> None:
        """``read(n)`` returns up to n raw body bytes (b"" at its end);
        ``payload`` is the request's mode, ``decoded_length`` its
        ``x-amz-decoded-content-length``; the signed modes need ``signing``
        and ``seed_signature`` (from :func:`vault.s3.sigv4.authenticate`);
        ``trailer`` is the ``x-amz-trailer`` header, if any."""
        if not payload.streaming:
            raise ValueError(f"{payload.value} is not an aws-chunked payload")
        if payload.chunk_signed and signing is None:
            raise ValueError("a signed aws-chunked payload needs its signing key")
        self._source = _Source(read)
        self._payload = payload
        self._remaining = decoded_length
        self._signing = signing
        self._previous = seed_signature
        self._trailer = trailer.strip().lower() if trailer else None
        self._piece = piece_bytes
        self.trailers: dict[str, str] = {}

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._decode()

    async def _decode(self) -> AsyncIterator[bytes]:
        """Raises S3Error: SignatureDoesNotMatch, IncompleteBody, InvalidRequest,
        MalformedTrailerError."""
        while True:
            size, signature = self._chunk_header(await self._source.line(MAX_LINE))
            async for piece in self._chunk(size, signature):
                yield piece
            if size == 0:
                break
            if await self._source.line(0) != b"":
                raise S3Error("InvalidRequest", "aws-chunked: a chunk does not end with CRLF")
        if self._remaining:
            raise S3Error("IncompleteBody", f"the body is {self._remaining} bytes shorter than "
                          "x-amz-decoded-content-length")
        await self._read_trailers()

    async def _chunk(self, size: int, signature: str) -> AsyncIterator[bytes]:
        """The chunk's data in pieces; its signature checked after the last one."""
        digest = hashlib.sha256() if self._signing is not None else None
        left = size
        while left:
            piece = await self._source.upto(min(left, self._piece))
            if digest is not None:
                digest.update(piece)
            left -= len(piece)
            yield piece
        if self._signing is not None and digest is not None:
            expected = self._signing.chunk_signature(self._previous, digest.hexdigest())
            _check_signature(expected, signature, "a chunk")
            self._previous = expected

    def _chunk_header(self, line: bytes) -> tuple[int, str]:
        """(size, signature) of a chunk header; the size bounded by what is left."""
        size_text, _, extension = line.decode("latin-1").partition(";")
        if not 0 < len(size_text) <= MAX_HEX_DIGITS or size_text.strip("0123456789abcdefABCDEF"):
            raise S3Error("InvalidRequest", "aws-chunked: a chunk size is not a hexadecimal number")
        size = int(size_text, 16)
        if size > self._remaining:
            raise S3Error("InvalidRequest", "aws-chunked: the chunks exceed x-amz-decoded-content-length")
        self._remaining -= size
        if not self._payload.chunk_signed:
            return size, ""
        if not extension.startswith(SIGNATURE_PREFIX):
            raise S3Error("SignatureDoesNotMatch", "aws-chunked: a chunk has no chunk-signature")
        return size, extension[len(SIGNATURE_PREFIX):]

    async def _read_trailers(self) -> None:
        """The trailing headers up to the empty line (or the body's end)."""
        if not self._payload.trailer:
            if await self._source.line(0) != b"" or not await self._source.at_end():
                raise S3Error("InvalidRequest", "aws-chunked: data after the last chunk")
            return
        lines = await self._trailer_lines()
        signature = self._parse_trailers(lines)
        if self._signing is not None:
            canonical = "".join(f"{name}:{value}\n" for name, value in self.trailers.items())
            expected = self._signing.trailer_signature(self._previous, hashlib.sha256(canonical.encode()).hexdigest())
            _check_signature(expected, signature, "the trailer")

    async def _trailer_lines(self) -> list[str]:
        """Non-empty lines up to an empty line or the end. SDKs differ on an
        empty line between the last chunk and the trailer: one is skipped."""
        lines: list[str] = []
        budget = MAX_TRAILER
        while budget > 0 and not await self._source.at_end():
            line = (await self._source.line(budget, "MalformedTrailerError")).decode("latin-1")
            budget -= len(line) + 2
            if line:
                lines.append(line)
            elif lines:
                break
        if budget <= 0 or not await self._source.at_end():
            raise S3Error("MalformedTrailerError", "the trailer is too long or followed by data")
        return lines

    def _parse_trailers(self, lines: list[str]) -> str:
        """Fill :attr:`trailers` from the lines; returns the trailer signature
        (empty when unsigned). Only the announced trailer is accepted."""
        signature = ""
        for line in lines:
            name, colon, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            if not colon or name in self.trailers:
                raise S3Error("MalformedTrailerError", f"the trailer line {line[:64]!r} is not a header")
            if name == TRAILER_SIGNATURE and self._signing is not None:
                signature = value
            elif name == self._trailer:
                self.trailers[name] = value
            else:
                raise S3Error("MalformedTrailerError", f"the trailer {name!r} was not announced in x-amz-trailer")
        if self._trailer is not None and self._trailer not in self.trailers:
            raise S3Error("MalformedTrailerError", f"the announced trailer {self._trailer} is missing")
        if self._signing is not None and not signature:
            raise S3Error("SignatureDoesNotMatch", "the trailer has no x-amz-trailer-signature")
        return signature


def _check_signature(expected: str, provided: str, what: str) -> None:
    if not hmac.compare_digest(expected.encode(), provided.encode("latin-1")):
        raise S3Error("SignatureDoesNotMatch", f"aws-chunked: the signature of {what} does not match")
