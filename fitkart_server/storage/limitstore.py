"""`limits` storages for the rate limiter: the mirror's database (`mirror://`, the default) and a SQLite file.

Flask-Limiter's MongoDB storage needs pipeline updates and TTL indexes, which FerretDB v1
lacks. `MirrorStorage` keeps the counters in the mirror's own database with point operations
only, so every host behind one balancer counts against the same limit; `SqliteStorage`, a
file in WAL mode shared by the workers of one machine, is its fallback while the database is
away (and may be chosen alone: `sqlite:///path`).
"""

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

from limits.storage import Storage
from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError, PyMongoError

log = logging.getLogger(__name__)

PURGE_EVERY_SECONDS = 60
# How long the counters stay on this host's file once the database could not be reached.
FALLBACK_SECONDS = 10
SCHEMA = "CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, count INTEGER NOT NULL, expire_at REAL NOT NULL)"
# One statement: a counter past its window starts again from this hit.
INCREMENT = """
INSERT INTO counters (key, count, expire_at) VALUES (:key, :amount, :expire_at)
ON CONFLICT (key) DO UPDATE SET
  count = CASE WHEN counters.expire_at <= :now THEN :amount ELSE counters.count + :amount END,
  expire_at = CASE WHEN counters.expire_at <= :now THEN :expire_at ELSE counters.expire_at END
RETURNING count
"""


class SqliteStorage(Storage):
    """Fixed-window counters in one SQLite table, one connection per thread and process."""

    STORAGE_SCHEME = ["sqlite"]

    def __init__(self, uri: str, wrap_exceptions: bool = False, **options) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.path = urlsplit(uri).path
        self._local = threading.local()
        self._purged_at = 0.0

    @property
    def base_exceptions(self) -> type[Exception]:
        return sqlite3.Error

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection (a forked worker opens its own)."""
        if getattr(self._local, "pid", None) != os.getpid():
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=5, isolation_level=None)
            # Set once per file (it persists): changing it needs the file to itself, which a worker starting
            # beside busy ones may not get ("database is locked").
            if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")  # counters need no fsync per hit
            connection.execute(SCHEMA)
            self._local.connection, self._local.pid = connection, os.getpid()
        return self._local.connection

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add `amount` to the key's counter, starting a window of `expiry` seconds if none runs."""
        now = time.time()
        connection = self._connection()
        (count,) = connection.execute(INCREMENT, {"key": key, "amount": amount, "expire_at": now + expiry,
                                                  "now": now}).fetchone()
        if now - self._purged_at > PURGE_EVERY_SECONDS:
            self._purged_at = now
            connection.execute("DELETE FROM counters WHERE expire_at <= ?", (now,))
        return count

    def get(self, key: str) -> int:
        """The key's count in its current window (0 when none runs)."""
        row = self._connection().execute("SELECT count FROM counters WHERE key = ? AND expire_at > ?",
                                         (key, time.time())).fetchone()
        return row[0] if row else 0

    def get_expiry(self, key: str) -> float:
        """When the key's window ends (now, when none runs)."""
        row = self._connection().execute("SELECT expire_at FROM counters WHERE key = ? AND expire_at > ?",
                                         (key, time.time())).fetchone()
        return row[0] if row else time.time()

    def check(self) -> bool:
        """Whether the file can be read."""
        try:
            self._connection().execute("SELECT 1").fetchone()
            return True
        except sqlite3.Error:
            return False

    def reset(self) -> int | None:
        """Forget every counter; how many there were."""
        return self._connection().execute("DELETE FROM counters").rowcount

    def clear(self, key: str) -> None:
        """Forget one key's counter."""
        self._connection().execute("DELETE FROM counters WHERE key = ?", (key,))


