"""Replaying the spool: writes kept while the database was away, applied in arrival order once it answers.

A background thread in each process replays the spool through the same engine as the
original caller, one process at a time (see spool.py), at start-up too.
"""

import logging
import os
import threading
from datetime import UTC, datetime

from flask import Flask, current_app
from pymongo.errors import ConnectionFailure

from ..clock import to_millisecond
from ..model.entities import BY_COLLECTION
from ..sync.engine import SyncEngine
from ..sync.ordering import change_time
from ..sync.write import ClientVersion, Write
from .spool import FILE, Entry, Spool
from .store import DatabaseUnavailable, DatabaseUnreachable, Store

log = logging.getLogger(__name__)

# What says the database cannot take a write now (as opposed to the write being wrong).
UNREACHABLE = (DatabaseUnreachable, ConnectionFailure)
RETRY_SECONDS = 1.0
REPLAY_BATCH = 500  # entries read at once; consecutive upserts of one caller are applied as one batch


class Replayer:
    """Drains the spool into the database from a background thread of this process."""

    def __init__(self, spool: Spool, store: Store) -> None:
        self.spool, self.store = spool, store
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def kick(self) -> None:
        """Make sure a replaying thread runs in this process (it stops when the spool is empty)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fitkart-spool", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop replaying in this process (its app is closing) and wait for the thread; the queue stays on disk."""
        self._stopped.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stopped.is_set():
            with self._lock:  # decided under the lock `kick` takes: an entry queued now is never left behind
                if self.spool.is_empty():
                    self._thread = None
                    self.spool.release_lease()
                    return
            if not self.spool.take_lease():
                self._stopped.wait(RETRY_SECONDS)  # another process replays; take over if its lease runs out
                continue
            try:
                self.replay()
            except (*UNREACHABLE, DatabaseUnavailable):
                self._stopped.wait(RETRY_SECONDS)
            except Exception:  # a fault of ours; the entries stay queued, and it is said
                log.exception("Replaying the spool failed; its entries stay queued.")
                self._stopped.wait(5 * RETRY_SECONDS)
        self.spool.release_lease()

    def replay(self) -> int:
        """Apply queued entries in order until the spool is empty; how many were applied."""
        engine = self.store.engine()
        done = 0
        while entries := self.spool.head(REPLAY_BATCH):
            for run in runs(entries):
                try:
                    apply_run(engine, run)
                except (*UNREACHABLE, DatabaseUnavailable):
                    raise
                except Exception as error:  # a fault of ours must not block the spool: keep it as a reject
                    log.exception("A queued write could not be replayed; it is kept in sync_rejects.")
                    set_aside(engine, run, error)
                # After the database holds them: a crash in between replays them again, which changes nothing.
                self.spool.remove_through(run[-1].seq)
                done += len(run)
                self.spool.take_lease()  # renew while working
        if done:
            log.info("Replayed %d queued writes from the spool.", done)
        return done


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
    if not spool.is_empty():
        replayer.kick()
