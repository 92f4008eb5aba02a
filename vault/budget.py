"""One bound on the request bodies held in memory at once, across all requests.

Streamed bodies pass through in pieces of about 1 MiB and are not counted;
everything that is buffered whole (small chunks, batches, JSON documents and
what decoding them costs) takes its size from :class:`MemoryBudget` before it
is read and gives it back when its request ends. When the budget is spent a
request waits, in arrival order, for at most ``wait_seconds``, then gets
:class:`vault.errors.Unavailable` (503 with ``Retry-After``), so memory stays
bounded however many clients send large bodies together.
"""

from __future__ import annotations

import asyncio
import collections

from . import errors as E

RETRY_AFTER_SECONDS = 1


class MemoryBudget:
    """Bytes granted to requests, at most ``limit`` at once (event loop only)."""

    def __init__(self, limit: int, wait_seconds: float) -> None:
        self.limit = limit
        self.wait_seconds = wait_seconds
        self.used = 0
        self.peak = 0
        self.refused = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future]] = collections.deque()

    def clamp(self, nbytes: int) -> int:
        """What a request of ``nbytes`` takes: a body larger than the whole
        budget takes all of it, so it runs alone rather than never."""
        return max(0, min(nbytes, self.limit))

    async def acquire(self, nbytes: int) -> int:
        """Take ``nbytes`` (clamped); returns what was taken. Raises Unavailable
        after ``wait_seconds`` without room."""
        n = self.clamp(nbytes)
        if n == 0:
            return 0
        if not self._waiters and self.used + n <= self.limit:
            self._grant(n)
            return n
        fut = asyncio.get_running_loop().create_future()
        entry = (n, fut)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(self.wait_seconds):
                await fut
        except BaseException as e:
            if fut.done() and not fut.cancelled():
                self.release(n)  # granted just as the wait ended
            else:
                fut.cancel()
                try:
                    self._waiters.remove(entry)
                except ValueError:
                    pass
                self._wake()  # a large waiter leaving may let smaller ones in
            if isinstance(e, TimeoutError):
                self.refused += 1
                raise E.Unavailable(f"the server holds {self.used} bytes of request bodies (limit {self.limit}); "
                                    f"retry in {RETRY_AFTER_SECONDS} s",
                                    retry_after=RETRY_AFTER_SECONDS) from None
            raise
        return n

    def release(self, nbytes: int) -> None:
        if nbytes:
            self.used -= nbytes
            self._wake()

    def _grant(self, n: int) -> None:
        self.used += n
        self.peak = max(self.peak, self.used)

    def _wake(self) -> None:
        # First come, first served: a large body is not starved by small ones
        # slipping past it.
        while self._waiters and self.used + self._waiters[0][0] <= self.limit:
            n, fut = self._waiters.popleft()
            if not fut.done():
                self._grant(n)
                fut.set_result(None)
