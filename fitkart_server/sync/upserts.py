"""Upserts: create or merge one record by its key; refuse stale versions, deleted ids and other users' rows."""

import logging
from dataclasses import dataclass
from datetime import datetime

from bson.errors import InvalidDocument
from marshmallow import ValidationError
from pymongo.errors import DocumentTooLarge, DuplicateKeyError, OperationFailure

from ..clock import as_utc
from ..model.documents import PROVENANCE_FIELD
from ..model.policy import NOT_YOURS, Forbidden
from .guarded import guarded_upsert, new_document
from .mirror import Mirror
from .ordering import overtaken
from .plan import stored_version
from .tombstones import Finder
from .write import (
    DUPLICATE,
    RecordRejected,
    UpsertOutcome,
    Write,
    database_refusal,
    field_errors,
    missing,
    provenance,
    refuse_oversized,
)

log = logging.getLogger(__name__)
# A stored record's own fields, never Supabase columns: kept by a whole row's write (Write.whole_row).
OWN_FIELDS = ("_id", PROVENANCE_FIELD)
# Optimistic writes retry when another writer got in between; this many is plenty.
MAX_ATTEMPTS = 10
DUPLICATE_KEY = 11000


@dataclass(frozen=True)
class PlannedWrite:
    """A write an upsert decided on: an insert, or an update of the version it read; and the record it leaves."""

    doc_id: str
    insert: dict | None
    update: tuple[int | None, dict] | None  # the stored version it read, and the update
    result: dict


def upsert(engine: Mirror, write: Write) -> UpsertOutcome:
    """Create or merge one record, retrying the compare-and-set when another writer got in between."""
    entity = write.entity
    values = validated(engine, write)
    collection = engine.database[entity.collection]
    # The key is the document's _id: one primary-key lookup, and uniqueness for free.
    doc_id = entity.key_of(values)
    if not write.authoritative:
        outcome = guarded_upsert(engine, write, values, doc_id)
        if outcome is not None:
            return engine.noted(entity.collection, outcome)
    for _ in range(MAX_ATTEMPTS):
        decision = decide(engine, write, values, collection.find_one({"_id": doc_id}), engine.tombstones.find)
        if isinstance(decision, UpsertOutcome):
            return engine.noted(entity.collection, decision)
        outcome = make(engine, write, decision)
        if outcome is not None:
            if write.authoritative:
                engine.tombstones.forget(entity, values)
            return engine.noted(entity.collection, outcome)
    raise RecordRejected("Too many concurrent writes to this record; try again.")


def validated(engine: Mirror, write: Write) -> dict:
    """The payload validated (422 naming each bad field), keyed, and in storage form."""
    entity = write.entity
    try:
        values = entity.schema.load(write.payload, partial=True)
    except ValidationError as error:
        raise RecordRejected("Invalid record.", field_errors(error)) from None
    except (ArithmeticError, ValueError, TypeError) as error:
        # Content no validator foresaw must cost its sender a 422, never the server a 500.
        log.warning("Unforeseen invalid %s record: %s", entity.collection, error.__class__.__name__)
        raise RecordRejected("Invalid record: a value could not be read.") from None
    missing_key = [name for name in entity.key if name not in values]
    if missing_key:
        raise RecordRejected("The record lacks its key.", missing(missing_key))
    return engine.to_storage(entity, values)


