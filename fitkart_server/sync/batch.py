"""Batches: writes applied in order, each succeeding or failing on its own; runs of distinct upserts in bulk.

A run of upserts of distinct records (the usual outbox flush, an ingest, a repair's page, a
transaction from the WAL) is decided from one read per table (tombstones, and the records
unless all are full rows, which are inserted first) and written with one unordered bulk_write
per table; the few writes that collide or lose a race are redone one by one. A delete, or a
record met again, is applied alone and starts the next run.
"""

from datetime import datetime

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate
from pymongo import InsertOne, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, OperationFailure

from ..bounds import UPDATES_PER_COMMAND
from ..model.entities import BY_COLLECTION, Entity
from ..model.policy import Caller, Forbidden
from . import deletes, upserts
from .mirror import Mirror
from .ordering import change_time
from .plan import VERSION
from .tombstones import Finder, key_tombstone, tombstone_ids
from .upserts import PlannedWrite, UpsertOutcome
from .write import OPERATIONS, ClientVersion, RecordRejected, Write, field_errors


def _one_of(choices) -> dict:
    """The same message for a choice that is missing, null, of the wrong type or not among `choices`."""
    message = f"Must be one of: {', '.join(choices)}."
    return {"required": message, "null": message, "invalid": message}


_NOT_AN_OBJECT = "Must be a JSON object."


# Integers JavaScript holds exactly: a client's time in milliseconds and its outbox sequence both fit.
_SAFE_INTEGER = validate.Range(min=0, max=2**53 - 1)


class ClientVersionSchema(Schema):
    """A client's stamp of one change (see ClientVersion): later changes to a record carry larger ones."""

    at = fields.Integer(required=True, strict=True, validate=_SAFE_INTEGER,
                        metadata={"description": "When the client made the change, in ms since the epoch."})
    seq = fields.Integer(required=True, strict=True, validate=_SAFE_INTEGER,
                         metadata={"description": "Its place in the client's outbox."})


MAX_REF_LENGTH = 64


def ref_of(operation) -> str | None:
    """The operation's `ref` when it is one a result may echo (a string of at most MAX_REF_LENGTH characters)."""
    ref = operation.get("ref") if isinstance(operation, dict) else None
    return ref if isinstance(ref, str) and len(ref) <= MAX_REF_LENGTH else None


class OperationSchema(Schema):
    """One operation of a batch (it both validates each operation and documents it in the API)."""

    op = fields.String(required=True, validate=validate.OneOf(OPERATIONS), error_messages=_one_of(OPERATIONS))
    collection = fields.String(required=True, validate=validate.OneOf(list(BY_COLLECTION)),
                               error_messages=_one_of(BY_COLLECTION))
    record = fields.Dict(required=True, error_messages={"required": _NOT_AN_OBJECT, "null": _NOT_AN_OBJECT,
                                                        "invalid": _NOT_AN_OBJECT}, metadata={
        "description": "upsert: the record; delete: its key fields, its id, or user_id to clear."})
    ref = fields.String(validate=validate.Length(max=MAX_REF_LENGTH), metadata={
        "description": f"The caller's name for this operation (at most {MAX_REF_LENGTH} characters), echoed in its "
                       "result: results are matched by it, whatever order a proxy puts them in."})
    version = fields.Nested(ClientVersionSchema, metadata={
        "description": "The client's order of its changes to this record: an older one than the record last "
                       "took is answered `stale` (docs/api.md, \"Order\")."})


OPERATION = OperationSchema()


def operation_write(operation, caller: Caller, source: str, route: str | None,
                    arrived: datetime | None = None) -> Write:
    """A batch operation as the write it asks for (made when its version says, or when it `arrived`); refused
    when it is not a well-formed one."""
    if not isinstance(operation, dict):
        raise RecordRejected("An operation is a JSON object.")
    try:
        parts = OPERATION.load(operation, unknown=EXCLUDE)  # other keys are ignored, as ever
    except ValidationError as error:
        raise RecordRejected("Invalid operation.", field_errors(error)) from None
    version = ClientVersion.capped(parts["version"], arrived) if "version" in parts else None
    return Write(parts["op"], BY_COLLECTION[parts["collection"]], parts["record"], caller, source, route,
                 changed_at=change_time(version, arrived), version=version)


