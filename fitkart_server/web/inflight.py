"""A bound on the operations one caller's batches hold in each worker process, so they never take every thread.

Good writes are never limited by count (web/ratelimit.py), but a batch of FITKART_MAX_BATCH
operations holds a worker thread for seconds: eight of them at once would leave none for
anyone else. Each worker lets one caller's batches in flight hold at most FITKART_MAX_BATCH
operations together (one full batch, or many small ones: sixteen tabs of a shop sending
one change each are never held back); a batch past that is answered 429 with
`Retry-After: 1` at once, having done nothing. A caller's full batches then hold at most one
thread per worker process, whatever it sends.
"""

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager


class InFlight:
    """The operations of each caller's batches being applied in this process."""

    def __init__(self) -> None:
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextmanager
    def slot(self, caller: str, operations: int, most: int) -> Iterator[bool]:
        """Whether the caller may start a batch of `operations` now, its batches holding at most `most` in all (one
        batch is always let in alone); the operations are held until the block ends."""
        with self._lock:
            admitted = not self._held[caller] or self._held[caller] + operations <= most
            if admitted:
                self._held[caller] += operations
        try:
            yield admitted
        finally:
            if admitted:
                with self._lock:
                    self._held[caller] -= operations
                    if self._held[caller] <= 0:
                        del self._held[caller]
