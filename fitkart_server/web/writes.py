"""Writes while the database is away: applied now when it answers, else kept in the spool and answered 202.

"Away" is unreachable or timing out. A database that refuses the server's login, or a setting
it cannot honour, is a configuration problem for an operator: those answer 503 and are not queued.

Every write route (records, legacy aliases, batch, webhooks) goes through `write` or
`write_batch`. While the spool holds anything, new writes queue behind it, so a record's
writes are applied in the order they arrived; storage/replay.py applies them once the
database answers again.
"""

import sqlite3
import time
from datetime import UTC, datetime

from ..clock import to_millisecond
from ..model.entities import Entity
from ..model.policy import SERVICE, Caller, Forbidden
from ..storage.replay import UNREACHABLE, get_replayer, get_spool
from ..storage.spool import Queued, SpoolBusy, SpoolFull, is_locked
from ..storage.store import get_engine, get_store
from ..sync.engine import SyncEngine
from ..sync.write import RecordRejected, Write
from .auth import current_caller
from .ratelimit import past_limit

QUEUED = "queued"
# While the spool drains, a new write waits for it rather than queue behind it (queueing costs less than
# writing, so under load the spool would otherwise never empty) — but only when the queue ahead will be gone
# within this long at the replayer's rate: a longer backlog is queued behind at once. Well under any client's
# patience (the TypeScript client gives a request 60 s).
DRAIN_WAIT_SECONDS = 5.0
DRAIN_POLL_SECONDS = 0.02


def spool_state() -> dict:
    """What /readyz and the status page show of the spool (and a nudge to the replayer when it holds anything).

    `replay` is `ok`, or `failing` with the replayer's error, since when and how many tries (it keeps trying).
    """
    spool, replayer = get_spool(), get_replayer()
    state = {"max_bytes": spool.max_bytes, "replay": "ok"}
    if spool.problem:
        state["problem"] = spool.problem
    try:
        depth = spool.depth()
    except sqlite3.Error as error:  # the file locked or damaged: say so, do not fail the page
        state.update(entries=None, bytes=None, oldest_seconds=None, error=f"{error.__class__.__name__}: {error}")
    else:
        state.update(entries=depth.entries, bytes=depth.bytes, oldest_seconds=round(depth.oldest_seconds, 1))
        if depth.entries:
            replayer.kick()
    fault = replayer.fault
    if fault is not None:
        state.update(replay="failing", replay_error=fault.error, replay_attempts=fault.attempts,
                     replay_failing_seconds=round(time.time() - fault.since, 1))
    return state


def _offline_engine(caller: Caller, source: str) -> SyncEngine:
    """An engine that validates without the database; its rejects go to the spool."""
    spool = get_spool()

    def spill(document: dict) -> None:
        spool.append("reject", document.get("collection"), document, caller, source, document.get("route"))

    return get_store().offline_engine(spill)


def _queue(kind: str, entity: Entity, payload, caller: Caller, source: str, route: str | None,
           engine: SyncEngine, arrived: float, deadline: float) -> dict:
    """Validate and queue one write (SpoolFull when the spool is full); its answer."""
    engine.check(kind, entity, payload, caller=caller, source=source, route=route)
    queued = get_spool().append_many([(kind, entity.collection, payload, caller, source, route, None)], arrived)
    _queued(queued, deadline)
    return {"result": QUEUED, "queued": queued.sequences[0]}


def _queued(queued: Queued, deadline: float) -> None:
    """After queueing: make sure a replayer runs, and hold the answer for the pace a draining spool sets (within
    what is left of the request's wait, so no answer is held longer than DRAIN_WAIT_SECONDS in all)."""
    get_replayer().kick()
    time.sleep(max(0.0, min(queued.pause, deadline - time.monotonic())))


