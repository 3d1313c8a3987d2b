"""Following Supabase's WAL: each committed transaction applied through the sync engine, then confirmed.

At least once, in commit order: a batch of whole transactions is applied, its position is kept
in the mirror (`sync_follow`), and only then is the slot advanced. A follower killed anywhere in
between replays the same transactions from the slot's position; WAL writes are authoritative
upserts of whole rows (columns an update did not log are read back) and deletes by Supabase id,
so applying a transaction again leaves the mirror as it was (a record may briefly show an older
value while the replay catches up).
"""

import contextlib
import logging
import threading
from dataclasses import dataclass
from datetime import datetime

from pymongo.database import Database
from pymongo.errors import PyMongoError

from ..clock import utc_now
from ..model.documents import FOLLOW
from ..model.entities import BY_COLLECTION, ENTITIES
from ..storage.store import DatabaseUnavailable
from ..sync.engine import SyncEngine
from ..sync.write import DUPLICATE, RecordRejected
from .repair import as_payload, backfill_table
from .sources import PostgresSource
from .wal import Change, Transaction, WalSetupError, WalSlot

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
    lag_warnings: int = 0  # batches that found the slot past the warning threshold (each logged)


class Stopped(Exception):
    """SIGTERM during the first copy: it resumes where it was on the next start."""


# A record written by others at the same moment, again and again: worth trying again before giving up the batch.
CONTENDED_ATTEMPTS = 5


def apply_transaction(engine: SyncEngine, transaction: Transaction) -> int:
    """Apply one transaction's changes in order; how many were refused (each kept in sync_rejects)."""
    refused = 0
    for change in transaction.changes:
        for attempt in range(CONTENDED_ATTEMPTS):
            try:
                apply_change(engine, change)
                break
            except RecordRejected as error:
                if error.message.startswith("Too many concurrent writes") and attempt < CONTENDED_ATTEMPTS - 1:
                    continue
                if error.message.startswith("Too many concurrent writes"):
                    raise  # not the data's fault: stop before confirming, and replay it on the next start
                refused += 1  # kept by the engine; the log goes on (Supabase took it: the mirror's rules refused)
                break
    return refused


def apply_change(engine: SyncEngine, change: Change) -> None:
    """One change through the engine, as Supabase's own write (source `wal`)."""
    entity = BY_COLLECTION[change.table]
    record = as_payload(change.record)
    if change.action == "truncate":
        # The table emptied: every mirrored record deleted the engine's way, tombstones and all.
        for document in engine.database[entity.collection].find({}, {name: 1 for name in entity.key}):
            engine.delete_records(entity, {name: str(document[name]) for name in entity.key}, source="wal",
                                  route=ROUTE)
        return
    if change.action == "delete":
        # The old row's identity: its primary key (the Supabase id) by default, or the columns of the
        # replica identity index the table was given instead.
        selector = {"id": record["id"]} if "id" in record else {
            name: record[name] for name in entity.key if name in record}
        if not selector:
            raise WalSetupError(f"a delete from {change.table} carries neither its id nor its key: give the table "
                                "REPLICA IDENTITY DEFAULT (its primary key) or FULL")
        engine.delete_records(entity, selector, source="wal", route=ROUTE)
        return
    if change.old_id is not None:  # the primary key itself changed: the record under the old one goes
        engine.delete_records(entity, {"id": str(change.old_id)}, source="wal", route=ROUTE)
    try:
        engine.upsert_record(entity, record, source="wal", route=ROUTE, authoritative=True)
    except RecordRejected as error:
        if error.message != DUPLICATE or "id" not in record:
            raise
        # The update changed the mirror's key (a profile's user_id, a wishlist row's product): the document
        # under the old key holds this Supabase id. It goes, and the row is written under its new key.
        engine.delete_records(entity, {"id": record["id"]}, source="wal", route=ROUTE)
        engine.upsert_record(entity, record, source="wal", route=ROUTE, authoritative=True)


