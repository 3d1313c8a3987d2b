"""Reads: one record by its ref, or a page of the records a caller may read, in key order."""

import bson
from marshmallow import ValidationError

from ..bounds import MAX_ECHO_BYTES
from ..model.entities import Entity
from ..model.policy import Caller
from .mirror import Mirror


def find_record(engine: Mirror, entity: Entity, ref: str, caller: Caller) -> dict | None:
    """The stored record whose ref field (key, or id for compound keys) is `ref`, if the caller may see it."""
    try:
        ref = entity.schema.fields[entity.ref_field].deserialize(ref)
    except ValidationError:
        return None  # not a uuid, so no record has it
    by_key = entity.key == (entity.ref_field,)
    document = engine.database[entity.collection].find_one({"_id": ref} if by_key else {entity.ref_field: ref})
    if document is None or not entity.rules.can_read(caller, document):
        return None  # another user's record is, to this caller, not there (as under row-level security)
    return engine.show(entity, document)


def list_records(engine: Mirror, entity: Entity, caller: Caller, user_id: str | None, limit: int,
                 cursor: str | None) -> tuple[list[dict], str | None]:
    """One page of the records the caller may read, in key order, and the next cursor."""
    conditions = [entity.rules.read_query(caller)]
    if user_id is not None:
        conditions.append({"user_id": user_id.lower()})
    if cursor is not None:
        conditions.append({"_id": {"$gt": cursor}})
    # Small batches: records may be up to 1 MiB each, and the page may end after the first.
    found = engine.database[entity.collection].find({"$and": conditions}).sort("_id", 1).limit(limit + 1)
    found = found.batch_size(16)
    page, size = [], 0
    for document in found:
        size += len(bson.encode(document))
        if len(page) == limit or (page and size > MAX_ECHO_BYTES):
            found.close()
            return [engine.show(entity, doc) for doc in page], page[-1]["_id"]
        page.append(document)
    return [engine.show(entity, doc) for doc in page], None
