"""A follower's slot read from PostgreSQL as it stands now, also while the follower is stopped: the WAL kept for
it and how old its oldest unconfirmed change is (for `stats` and the status page)."""

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import errors

from ..clock import utc_now
from .follow import TABLES, slot_warnings
from .wal import WalSetupError, WalSlot

# A reading waits at most this long to connect, and as long again for each query (the peek decodes WAL).
READ_TIMEOUT_SECONDS = 3
# How long the status page shows one reading before taking another (it refreshes every few seconds).
WATCH_SECONDS = 30.0


@dataclass
class SlotReading:
    """One slot as PostgreSQL saw it at `read_at`; `problem` says why it could not be read (the rest is then 0)."""

    slot: str
    read_at: datetime = field(default_factory=utc_now)
    found: bool = False
    position: str | None = None
    lag_bytes: int = 0  # WAL written after the confirmed position
    retained_bytes: int = 0  # WAL PostgreSQL keeps for the slot (from its restart position)
    wal_status: str | None = None
    oldest_pending_at: datetime | None = None  # commit time of the oldest unconfirmed change of the six tables
    pending_unknown: str | None = None  # why that time is not known
    problem: str | None = None
    taken: float = field(default_factory=time.monotonic)

    def pending_seconds(self) -> float:
        """How old the oldest unconfirmed change was when read (0: none)."""
        if self.oldest_pending_at is None:
            return 0.0
        return max(0.0, (self.read_at - self.oldest_pending_at).total_seconds())

    def summary(self) -> str:
        """One line, as `stats` prints it."""
        if self.problem:
            return f"unknown ({self.problem})"
        if not self.found:
            return "no such slot in PostgreSQL"
        if self.pending_unknown:
            oldest = f"oldest unconfirmed change: unknown ({self.pending_unknown})"
        elif self.oldest_pending_at is None:
            oldest = "no unconfirmed change"
        else:
            oldest = f"oldest unconfirmed change {self.pending_seconds():,.0f} s old"
        return (f"at {self.position}, {self.lag_bytes:,} bytes behind, WAL kept {self.retained_bytes:,} bytes, "
                f"{oldest}{', WAL lost' if self.wal_status == 'lost' else ''}")


def read_slot(url: str, name: str) -> SlotReading:
    """The slot `name` as PostgreSQL sees it now; every failure is told in the reading, none raised."""
    reading = SlotReading(name)
    try:
        slot = WalSlot(url, TABLES, name, connect_timeout=READ_TIMEOUT_SECONDS)
    except WalSetupError as error:
        reading.problem = str(error)
        return reading
    try:
        slot.connection.execute(f"SET statement_timeout = {READ_TIMEOUT_SECONDS * 1000}")
        position, reading.lag_bytes, reading.retained_bytes = slot.measure()
        active, reading.wal_status = slot.standing()
        reading.found, reading.position = position is not None, position
        if not reading.found:
            return reading
        if active:
            reading.pending_unknown = "the follower is reading the slot: its own lag is shown"
        elif reading.wal_status == "lost":
            reading.pending_unknown = "the slot is lost: `flask fitkart follow --resync`"
        else:
            reading.oldest_pending_at = slot.oldest_pending()
    except errors.ObjectInUse:
        reading.pending_unknown = "the follower is reading the slot: its own lag is shown"
    except errors.QueryCanceled:
        reading.pending_unknown = f"not found within {READ_TIMEOUT_SECONDS} s of decoding"
    except psycopg.Error as error:
        reading.problem = f"PostgreSQL failed: {error.__class__.__name__}: {str(error).strip()[:200]}"
    finally:
        slot.close()
    return reading


def follower_warnings(follower: dict, reading: SlotReading | None, config: Mapping) -> list[str]:
    """A follower's warnings past the configured thresholds: from the slot as read now when it could be, else
    from the figures the follower kept when it last measured (`sync_follow`)."""
    if reading is not None and reading.found and not reading.problem:
        figures = {"lag_bytes": reading.lag_bytes, "retained_bytes": reading.retained_bytes,
                   "pending_seconds": reading.pending_seconds()}
    else:
        figures = {"lag_bytes": follower.get("lag_bytes") or 0, "retained_bytes": follower.get("retained_bytes") or 0,
                   "pending_seconds": follower.get("lag_seconds") or 0.0}
    return slot_warnings(follower["_id"], **figures, max_bytes=config["FITKART_LAG_WARNING_MB"] * 1024 * 1024,
                         max_seconds=config["FITKART_LAG_WARNING_SECONDS"])


class SlotWatch:
    """The status page's readings: per process, one slot read at a time, each reading kept WATCH_SECONDS."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._reading = threading.Lock()
        self._readings: dict[str, SlotReading] = {}

    def reading(self, slot: str) -> SlotReading | None:
        """The slot's latest reading, taken now if the kept one is older than WATCH_SECONDS and no other request
        is taking one (that request's wait is not shared: the older reading, or None, is shown meanwhile)."""
        kept = self._readings.get(slot)
        if kept is not None and time.monotonic() - kept.taken < WATCH_SECONDS:
            return kept
        if not self._reading.acquire(blocking=False):
            return kept
        try:
            self._readings[slot] = kept = read_slot(self.url, slot)
        finally:
            self._reading.release()
        return kept
