"""Following Supabase's WAL: each committed transaction applied through the sync engine, then confirmed.

At least once, in commit order: a batch of whole transactions is applied, its position is kept
in the mirror (`sync_follow`), and only then is the slot advanced. A follower killed anywhere in
between replays the same transactions from the slot's position; WAL writes are authoritative
upserts of whole rows (columns an update did not log are read back) and deletes by Supabase id,
so applying a transaction again leaves the mirror as it was (a record may briefly show an older
value while the replay catches up).
"""

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import psycopg
from marshmallow import ValidationError
from pymongo.database import Database
from pymongo.errors import PyMongoError

from ..clock import utc_now
from ..model.documents import FOLLOW
from ..model.entities import BY_COLLECTION, ENTITIES, Entity
from ..storage.store import DatabaseUnavailable
from ..sync.engine import SyncEngine
from ..sync.mirror import is_moved_key
from ..sync.write import DUPLICATE, RecordRejected, Write
from .repair import Stopped, as_payload, backfill_table
from .sources import PostgresSource
from .wal import Change, Event, Transaction, WalSetupError, WalSlot

log = logging.getLogger(__name__)
ROUTE = "flask fitkart follow"
TABLES = [entity.collection for entity in ENTITIES]


@dataclass
class FollowTotals:
    """What one run of the follower did."""

    transactions: int = 0
    changes: int = 0
    rejected: int = 0
    snapshot_rows: int = 0
    lag_bytes: int = 0
    lag_seconds: float = 0.0
    retained_bytes: int = 0  # WAL PostgreSQL keeps for the slot (from its restart position)
    lag_warnings: int = 0  # batches that found the slot past the warning threshold (each logged)


# A record written by others at the same moment, again and again: worth trying again before giving up the batch.
CONTENDED_ATTEMPTS = 5
CONTENDED = "Too many concurrent writes"
# Changes applied in one call of the engine: what the follower holds at once, however large a transaction is.
PAGE_CHANGES = 200
# How often the lag is measured while one large transaction is being applied (else after each batch).
MEASURE_EVERY_SECONDS = 5.0


def apply_transaction(engine: SyncEngine, transaction: Transaction) -> int:
    """Apply one transaction's changes in order, a page at a time; how many were refused (kept in sync_rejects)."""
    return sum(apply_changes(engine, transaction.changes[start:start + PAGE_CHANGES])
               for start in range(0, len(transaction.changes), PAGE_CHANGES))


def apply_changes(engine: SyncEngine, changes: list[Change]) -> int:
    """Apply consecutive changes of one transaction in order, as Supabase's own writes (source `wal`), runs of
    distinct records in bulk; how many were refused (each kept in sync_rejects).

    A change the engine could not make for a reason the log resolves (the update moved the mirror's key,
    another writer kept the record busy) is made alone, then the changes after it are applied again: they
    are whole rows and deletes, so applying them again in order ends at the same rows.
    """
    refused, start, contended = 0, 0, 0
    while start < len(changes):
        if changes[start].action == "truncate":
            truncate(engine, BY_COLLECTION[changes[start].table])
            start += 1
            continue
        # A delete found by its identity columns reads the mirror: the changes before it must be in it already.
        run = changes[start:start + 1] + list(itertools.takewhile(
            lambda change: change.action != "truncate" and not by_identity(change), changes[start + 1:]))
        writes = [(offset, write) for offset, change in enumerate(run) for write in writes_of(engine, change)]
        resume = len(run)
        for (offset, write), answer in zip(writes, engine.apply_writes([write for _, write in writes]), strict=True):
            if not isinstance(answer, Exception):
                continue
            if isinstance(answer, RecordRejected) and answer.message.startswith(CONTENDED):
                contended += 1
                if contended >= CONTENDED_ATTEMPTS:
                    raise answer  # not the data's fault: stop before confirming, and replay it on the next start
                resume = offset
                break
            if is_moved_key(write, answer):
                refused += moved_key(engine, write)
                resume = offset + 1
                break
            refused += 1  # the log goes on (Supabase took it: the mirror's rules refused)
        start += resume
    return refused


