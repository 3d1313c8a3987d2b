"""Upserts as one guarded command: the rules written into the filter, decided on a read only when it misses.

A full row (one that may be new) costs an insert and its tombstone read, after the insert (see
`Tombstones.take_back_if_deleted`); a change to a stored record costs one `find_one_and_update`
whose filter carries every rule that needs the stored record: its key, the caller's ownership,
the staleness of the version sent, the Supabase id it holds, its size bound and "something
changes". A full row whose key is taken is merged the same way. A record that fails any rule is
not touched, and the read-decide-write path (upserts.upsert) says why, with the same answers as
ever. Inserts rather than upserts: an upsert that inserts is a scan on FerretDB v1 (2 s at 20,000
documents on SQLite, an insert 4 ms).
"""

import bson
from bson.errors import InvalidDocument
from pymongo import ReturnDocument
from pymongo.errors import DocumentTooLarge, OperationFailure, WriteConcernError

from ..bounds import MAX_RECORD_BYTES
from ..clock import utc_now
from ..model.documents import PROVENANCE_FIELD
from ..model.entities import Entity
from .mirror import Mirror
from .ordering import ordered_by_row
from .write import UpsertOutcome, Write, provenance, refuse_oversized

# The stored size bound every record keeps in its bookkeeping (see `size_guard`).
BYTES = f"{PROVENANCE_FIELD}.bytes"
VERSION = f"{PROVENANCE_FIELD}.version"
# When the change the record last took was made (sync/ordering.py): an older change is not merged here.
CHANGED_AT = f"{PROVENANCE_FIELD}.changed_at"


def guarded_upsert(engine: Mirror, write: Write, values: dict, doc_id: str) -> UpsertOutcome | None:
    """Create the record with one insert, or (guarded plan) merge it with one guarded update; None: decide on a read."""
    entity = write.entity
    owner_guard = entity.rules.stored_guard(write.caller, values)
    if owner_guard is None:
        return None
    if all(name in values for name in entity.required_on_create):
        created = insert_new(engine, write, values, doc_id)
        if created is not None:
            collection = engine.database[entity.collection]
            if engine.tombstones.take_back_if_deleted(collection, entity, values, doc_id, write.writer):
                return None  # a delete removed it: the read says stale
            return created
    if engine.commands.point or write.version is not None:
        # Point plan: the rules in a filter would make the server scan. A client's version is compared on the read.
        return None
    return merge(engine, write, values, doc_id, owner_guard)


def insert_new(engine: Mirror, write: Write, values: dict, doc_id: str) -> UpsertOutcome | None:
    """Insert a full row as a new record; None when its key is taken (it is merged instead)."""
    document = new_document(engine, write, values, doc_id)
    try:
        engine.database[write.entity.collection].insert_one(document)
    except WriteConcernError:
        raise  # written, but not as durably as configured: the request fails (or is queued), as on the read path
    except (OperationFailure, InvalidDocument, DocumentTooLarge):
        # Usually a duplicate key: the record exists, merge into it. Any other refusal recurs, and is
        # said in the same words, on the read path the merge falls back to.
        return None
    return UpsertOutcome("created", engine.show(write.entity, document))


def new_document(engine: Mirror, write: Write, values: dict, doc_id: str) -> dict:
    """A new record as stored: Supabase's defaults, the values sent, its bookkeeping and size (refused if too big)."""
    entity = write.entity
    document = {"_id": doc_id, **engine.to_storage(entity, entity.insert_defaults), **values,
                PROVENANCE_FIELD: provenance(write, 1)}
    document[PROVENANCE_FIELD]["bytes"] = refuse_oversized(document)
    return document


def merge(engine: Mirror, write: Write, values: dict, doc_id: str, owner_guard: dict) -> UpsertOutcome | None:
    """Merge the values into the stored record with one command whose filter holds every rule; None: it missed."""
    entity = write.entity
    sent_bytes = encoded_size(values)
    if sent_bytes is None:
        return None
    now = utc_now()
    changed_at = write.changed_at or now
    update = {"$set": {**values, f"{PROVENANCE_FIELD}.written_at": now, f"{PROVENANCE_FIELD}.changed_at": changed_at,
                       f"{PROVENANCE_FIELD}.source": write.source},
              "$inc": {VERSION: 1, BYTES: sent_bytes}}
    # The change time orders what the row's own updated_at does not (sync/ordering.py).
    by_time = None if ordered_by_row(entity, values) else newer_than_stored(CHANGED_AT, {CHANGED_AT: changed_at})
    conditions = [owner_guard, newer_than_stored(entity.timestamp_field, values), by_time, same_supabase_id(values),
                  size_guard(sent_bytes), changes_something(entity, values)]
    query = {"_id": doc_id, "$and": [condition for condition in conditions if condition]}
    try:
        before = engine.database[entity.collection].find_one_and_update(
            query, update, return_document=ReturnDocument.BEFORE)
    except WriteConcernError:
        raise  # written, but not as durably as configured: as on the read path
    except (OperationFailure, InvalidDocument, DocumentTooLarge):
        return None  # refused for its content: the read path's write is refused too, and says why
    if before is None:
        return None  # missing, stale, someone else's, unchanged or near its size bound: the read says which
    # The filter held "something changes", so the record was written: updated.
    return UpsertOutcome("updated", engine.show(entity, {**before, **values}))


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


def changes_something(entity: Entity, values: dict) -> dict:
    """At least one value sent differs from the stored one: an unchanged replay writes nothing.

    Only declared columns with a scalar value other than true/false are compared here: the
    database compares an object's keys in order and 1 with true as different, where the read
    path's rule (and jsonb) see them equal. A change to those alone misses, and the read path
    makes it.
    """
    compared = [name for name, value in values.items()
                if name in entity.schema.fields and not isinstance(value, dict | list | bool)]
    return {"$or": [{name: {"$ne": values[name]}} for name in compared]}