class Follower:
    """Applies the slot's transactions to the mirror and keeps its position and lag in `sync_follow`."""

    def __init__(self, engine: SyncEngine, slot: WalSlot, *, max_changes: int = 1000,
                 lag_warning_bytes: int = 1 << 30) -> None:
        self.engine = engine
        self.slot = slot
        self.max_changes = max_changes
        self.lag_warning_bytes = lag_warning_bytes
        self.state = engine.database[FOLLOW]
        self.totals = FollowTotals()

    def prepare(self, database_url: str, stop: threading.Event, snapshot: bool = True) -> bool:
        """Check the database, hold the slot, create it if needed, then copy the tables once, without a gap.

        The slot is created first: every change committed after it is kept for this follower. The
        copy is read afterwards, from one snapshot, so it holds everything committed before the slot
        and perhaps some changes after; streaming then replays those changes in order over it, which
        ends at the same rows. A copy cut short (SIGTERM, a crash) is finished on the next start; a new
        slot's copy starts from the first row, whatever an earlier `backfill` left. False: stopped.
        """
        self.slot.check()
        self.slot.hold()
        created = not self.slot.exists()
        if created:
            self.slot.create()
            self._save({"snapshot": "pending" if snapshot else "skipped", "created_at": utc_now(),
                        "total_changes": 0, "total_transactions": 0})
        saved = self.state.find_one({"_id": self.slot.name}) or {}
        if saved.get("snapshot") == "pending" or (snapshot and not saved):
            def advance(_rows: int) -> None:
                if stop.is_set():
                    raise Stopped

            source = PostgresSource(database_url)
            try:
                for entity in ENTITIES:
                    done = backfill_table(self.engine, entity, source, restart=created, advance=advance)
                    self.totals.snapshot_rows += done["rows"]
            except Stopped:
                return False
            finally:
                source.close()
            self._save({"snapshot": "done", "snapshot_at": utc_now()})
        return True

    def run(self, stop: threading.Event, once: bool = False, poll_seconds: float = 1.0) -> FollowTotals:
        """Follow until `stop` is set (or, with `once`, until nothing is left); each batch confirmed after applying."""
        self._save({"state": "following", "started_at": utc_now()})
        until = self.slot.flushed() if once else None
        try:
            while not stop.is_set():
                flushed = self.slot.flushed()
                transactions = self.slot.peek(self.max_changes, upto=until)
                if transactions:
                    self.apply(transactions, stop)
                    continue
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

    def apply(self, transactions: list[Transaction], stop: threading.Event) -> None:
        """Apply whole transactions in commit order, keep the position, then advance the slot past them."""
        applied: list[Transaction] = []
        for transaction in transactions:
            self.totals.rejected += apply_transaction(self.engine, transaction)
            applied.append(transaction)
            if stop.is_set():
                break  # a clean stop: after a whole transaction, confirmed below
        if not applied:
            return
        changes = sum(len(transaction.changes) for transaction in applied)
        # Transactions of other tables come as empty ones: confirmed, not counted.
        touched = sum(1 for transaction in applied if transaction.changes)
        self.totals.transactions += touched
        self.totals.changes += changes
        last = applied[-1]
        self._save({"confirmed_lsn": last.end_lsn, "last_commit_at": last.committed_at, "applied_at": utc_now()},
                   increments={"transactions": touched, "changes": changes})
        self.slot.advance(last.end_lsn)
        self._measure(caught_up=False, last_commit_at=last.committed_at)

    def _measure(self, caught_up: bool, last_commit_at: datetime | None = None) -> None:
        """Record the lag: WAL bytes written after the slot's position, and the age of what is being applied."""
        _, lag_bytes = self.slot.position()
        seconds = 0.0 if caught_up or last_commit_at is None else max(0.0, (utc_now() - last_commit_at)
                                                                     .total_seconds())
        self.totals.lag_bytes, self.totals.lag_seconds = lag_bytes, seconds
        self._save({"lag_bytes": lag_bytes, "lag_seconds": round(seconds, 3), "measured_at": utc_now()})
        if lag_bytes > self.lag_warning_bytes:
            message = (f"slot {self.slot.name!r} is {lag_bytes:,} bytes behind: PostgreSQL keeps that WAL until "
                       "the follower catches up (drop an abandoned slot with `flask fitkart drop-slot`)")
            log.warning(message)
            self.totals.lag_warnings += 1

    def _save(self, fields: dict, increments: dict | None = None) -> None:
        """Update this slot's document in `sync_follow` (one per slot)."""
        self.state.update_one({"_id": self.slot.name},
                              {"$set": {**fields, "source": self.slot.description}, **(
                                  {"$inc": {f"total_{name}": value for name, value in increments.items()}}
                                  if increments else {})}, upsert=True)


def follow_state(database: Database) -> list[dict]:
    """Every follower's slot, position and lag, for the status page, /metrics and `stats`."""
    return list(database[FOLLOW].find({}).sort("_id", 1))
