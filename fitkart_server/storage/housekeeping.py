"""What the server deletes by itself: expired tombstones and rate-limit counters, and rejects past their age or cap.

Runs in a background thread of each process, at start and then every few minutes, so no
request waits for it. MongoDB also expires tombstones with a TTL index; FerretDB v1 has
none, and capped collections would forbid marking a reject as replayed (an update that
grows it), so rejects are trimmed here on every server: oldest first, down to 90% of
FITKART_REJECTS_MAX_MB, and anything older than FITKART_REJECTS_DAYS.
"""

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from pymongo.database import Database
from pymongo.errors import PyMongoError

from ..clock import utc_now
from ..model.documents import RATE_LIMITS, REJECTS, TOMBSTONES

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 300
TRIM_TO = 0.9  # of the cap, so a trim is not needed again at the next reject


@dataclass
class Housekeeper:
    """Purges one database now and then; `tick` is cheap enough to call on every use."""

    tombstone_days: int
    rejects_days: int
    rejects_max_bytes: int
    interval_seconds: float = INTERVAL_SECONDS

    def __post_init__(self) -> None:
        self._due_at = 0.0  # at once, on first use
        self._lock = threading.Lock()

    def tick(self, database: Database) -> None:
        """Start a purge in the background when one is due (one at a time per process)."""
        now = time.monotonic()
        if now < self._due_at or not self._lock.acquire(blocking=False):
            return
        self._due_at = now + self.interval_seconds
        threading.Thread(target=self._run_unlocking, args=(database,), name="fitkart-housekeeping",
                         daemon=True).start()

    def _run_unlocking(self, database: Database) -> None:
        try:
            self.run(database)
        except PyMongoError as error:  # the next tick tries again
            log.warning("Housekeeping failed: %s", error.__class__.__name__)
        finally:
            self._lock.release()

    def run(self, database: Database) -> dict[str, int]:
        """Purge now; how many tombstones and rejects went."""
        now = utc_now()
        tombstones = database[TOMBSTONES].delete_many(
            {"deleted_at": {"$lt": now - timedelta(days=self.tombstone_days)}}).deleted_count
        rejects = database[REJECTS]
        aged = rejects.delete_many({"at": {"$lt": now - timedelta(days=self.rejects_days)}}).deleted_count
        trimmed = self._trim(database)
        # The rate limiter's counters are kept only for their window (storage/limitstore.py).
        database[RATE_LIMITS].delete_many({"expire_at": {"$lte": now}})
        if tombstones or aged or trimmed:
            log.info("Housekeeping: %d expired tombstones, %d old and %d excess rejects deleted.",
                     tombstones, aged, trimmed)
        return {"tombstones": tombstones, "rejects_aged": aged, "rejects_trimmed": trimmed}

    def _trim(self, database: Database) -> int:
        """Delete the oldest rejects until the collection is under 90% of its cap; how many went."""
        rejects = database[REJECTS]
        stats = database.command("collStats", rejects.name)
        size, count = stats.get("size", 0), stats.get("count", 0)
        if size <= self.rejects_max_bytes or not count:
            return 0
        excess = size - int(self.rejects_max_bytes * TRIM_TO)
        oldest = -(-excess * count // size)  # how many average rejects make up the excess, rounded up
        boundary = list(rejects.find({}, {"at": 1}).sort([("at", 1), ("_id", 1)]).skip(oldest - 1).limit(1))
        if not boundary:
            return rejects.delete_many({}).deleted_count
        return rejects.delete_many({"at": {"$lte": boundary[0]["at"]}}).deleted_count