def malformed(operation, caller: Caller, source: str, route: str | None) -> Write:
    """What a refused operation is kept as: its kind as it said, no table."""
    return Write(operation.get("op") if isinstance(operation, dict) else None, None, operation, caller, source, route)


def apply(engine: Mirror, operations: list, caller: Caller, source: str, route: str | None,
          arrived: datetime | None = None) -> list:
    """Each operation's result dict, or the exception that refused it (kept in sync_rejects), in order."""
    writes = _well_formed(operations, caller, source, route, arrived)
    if writes is None:
        # In order, each operation read as it is reached: refusals are kept (and the caller's allowance
        # spent) in the order the operations came.
        return [_apply_operation(engine, operation, caller, source, route, arrived) for operation in operations]
    return apply_writes(engine, writes)


def apply_writes(engine: Mirror, writes: list[Write]) -> list:
    """Each write's result dict, or the exception that refused it (kept in sync_rejects), in order.

    Consecutive upserts of distinct records are decided and written together; a delete, or a record
    met again, is applied alone and starts the next run, so every write sees those before it.
    """
    answers: list = [None] * len(writes)
    for run in _runs(writes):
        if len(run) == 1 or writes[run[0]].kind != "upsert":
            for index in run:
                answers[index] = apply_one(engine, writes[index])
        else:
            _apply_upserts(engine, [(index, writes[index]) for index in run], answers)
    return answers


def _runs(writes: list[Write]) -> list[list[int]]:
    """The writes' positions cut into runs: upserts of distinct records together, every other write alone."""
    runs: list[list[int]] = []
    seen: set[tuple] = set()
    for index, write in enumerate(writes):
        if write.kind != "upsert":
            runs.append([index])
            continue
        identity = (write.collection, *(str(write.payload.get(name)).lower() for name in write.entity.key))
        if runs and writes[runs[-1][0]].kind == "upsert" and identity not in seen:
            runs[-1].append(index)
        else:
            runs.append([index])
            seen = set()
        seen.add(identity)
    return runs


def _apply_upserts(engine: Mirror, items: list[tuple[int, Write]], answers: list) -> None:
    """Upserts of distinct records: validated, then decided and written in bulk, table by table."""
    by_table: dict[str, list[tuple[int, Write, dict]]] = {}
    for index, write in items:
        try:
            values = upserts.validated(engine, write)
        except RecordRejected as refusal:
            answers[index] = engine.refused(write, refusal)
            continue
        by_table.setdefault(write.collection, []).append((index, write, values))
    for table_items in by_table.values():
        _apply_bulk(engine, table_items, answers)


def _well_formed(operations: list, caller: Caller, source: str, route: str | None,
                 arrived: datetime | None) -> list[Write] | None:
    """Every operation as its write, or None when any is malformed (nothing is kept here)."""
    try:
        return [operation_write(operation, caller, source, route, arrived) for operation in operations]
    except RecordRejected:
        return None


def _apply_operation(engine: Mirror, operation, caller: Caller, source: str, route: str | None,
                     arrived: datetime | None):
    """One operation's result, or the exception that refused it (kept in sync_rejects)."""
    try:
        write = engine.operation_write(operation, caller=caller, source=source, route=route, arrived=arrived)
    except RecordRejected as refusal:
        return refusal
    return apply_one(engine, write)


def apply_one(engine: Mirror, write: Write):
    """One operation's result, or the exception that refused it (kept in sync_rejects)."""
    try:
        if write.kind == "delete":
            return {"deleted": deletes.delete(engine, write)}
        return answer(upserts.upsert(engine, write))
    except (RecordRejected, Forbidden) as refusal:
        return engine.refused(write, refusal)


def answer(outcome: UpsertOutcome) -> dict:
    """An upsert's outcome as a batch (and the record routes) answer it."""
    return {"result": outcome.result, "record": outcome.record}


