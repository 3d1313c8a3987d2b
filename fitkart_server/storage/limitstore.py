"""A `limits` storage in a SQLite file (`sqlite:///path`): rate-limit counters every worker of one machine shares.

Flask-Limiter's MongoDB storage needs pipeline updates and TTL indexes, which FerretDB v1
lacks; a SQLite file in WAL mode works whatever the database is, costs microseconds, and is
shared by gunicorn's workers. Expired counters are purged by the storage itself. Several
machines behind one balancer each count on their own (or set FITKART_RATELIMIT_STORAGE to a
`mongodb://` or `redis://` URI on a server that has what those need).
"""

import os
import sqlite3
import threading
import time
from urllib.parse import urlsplit

from limits.storage import Storage

PURGE_EVERY_SECONDS = 60
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
