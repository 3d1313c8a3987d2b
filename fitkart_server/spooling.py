"""Writes while the database is away: applied now when it answers, else kept in the spool and answered 202.

"Away" is unreachable or timing out. A database that refuses the server's login, or a setting
it cannot honour, is a configuration problem for an operator: those answer 503 and are not queued.

Every write route (records, legacy aliases, batch, webhooks) goes through `write` or
`write_batch`. While the spool holds anything, new writes queue behind it, so a record's
writes are applied in the order they arrived. A background thread in each process
replays the spool through the same engine as soon as the database answers again, one
process at a time (see spool.py), at start-up too.
"""

import contextlib
import logging
import os
import threading
import time
from datetime import datetime

from flask import Flask, current_app
from pymongo.errors import ConnectionFailure

from .auth import current_caller
from .db import DatabaseUnavailable, DatabaseUnreachable, Store, get_engine, get_store
from .engine import RecordRejected, SyncEngine
from .entities import BY_COLLECTION, Entity
from .policy import SERVICE, Caller, Forbidden
from .spool import FILE, Entry, Spool

log = logging.getLogger(__name__)

# What says the database cannot take a write now (as opposed to the write being wrong).
UNREACHABLE = (DatabaseUnreachable, ConnectionFailure)
QUEUED = "queued"
RETRY_SECONDS = 1.0
REPLAY_BATCH = 500  # entries read at once; consecutive upserts of one caller are applied as one batch
# While the spool drains, a new write waits (up to this long) for it rather than queue behind it:
# queueing costs less than writing, so under load the spool would otherwise never empty.
DRAIN_WAIT_SECONDS = 10.0


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
    """Consecutive upserts of one caller, source and route go together (applied as one batch); the rest alone."""
    grouped: list[list[Entry]] = []
    for entry in entries:
        last = grouped[-1][-1] if grouped else None
        if last is not None and entry.kind == last.kind == "upsert" and \
                (entry.caller, entry.source, entry.route) == (last.caller, last.source, last.route):
            grouped[-1].append(entry)
        else:
            grouped.append([entry])
    return grouped


def set_aside(engine: SyncEngine, run: list[Entry], error: Exception) -> None:
    """Keep queued writes that failed at replay as rejects (an operator can replay them), so later ones go on."""
    for entry in run:
        engine.record_reject(reason=f"A queued write could not be replayed: {error.__class__.__name__}.",
                             errors={}, payload=entry.body, route=entry.route, collection=entry.collection,
                             operation=entry.kind if entry.kind in ("upsert", "delete") else None,
                             source=entry.source, caller=entry.caller, status=500)


def apply_run(engine: SyncEngine, run: list[Entry]) -> None:
    """Apply queued entries in order through the engine, as their original caller and source.

    A refusal at replay (say, another user's row) is kept in sync_rejects like any refusal.
    """
    first = run[0]
    if first.kind == "reject":
        document = dict(first.body)
        document["at"] = datetime.fromisoformat(document["at"])
        engine.reject_log.insert(document)
        return
    if first.kind == "delete":
        with contextlib.suppress(RecordRejected, Forbidden):
            engine.delete_records(BY_COLLECTION[first.collection], first.body, caller=first.caller,
                                  source=first.source, route=first.route)
        return
    # The batch path: one read and one bulk write for many distinct records, the same rules.
    engine.apply_batch([{"op": "upsert", "collection": entry.collection, "record": entry.body} for entry in run],
                       caller=first.caller, source=first.source, route=first.route)


def spool_state() -> dict:
    """What /readyz and the status page show of the spool (and a nudge to the replayer when it holds anything)."""
    depth = get_spool().depth()
    if depth.entries:
        get_replayer().kick()
    return {"entries": depth.entries, "bytes": depth.bytes, "oldest_seconds": round(depth.oldest_seconds, 1),
            "max_bytes": get_spool().max_bytes}


def get_spool() -> Spool:
    """The current app's spool."""
    return current_app.extensions["fitkart_spool"]


def get_replayer() -> Replayer:
    """The current app's replayer."""
    return current_app.extensions["fitkart_replayer"]


def _offline_engine(caller: Caller, source: str) -> SyncEngine:
    """An engine that validates without the database; its rejects go to the spool."""
    spool = get_spool()

    def spill(document: dict) -> None:
        spool.append("reject", document.get("collection"), document, caller, source, document.get("route"))

    return get_store().offline_engine(spill)


def _queue(kind: str, entity: Entity, payload, caller: Caller, source: str, route: str | None,
           engine: SyncEngine) -> dict:
    """Validate and queue one write (SpoolFull when the spool is full); its answer."""
    engine.check(kind, entity, payload, caller=caller, source=source, route=route)
    seq = get_spool().append(kind, entity.collection, payload, caller, source, route)
    get_replayer().kick()
    return {"result": QUEUED, "queued": seq}


def spool_is_empty() -> bool:
    """Whether nothing is queued, after waiting a little for a spool that is draining (backpressure)."""
    spool = get_spool()
    deadline = time.monotonic() + DRAIN_WAIT_SECONDS
    while not spool.is_empty():
        if not spool.draining() or time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def write(kind: str, entity: Entity, payload, *, route: str | None, source: str = "client") -> tuple[dict, int]:
    """Upsert or delete one record now (200), or queue it while the database is away (202)."""
    caller = current_caller() if source == "client" else SERVICE
    if spool_is_empty():
        try:
            engine = get_engine()
            if kind == "delete":
                return {"deleted": engine.delete_records(entity, payload, caller=caller, source=source,
                                                         route=route)}, 200
            outcome = engine.upsert_record(entity, payload, caller=caller, source=source, route=route)
            return {"result": outcome.result, "record": outcome.record}, 200
        except UNREACHABLE:
            pass  # queued below; if it was half done, its replay finds it done (every write is idempotent)
    return _queue(kind, entity, payload, caller, source, route, _offline_engine(caller, source)), 202


def write_batch(operations: list, *, route: str | None) -> list:
    """Apply a batch now, or queue its operations while the database is away; one answer per operation."""
    caller = current_caller()
    if spool_is_empty():
        try:
            return get_engine().apply_batch(operations, caller=caller, route=route)
        except UNREACHABLE:
            pass  # all of it is queued; operations already applied replay as `unchanged`
    engine = _offline_engine(caller, "client")
    answers: list = []
    for operation in operations:
        try:
            kind, entity, record = engine.operation_parts(operation, caller=caller, source="client", route=route)
            answers.append(_queue(kind, entity, record, caller, "client", route, engine))
        except (RecordRejected, Forbidden) as refusal:
            answers.append(refusal)
    return answers


def record_reject(source: str = "client", **details) -> None:
    """Keep a malformed batch or webhook in sync_rejects, or in the spool while the database is away."""
    caller = details.pop("caller", SERVICE)
    try:
        get_engine().record_reject(caller=caller, source=source, **details)
    except UNREACHABLE:
        _offline_engine(caller, source).record_reject(caller=caller, source=source, **details)


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
