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

# A reading waits at most this long to connect and as long for each of its two queries (the second, the peek,
# decodes WAL), however the network behaves: a status page request that reads a slot waits 6 s at most.
READ_TIMEOUT_SECONDS = 2
# How long the status page shows one reading before taking another (it refreshes every few seconds).
WATCH_SECONDS = 30.0
RUNNING = "a follower is running on the slot: its own figures stand"


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
    pending_seconds: float | None = None  # age of the oldest unconfirmed change of the six tables (0: none)
    pending_unknown: str | None = None  # why that age is not known
    problem: str | None = None
    taken: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        """One line, as `stats` prints it."""
        if self.problem:
            return f"unknown ({self.problem})"
        if not self.found:
            return "no such slot in PostgreSQL"
        if self.pending_unknown:
            oldest = f"oldest unconfirmed change: unknown ({self.pending_unknown})"
        elif not self.pending_seconds:
            oldest = "no unconfirmed change"
        else:
            oldest = f"oldest unconfirmed change {self.pending_seconds:,.0f} s old"
        return (f"at {self.position}, {self.lag_bytes:,} bytes behind, WAL kept {self.retained_bytes:,} bytes, "
                f"{oldest}{', WAL lost' if self.wal_status == 'lost' else ''}")


def read_slot(url: str, name: str) -> SlotReading:
    """The slot `name` as PostgreSQL sees it now; every failure is told in the reading, none raised."""
    reading = SlotReading(name)
    limit_ms = READ_TIMEOUT_SECONDS * 1000
    try:
        # The server cancels a slow query; tcp_user_timeout ends a wait on a network that went silent.
        slot = WalSlot(url, TABLES, name, connect_timeout=READ_TIMEOUT_SECONDS,
                       options=f"-c statement_timeout={limit_ms}", tcp_user_timeout=limit_ms)
    except WalSetupError as error:
        reading.problem = str(error)
        return reading
    try:
        condition = slot.condition()
    except psycopg.Error as error:
        reading.problem = f"PostgreSQL failed: {error.__class__.__name__}: {str(error).strip()[:200]}"
        slot.close()
        return reading
    try:
        if condition is None:
            return reading
        reading.found, reading.position, reading.wal_status = True, condition["position"], condition["wal_status"]
        reading.lag_bytes, reading.retained_bytes = condition["behind"], condition["kept"]
        if condition["follower"]:
            reading.pending_unknown = RUNNING  # a peek would hold up its reads and confirmations
        elif reading.wal_status == "lost":
            reading.pending_unknown = "the slot is lost: `flask fitkart follow --resync`"
        else:
            reading.pending_seconds = slot.oldest_pending() or 0.0
    except errors.ObjectInUse:
        reading.pending_unknown = RUNNING
    except errors.QueryCanceled:
        reading.pending_unknown = f"not found within {READ_TIMEOUT_SECONDS} s of decoding"
    except psycopg.Error as error:  # a role without REPLICATION, say: the WAL figures stand
        reading.pending_unknown = f"PostgreSQL failed: {error.__class__.__name__}: {str(error).strip()[:200]}"
    finally:
        slot.close()
    return reading


def follower_warnings(follower: dict, reading: SlotReading | None, config: Mapping) -> list[str]:
    """A follower's warnings past the configured thresholds: from the slot as read now where it could be, else
    from the figures the follower kept when it last measured (`sync_follow`)."""
    read = reading is not None and reading.found and not reading.problem
    stored_seconds = follower.get("lag_seconds") or 0.0
    figures = {"lag_bytes": reading.lag_bytes, "retained_bytes": reading.retained_bytes} if read else {
        "lag_bytes": follower.get("lag_bytes") or 0, "retained_bytes": follower.get("retained_bytes") or 0}
    pending = reading.pending_seconds if read and reading.pending_seconds is not None else stored_seconds
    return slot_warnings(follower["_id"], **figures, pending_seconds=pending,
                         max_bytes=config["FITKART_LAG_WARNING_MB"] * 1024 * 1024,
                         max_seconds=config["FITKART_LAG_WARNING_SECONDS"])


class SlotWatch:
    """The status page's readings: per process, one slot read at a time, each reading kept WATCH_SECONDS."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._reading = threading.Lock()
        self._readings: dict[str, SlotReading] = {}

    def readings(self, slots: list[str]) -> dict[str, SlotReading | None]:
        """Each slot's latest reading. At most one slot is read per call (the one whose reading is oldest, if older
        than WATCH_SECONDS), and only when no other request is reading one: a page waits for one reading at most,
        and meanwhile shows the kept ones (None: not read yet)."""
        stale = [slot for slot in slots if self._age(slot) >= WATCH_SECONDS]
        if stale and self._reading.acquire(blocking=False):
            try:
                slot = max(stale, key=self._age)
                self._readings[slot] = read_slot(self.url, slot)
            finally:
                self._reading.release()
        return {slot: self._readings.get(slot) for slot in slots}

    def _age(self, slot: str) -> float:
        """Seconds since the slot was last read (infinite: never)."""
        kept = self._readings.get(slot)
        return float("inf") if kept is None else time.monotonic() - kept.taken
