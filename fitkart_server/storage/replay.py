"""Replaying the spool: writes kept while the database was away, applied in arrival order once it answers.

A background thread in each process replays the spool through the same engine as the
original caller, one process at a time (see spool.py), at start-up too.
"""

import atexit
import logging
import os
import sqlite3
import threading
import time
import weakref
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import Flask, current_app
from pymongo.errors import ConnectionFailure

from ..bounds import MAX_REASON, cut
from ..clock import to_millisecond
from ..model.entities import BY_COLLECTION
from ..sync.engine import SyncEngine
from ..sync.ordering import change_time
from ..sync.write import ClientVersion, Write
from ..ticker import ticking
from .spool import FILE, LEASE_SECONDS, Entry, Spool
from .store import DatabaseUnavailable, DatabaseUnreachable, Store

log = logging.getLogger(__name__)

# What says the database cannot take a write now (as opposed to the write being wrong).
UNREACHABLE = (DatabaseUnreachable, ConnectionFailure)
RETRY_SECONDS = 1.0
EXIT_SECONDS = 5.0  # how long a process exiting waits for its replayer's run to finish
MAX_RETRY_SECONDS = 30.0  # the longest wait between attempts of a replayer that keeps failing
FAULT_LOG_SECONDS = 60.0  # a replayer that keeps failing says so once a minute, not once an attempt
REPLAY_BATCH = 500  # entries read at once; consecutive upserts of one caller are applied as one batch


@dataclass(frozen=True)
class ReplayFault:
    """Why this process's replayer cannot drain the spool now (it keeps trying), since when, how many tries."""

    error: str
    since: float
    attempts: int


class Replayer:
    """Drains the spool into the database from a background thread of this process.

    A fault of the spool's own file or of this code (the file locked by another program, a full
    disk) delays the replay, never ends it: the thread tries again, waiting longer each time (up to
    MAX_RETRY_SECONDS), and says so in the log, `/readyz`, the status page and `/metrics` (`fault`).
    """

    def __init__(self, spool: Spool, store: Store) -> None:
        self.spool, self.store = spool, store
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.fault: ReplayFault | None = None
        self._fault_logged_at = 0.0

    def kick(self) -> None:
        """Make sure a replaying thread runs in this process (it stops when the spool is empty)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fitkart-spool", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop replaying in this process (its app is closing) and wait for the thread; the queue stays on disk.
        Whether it stopped in time (if not, it stops after the run it is applying, and the lease is its own)."""
        self._stopped.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                return False  # still applying a run: letting go of the lease now would let another start beside it
        self._release()  # another process replays at once, not once the lease runs out
        return True

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                with self._lock:  # decided under the lock `kick` takes: an entry queued now is never left behind
                    if self.spool.is_empty():
                        self._thread = None
                        self.fault = None
                        self._release()
                        return
                if not self.spool.take_lease():
                    self.fault = None  # another process replays (and says how it goes); take over if its lease runs out
                    self._stopped.wait(RETRY_SECONDS)
                    continue
                self.replay()
                self.fault = None
            except (*UNREACHABLE, DatabaseUnavailable):
                self._drain_ended()  # writers stop waiting for a drain that is not happening
                self._stopped.wait(RETRY_SECONDS)
            except Exception as error:  # the spool's file or a fault of ours: the entries stay queued, and it is said
                self.spool.free_reserve(error)  # a full disk: the lease and removals need the reserve's room
                self._failed(error)
                self._stopped.wait(min(MAX_RETRY_SECONDS, RETRY_SECONDS * 2 ** min(self.fault.attempts, 8)))
        self._release()

    def _failed(self, error: Exception) -> None:
        """Note a failed attempt; log the first of a run of them with its traceback, then one line a minute."""
        now = time.time()
        previous = self.fault
        self.fault = ReplayFault(f"{error.__class__.__name__}: {cut(str(error), MAX_REASON)}",
                                 previous.since if previous else now, previous.attempts + 1 if previous else 1)
        if previous is None:
            log.exception("Replaying the spool failed; its entries stay queued and it is tried again.")
            self._fault_logged_at = now
        elif now - self._fault_logged_at >= FAULT_LOG_SECONDS:
            log.error("Replaying the spool still fails after %d tries in %.0f s: %s", self.fault.attempts,
                      now - self.fault.since, self.fault.error)
            self._fault_logged_at = now

    def _lease_renewed(self) -> AbstractContextManager[None]:
        """Renew the lease every third of its time while the spool drains: on a slow database one run can outlast
        it. One renewer for the whole drain, not one per run."""
        def renew() -> bool:
            try:
                return self.spool.take_lease()  # False: taken, and the check after the run stops this replayer
            except sqlite3.Error:
                return True  # the file is busy: the next renewal tries again

        return ticking(LEASE_SECONDS / 3, renew, "fitkart-spool-lease")

    def _drain_ended(self) -> None:
        """Say the drain stopped (when the file lets us; else its progress goes stale by itself)."""
        with suppress(sqlite3.Error, OSError):
            self.spool.drain_ended()

    def _release(self) -> None:
        """Let another process replay (when the file lets us say so; else the lease runs out)."""
        try:
            self.spool.release_lease()
        except (sqlite3.Error, OSError):
            log.warning("The spool's lease could not be released; it runs out by itself.")

    def replay(self) -> int:
        """Apply queued entries in order until the spool is empty; how many were applied."""
        engine = self.store.engine()
        with self._lease_renewed():
            done = self._drain(engine)
        if done:
            log.info("Replayed %d queued writes from the spool.", done)
        return done

    def _drain(self, engine: SyncEngine) -> int:
        """`replay`'s loop: runs in order until the spool is empty or the lease went to another replayer."""
        done, rate, since = 0, 0.0, time.monotonic()
        while entries := self.spool.head(REPLAY_BATCH):
            for run in runs(entries):
                if self._stopped.is_set():
                    return done  # its process is closing, or a command replays instead: the rest stays queued
                try:
                    apply_run(engine, run)
                except (*UNREACHABLE, DatabaseUnavailable):
                    raise
                except Exception as error:  # a fault of ours must not block the spool: keep it as a reject
                    log.exception("A queued write could not be replayed; it is kept in sync_rejects.")
                    set_aside(engine, run, error)
                # After the database holds them: a crash in between replays them again, which changes nothing.
                done += len(run)
                self.fault = None  # it applies again
                # The recent rate tells writers whether waiting for the drain can pay off, and paces those that
                # queue behind it (spool.py): it follows a database that slows down as it fills.
                now = time.monotonic()
                rate = recent_rate(rate, len(run), now - since)
                since = now
                kept = self.spool.remove_through(run[-1].seq, rate=rate)  # renews the lease, or says it is gone
                self.spool.keep_reserve()  # made again once the disk has room (after a full disk freed it)
                if not kept:
                    # Its lease ran out (this process stalled) and another replayer has the queue now: two at once
                    # could apply an older write after a newer one.
                    log.warning("The spool's lease went to another replayer after %d writes; this one stops.", done)
                    return done
        return done


