"""Records of either side of verify waiting for their counterpart, kept on disk in a temporary SQLite file.

Each side's records arrive in an order of its own (Supabase in key order, the mirror in its
storage order), so a record may come long before the one with its key on the other side. It
waits here, pickled, indexed by side and key; SQLite keeps at most CACHE_KIB of its pages in
memory, so memory stays bounded however many records wait. The file is private to this
process and deleted when closed. Records come and go a page at a time: a few statements per
page, not one per record.
"""

import pickle
import sqlite3
from collections.abc import Iterator

CACHE_KIB = 8 * 1024  # SQLite's page cache: the whole of this store's memory, whatever waits in it
_MAX_MARKS = 900  # placeholders per statement, below the smallest SQLITE_MAX_VARIABLE_NUMBER (999)


def stored_key(key: tuple) -> str | bytes:
    """A key tuple as one SQLite value: text keys joined by NUL (which keeps tuple order); any other as bytes.

    A BLOB never equals TEXT in SQLite, so an odd key (a number, a nested document,
    a missing field's None) matches only the same odd key.
    """
    if all(isinstance(part, str) and "\0" not in part for part in key):
        return "\0".join(key)
    return repr(key).encode()


def _chunks(values: list, size: int) -> Iterator[list]:
    """`values` in consecutive slices of at most `size`."""
    for start in range(0, len(values), size):
        yield values[start:start + size]


class Unmatched:
    """Records of two sides by key, each taken back once the other side's record with that key shows up."""

    def __init__(self) -> None:
        # "" opens a private temporary database: in memory up to the cache, then in a file deleted on close.
        self.connection = sqlite3.connect("", isolation_level=None)
        for pragma in (f"cache_size = -{CACHE_KIB}", "temp_store = FILE", "journal_mode = OFF",
                       "synchronous = OFF"):
            self.connection.execute(f"PRAGMA {pragma}")
        self.connection.execute("CREATE TABLE waiting (side INTEGER, k, record BLOB)")
        self.connection.execute("CREATE INDEX waiting_by_key ON waiting (side, k)")
        # One transaction for the whole comparison: nothing here needs to survive a crash.
        self.connection.execute("BEGIN")

    def take(self, side: int, keys: list[str | bytes]) -> list[dict | None]:
        """For each key in turn, the first waiting record of `side` with it, no longer waiting; else None."""
        waiting: dict[str | bytes, list[tuple[int, bytes]]] = {}
        for chunk in _chunks(list(set(keys)), _MAX_MARKS):
            query = f"SELECT rowid, k, record FROM waiting WHERE side = ? AND k IN ({', '.join('?' * len(chunk))})"
            for rowid, key, record in self.connection.execute(query, (side, *chunk)):
                waiting.setdefault(key, []).append((rowid, record))
        taken, partners = [], []
        for key in keys:
            candidates = waiting.get(key)
            if not candidates:
                partners.append(None)
                continue
            candidates.sort()  # the earliest kept first, as a second record with one key is the odd one out
            rowid, record = candidates.pop(0)
            taken.append((rowid,))
            partners.append(pickle.loads(record))
        self.connection.executemany("DELETE FROM waiting WHERE rowid = ?", taken)
        return partners

    def keep(self, side: int, records: list[tuple[str | bytes, dict]]) -> None:
        """Let each (key, record) wait for the other side's record with that key."""
        self.connection.executemany("INSERT INTO waiting VALUES (?, ?, ?)", [
            (side, key, pickle.dumps(record, pickle.HIGHEST_PROTOCOL)) for key, record in records])

    def left(self, side: int) -> Iterator[dict]:
        """The records of `side` still waiting, in key order (text in code-point order, as Python compares)."""
        for (record,) in self.connection.execute("SELECT record FROM waiting WHERE side = ? ORDER BY k, rowid",
                                                 (side,)):
            yield pickle.loads(record)

    def close(self) -> None:
        """Drop everything (the file goes with the connection)."""
        self.connection.close()