def writes_of(engine: SyncEngine, change: Change) -> list[Write]:
    """The engine's writes for one row change: a delete by its identity, or an authoritative upsert of the row
    (after the delete of the record under its former primary key, when the update changed it)."""
    entity = BY_COLLECTION[change.table]
    record = as_payload(change.record)
    if change.action == "delete":
        # The old row's identity: its primary key (the Supabase id) by default, or the columns of the
        # replica identity index the table was given instead.
        if not by_identity(change):
            selector = {"id": record["id"]} if "id" in record else {name: record[name] for name in entity.key}
            return [Write("delete", entity, selector, source="wal", route=ROUTE, changed_at=change.committed_at)]
        if not record:
            raise WalSetupError(f"a delete from {change.table} carries no identity at all: give the table REPLICA "
                                "IDENTITY DEFAULT (its primary key) or FULL, then run `flask fitkart repair` once")
        return [Write("delete", entity, selector, source="wal", route=ROUTE, changed_at=change.committed_at)
                for selector in records_by_identity(engine, entity, record)]
    moved = [Write("delete", entity, {"id": str(change.old_id)}, source="wal", route=ROUTE,
                   changed_at=change.committed_at)] if change.old_id is not None else []
    return [*moved, Write("upsert", entity, record, source="wal", route=ROUTE, authoritative=True,
                          changed_at=change.committed_at)]


def by_identity(change: Change) -> bool:
    """A delete that carries neither the Supabase id nor the mirror's key (see records_by_identity)."""
    entity = BY_COLLECTION[change.table]
    return change.action == "delete" and "id" not in change.record and \
        not all(name in change.record for name in entity.key)


def records_by_identity(engine: SyncEngine, entity: Entity, identity: dict) -> list[dict]:
    """Delete selectors of the mirror's records holding a delete's identity columns: those of a replica identity
    index that is neither the primary key nor the mirror's key (a unique index, so at most one; a query on those
    columns, which FerretDB v1 answers with a scan: such deletes are rare). The values are put in the form the
    mirror stores (uuids as text, times to the millisecond, money in its mode); a record is named by its id, or
    by its key when it has none."""
    try:
        query = engine.to_storage(entity, entity.schema.load(identity, partial=True))
    except ValidationError:
        return []  # values no stored record could hold
    fields = {name: 1 for name in (*entity.key, "id")}
    return [{"id": document["id"]} if document.get("id") is not None else
            {name: document[name] for name in entity.key if name in document}
            for document in engine.database[entity.collection].find(query, fields).limit(2)]


def moved_key(engine: SyncEngine, write: Write) -> int:
    """An update that changed the mirror's key (a profile's user_id, a wishlist row's product): the document
    under the old key holds this Supabase id. It goes, and the row is written under its new key; 1 if refused."""
    try:
        engine.delete_records(write.entity, {"id": write.payload["id"]}, source="wal", route=ROUTE,
                              changed_at=write.changed_at)
        engine.upsert_record(write.entity, write.payload, source="wal", route=ROUTE, authoritative=True,
                             changed_at=write.changed_at)
    except RecordRejected as refusal:
        if refusal.message == DUPLICATE:  # still taken after the move (not a move, then): kept like any refusal
            engine.record_reject(reason=refusal.message, errors={}, payload=write.payload, route=ROUTE,
                                 collection=write.collection, operation="upsert", source="wal", caller=write.caller,
                                 status=422)
        return 1
    return 0


def truncate(engine: SyncEngine, entity: Entity) -> None:
    """The table emptied: every mirrored record deleted the engine's way, tombstones and all."""
    for document in engine.database[entity.collection].find({}, {name: 1 for name in entity.key}):
        engine.delete_records(entity, {name: str(document[name]) for name in entity.key}, source="wal", route=ROUTE)


