"""Upserts as one guarded command: the rules written into the filter, decided on a read only when it misses.

The usual write (a new record, or a change to one's own, newer record) costs one command, two
for a record that may be new (its tombstones are read first). The filter carries every rule
that needs the stored record: its key, the caller's ownership, the staleness of the version
sent, the Supabase id it holds, its size bound and "something changes". A record that fails
any of them is not touched, and the read-decide-write path (upserts.upsert) says why, with
the same answers as ever.
"""

from typing import TYPE_CHECKING

import bson
from bson.errors import InvalidDocument
from pymongo import ReturnDocument
from pymongo.errors import DocumentTooLarge, OperationFailure

from ..bounds import MAX_RECORD_BYTES
from ..clock import utc_now
from ..model.documents import PROVENANCE_FIELD
from .write import UpsertOutcome, Write, refuse_oversized

if TYPE_CHECKING:
    from .engine import SyncEngine

# The stored size bound every record keeps in its bookkeeping (see `size_guard`).
BYTES = f"{PROVENANCE_FIELD}.bytes"
VERSION = f"{PROVENANCE_FIELD}.version"


def guarded_upsert(engine: "SyncEngine", write: Write, values: dict, doc_id: str) -> UpsertOutcome | None:
    """Merge (or create) the record in one command where the rules allow it; None: decide on a read."""
    entity = write.entity
    owner_guard = entity.rules.stored_guard(write.caller, values)
    if owner_guard is None:
        return None
    creates = all(name in values for name in entity.required_on_create)
    new = {"_id": doc_id, **engine.to_storage(entity, entity.insert_defaults), **values}
    # What the record may grow by: all of it when it is new (a bound, so an update may count more).
    sent_bytes = encoded_size(new if creates else values)
    if sent_bytes is None:
        return None
    if creates:
        if engine.tombstones.binds(entity, values, engine.tombstones.find, write.writer):
            return None  # a delete may have removed it: the read says whether it is new
        refuse_oversized(new)
    update = {"$set": {**values, f"{PROVENANCE_FIELD}.written_at": utc_now(),
                       f"{PROVENANCE_FIELD}.source": write.source},
              "$inc": {VERSION: 1, BYTES: sent_bytes}}
    if creates:
        # Written only when the upsert inserts: columns the record does not send get Supabase's defaults.
        update["$setOnInsert"] = {name: value for name, value in new.items() if name not in values and name != "_id"}
    conditions = [owner_guard, newer_than_stored(entity.timestamp_field, values), same_supabase_id(values),
                  size_guard(sent_bytes), changes_something(values)]
    query = {"_id": doc_id, "$and": [condition for condition in conditions if condition]}
    try:
        before = engine.database[entity.collection].find_one_and_update(
            query, update, upsert=creates, return_document=ReturnDocument.BEFORE)
    except (OperationFailure, InvalidDocument, DocumentTooLarge):
        # A duplicate key (the record exists but failed a guard, or another writer just created it),
        # or a record the database refuses: the read path decides, and says why in the same words.
        return None
    if before is None:
        if not creates:
            return None  # missing, stale, someone else's, unchanged or near its size bound: read it
        stored = {**new, PROVENANCE_FIELD: {"version": 1, "source": write.source}}
        return UpsertOutcome("created", engine.show(entity, stored))
    changed = any(name not in before or before[name] != value for name, value in values.items())
    return UpsertOutcome("updated" if changed else "unchanged", engine.show(entity, {**before, **values}))


def encoded_size(values: dict) -> int | None:
    """The BSON size of the values sent; None when they cannot be encoded (the read path says why)."""
    try:
        return len(bson.encode(values))
    except (InvalidDocument, OverflowError):
        return None


def newer_than_stored(timestamp_field: str, values: dict) -> dict | None:
    """The stored version is not newer than the one sent (an unknown time is never newer)."""
    stamp = values.get(timestamp_field)
    if stamp is None:
        return None
    return {"$or": [{timestamp_field: {"$lte": stamp}}, {timestamp_field: None}]}


def same_supabase_id(values: dict) -> dict | None:
    """A record sent with an id merges only into the record holding that id (another id may be deleted)."""
    return {"id": values["id"]} if values.get("id") is not None else None


def size_guard(sent_bytes: int) -> dict:
    """The stored record plus the values sent stays within MAX_RECORD_BYTES.

    `bytes` is an upper bound of the record's size: set exactly by the read path, raised by
    each guarded write by the size of what it sent. A record without it, or near the bound,
    is merged on a read, which measures it exactly.
    """
    return {BYTES: {"$lte": MAX_RECORD_BYTES - sent_bytes}}


def changes_something(values: dict) -> dict:
    """At least one value sent differs from the stored one: an unchanged replay writes nothing."""
    return {"$or": [{name: {"$ne": value}} for name, value in values.items()]}