def recent_rate(previous: float, applied: int, seconds: float) -> float:
    """Entries a second, weighted towards the latest run (the first run sets it)."""
    latest = applied / max(seconds, 0.001)
    return latest if previous <= 0 else (previous + latest) / 2


def runs(entries: list[Entry]) -> list[list[Entry]]:
    """Consecutive writes (upserts and deletes of known tables) of one caller and source go together, applied as
    one batch (in order, distinct upserts in bulk); anything else alone, so a fault in it holds up nothing else."""
    grouped: list[list[Entry]] = []
    for entry in entries:
        last = grouped[-1][-1] if grouped else None
        if last is not None and _joins(last) and _joins(entry) and \
                (entry.caller, entry.source) == (last.caller, last.source):
            grouped[-1].append(entry)
        else:
            grouped.append([entry])
    return grouped


def _joins(entry: Entry) -> bool:
    """Whether an entry may be applied in a run with others: a write to a table the engine knows."""
    return entry.kind in ("upsert", "delete") and entry.collection in BY_COLLECTION


def set_aside(engine: SyncEngine, run: list[Entry], error: Exception) -> None:
    """Keep queued writes that failed at replay as rejects (an operator can replay them), so later ones go on."""
    for entry in run:
        engine.record_reject(reason=f"A queued write could not be replayed: {error.__class__.__name__}.",
                             errors={}, payload=entry.body, route=entry.route, collection=entry.collection,
                             operation=entry.kind if entry.kind in ("upsert", "delete") else None,
                             source=entry.source, caller=entry.caller, status=500)


def apply_run(engine: SyncEngine, run: list[Entry]) -> None:
    """Apply queued entries in order through the engine, as their original caller and source."""
    first = run[0]
    if first.kind == "reject":
        document = dict(first.body)
        document["at"] = datetime.fromisoformat(document["at"])
        engine.reject_log.insert(document)
        return
    # The batch path: in order, each run of distinct upserts with one read and one bulk write, the same rules;
    # a refusal at replay is kept in sync_rejects like any refusal.
    engine.apply_writes([queued_write(entry) for entry in run])


def queued_write(entry: Entry) -> Write:
    """A queued entry as the write it was: judged by when it arrived (or the client made it), not by now."""
    version = ClientVersion.of_stored(entry.version)
    return Write(entry.kind, BY_COLLECTION[entry.collection], entry.body, entry.caller, entry.source, entry.route,
                 changed_at=change_time(version, to_millisecond(datetime.fromtimestamp(entry.at, UTC))),
                 version=version)


def get_spool() -> Spool:
    """The current app's spool."""
    return current_app.extensions["fitkart_spool"]


def get_replayer() -> Replayer:
    """The current app's replayer."""
    return current_app.extensions["fitkart_replayer"]


def spool_path(app: Flask) -> str:
    """FITKART_SPOOL_PATH, else a file in the instance folder."""
    return app.config["FITKART_SPOOL_PATH"] or os.path.join(app.instance_path, FILE)


def init_app(app: Flask) -> None:
    """Open the spool; replay what an earlier run left in it."""
    spool = Spool(spool_path(app), app.config["FITKART_SPOOL_MAX_MB"] * 1024 * 1024)
    replayer = Replayer(spool, app.extensions["fitkart_store"])
    app.extensions["fitkart_spool"] = spool
    app.extensions["fitkart_replayer"] = replayer
    # A process that exits gracefully lets go of the lease at once, so another replays without waiting it out.
    exiting = weakref.ref(replayer)
    atexit.register(lambda: (replayer := exiting()) is not None and replayer.stop(timeout=EXIT_SECONDS))
    spool.check()  # a damaged file is moved aside, an unwritable one leaves the spool off: the server starts
    try:
        # A file another program held locked through the check is left to the replayer: it delays the replay,
        # never this worker's start.
        if spool.is_set_up and spool.is_empty():
            return
    except sqlite3.Error as error:
        log.warning("The spool could not be read at start-up (%s); its replayer tries again.", error)
    replayer.kick()
