"""One batch at a time per caller in each worker process, so one caller's batches never take every thread.

Good writes are never limited by count (web/ratelimit.py), but a batch of FITKART_MAX_BATCH
operations holds a worker thread for seconds: eight of them at once would leave none for
anyone else. Each worker applies one batch of a caller at a time; another that arrives
meanwhile is answered 429 with `Retry-After: 1` at once, having done nothing. A caller then
holds at most one thread per worker process, whatever it sends.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class InFlight:
    """The callers with a batch being applied in this process."""

    def __init__(self) -> None:
        self._busy: set[str] = set()
        self._lock = threading.Lock()

    @contextmanager
    def slot(self, caller: str) -> Iterator[bool]:
        """Whether the caller may start a batch now (then its slot is held until the block ends)."""
        with self._lock:
            admitted = caller not in self._busy
            self._busy.add(caller)
        try:
            yield admitted
        finally:
            if admitted:
                with self._lock:
                    self._busy.discard(caller)
