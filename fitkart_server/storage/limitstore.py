"""`limits` storages for the rate limiter: the mirror's database (`mirror://`, the default) and a SQLite file.

Flask-Limiter's MongoDB storage needs pipeline updates, TTL indexes and an atomic `$inc`, which
FerretDB v1 lacks. `SqliteStorage`, a file in WAL mode shared by the workers of one machine,
counts one host exactly; `MirrorStorage` adds up what every host's file counted in the mirror's
own database, with point operations only, so every host behind one balancer counts against the
same limit (`sqlite:///path` chooses one host's file alone).
"""

import hashlib
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

from limits import parse
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
    """Fixed-window counters every host behind a balancer shares (`mirror://`): exact on each host, summed in the
    mirror's database.

    Each host counts its own hits in its SQLite file (`SqliteStorage`: one atomic statement, exact
    however many of its workers and threads hit at once) and publishes that count to the mirror:
    one document per limit key and clock-aligned window, a field per host, raised with `$max` by
    `_id` (a point operation on every server, FerretDB v1 included, which has no atomic
    read-modify-write: the field of each host is written by that host alone, so no count is lost
    to another's). A hit's count is the host's own plus what the others published. While the
    database cannot be reached (asked through a client that gives up within 250 ms), a host counts
    on its own for FALLBACK_SECONDS at a time. Housekeeping deletes the ended windows.
    """

    STORAGE_SCHEME = ["mirror"]

    def __init__(self, uri: str, wrap_exceptions: bool = False, *, collection: Callable[[], Collection],
                 fallback: str, **options) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.collection = collection
        self.local = SqliteStorage(fallback)
        # This host: its machine and its counter file (two servers on one machine with their own files are two).
        self.host = hashlib.sha256(f"{socket.gethostname()}:{self.local.path}".encode()).hexdigest()[:16]
        self._away_until = 0.0

    @property
    def base_exceptions(self) -> type[Exception]:
        return sqlite3.Error

    def _shared(self) -> Collection | None:
        """The counters' collection, or None while the database is away (this host counts alone)."""
        if time.monotonic() < self._away_until:
            return None
        try:
            return self.collection()
        except Exception as error:  # DatabaseUnavailable and the like: counted here meanwhile
            self._went_away(error)
            return None

    def _went_away(self, error: Exception) -> None:
        """Count on this host alone for a while, and say so once."""
        self._away_until = time.monotonic() + FALLBACK_SECONDS
        log.warning("Rate-limit counters: the database is away (%s); this host counts on its own for %d s.",
                    error.__class__.__name__, FALLBACK_SECONDS)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Count `amount` hits in the key's current window; the count of every host."""
        start, end = window(time.time(), expiry)
        doc_id = f"{key}|{start}"
        own = self.local.incr(doc_id, expiry, amount)
        collection = self._shared()
        if collection is None:
            return own
        try:
            for _ in range(2):  # a window's first hit inserts its document, unless another host's insert won
                counted = collection.find_one_and_update({"_id": doc_id}, {"$max": {f"hosts.{self.host}": own}},
                                                         return_document=ReturnDocument.AFTER)
                if counted is not None:
                    return own + self._others(counted)
                try:
                    collection.insert_one({"_id": doc_id, "hosts": {self.host: own},
                                           "expire_at": datetime.fromtimestamp(end, UTC)})
                    return own
                except DuplicateKeyError:
                    continue
        except PyMongoError as error:
            self._went_away(error)
        return own

    def get(self, key: str) -> int:
        """The key's count in its current window, every host's (0 when none runs)."""
        expiry = expiry_of(key)
        doc_id = f"{key}|{window(time.time(), expiry)[0]}"
        own = self.local.get(doc_id)
        collection = self._shared()
        if collection is None:
            return own
        try:
            counted = collection.find_one({"_id": doc_id})
        except PyMongoError as error:
            self._went_away(error)
            return own
        return own + (self._others(counted) if counted else 0)

    def get_expiry(self, key: str) -> float:
        """When the key's current window ends."""
        return window(time.time(), expiry_of(key))[1]

    def _others(self, counted: dict) -> int:
        """What the other hosts published for a window."""
        hosts = counted.get("hosts") or {}
        return sum(count for host, count in hosts.items() if host != self.host and isinstance(count, int))

    def check(self) -> bool:
        """Whether this host's counters can be reached (the shared ones are an addition)."""
        return self.local.check()

    def reset(self) -> int | None:
        """Forget every counter; how many there were."""
        collection = self._shared()
        shared = collection.delete_many({}).deleted_count if collection is not None else 0
        return shared + (self.local.reset() or 0)

    def clear(self, key: str) -> None:
        """Forget one key's counters in its current window."""
        doc_id = f"{key}|{window(time.time(), expiry_of(key))[0]}"
        collection = self._shared()
        if collection is not None:
            collection.delete_one({"_id": doc_id})
        self.local.clear(doc_id)


def window(now: float, expiry: int) -> tuple[int, int]:
    """The clock-aligned window of `expiry` seconds that holds `now`: its start and end."""
    start = int(now // expiry) * expiry
    return start, start + expiry


def expiry_of(key: str) -> int:
    """The window length of a `limits` key, read from its end (`…/<amount>/<multiples>/<granularity>`)."""
    amount, multiples, granularity = key.split("/")[-3:]
    return parse(f"{amount}/{multiples} {granularity}").get_expiry()