def spool_is_empty(deadline: float) -> bool:
    """Whether nothing is queued, after waiting (until `deadline`, a monotonic time) for a draining spool that will
    be empty by then (backpressure). A spool that cannot be read now is a 503: whether anything is queued ahead of
    this write is unknown."""
    spool = get_spool()
    try:
        if spool.is_empty():
            return True
        while (left := spool.drain_seconds()) != 0:
            if left is None or time.monotonic() + left > deadline:
                return False  # no replayer is making progress, or not soon enough: queue behind it now
            time.sleep(DRAIN_POLL_SECONDS)
    except sqlite3.Error as error:
        raise SpoolBusy() if is_locked(error) else SpoolFull("cannot be read now (see /readyz)") from error
    return True


def write(kind: str, entity: Entity, payload, *, route: str | None, source: str = "client",
          changed_at: datetime | None = None) -> tuple[dict, int]:
    """Upsert or delete one record now (200), or queue it while the database is away (202).

    A write is judged by when its change was made (`changed_at`, else when the request arrived), whether it
    is applied now or replayed later (sync/ordering.py).
    """
    arrived, deadline = time.time(), time.monotonic() + DRAIN_WAIT_SECONDS
    changed_at = changed_at or moment(arrived)
    caller = current_caller() if source == "client" else SERVICE
    if spool_is_empty(deadline):
        try:
            engine = get_engine()
            if kind == "delete":
                deleted = engine.delete_records(entity, payload, caller=caller, source=source, route=route,
                                                changed_at=changed_at)
                if not deleted and (cut := past_limit()) is not None:
                    raise cut  # its tombstone could not be stored: the caller is past its limit
                return {"deleted": deleted}, 200
            outcome = engine.upsert_record(entity, payload, caller=caller, source=source, route=route,
                                           changed_at=changed_at)
            return {"result": outcome.result, "record": outcome.record}, 200
        except UNREACHABLE:
            pass  # queued below; if it was half done, its replay finds it done (every write is idempotent)
    return _queue(kind, entity, payload, caller, source, route, _offline_engine(caller, source), arrived,
                  deadline), 202


def write_batch(operations: list, *, route: str | None) -> list:
    """Apply a batch now, or queue its operations while the database is away; one answer per operation."""
    arrived, deadline = time.time(), time.monotonic() + DRAIN_WAIT_SECONDS
    caller = current_caller()
    if spool_is_empty(deadline):
        try:
            return get_engine().apply_batch(operations, caller=caller, route=route, arrived=moment(arrived))
        except UNREACHABLE:
            pass  # all of it is queued; operations already applied replay as `unchanged`
    engine = _offline_engine(caller, "client")
    answers: list = []
    valid: list[tuple[int, Write]] = []
    for index, operation in enumerate(operations):
        try:
            write = engine.operation_write(operation, caller=caller, source="client", route=route,
                                           arrived=moment(arrived))
            engine.check(write.kind, write.entity, write.payload, caller=caller, source="client", route=route)
            valid.append((index, write))
            answers.append(None)
        except (RecordRejected, Forbidden) as refusal:
            answers.append(refusal)
    # One durable append for the whole batch (one fsync, not one per operation), and all of it or none.
    queued = get_spool().append_many([(write.kind, write.collection, write.payload, caller, "client", route,
                                       write.version and write.version.stored()) for _, write in valid], arrived)
    _queued(queued, deadline)
    for (index, _), sequence in zip(valid, queued.sequences, strict=True):
        answers[index] = {"result": QUEUED, "queued": sequence}
    return answers


def moment(epoch_seconds: float) -> datetime:
    """A time.time() as the mirror stores times."""
    return to_millisecond(datetime.fromtimestamp(epoch_seconds, UTC))


def record_reject(source: str = "client", **details) -> None:
    """Keep a malformed batch or webhook in sync_rejects, or in the spool while the database is away."""
    caller = details.pop("caller", SERVICE)
    try:
        get_engine().record_reject(caller=caller, source=source, **details)
    except UNREACHABLE:
        _offline_engine(caller, source).record_reject(caller=caller, source=source, **details)
