"""The spool: writes the database cannot take right now, kept on disk until it can.

A write that passed authentication and validation while MongoDB is unreachable is appended
to a SQLite file in WAL mode (`instance/spool.sqlite3`), fsync'd before its 202 is sent, and
replayed later in arrival order through the same engine, as the same caller and source. The
file is shared by every gunicorn worker; a lease in it lets one process replay at a time
(another takes over when a replayer dies and its lease runs out). While anything is queued,
new writes queue behind it, so no write overtakes an older one of the same record.

Each entry is one operation: an upsert or delete of a record, or a refused write's reject
(a 422 answered while the database was away is kept too, and lands in `sync_rejects` at
replay). Entries hold the caller's role and user id, never a token.
"""

import errno
import fcntl
import glob
import json
import logging
import os
import shutil
import sqlite3
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass

from ..model.policy import Caller

log = logging.getLogger(__name__)
FILE = "spool.sqlite3"
LEASE_SECONDS = 15  # renewed every third of it while a replayer works: a dead one's runs out soon
# A replayer that holds the lease and removed applied entries this recently is draining a database that answers
# (one run of up to 500 entries can take many seconds on a slow database; a replayer that finds the database
# away, or the queue empty, says so at once: Spool.drain_ended).
PROGRESS_SECONDS = 30
# Disk space held in `<spool>.reserve` for removing applied entries (a removal writes to the WAL too): on a full
# disk it is given up so the spool can still shrink. One removal (a run of at most 500 entries) writes far less.
RESERVE_BYTES = 8 * 1024 * 1024
FULL_DISK = "cannot grow: its disk is full"
ADMIT_SHARE = 0.5  # while the spool drains, writes are queued at most half as fast as it drains
MAX_PAUSE_SECONDS = 5.0  # the longest a queued write's answer is held for that
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS entries (seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, "
    "kind TEXT NOT NULL, collection TEXT, body TEXT NOT NULL, role TEXT NOT NULL, user_id TEXT, "
    "source TEXT NOT NULL, route TEXT, size INTEGER NOT NULL, version TEXT)",
    # progress_at: when a replayer last applied something, so writers know the database is back.
    "CREATE TABLE IF NOT EXISTS lease (id INTEGER PRIMARY KEY CHECK (id = 1), owner TEXT, until REAL NOT NULL, "
    "progress_at REAL NOT NULL DEFAULT 0, rate REAL NOT NULL DEFAULT 0, admit_at REAL NOT NULL DEFAULT 0)",
    "INSERT OR IGNORE INTO lease (id, owner, until) VALUES (1, NULL, 0)",
    # Entries and bytes kept by triggers, so the size check of each append reads one row, not the whole queue.
    "CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY CHECK (id = 1), entries INTEGER NOT NULL, "
    "bytes INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO totals SELECT 1, COUNT(*), COALESCE(SUM(size), 0) FROM entries",
    "CREATE TRIGGER IF NOT EXISTS entry_added AFTER INSERT ON entries BEGIN "
    "UPDATE totals SET entries = entries + 1, bytes = bytes + NEW.size WHERE id = 1; END",
    "CREATE TRIGGER IF NOT EXISTS entry_removed AFTER DELETE ON entries BEGIN "
    "UPDATE totals SET entries = entries - 1, bytes = bytes - OLD.size WHERE id = 1; END",
)


def add_column(connection: sqlite3.Connection, table: str, column: str) -> None:
    """Add a column a spool written by an older release lacks; a worker starting beside another may lose the race
    to add it, which is no failure."""
    name = column.split()[0]
    if name in {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}:
        return
    try:
        connection.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
    except sqlite3.OperationalError as error:
        if "duplicate column" not in str(error):
            raise