def decide(engine: Mirror, write: Write, values: dict, current: dict | None,
           find_tombstone: Finder) -> UpsertOutcome | PlannedWrite:
    """What an upsert does to the stored record: a final answer, or the write to make."""
    entity = write.entity
    entity.rules.check_writer(write.caller)  # an anonymous caller learns nothing of what is stored
    # Another user's record is, to this caller, not there: answered as an absent one would be, until the write
    # would create it, which the row-level rules refuse (as a unique value held by another user's row is).
    hidden = current is not None and write.caller.is_user and not entity.rules.can_read(write.caller, current)
    if current is None or hidden:
        if current is None and not write.authoritative and engine.tombstones.binds(entity, values, find_tombstone,
                                                                                   write.writer):
            return UpsertOutcome("stale", None)
        absent = [name for name in entity.required_on_create if name not in values]
        if absent:
            raise RecordRejected("A new record needs every NOT NULL column that has no default.", missing(absent))
    if hidden:
        raise Forbidden(NOT_YOURS)
    # Before any answer about the stored record, so nothing leaks (Forbidden).
    entity.rules.check_write(write.caller, values, current, engine.database)
    if current is None:
        document = new_document(engine, write, values, entity.key_of(values))
        return PlannedWrite(document["_id"], document, None, document)
    if not write.authoritative and is_stale(engine, write, current, values, find_tombstone):
        return UpsertOutcome("stale", engine.show(entity, current))
    changes = {name: value for name, value in values.items() if name not in current or current[name] != value}
    gone = [name for name in current if name not in values and name not in OWN_FIELDS] if write.whole_row else []
    if not changes and not gone:
        return UpsertOutcome("unchanged", engine.show(entity, current))
    version = stored_version(current)
    # The version makes this a compare-and-set: no lock, a retry on a lost race.
    written = {**changes, PROVENANCE_FIELD: provenance(write, (version or 0) + 1, current.get(PROVENANCE_FIELD))}
    result = {name: value for name, value in {**current, **written}.items() if name not in gone}
    written[PROVENANCE_FIELD]["bytes"] = refuse_oversized(result)
    update = {"$set": written, **({"$unset": dict.fromkeys(gone, "")} if gone else {})}
    return PlannedWrite(current["_id"], None, (version, update), result)


def make(engine: Mirror, write: Write, planned: PlannedWrite) -> UpsertOutcome | None:
    """Make one planned write; None when another writer got there first (retry)."""
    collection = engine.database[write.entity.collection]
    try:
        if planned.insert is not None:
            collection.insert_one(planned.insert)
            if not write.authoritative and engine.tombstones.take_back_if_deleted(
                    collection, write.entity, planned.result, planned.doc_id, write.writer):
                return None  # a delete landed after the read that decided it: decided again, stale
        elif not engine.commands.update_if_version(collection, planned.doc_id, *planned.update):
            return None
    except DuplicateKeyError:
        if collection.find_one({"_id": planned.doc_id}, {"_id": 1}) is not None:
            return None  # lost the race to create it: merge into the winner instead
        raise as_seen_by(write, RecordRejected(DUPLICATE)) from None
    except (OperationFailure, InvalidDocument, DocumentTooLarge) as error:
        raise as_seen_by(write, database_refusal(error)) from None
    return UpsertOutcome("created" if planned.insert is not None else "updated",
                         engine.show(write.entity, planned.result))


def as_seen_by(write: Write, refusal: RecordRejected) -> RecordRejected | Forbidden:
    """A unique value taken is, to a user, the row-level refusal: the record holding it may be one they cannot see."""
    if refusal.message == DUPLICATE and not write.caller.is_service:
        return Forbidden(NOT_YOURS)
    return refusal


def is_stale(engine: Mirror, write: Write, current: dict, values: dict, find_tombstone: Finder) -> bool:
    """Whether `values` is older than the stored record (its timestamp, or the change's own order), or names a
    deleted Supabase id."""
    entity = write.entity
    if is_older(values.get(entity.timestamp_field), current.get(entity.timestamp_field)) or \
            overtaken(write, current, values):
        return True
    return values.get("id") not in (None, current.get("id")) and engine.tombstones.binds(
        entity, {"id": values["id"]}, find_tombstone, write.writer)


def is_older(stamp: datetime | None, stored: datetime | None) -> bool:
    """Whether a version's timestamp is older than the stored one's (unknown is never older)."""
    return stamp is not None and stored is not None and as_utc(stamp) < as_utc(stored)


def is_collision(write_error: dict) -> bool:
    """Whether a bulk write error is a duplicate key (a race, or another record's unique value)."""
    # FerretDB v1 reports a unique violation on update as an internal error, not E11000.
    return write_error.get("code") == DUPLICATE_KEY or "UNIQUE constraint failed" in str(write_error.get("errmsg"))
