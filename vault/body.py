"""One request body abstraction for every front door.

A body has a known length and arrives buffered (a whole ``bytes``), streamed
(pieces read from the socket as they come) or spliced (the socket handed to
the store, which moves the bytes into a segment without copying them through
Python). Front doors build a :class:`Body`; the chunk service decides which
way to take it, verifies it against its id and stores it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from . import errors as E

# A body already in memory is handed over in pieces of this size when it is streamed.
PIECE_BYTES = 1 << 20


@dataclass
class Body:
    """``length`` bytes: ``read(n)`` returns exactly n of them (Truncated
    otherwise), ``pieces()`` yields them as they arrive; ``splice``, when the
    front door can offer it, moves them from the socket into a segment."""

    length: int
    read: Callable[[int], Awaitable[bytes | bytearray | memoryview]]
    pieces: Callable[[], AsyncIterator[bytes | bytearray | memoryview]]
    splice: Any = None

    @classmethod
    def of_bytes(cls, data: bytes | bytearray | memoryview) -> "Body":
        """A body already in memory (a batch member, a small restic config)."""

        async def read(n: int) -> bytes | bytearray | memoryview:
            if n != len(data):
                raise E.Truncated(f"got {len(data)} of {n} bytes")
            return data

        async def pieces() -> AsyncIterator[bytes | bytearray | memoryview]:
            for i in range(0, len(data), PIECE_BYTES):
                yield data[i:i + PIECE_BYTES]

        return cls(len(data), read, pieces)