@contextmanager
def immediate(connection: sqlite3.Connection) -> Iterator[None]:
    """A write transaction taken at once (BEGIN IMMEDIATE): committed, or rolled back on any error (SQLite ends
    one itself on some, such as a full disk, so only one still open is rolled back)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def is_ready(connection: sqlite3.Connection) -> bool:
    """Whether a spool file holds every table, trigger, column and row this release uses."""
    names = {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}
    if not {"entries", "lease", "totals", "entry_added", "entry_removed"} <= names:
        return False
    columns = {row[1] for row in connection.execute("PRAGMA table_info(lease)")}
    columns |= {row[1] for row in connection.execute("PRAGMA table_info(entries)")}
    rows = connection.execute("SELECT (SELECT COUNT(*) FROM lease) + (SELECT COUNT(*) FROM totals)").fetchone()[0]
    return {"rate", "admit_at", "version"} <= columns and rows == 2


def is_draining(now: float, progress_at: float, rate: float, until: float) -> bool:
    """Whether a replayer holding a live lease removed applied entries lately (a clock set back makes
    `progress_at` look ahead: not)."""
    return 0 <= now - progress_at < PROGRESS_SECONDS and rate > 0 and until > now


def is_out_of_room(error: sqlite3.Error) -> bool:
    """Whether SQLite may have failed for want of space: full, or an I/O error (on a full disk, making a WAL's
    -shm file fails so)."""
    return is_full(error) or "disk I/O error" in str(error)


def is_full(error: sqlite3.Error) -> bool:
    """Whether SQLite refused for want of space (a full disk, or the file at its PRAGMA max_page_count)."""
    return "database or disk is full" in str(error)


class SpoolFull(Exception):
    """The spool cannot keep the write: it holds FITKART_SPOOL_MAX_MB already, or its disk is full (`why`)."""

    def __init__(self, why: str = "is full (FITKART_SPOOL_MAX_MB)") -> None:
        super().__init__(why)
        self.why = why


class SpoolBusy(SpoolFull):
    """Another program holds the spool's file locked past the busy timeout: nothing could be kept now."""

    def __init__(self) -> None:
        super().__init__("is locked by another program (see /readyz)")


def is_locked(error: sqlite3.Error) -> bool:
    """Whether SQLite gave up waiting for a lock another connection holds."""
    return "locked" in str(error) or "busy" in str(error)


class SpoolUnavailable(SpoolFull):
    """The spool's file cannot be written (see Spool.problem): no write can be kept."""

    def __init__(self) -> None:
        super().__init__("cannot be written (see /readyz)")


@dataclass(frozen=True)
class Entry:
    """One queued operation, as it arrived."""

    seq: int
    at: float
    kind: str
    collection: str | None
    body: object
    caller: Caller
    source: str
    route: str | None
    version: list[int] | None = None  # the client's version of the change ([at, seq]), when it sent one


@dataclass(frozen=True)
class Queued:
    """Operations just queued: their sequence numbers, and how long their answer waits (see Spool._paced)."""

    sequences: list[int]
    pause: float


@dataclass(frozen=True)
class Depth:
    """How much is queued: entries, bytes, and the oldest one's age in seconds."""

    entries: int
    bytes: int
    oldest_seconds: float


