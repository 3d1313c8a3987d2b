"""Supabase's write-ahead log, read through a logical replication slot decoded by wal2json.

Why wal2json, read with SQL functions: psycopg 3 (the project's driver) has no client for the
streaming replication protocol, and `pgoutput` read through `pg_logical_slot_peek_binary_changes`
is a binary protocol this code would have to parse by hand. wal2json ships with Supabase's
Postgres image (and Debian as `postgresql-NN-wal2json`) and writes each change as JSON, with every
value in PostgreSQL's own text form and its type oid, so psycopg's own loaders turn it into the
very values a `SELECT` gives `verify` and `backfill`. `pg_logical_slot_peek_changes` reads
without consuming; `pg_replication_slot_advance` moves the slot only once the mirror holds the
changes: a crash in between replays them, never skips them.
"""

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import psycopg
from psycopg import errors, sql
from psycopg.pq import Format
from psycopg.types.string import TextLoader

from ..ticker import ticking

DECODER = "wal2json"
DEFAULT_SLOT = "fitkart_mirror"
# wal2json's options: one JSON object per change, with transaction boundaries, commit times and type oids.
OPTIONS = ("format-version", "2", "include-transaction", "true", "include-xids", "true",
           "include-timestamp", "true", "include-type-oids", "true")


Result = TypeVar("Result")
# How often a read checks for a stop (SIGTERM) while PostgreSQL decodes.
STOP_CHECK_SECONDS = 0.2
# Another session reading the slot holds it for a moment (an operator's peek, a second follower starting):
# wait for it this long before giving up.
BUSY_SECONDS = 30


class WalSetupError(Exception):
    """The database cannot give this follower its change log; the message says what to change."""


class PostgresUnavailable(WalSetupError):
    """PostgreSQL could not be reached (a restart, the network): nothing to change, only to wait for."""


@dataclass
class Change:
    """One row change: an upsert of the new row, a delete by its identity, or a table emptied (truncate)."""

    table: str
    action: str  # "upsert", "delete" or "truncate"
    record: dict
    old_id: object = None  # an update's former primary key, when the update changed it
    committed_at: datetime | None = None  # its transaction's commit: the change's own time


@dataclass
class Transaction:
    """One committed transaction's changes to the mirrored tables, in the order they were made.

    Read as a stream (`WalSlot.read`), it is the transaction's header: its changes and its Commit follow it.
    """

    xid: str
    end_lsn: str  # where the slot may advance once the mirror holds these changes
    committed_at: datetime | None
    changes: list[Change] = field(default_factory=list)


@dataclass
class Commit:
    """The end of a committed transaction in the stream: where the slot may advance once the mirror holds it."""

    end_lsn: str


# What `WalSlot.read` yields: a transaction's header, each of its changes, then its commit.
Event = Transaction | Change | Commit


