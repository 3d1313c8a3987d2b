"""Deletes: by key, by Supabase id, or every record of a user; each leaves tombstones behind."""

from datetime import datetime

from marshmallow import ValidationError

from ..clock import as_utc, utc_now
from ..model.documents import PROVENANCE_FIELD
from ..model.entities import Entity
from .mirror import Mirror
from .ordering import overtaken
from .write import RecordRejected, Write, field_errors, missing


def delete(engine: Mirror, write: Write) -> int:
    """Delete what the selector names, after the row rules allow it; how many records went.

    A delete that names a Supabase id removes only the record holding that id (or one stored
    without an id), never a newer record of the same key, and its tombstone binds only that id. A
    client's delete made before the record's last change (ordering.overtaken) leaves it alone.
    """
    entity = write.entity
    query, exact = delete_query(entity, write.payload)
    collection = engine.database[entity.collection]
    owner = getattr(entity.rules, "owner_field", None)
    fields = {"_id": 1, "id": 1, PROVENANCE_FIELD: 1, entity.timestamp_field: 1,
              **{name: 1 for name in (*entity.key, owner) if name}}
    named_id = query.get("id")
    found = [doc for doc in find_targets(engine, entity, query, fields)
             if named_id is None or doc.get("id") in (None, named_id)]
    # Someone else's records are left out, not refused: a delete of one answers as one of nothing would.
    found = entity.rules.deletable(write.caller, query, found, engine.database)
    if write.source == "client":
        found = [doc for doc in found if not overtaken(write, doc)]
    deleted_at = write.changed_at or utc_now()
    # A delete naming an id binds that id, and its key only through the deleted row's own time: a record of the
    # same key made after it (a new id) is another record.
    key_named = named_id is None or entity.key == ("id",)
    sent = sent_stamp(entity, write.payload)
    if not found:
        # A query naming another user's key keeps nothing: to this caller such records do not exist either way.
        if exact and entity.rules.names_own(write.caller, query):
            # Remember the delete anyway: its upsert may still be on its way. A replay changes nothing.
            # A client's such delete binds only that client (see Tombstones.binds); Supabase's binds all.
            # It is stored on the caller's behalf, so it spends the caller's allowance like a reject.
            through = None if key_named else latest(sent, write.changed_at if write.source == "wal" else None)
            key = entity.key_of(query) if (key_named or through) and all(name in query for name in entity.key) \
                else None
            if engine.allowance is None or engine.allowance():
                engine.tombstones.remember(entity, [(key, named_id, through)], deleted_at, overwrite=False,
                                           by=write.writer)
        return 0
    # Tombstones first: if the delete then fails, a retry finds them and finishes it.
    engine.tombstones.remember(entity, [deleted_row(entity, write, doc, key_named, sent) for doc in found],
                               deleted_at, overwrite=True)
    deleted = engine.commands.delete_each(collection, [doc["_id"] for doc in found])
    if engine.observer is not None:
        engine.observer(entity.collection, "deleted", deleted)
    return deleted


def deleted_row(entity: Entity, write: Write, doc: dict, key_named: bool,
                sent: datetime | None) -> tuple[str | None, str | None, datetime | None]:
    """A deleted record's tombstones: its key (bound through the row's own time when the delete named its id;
    not at all when no time is known), its id."""
    if key_named:
        return entity.key_of(doc), doc.get("id"), None
    through = latest(sent, doc.get(entity.timestamp_field), write.changed_at if write.source == "wal" else None)
    return (entity.key_of(doc) if through else None), doc.get("id"), through


def sent_stamp(entity: Entity, selector) -> datetime | None:
    """The deleted row's own timestamp, when the delete carries it (a webhook's `old_record` does)."""
    try:
        stamp = entity.schema.load({entity.timestamp_field: selector[entity.timestamp_field]}, partial=True)
    except (ValidationError, KeyError, TypeError):
        return None
    return stamp.get(entity.timestamp_field)


def latest(*moments: datetime | None) -> datetime | None:
    """The latest of the moments known (None when none is)."""
    known = [as_utc(moment) for moment in moments if isinstance(moment, datetime)]
    return max(known) if known else None


def find_targets(engine: Mirror, entity: Entity, query: dict, fields: dict) -> list[dict]:
    """The stored records a delete's query names (by its key alone when it holds the key: ids are checked after).

    Guarded plan: by the query's fields (indexed; a document written by something else keeps its
    own _id). Point plan: a query that holds the key is a read by _id, the key being the _id of
    every record the engine writes; a user's records (clear_by) and a compound-key record named
    by its Supabase id are found by their fields, a scan on FerretDB v1 (docs/operations.md).
    """
    collection = engine.database[entity.collection]
    if all(name in query for name in entity.key):
        if engine.commands.point:
            document = collection.find_one({"_id": entity.key_of(query)}, fields)
            return [document] if document is not None else []
        query = {name: query[name] for name in entity.key}
    return list(collection.find(query, fields))


def delete_query(entity: Entity, selector) -> tuple[dict, bool]:
    """Turn a delete selector into a query, and whether it names one record."""
    if not isinstance(selector, dict):
        raise RecordRejected("Name the record to delete with a JSON object.")
    wanted = {*entity.key, "id", *([entity.clear_by] if entity.clear_by else [])}
    try:
        values = entity.schema.load({k: v for k, v in selector.items() if k in wanted}, partial=True)
    except ValidationError as error:
        raise RecordRejected("Invalid delete.", field_errors(error)) from None
    if all(name in values for name in entity.key):
        named = {"id": values["id"]} if "id" in values else {}
        return {**{name: values[name] for name in entity.key}, **named}, True
    if "id" in values:
        return {"id": values["id"]}, True
    if entity.clear_by and entity.clear_by in values:
        return {entity.clear_by: values[entity.clear_by]}, False
    names = " + ".join(entity.key)
    choices = f"its key ({names}) or its id" + (f", or {entity.clear_by} to clear them all" if entity.clear_by else "")
    raise RecordRejected(f"Name the record to delete: {choices}.", missing(entity.key))