class Spool:
    """The spool file: append (durably), read in order, remove, and one replayer at a time."""

    def __init__(self, path: str, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._local = threading.local()
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{id(self)}"
        # What is wrong with the file, in one line saying what to do; `unwritable`: nothing can be kept at all.
        self.problem: str | None = None
        self.unwritable = False
        self._set_up_pid: int | None = None  # the process that set the file up (tables, WAL mode)
        self._no_reserve = False  # the reserve cannot be made here for another reason than a full disk
        self._reserve_given_up = False  # this process freed the reserve for want of room

    def check(self) -> None:
        """Open the file at start-up: a damaged one is moved aside and a new one started, an unwritable one leaves
        the spool off (direct writes are served; a write while the database is away is a 503). Either way the
        server starts, and `problem` says what happened and what to do."""
        try:
            with self._file_lock():  # one worker at a time decides, so none moves another's new file
                self._checked()
        except OSError as error:
            self._off(error)
        except sqlite3.Error as error:  # not the file's content (that is _checked's): say so, try again later
            self._forget()
            self.problem = (f"The spool file {self.path} could not be opened at start-up ({error}); writes and the "
                            "replayer try again. Check its disk's free space.")
            log.error("%s", self.problem)
        if not self.unwritable and not self._reserve_given_up:
            self.keep_reserve()  # (not when the check itself needed its room)
        if self.problem is None:
            self._tell_set_aside()

    def _tell_set_aside(self) -> None:
        """Say so while files set aside as damaged lie beside the spool (any worker moved them, at any start)."""
        set_aside = sorted(name for name in glob.glob(f"{glob.escape(self.path)}.damaged-*")
                           if not name.endswith(("-wal", "-shm")))
        if set_aside:
            self.problem = (f"{len(set_aside)} spool file(s) set aside as damaged, the latest {set_aside[-1]}. Read "
                            f"what one held with: flask fitkart spool --file <file>; then remove it.")
            log.warning("%s", self.problem)

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Hold `<spool>.lock` (an flock: set-up and checks, one process at a time)."""
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(f"{self.path}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _checked(self) -> None:
        """check's work, under the file lock."""
        try:
            self._set_up()
            if self._connection().execute("PRAGMA quick_check").fetchone()[0] == "ok":
                return
            error: Exception = sqlite3.DatabaseError("quick_check found damage")
        except sqlite3.OperationalError as failure:
            if not os.path.exists(self.path) or "unable to open" in str(failure) or "readonly" in str(failure):
                self._off(failure)
                return
            if is_out_of_room(failure):
                # The disk, not the file (on a full disk even its -shm cannot be made): free the reserve once.
                self._give_up_reserve()
                self._set_up()
                return
            self._forget()
            if is_locked(failure):
                return  # busy, not broken: the replayer and writers try again
            raise  # not a sign of damage either: check() says so, and nothing is moved
        except sqlite3.DatabaseError as failure:  # "file is not a database", "malformed": its content is damaged
            error = failure
        self._forget()
        # A name no other worker or start can take: nothing set aside is ever overwritten.
        moved = f"{self.path}.damaged-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{time.monotonic_ns()}"
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.path + suffix):
                os.rename(self.path + suffix, moved + suffix)
        self.problem = (f"The spool file {self.path} was damaged ({error}); it was moved to {moved} and a new one "
                        f"started. Read what it held with: flask fitkart spool --file {moved}")
        log.error("%s", self.problem)
        self._set_up()

    def _off(self, error: Exception) -> None:
        """The file cannot be opened for writing: no write can be kept until an operator fixes it."""
        self._forget()
        self.unwritable = True
        self.problem = (f"The spool file {self.path} cannot be written ({error}): a write while the database is "
                        "away is refused (503). Make its directory writable, or set FITKART_SPOOL_PATH, and restart.")
        log.error("%s", self.problem)

    def _forget(self) -> None:
        """Drop this thread's connection and the set-up done (the file is being replaced or given up)."""
        self._local = threading.local()
        self._set_up_pid = None

    @property
    def is_set_up(self) -> bool:
        """Whether this process has set the file up (not yet when it was locked at start-up, or is off)."""
        return self._set_up_pid == os.getpid()

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection (a forked worker opens its own); the file set up once per process."""
        if getattr(self._local, "pid", None) != os.getpid():
            if self._set_up_pid != os.getpid():
                with self._file_lock():  # workers booting together set up a new file one after another
                    self._set_up()
            connection = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            # FULL: each commit is fsync'd, so a write answered 202 survives a crash or power loss.
            connection.execute("PRAGMA synchronous=FULL")
            # FAST: a removal zeroes what it can without writing more pages, so removing needs little disk.
            connection.execute("PRAGMA secure_delete=FAST")
            self._local.connection, self._local.pid = connection, os.getpid()
        return self._local.connection

    def _set_up(self) -> None:
        """WAL mode, the tables, and the columns an older release's file lacks (idempotent; under the file lock)."""
        with closing(sqlite3.connect(self.path, timeout=10, isolation_level=None)) as connection:
            # Set once per file (it persists): changing it needs the file to itself.
            if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                connection.execute("PRAGMA journal_mode=WAL")
            # Only reads when the file is ready (every start but the first): a file another program holds
            # write-locked does not hold up a worker's start or its requests.
            if not is_ready(connection):
                with immediate(connection):  # all of it or none: a half set-up file has no lease row
                    for statement in SCHEMA:
                        connection.execute(statement)
                    add_column(connection, "entries", "version TEXT")  # before clients sent versions
                    for column in ("rate", "admit_at"):  # before writers asked how fast it drains
                        add_column(connection, "lease", f"{column} REAL NOT NULL DEFAULT 0")
        self._set_up_pid = os.getpid()

    @property
    def reserve_path(self) -> str:
        """The file holding RESERVE_BYTES of the spool's disk."""
        return f"{self.path}.reserve"

    def keep_reserve(self) -> bool:
        """Hold RESERVE_BYTES of the spool's disk for removals; False when the disk has no room for it."""
        if self._no_reserve:
            return True
        with suppress(OSError):
            if os.path.getsize(self.reserve_path) >= RESERVE_BYTES:
                return True  # the usual case: one stat
        try:
            descriptor = os.open(self.reserve_path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(descriptor, 0, RESERVE_BYTES)  # blocks really taken, not a sparse file
            finally:
                os.close(descriptor)
            self._reserve_given_up = False
            return True
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                with suppress(OSError):
                    os.remove(self.reserve_path)  # no half reserve taking the last room
                return False
            # Not a lack of room (a directory that refuses new files): the spool works without a reserve.
            self._no_reserve = True
            log.warning("The spool's disk reserve %s cannot be made (%s): on a full disk its applied entries may "
                        "not be removable.", self.reserve_path, error)
            return True

    def _may_grow(self) -> bool:
        """Whether an append leaves room to remove applied entries: the reserve is held (or cannot be had on this
        filesystem), or nothing queued needs it and it can be made now. While the replayer uses the freed reserve,
        appends are refused rather than take its room; the replayer makes it again once there is room."""
        if self._no_reserve or os.path.exists(self.reserve_path):
            return True
        return self.is_empty() and self.keep_reserve()

    def free_reserve(self, error: Exception) -> None:
        """Free the reserve when `error` may be a full disk (a replayer's lease or removal needs the room)."""
        if isinstance(error, sqlite3.OperationalError) and is_out_of_room(error):
            self._give_up_reserve()

    def _give_up_reserve(self) -> None:
        """Free the reserve (the disk is full and applied entries must be removed)."""
        self._reserve_given_up = True
        with suppress(FileNotFoundError):
            os.remove(self.reserve_path)
            log.warning("The spool's disk is full: its reserve was freed to remove applied entries; nothing more is "
                        "queued until there is room for the reserve again.")

    def append(self, kind: str, collection: str | None, body, caller: Caller, source: str,
               route: str | None, version: list[int] | None = None, arrived: float | None = None) -> int:
        """Queue one operation durably; its sequence number. SpoolFull when over the size cap."""
        return self.append_many([(kind, collection, body, caller, source, route, version)], arrived).sequences[0]

    def append_many(self, operations: list[tuple[str, str | None, object, Caller, str, str | None,
                                                 list[int] | None]], arrived: float | None = None) -> "Queued":
        """Queue operations (kind, collection, body, caller, source, route, client version) durably, all or none,
        with one fsync; their sequence numbers and pause. SpoolFull when they would take the spool over its size cap.

        Each keeps the time its request arrived (`arrived`, else now): its replay is judged by it
        (sync/ordering.py), not by when it is applied.
        """
        if not operations:
            return Queued([], 0.0)
        if self.unwritable:
            raise SpoolUnavailable
        if not self._may_grow():
            raise SpoolFull(FULL_DISK)
        arrived = time.time() if arrived is None else arrived
        rows = []
        for kind, collection, body, caller, source, route, version in operations:
            text = json.dumps(body, ensure_ascii=False, default=str)
            rows.append((arrived, kind, collection, text, caller.role, caller.user_id, source, route,
                         len(text.encode("utf-8", "replace")), None if version is None else json.dumps(version)))
        connection = self._connection()
        try:
            with immediate(connection):  # the size check and the inserts as one step
                if not self._no_reserve and not os.path.exists(self.reserve_path):
                    raise SpoolFull(FULL_DISK)  # freed while this waited for the lock: its room is the replayer's
                (queued,) = connection.execute("SELECT bytes FROM totals WHERE id = 1").fetchone()
                if queued + sum(row[8] for row in rows) > self.max_bytes:
                    raise SpoolFull
                sequences = [connection.execute(
                    "INSERT INTO entries (at, kind, collection, body, role, user_id, source, route, size, version) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row).lastrowid for row in rows]
                pause = self._paced(connection, len(rows))
        except sqlite3.OperationalError as error:
            if is_full(error):
                raise SpoolFull(FULL_DISK) from None
            if is_locked(error):
                raise SpoolBusy from None
            raise
        return Queued(sequences, pause)

    def _paced(self, connection: sqlite3.Connection, count: int) -> float:
        """How long the answer to `count` operations queued now should wait: while a replayer drains, queued
        writes are let in at most ADMIT_SHARE of its rate, one after another (across processes), so the backlog
        shrinks even when clients send as fast as they are answered. Never more than MAX_PAUSE_SECONDS."""
        now = time.time()
        progress_at, rate, admit_at, until = connection.execute(
            "SELECT progress_at, rate, admit_at, until FROM lease WHERE id = 1").fetchone()
        if not is_draining(now, progress_at, rate, until):
            return 0.0  # nothing drains (the database is away): the spool is what takes the writes
        slot = min(max(admit_at, now), now + MAX_PAUSE_SECONDS)
        next_slot = min(slot + count / (rate * ADMIT_SHARE), now + MAX_PAUSE_SECONDS)
        connection.execute("UPDATE lease SET admit_at = ? WHERE id = 1", (next_slot,))
        return slot - now

    def is_empty(self) -> bool:
        """Whether nothing is queued (one indexed read)."""
        if self.unwritable:
            return True
        return self._connection().execute("SELECT 1 FROM entries LIMIT 1").fetchone() is None

    def depth(self) -> Depth:
        """Entries, bytes and the oldest entry's age."""
        if self.unwritable:
            return Depth(0, 0, 0.0)
        connection = self._connection()
        count, size = connection.execute("SELECT entries, bytes FROM totals WHERE id = 1").fetchone()
        oldest = connection.execute("SELECT at FROM entries ORDER BY seq LIMIT 1").fetchone()
        return Depth(count, size, 0.0 if oldest is None else max(0.0, time.time() - oldest[0]))

    def head(self, limit: int = 100) -> list[Entry]:
        """The oldest entries, in arrival order."""
        rows = self._connection().execute(
            "SELECT seq, at, kind, collection, body, role, user_id, source, route, version FROM entries "
            "ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [Entry(seq, at, kind, collection, json.loads(body), Caller(role, user_id), source, route,
                      None if version is None else json.loads(version))
                for seq, at, kind, collection, body, role, user_id, source, route, version in rows]

    def remove_through(self, seq: int, rate: float = 0.0) -> bool:
        """Forget the entries up to `seq` once the database holds their effect, and in the same transaction (one
        fsync) renew the lease and note the progress and the rate (entries a second) the replayer drains at.
        Whether the lease is still this replayer's (False: another took it). On a full disk the reserve is freed
        for it."""
        try:
            return self._remove_through(seq, rate)
        except sqlite3.OperationalError as error:
            if not is_out_of_room(error):
                raise
            self._give_up_reserve()
            return self._remove_through(seq, rate)

    def _remove_through(self, seq: int, rate: float) -> bool:
        connection = self._connection()
        now = time.time()
        with immediate(connection):
            connection.execute("DELETE FROM entries WHERE seq <= ?", (seq,))  # applied: removed either way
            return connection.execute(
                "UPDATE lease SET owner = ?, until = ?, progress_at = ?, rate = ? WHERE id = 1 "
                "AND (owner IS NULL OR owner = ? OR until < ?)",
                (self.owner, now + LEASE_SECONDS, now, rate, self.owner, now)).rowcount == 1

    def drain_seconds(self) -> float | None:
        """How long the queue will take to drain at the replayer's recent rate: 0 when it is empty, None when
        no replayer is making progress (the database is away, or nothing replays)."""
        entries, progress_at, rate, until = self._connection().execute(
            "SELECT totals.entries, lease.progress_at, lease.rate, lease.until FROM totals, lease "
            "WHERE totals.id = 1 AND lease.id = 1").fetchone()
        if entries == 0:
            return 0.0
        if not is_draining(time.time(), progress_at, rate, until):
            return None
        return entries / rate

    def drain_ended(self) -> None:
        """The replayer stopped draining (the queue is empty, or the database went away): writers stop waiting for
        it, and a later drain starts with no leftover pace."""
        self._connection().execute("UPDATE lease SET rate = 0, admit_at = 0 WHERE id = 1 AND owner = ?", (self.owner,))

    def drop_all(self) -> int:
        """Forget every entry (an operator's decision); how many there were."""
        return self._connection().execute("DELETE FROM entries").rowcount

    def take_lease(self) -> bool:
        """Become (or stay) the one replayer, for LEASE_SECONDS; False while another process is."""
        now = time.time()
        cursor = self._connection().execute(
            "UPDATE lease SET owner = ?, until = ? WHERE id = 1 AND (owner IS NULL OR owner = ? OR until < ?)",
            (self.owner, now + LEASE_SECONDS, self.owner, now))
        return cursor.rowcount == 1

    def release_lease(self) -> None:
        """Let another process replay."""
        if self.unwritable:
            return
        self._connection().execute("UPDATE lease SET owner = NULL, until = 0, rate = 0, admit_at = 0 "
                                   "WHERE id = 1 AND owner = ?", (self.owner,))


def salvage(path: str) -> tuple[list[tuple], str | None]:
    """What a spool file set aside still yields, in order: (seq, kind, collection, source, who, body) rows up to
    the first damage, and what stopped the reading (None: all of it was read).

    It reads a copy (the file set aside is left as it was). A file cut short still names its full length in
    its header, which makes SQLite refuse every page; the copy's header names the pages it has, so the rows in
    them can be read.
    """
    rows: list[tuple] = []
    with tempfile.TemporaryDirectory() as work:
        copy = os.path.join(work, "spool.sqlite3")
        shutil.copyfile(path, copy)
        if os.path.exists(f"{path}-wal"):  # what was committed but not yet checkpointed (a crash) is there
            shutil.copyfile(f"{path}-wal", f"{copy}-wal")
        _fit_header(copy)
        try:
            with closing(sqlite3.connect(copy)) as connection:  # read-write: reading a WAL writes its index
                for seq, kind, collection, source, role, user_id, body in connection.execute(
                        "SELECT seq, kind, collection, source, role, user_id, body FROM entries ORDER BY seq"):
                    rows.append((seq, kind, collection, source, user_id or role, body))
        except sqlite3.DatabaseError as error:
            return rows, f"{error.__class__.__name__}: {error}"
    return rows, None


def _fit_header(path: str) -> None:
    """Make an SQLite file's header name no more pages than the file holds (a file cut short names more)."""
    with open(path, "r+b") as file:
        header = file.read(100)
        if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
            return
        (page_size,) = struct.unpack(">H", header[16:18])
        pages = os.path.getsize(path) // (65536 if page_size == 1 else page_size or 1)
        if struct.unpack(">I", header[28:32])[0] > pages:
            file.seek(28)
            file.write(struct.pack(">I", pages))