def _apply_bulk(engine: Mirror, items: list[tuple[int, Write, dict]], answers: list,
                read_first: bool = False) -> None:
    """Decide the upserts of one table, then write them in bulk.

    A batch of full rows (the outbox's new records, an ingest) is inserted without reading the
    records first: those whose insert collides (stored already: a replay, or a change) are then
    read, only they, in one query, and decided again together. Any other batch is decided from
    one read of its records.
    """
    entity = items[0][1].entity
    collection = engine.database[entity.collection]
    ids = [entity.key_of(values) for _, _, values in items]
    full_rows = not read_first and all(set(entity.required_on_create) <= values.keys() for _, _, values in items)
    current = {} if full_rows else engine.commands.find_each(collection, ids)
    # Full rows are inserted first and their tombstones read after (see _answer_inserted).
    find_tombstone = _no_tombstone if full_rows else _tombstone_finder(engine, entity, items, ids)
    writes: list[tuple[int, Write, PlannedWrite]] = []
    for (index, write, values), doc_id in zip(items, ids, strict=True):
        try:
            decision = upserts.decide(engine, write, values, current.get(doc_id), find_tombstone)
        except (RecordRejected, Forbidden) as refusal:
            answers[index] = engine.refused(write, refusal)
            continue
        if isinstance(decision, UpsertOutcome):
            answers[index] = answer(engine.noted(entity.collection, decision))
        else:
            writes.append((index, write, decision))
    collided = _write_bulk(engine, writes, answers, redo_collisions=not full_rows) if writes else []
    if collided:
        values_of = {index: values for index, _, values in items}
        _apply_bulk(engine, [(index, write, values_of[index]) for index, write in collided], answers, read_first=True)


def _no_tombstone(tombstone_id: str) -> None:
    """A finder that finds none: for rows whose tombstones are read after they are inserted."""
    return None


def _tombstone_finder(engine: Mirror, entity: Entity, items: list[tuple[int, Write, dict]], ids: list[str]) -> Finder:
    """How the batch looks tombstones up: all it may need in one read, or (point plan, a few records) each once,
    when a rule first asks for it (one read per tombstone either way, and most records that exist need none)."""
    if engine.commands.one_by_one(len(items)):
        seen: dict[str, dict | None] = {}

        def find_once(tombstone_id: str) -> dict | None:
            if tombstone_id not in seen:
                seen[tombstone_id] = engine.tombstones.find(tombstone_id)
            return seen[tombstone_id]

        return find_once
    wanted = [tid for _, _, values in items for tid in tombstone_ids(entity, None, values.get("id"))]
    return engine.tombstones.find_many(wanted + [key_tombstone(entity, doc_id) for doc_id in ids]).get


def _write_bulk(engine: Mirror, writes: list[tuple[int, Write, PlannedWrite]], answers: list,
                redo_collisions: bool) -> list[tuple[int, Write]]:
    """The planned writes in bulk, unordered; those that lost a race are redone alone.

    Inserts whose key is taken are redone alone too, or, unless `redo_collisions`, handed back
    (their index and write) to be decided on a read of their records.
    """
    entity = writes[0][1].entity
    collection = engine.database[entity.collection]
    planned_writes = [planned for _, _, planned in writes]
    failed = _insert_all(collection, planned_writes)
    update = _update_each if engine.commands.point else _update_in_bulk
    failed_updates, lost = update(engine, collection, planned_writes)
    failed.update(failed_updates)
    collided: list[tuple[int, Write]] = []
    written_by_supabase: list[dict] = []
    inserted: list[tuple[int, Write, PlannedWrite]] = []
    for position, (index, write, planned) in enumerate(writes):
        missed = planned.update is not None and planned.doc_id in lost
        refused = failed.get(position)
        if refused is not None and not upserts.is_collision(refused):
            # Refused for its content: the same write alone would be refused again, so say so now.
            refusal = RecordRejected(f"The database refused the record: {refused.get('errmsg', '')}")
            answers[index] = engine.refused(write, refusal)
        elif refused is not None and planned.insert is not None and not redo_collisions:
            collided.append((index, write))
        elif refused is not None or missed:
            answers[index] = apply_one(engine, write)  # lost a race: redo it alone, with the full rules
        elif planned.insert is not None and not write.authoritative:
            inserted.append((index, write, planned))  # answered once their tombstones are read
        else:
            outcome = UpsertOutcome("created" if planned.insert is not None else "updated",
                                    engine.show(entity, planned.result))
            answers[index] = answer(engine.noted(entity.collection, outcome))
            if write.authoritative:
                written_by_supabase.append(planned.result)
    # Supabase says these records exist: their tombstones go, as after an authoritative upsert alone.
    engine.tombstones.forget_each(entity, written_by_supabase)
    _answer_inserted(engine, entity, inserted, answers)
    return collided