class Follower:
    """Applies the slot's transactions to the mirror and keeps its position and lag in `sync_follow`."""

    def __init__(self, engine: SyncEngine, slot: WalSlot, *, max_changes: int = 1000,
                 lag_warning_bytes: int = 1 << 30, lag_warning_seconds: float = 300.0) -> None:
        self.engine = engine
        self.slot = slot
        self.max_changes = max_changes
        self.lag_warning_bytes = lag_warning_bytes
        self.lag_warning_seconds = lag_warning_seconds
        self.state = engine.database[FOLLOW]
        self.totals = FollowTotals()
        self._measured_at = time.monotonic()

    def prepare(self, database_url: str, stop: threading.Event, snapshot: bool = True, resync: bool = False) -> bool:
        """Check the database, hold the slot, create it if needed, then copy the tables once, without a gap.

        The slot is created first: every change committed after it is kept for this follower. The
        copy is read afterwards, from one snapshot, so it holds everything committed before the slot
        and perhaps some changes after; streaming then replays those changes in order over it, which
        ends at the same rows. A copy cut short (SIGTERM, a crash) is finished on the next start; a new
        slot's copy starts from the first row, whatever an earlier `backfill` left. A slot this follower used
        that is gone, or lost, is refused (the gap is in no log); `resync` drops it and starts over (the
        caller then repairs, to remove what was deleted in the gap). False: stopped.
        """
        self.slot.check()
        self.slot.hold()
        saved = self.state.find_one({"_id": self.slot.name}) or {}
        # Whether this follower has streamed from a slot (a first copy never finished has no gap to protect).
        had_slot = saved.get("confirmed_lsn") is not None or saved.get("snapshot") in ("done", "skipped")
        if resync:
            self.slot.drop()  # a lost slot, or one an operator wants to start over from
            self.state.delete_one({"_id": self.slot.name})
        elif had_slot and not self.slot.exists():
            raise WalSetupError(
                f"slot {self.slot.name!r}, which this follower used (its position is in sync_follow), is gone from "
                f"PostgreSQL: the changes since then are in no log, and rows deleted meanwhile would stay in the "
                f"mirror. Run `flask fitkart follow --resync` (a new slot, a copy, and a repair)")
        elif self.slot.exists() and self.slot.is_lost():
            raise WalSetupError(
                f"slot {self.slot.name!r} is lost: PostgreSQL removed WAL it still needed (max_slot_wal_keep_size), "
                "so the changes since the follower's position cannot be read. Run `flask fitkart follow --resync` "
                "(a new slot, a copy, and a repair); raise max_slot_wal_keep_size, or keep the follower running")
        created = not self.slot.exists()
        if created:
            self.slot.create()
            self._save({"snapshot": "pending" if snapshot else "skipped", "created_at": utc_now(),
                        "total_changes": 0, "total_transactions": 0, **({"resync": "pending"} if resync else {})})
        saved = self.state.find_one({"_id": self.slot.name}) or {}
        if saved.get("snapshot") == "pending" or (snapshot and not saved):
            def advance(_rows: int) -> None:
                if stop.is_set():
                    raise Stopped

            try:
                source = PostgresSource(database_url)
                try:
                    for entity in ENTITIES:
                        done = backfill_table(self.engine, entity, source, restart=created, advance=advance)
                        self.totals.snapshot_rows += done["rows"]
                finally:
                    source.close()
            except Stopped:
                return False
            except psycopg.Error as error:
                if created and not isinstance(error, psycopg.OperationalError):
                    # A first run PostgreSQL refuses (no grant, no table) leaves no slot holding WAL for no one;
                    # one that lost a connection keeps it, and the next start resumes the copy.
                    with contextlib.suppress(PyMongoError, DatabaseUnavailable):
                        self.state.delete_one({"_id": self.slot.name})
                    with contextlib.suppress(psycopg.Error):
                        self.slot.drop()
                raise
            self._save({"snapshot": "done", "snapshot_at": utc_now()})
        return True

    def run(self, stop: threading.Event, once: bool = False, poll_seconds: float = 1.0) -> FollowTotals:
        """Follow until `stop` is set (or, with `once`, until nothing is left); each batch confirmed after applying."""
        self._save({"state": "following", "started_at": utc_now()})
        until = self.slot.flushed() if once else None
        try:
            while not stop.is_set():
                flushed = self.slot.flushed()
                if self.apply(self.slot.read(self.max_changes, upto=until, stop=stop), stop):
                    continue
                if stop.is_set():
                    break  # the read was cut short by the stop: nothing after the last confirmation is confirmed
                # Nothing of the six tables up to `flushed`: confirm it, or the other tables' traffic would be
                # kept for this slot for as long as the six stay quiet.
                # With `--once` the peek stopped at `until`: nothing after it was read, nor is it confirmed.
                self.slot.advance(until or flushed)
                self._measure(caught_up=True)
                if once:
                    break
                stop.wait(poll_seconds)
        finally:
            # When the mirror is away, the error that stopped the run is the one to report.
            with contextlib.suppress(PyMongoError, DatabaseUnavailable):
                self._save({"state": "stopped", "stopped_at": utc_now()})
        return self.totals

    def apply(self, events: Iterator[Event], stop: threading.Event) -> bool:
        """Apply the transactions read, in commit order, a page of changes at a time (a page may hold many small
        transactions, or part of a large one), then keep the position and advance the slot past the last whole
        one; whether anything was read.

        SIGTERM is heard after each page and each commit: a transaction cut short is not confirmed, and the
        next start applies it again, whole (its changes are whole rows and deletes: applying them again
        changes nothing).
        """
        read = False
        last: Transaction | None = None  # the last transaction read whole: confirmed once its changes are in
        current: Transaction | None = None
        touched = changes = in_transaction = 0  # in_transaction: the current transaction's changes so far
        page: list[Change] = []
        try:
            for event in events:
                read = True
                if isinstance(event, Transaction):
                    current, in_transaction = event, 0
                elif isinstance(event, Change):
                    page.append(event)
                    in_transaction += 1
                    if len(page) == PAGE_CHANGES:
                        self.totals.rejected += apply_changes(self.engine, page)
                        page = []
                        if time.monotonic() - self._measured_at >= MEASURE_EVERY_SECONDS:
                            # Inside a large transaction: the lag is the age of the commit being applied.
                            self._measure(caught_up=False, last_commit_at=current.committed_at)
                        if stop.is_set():
                            break
                else:
                    current.end_lsn, last = event.end_lsn, current
                    # Transactions of other tables come as empty ones: confirmed, not counted.
                    touched, changes = touched + (1 if in_transaction else 0), changes + in_transaction
                    if stop.is_set():
                        break
        finally:
            events.close()  # the slot is free again before it is advanced
        if page:  # the rest: whole transactions, and a stopped one's changes so far (left unconfirmed)
            self.totals.rejected += apply_changes(self.engine, page)
        if last is not None:
            # Checked again before each confirmation: a table switched to REPLICA IDENTITY NOTHING while following
            # stops the follower before it confirms past changes the log left out.
            self.slot.check_identities()
            self.totals.transactions += touched
            self.totals.changes += changes
            self._save({"confirmed_lsn": last.end_lsn, "last_commit_at": last.committed_at, "applied_at": utc_now()},
                       increments={"transactions": touched, "changes": changes})
            self.slot.advance(last.end_lsn)
            self._measure(caught_up=False, last_commit_at=last.committed_at)
        return read

    def _measure(self, caught_up: bool, last_commit_at: datetime | None = None) -> None:
        """Record the lag: WAL bytes written after the slot's position, and the age of what is being applied."""
        self._measured_at = time.monotonic()
        _, lag_bytes, retained_bytes = self.slot.measure()
        seconds = 0.0 if caught_up or last_commit_at is None else max(0.0, (utc_now() - last_commit_at)
                                                                     .total_seconds())
        self.totals.lag_bytes, self.totals.lag_seconds = lag_bytes, seconds
        self.totals.retained_bytes = retained_bytes
        self._save({"lag_bytes": lag_bytes, "lag_seconds": round(seconds, 3), "retained_bytes": retained_bytes,
                    "measured_at": utc_now()})
        warnings = slot_warnings(self.slot.name, lag_bytes=lag_bytes, retained_bytes=retained_bytes,
                                 pending_seconds=seconds, max_bytes=self.lag_warning_bytes,
                                 max_seconds=self.lag_warning_seconds)
        for message in warnings:
            log.warning(message)
        self.totals.lag_warnings += bool(warnings)

    def _save(self, fields: dict, increments: dict | None = None) -> None:
        """Update this slot's document in `sync_follow` (one per slot)."""
        self.state.update_one({"_id": self.slot.name},
                              {"$set": {**fields, "source": self.slot.description}, **(
                                  {"$inc": {f"total_{name}": value for name, value in increments.items()}}
                                  if increments else {})}, upsert=True)


def slot_warnings(slot: str, *, lag_bytes: int, retained_bytes: int, pending_seconds: float, max_bytes: int,
                  max_seconds: float) -> list[str]:
    """What is past the warning thresholds (FITKART_LAG_WARNING_MB, FITKART_LAG_WARNING_SECONDS), one line each."""
    warnings = []
    if max(lag_bytes, retained_bytes) > max_bytes:
        warnings.append(f"slot {slot!r} is {lag_bytes:,} bytes behind and PostgreSQL keeps {retained_bytes:,} bytes "
                        "of WAL for it (an open transaction that began before the follower's position holds it back "
                        "too): that WAL stays until the follower gets past it (drop an abandoned slot with "
                        "`flask fitkart drop-slot`)")
    if pending_seconds > max_seconds:
        warnings.append(f"slot {slot!r}: changes committed {pending_seconds:,.0f} s ago were not yet in the mirror "
                        "when measured (a follower stopped, or not keeping up: `flask fitkart follow`)")
    return warnings


def follow_state(database: Database) -> list[dict]:
    """Every follower's slot, position and lag, for the status page, /metrics and `stats`."""
    return list(database[FOLLOW].find({}).sort("_id", 1))