class WalSlot:
    """A named logical replication slot on the Supabase database, and what it holds for `tables`."""

    def __init__(self, url: str, tables: list[str], name: str = DEFAULT_SLOT, connect_timeout: int = 10,
                 **settings) -> None:
        try:
            self.connection = psycopg.connect(url, autocommit=True, connect_timeout=connect_timeout, **settings)
        except psycopg.Error as error:
            raise PostgresUnavailable(f"cannot connect to PostgreSQL: {error}") from None
        self.url = url
        self._reader_connection: psycopg.Connection | None = None
        self.name = name
        self.tables = tables
        self._lock = f"fitkart follow {name}"  # the advisory lock a follower of this slot holds
        info = self.connection.info
        self.description = f"postgres://{info.host}:{info.port}/{info.dbname}"
        self._loaders: dict[int, object] = {}
        self._known_columns: dict[str, list[str]] = {}

    def check(self) -> None:
        """Refuse, naming the fix, a database without logical decoding or a role that may not replicate."""
        level = self.connection.execute("SHOW wal_level").fetchone()[0]
        if level != "logical":
            raise WalSetupError(
                f"wal_level is {level!r}: logical decoding needs wal_level = logical. Run "
                "`ALTER SYSTEM SET wal_level = logical;` and restart PostgreSQL (Supabase: it is already logical).")
        allowed = self.connection.execute(
            "SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user").fetchone()[0]
        if not allowed:
            user = self.connection.info.user
            raise WalSetupError(f"role {user!r} may not use replication slots: `ALTER ROLE \"{user}\" WITH "
                                "REPLICATION;` (as a superuser), or connect as a role that has it")
        self.check_identities()
        unreadable = [name for (name, readable) in self.connection.execute(
            "SELECT t, has_table_privilege(format('public.%%I', t), 'SELECT') FROM unnest(%s::text[]) AS t "
            "WHERE to_regclass(format('public.%%I', t)) IS NOT NULL", [self.tables]).fetchall() if not readable]
        if unreadable:
            user, tables = self.connection.info.user, ", ".join(f"public.{name}" for name in unreadable)
            raise WalSetupError(f"role {user!r} may not read {', '.join(unreadable)}, which the first run copies and "
                                f"whose updates are read back: `GRANT SELECT ON {tables} TO \"{user}\";`")

    def check_identities(self) -> None:
        """Refuse, naming the fix, a mirrored table whose updates and deletes reach the log without the row's
        identity (REPLICA IDENTITY NOTHING, or DEFAULT without a primary key): wal2json leaves such changes out
        with only a warning in the server's log, so following them would confirm changes never applied."""
        rows = self.connection.execute(
            "SELECT c.relname, c.relreplident, EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid "
            "AND i.indisprimary), EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relname = ANY(%s)", [self.tables]).fetchall()
        # DEFAULT without a primary key, or USING INDEX whose index was dropped since, logs as NOTHING does.
        blind = sorted(name for name, identity, has_key, has_index in rows if identity == "n"
                       or (identity == "d" and not has_key) or (identity == "i" and not has_index))
        if blind:
            fixes = " ".join(f"ALTER TABLE public.{name} REPLICA IDENTITY DEFAULT;" for name in blind)
            raise WalSetupError(
                f"table(s) {', '.join(blind)} log updates and deletes without the row's identity (REPLICA IDENTITY "
                f"NOTHING, or DEFAULT without a primary key): those changes would be lost. Run `{fixes}` (or "
                "REPLICA IDENTITY FULL), then `flask fitkart repair` once for what was changed meanwhile")

    def exists(self) -> bool:
        """Whether the slot is there (for this database)."""
        row = self.connection.execute("SELECT plugin, database, database = current_database() "
                                      "FROM pg_replication_slots WHERE slot_name = %s", [self.name]).fetchone()
        if row is not None and row[0] is None:
            raise WalSetupError(f"slot {self.name!r} is a physical replication slot: choose another --slot")
        if row is not None and not row[2]:
            raise WalSetupError(f"slot {self.name!r} belongs to database {row[1]!r}, not this one: choose another "
                                "--slot (slot names are shared by the whole PostgreSQL server)")
        if row is not None and row[0] != DECODER:
            raise WalSetupError(f"slot {self.name!r} exists but decodes with {row[0]!r}, not {DECODER}: "
                                "drop it (`flask fitkart drop-slot`) or choose another --slot")
        return row is not None

    def create(self) -> None:
        """Create the slot: from here on, PostgreSQL keeps every change until the slot advances past it."""
        try:
            self.connection.execute("SELECT pg_create_logical_replication_slot(%s, %s)", [self.name, DECODER])
        except errors.UndefinedFile as error:  # the plugin's library is not installed
            raise WalSetupError(f"the {DECODER} output plugin is not installed on the server ({error}); "
                                "Debian: apt-get install postgresql-<version>-wal2json") from None
        except errors.InsufficientPrivilege as error:
            raise WalSetupError(f"cannot create a replication slot: {error}") from None

    def drop(self) -> bool:
        """Drop the slot (PostgreSQL then frees the WAL it kept); False when there was none. A session reading it
        (a peek of the status page) holds it a moment: waited for, as a read is."""
        if not self.exists():
            return False
        self._while_busy(lambda: self.connection.execute("SELECT pg_drop_replication_slot(%s)", [self.name]))
        return True

    def is_lost(self) -> bool:
        """Whether PostgreSQL removed WAL the slot still needed (past max_slot_wal_keep_size): it can give no more."""
        row = self.connection.execute("SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s",
                                      [self.name]).fetchone()
        return row is not None and row[0] == "lost"

    def hold(self) -> None:
        """Be the slot's only follower: a session lock for this connection's life, or an error naming the other."""
        taken = self.connection.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [self._lock]).fetchone()[0]
        if not taken:
            # Two followers would apply the same transactions out of step, and the later could undo the newer.
            raise WalSetupError(f"another follower is running on slot {self.name!r} (it holds its lock): stop it "
                                "first, or give this one another --slot")

    def read(self, max_changes: int, upto: str | None = None,
             stop: threading.Event | None = None) -> Iterator[Event]:
        """Whole committed transactions after the slot's position (about `max_changes` rows), not consumed, as they
        are decoded: each transaction's header, its changes, its commit.

        Rows are fetched one at a time on a connection of the slot's own, so memory holds one change at a
        time however large a transaction is. `upto` stops at that position: `--once` drains what was there
        when it started, not what keeps coming. Closing the iterator early cancels the read, and so does
        `stop` being set: PostgreSQL decodes a large transaction whole before its first row comes, and a
        SIGTERM must not wait for that (within STOP_CHECK_SECONDS the query is cancelled and the read ends).
        """
        tables = ",".join(f"public.{table}" for table in self.tables)
        query = sql.SQL("SELECT lsn::text, data FROM pg_logical_slot_peek_changes({}, {}::pg_lsn, {}, {})").format(
            sql.Literal(self.name), sql.Literal(upto), sql.Literal(max_changes),
            sql.SQL(", ").join(sql.Literal(value) for value in (*OPTIONS, "add-tables", tables)))
        with self._cancelled_on(stop):
            try:
                rows, first = self._streamed(query)
                yield from self._events(rows, first)
            except errors.QueryCanceled:
                if stop is None or not stop.is_set():
                    raise  # cancelled by something else (a statement_timeout, an operator): never a normal end
                # Stopped: what was read whole is confirmed by the caller (it sees the stop), the rest read again.

    def _cancelled_on(self, stop: threading.Event | None) -> AbstractContextManager[None]:
        """Cancel the reader connection's query when `stop` is set while the block runs."""
        if stop is None:
            return nullcontext()

        def watch() -> bool:
            if stop.is_set():
                self._reader().cancel()
                return False
            return True

        return ticking(STOP_CHECK_SECONDS, watch, "fitkart-follow-stop")

    def _events(self, rows: Iterator[tuple], first: tuple | None) -> Iterator[Event]:
        """The stream's rows as transactions' headers, changes and commits."""
        inside, committed_at = False, None
        try:
            for lsn, data in itertools.chain([first] if first else [], rows):
                message = json.loads(data, parse_float=str, parse_int=str)  # numbers keep their exact text
                action = message["action"]
                if action == "B":
                    inside, committed_at = True, self._moment(message.get("timestamp"))
                    yield Transaction(xid=str(message.get("xid", "")), end_lsn="", committed_at=committed_at)
                elif action == "C" and inside:
                    inside = False
                    yield Commit(lsn)
                elif inside and (change := self._change(message)) is not None:
                    change.committed_at = committed_at
                    yield change
        finally:
            rows.close()

    def peek(self, max_changes: int, upto: str | None = None) -> list[Transaction]:
        """The transactions `read` gives, each gathered whole with its changes (for small reads)."""
        transactions: list[Transaction] = []
        for event in self.read(max_changes, upto):
            if isinstance(event, Transaction):
                transactions.append(event)
            elif isinstance(event, Change):
                transactions[-1].changes.append(event)
            else:
                transactions[-1].end_lsn = event.end_lsn
        return transactions

    def _change(self, message: dict) -> Change | None:
        """One decoded row change of a transaction; None for what is not one."""
        action = message["action"]
        if action in ("I", "U"):
            row = self._row(message["columns"])
            old = self._row(message.get("identity") or [])
            return Change(message["table"], "upsert", self._completed(message["table"], row),
                          old_id=old.get("id") if old.get("id") != row.get("id") else None)
        if action == "D":
            return Change(message["table"], "delete", self._row(message["identity"]))
        if action == "T":
            return Change(message["table"], "truncate", {})
        return None

    def _streamed(self, query: sql.Composed) -> tuple[Iterator[tuple], tuple | None]:
        """A query's rows streamed on the reader connection, and its first row (None: no rows)."""
        def first_row() -> tuple[Iterator[tuple], tuple | None]:
            rows = self._reader().cursor().stream(query)
            try:
                return rows, next(rows, None)  # another session holding the slot raises here
            except errors.ObjectInUse:
                rows.close()
                raise

        return self._while_busy(first_row)

    def _reader(self) -> psycopg.Connection:
        """The connection the slot's changes are streamed on (opened on first use): the other stays free for
        the lookups made while reading them."""
        if self._reader_connection is None:
            self._reader_connection = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        return self._reader_connection

    def flushed(self) -> str:
        """How far PostgreSQL's WAL is on disk now: a peek that comes after this sees every commit before it."""
        return self.connection.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()[0]

    def advance(self, lsn: str) -> None:
        """Confirm everything up to `lsn`: PostgreSQL may free that WAL, and it is never decoded again."""
        query = sql.SQL("SELECT pg_replication_slot_advance({}, {}::pg_lsn)").format(sql.Literal(self.name),
                                                                                    sql.Literal(lsn))
        self._while_busy(lambda: self.connection.execute(query).fetchall())

    def _while_busy(self, attempt: Callable[[], Result]) -> Result:
        """Try something on the slot, again while another session holds the slot (ObjectInUse), BUSY_SECONDS at most."""
        deadline = time.monotonic() + BUSY_SECONDS
        while True:
            try:
                return attempt()
            except errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise WalSetupError(f"slot {self.name!r} stayed in use by another session for {BUSY_SECONDS} s: "
                                        "is another follower running on it?") from None
                time.sleep(0.2)

    def position(self) -> tuple[str | None, int]:
        """The slot's confirmed position, and how many bytes of WAL were written after it."""
        position, behind, _ = self.measure()
        return position, behind

    def measure(self) -> tuple[str | None, int, int]:
        """The slot's confirmed position, the WAL bytes written after it, and the WAL bytes PostgreSQL keeps for it
        (from its restart position: more than the lag when a transaction that began before it is still open)."""
        row = self.connection.execute(
            "SELECT confirmed_flush_lsn::text, pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, "
            "pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
            "FROM pg_replication_slots WHERE slot_name = %s", [self.name]).fetchone()
        return (row[0], int(row[1] or 0), int(row[2] or 0)) if row else (None, 0, 0)

    def condition(self) -> dict | None:
        """The slot as PostgreSQL sees it now, in one query (None: no such slot): its confirmed `position`, the WAL
        `behind` it and `kept` for it, its `wal_status` (`lost`: WAL it needed is gone), and whether a `follower`
        runs on it (holds its lock: a follower reads the slot only now and then, so `active` would miss it)."""
        row = self.connection.execute(
            "SELECT confirmed_flush_lsn::text, pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, "
            "pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, wal_status, EXISTS (SELECT 1 FROM pg_locks "
            "WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND database = (SELECT oid FROM pg_database "
            "WHERE datname = current_database()) AND classid::bigint = ((hashtext(%s)::bigint >> 32) & 4294967295) "
            "AND objid::bigint = (hashtext(%s)::bigint & 4294967295)) "
            "FROM pg_replication_slots WHERE slot_name = %s", [self._lock, self._lock, self.name]).fetchone()
        if row is None:
            return None
        return {"position": row[0], "behind": int(row[1] or 0), "kept": int(row[2] or 0), "wal_status": row[3],
                "follower": bool(row[4])}

    def oldest_pending(self) -> float | None:
        """How long ago (by PostgreSQL's clock) the oldest change of the mirrored tables after the slot's position
        was committed; None: there is none.

        A peek for one change, without consuming: PostgreSQL decodes from the slot to that change's
        transaction and no further (the caller bounds it with a statement_timeout). Other tables' traffic
        and logical messages are skipped: the follower confirms past them without applying anything.
        """
        tables = ",".join(f"public.{table}" for table in self.tables)
        query = sql.SQL("SELECT data, clock_timestamp() FROM pg_logical_slot_peek_changes({}, NULL, 1, {}) LIMIT 1"
                        ).format(sql.Literal(self.name), sql.SQL(", ").join(sql.Literal(value) for value in (
                            "format-version", "2", "include-transaction", "false", "include-timestamp", "true",
                            "add-tables", tables, "add-msg-prefixes", "fitkart-none")))
        row = self.connection.execute(query).fetchone()
        committed = self._moment(json.loads(row[0]).get("timestamp")) if row else None
        return None if committed is None else max(0.0, (row[1] - committed).total_seconds())

    def close(self) -> None:
        """Disconnect (the slot stays)."""
        if self._reader_connection is not None:
            self._reader_connection.close()
        self.connection.close()

    def _completed(self, table: str, row: dict) -> dict:
        """The row with the columns an update left out of the log (unchanged values stored out of line, TOAST).

        They are read from the table now, by primary key: a later value than this change's, which the
        stream's later changes overwrite in order anyway. A row gone since is left as logged (its delete follows).
        """
        missing = [name for name in self._columns(table) if name not in row]
        if not missing or row.get("id") is None:
            return row
        query = sql.SQL("SELECT {} FROM {} WHERE id = %s").format(
            sql.SQL(", ").join(map(sql.Identifier, missing)), sql.Identifier("public", table))
        current = self.connection.execute(query, [row["id"]]).fetchone()
        return {**row, **dict(zip(missing, current, strict=True))} if current else row

    def _columns(self, table: str) -> list[str]:
        """The table's columns (asked once)."""
        if table not in self._known_columns:
            self._known_columns[table] = [name for (name,) in self.connection.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
                "AND table_name = %s", [table])]
        return self._known_columns[table]

    def _row(self, columns: list[dict]) -> dict:
        """A decoded row: each value loaded by psycopg from its text form, as a SELECT would give it."""
        return {column["name"]: self._value(int(column["typeoid"]), column["value"]) for column in columns}

    def _value(self, oid: int, value):
        if value is None:
            return None
        text = ("t" if value else "f") if isinstance(value, bool) else str(value)
        loader = self._loaders.get(oid)
        if loader is None:
            # Types psycopg does not know (the user_role enum) load as their text.
            loader_class = self.connection.adapters.get_loader(oid, Format.TEXT) or TextLoader
            loader = self._loaders[oid] = loader_class(oid, self.connection)
        return loader.load(text.encode())

    def _moment(self, text: str | None) -> datetime | None:
        return self._value(1184, text) if text else None  # 1184: timestamptz