def _answer_inserted(engine: Mirror, entity: Entity, inserted: list[tuple[int, Write, PlannedWrite]],
                     answers: list) -> None:
    """New records, answered once their tombstones are read, after the insert (Tombstones.take_back_if_deleted
    says why): one that a delete binds is deleted again and decided alone (stale)."""
    if not inserted:
        return
    find = _tombstone_finder(engine, entity, [(index, write, planned.result) for index, write, planned in inserted],
                             [planned.doc_id for _, _, planned in inserted])
    bound = [(index, write, planned) for index, write, planned in inserted
             if engine.tombstones.binds(entity, planned.result, find, write.writer)]
    engine.commands.delete_each(engine.database[entity.collection], [planned.doc_id for _, _, planned in bound])
    taken_back = {index for index, _, _ in bound}
    for index, write, planned in inserted:
        if index in taken_back:
            answers[index] = apply_one(engine, write)
        else:
            outcome = UpsertOutcome("created", engine.show(entity, planned.result))
            answers[index] = answer(engine.noted(entity.collection, outcome))


def _insert_all(collection: Collection, planned_writes: list[PlannedWrite]) -> dict[int, dict]:
    """The planned inserts in one unordered command; their write errors by position."""
    inserts = [(position, InsertOne(planned.insert)) for position, planned in enumerate(planned_writes)
               if planned.insert is not None]
    return _in_commands(collection, [inserts] if inserts else [])[0]


def _update_in_bulk(engine: Mirror, collection: Collection,
                    planned_writes: list[PlannedWrite]) -> tuple[dict[int, dict], set[str]]:
    """The planned updates, each guarded by the version it read, in commands of UPDATES_PER_COMMAND at most.

    Their write errors by position, and the ids of those that lost their race to another writer.
    """
    updates = [(position, UpdateOne({"_id": planned.doc_id, VERSION: planned.update[0]}, planned.update[1]))
               for position, planned in enumerate(planned_writes) if planned.update is not None]
    failed, matched = _in_commands(collection, [updates[start:start + UPDATES_PER_COMMAND]
                                                for start in range(0, len(updates), UPDATES_PER_COMMAND)])
    landed = [planned for position, planned in enumerate(planned_writes)
              if planned.update is not None and position not in failed]
    if matched == len(landed):
        return failed, set()
    # Some guard no longer matched: another writer got in between. Which one is told by what is stored,
    # not by the version number alone (a writer that read the same version writes that same number).
    stored = engine.commands.find_each(collection, [planned.doc_id for planned in landed])
    return failed, {planned.doc_id for planned in landed if not _holds(stored.get(planned.doc_id), planned.update[1])}


def _update_each(engine: Mirror, collection: Collection,
                 planned_writes: list[PlannedWrite]) -> tuple[dict[int, dict], set[str]]:
    """The planned updates one by one, each by _id (the point plan: see plan.py).

    Their write errors by position, and the ids of those that lost their race to another writer.
    """
    failed: dict[int, dict] = {}
    lost: set[str] = set()
    for position, planned in enumerate(planned_writes):
        if planned.update is None:
            continue
        try:
            if not engine.commands.update_if_version(collection, planned.doc_id, *planned.update):
                lost.add(planned.doc_id)
        except OperationFailure as error:
            failed[position] = {"code": error.code, "errmsg": (error.details or {}).get("errmsg", str(error))}
    return failed, lost


def _in_commands(collection: Collection, commands: list[list[tuple[int, object]]]) -> tuple[dict[int, dict], int]:
    """Each list of (position, operation) as one unordered bulk write.

    The write errors by the operation's position, and how many updates matched their filter.
    """
    failed: dict[int, dict] = {}
    matched = 0
    for command in commands:
        try:
            matched += collection.bulk_write([op for _, op in command], ordered=False).matched_count
        except BulkWriteError as error:
            failed.update({command[failure["index"]][0]: failure for failure in error.details.get("writeErrors", [])})
            matched += error.details.get("nMatched", 0)
    return failed, matched


def _holds(stored: dict | None, update: dict) -> bool:
    """Whether a stored document holds every value an update set (its provenance included): the update landed."""
    return stored is not None and all(stored.get(name) == value for name, value in update["$set"].items())