class MirrorStorage(Storage):
    """Fixed-window counters in the mirror's database (`mirror://`): one count for every host behind a balancer.

    Each window is its own document, `<key>|<window start>`, so a hit is one `$inc` by `_id` (and
    an insert for a window's first hit): a point operation on every server, FerretDB v1 included,
    with no pipeline update and no TTL index. Windows are aligned to the clock; housekeeping
    deletes the ended ones. While the database cannot be reached the counters fall back to this
    host's SQLite file for FALLBACK_SECONDS at a time, so a refusal never waits on it and the
    limit still holds per host.
    """

    STORAGE_SCHEME = ["mirror"]

    def __init__(self, uri: str, wrap_exceptions: bool = False, *, collection: Callable[[], Collection],
                 fallback: str, **options) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.collection = collection
        self.fallback = SqliteStorage(fallback)
        self._away_until = 0.0
        # The window length of each limit (the end of a window is asked without it): few limits, few entries.
        self._expiries: dict[str, int] = {}

    @property
    def base_exceptions(self) -> type[Exception]:
        return sqlite3.Error

    def _shared(self) -> Collection | None:
        """The counters' collection, or None while the database is away (the fallback counts)."""
        if time.monotonic() < self._away_until:
            return None
        try:
            return self.collection()
        except Exception as error:  # DatabaseUnavailable: counted here meanwhile
            self._went_away(error)
            return None

    def _went_away(self, error: Exception) -> None:
        """Count on this host's file for a while, and say so once."""
        self._away_until = time.monotonic() + FALLBACK_SECONDS
        log.warning("Rate-limit counters: the database is away (%s); this host counts on its own for %d s.",
                     error.__class__.__name__, FALLBACK_SECONDS)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add `amount` to the count of the key's current window."""
        self._expiries[limit_of(key)] = expiry
        collection = self._shared()
        if collection is None:
            return self.fallback.incr(key, expiry, amount)
        start, end = window(time.time(), expiry)
        doc_id = f"{key}|{start}"
        try:
            for _ in range(2):  # the insert of a window's first hit may lose to another host's: then $inc
                counted = collection.find_one_and_update({"_id": doc_id}, {"$inc": {"count": amount}},
                                                         return_document=ReturnDocument.AFTER)
                if counted is not None:
                    return counted["count"]
                try:
                    collection.insert_one({"_id": doc_id, "count": amount,
                                           "expire_at": datetime.fromtimestamp(end, UTC)})
                    return amount
                except DuplicateKeyError:
                    continue
        except PyMongoError as error:
            self._went_away(error)
        return self.fallback.incr(key, expiry, amount)

    def get(self, key: str) -> int:
        """The key's count in its current window (0 when none runs)."""
        expiry = self._expiries.get(limit_of(key))
        collection = self._shared()
        if collection is None or expiry is None:
            return self.fallback.get(key) if collection is None else 0
        try:
            counted = collection.find_one({"_id": f"{key}|{window(time.time(), expiry)[0]}"})
        except PyMongoError as error:
            self._went_away(error)
            return self.fallback.get(key)
        return counted["count"] if counted else 0

    def get_expiry(self, key: str) -> float:
        """When the key's current window ends (now, when its length is not known here)."""
        expiry = self._expiries.get(limit_of(key))
        if time.monotonic() < self._away_until:
            return self.fallback.get_expiry(key)
        return window(time.time(), expiry)[1] if expiry else time.time()

    def check(self) -> bool:
        """Whether the counters can be reached (the shared ones, or this host's while the database is away)."""
        return self._shared() is not None or self.fallback.check()

    def reset(self) -> int | None:
        """Forget every counter; how many there were."""
        collection = self._shared()
        shared = collection.delete_many({}).deleted_count if collection is not None else 0
        return shared + (self.fallback.reset() or 0)

    def clear(self, key: str) -> None:
        """Forget one key's counters (every window of it)."""
        collection = self._shared()
        if collection is not None:
            expiry = self._expiries.get(limit_of(key))
            if expiry:
                collection.delete_one({"_id": f"{key}|{window(time.time(), expiry)[0]}"})
        self.fallback.clear(key)


def window(now: float, expiry: int) -> tuple[int, int]:
    """The clock-aligned window of `expiry` seconds that holds `now`: its start and end."""
    start = int(now // expiry) * expiry
    return start, start + expiry


def limit_of(key: str) -> str:
    """The limit part of a `limits` key (`…/<amount>/<multiples>/<granularity>`): its window length's name."""
    return "/".join(key.split("/")[-3:])
