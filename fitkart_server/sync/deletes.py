"""Deletes: by key, by Supabase id, or every record of a user; each leaves tombstones behind."""

from marshmallow import ValidationError

from ..clock import utc_now
from ..model.entities import Entity
from .mirror import Mirror
from .write import RecordRejected, Write, field_errors, missing


def delete(engine: Mirror, write: Write) -> int:
    """Delete what the selector names, after the row rules allow it; how many records went."""
    entity = write.entity
    query, exact = delete_query(entity, write.payload)
    collection = engine.database[entity.collection]
    owner = getattr(entity.rules, "owner_field", None)
    fields = {"_id": 1, "id": 1, **{name: 1 for name in (*entity.key, owner) if name}}
    found = find_targets(engine, entity, query, fields)
    entity.rules.check_delete(write.caller, query, found, engine.database)  # Forbidden
    now = utc_now()
    if not found:
        if exact:
            # Remember the delete anyway: its upsert may still be on its way. A replay changes nothing.
            # A client's such delete binds only that client (see Tombstones.binds); Supabase's binds all.
            # It is stored on the caller's behalf, so it spends the caller's allowance like a reject.
            key = entity.key_of(query) if all(name in query for name in entity.key) else None
            if engine.allowance is None or engine.allowance():
                engine.tombstones.remember(entity, [(key, query.get("id"))], now, overwrite=False, by=write.writer)
        return 0
    # Tombstones first: if the delete then fails, a retry finds them and finishes it.
    engine.tombstones.remember(entity, [(entity.key_of(doc), doc.get("id")) for doc in found], now, overwrite=True)
    deleted = engine.commands.delete_each(collection, [doc["_id"] for doc in found])
    if engine.observer is not None:
        engine.observer(entity.collection, "deleted", deleted)
    return deleted


def find_targets(engine: Mirror, entity: Entity, query: dict, fields: dict) -> list[dict]:
    """The stored records a delete's query names.

    Guarded plan: by the query's fields (indexed; a document written by something else keeps its
    own _id). Point plan: a query that holds the key is a read by _id, the key being the _id of
    every record the engine writes; a user's records (clear_by) and a compound-key record named
    by its Supabase id are found by their fields, a scan on FerretDB v1 (docs/operations.md).
    """
    collection = engine.database[entity.collection]
    if engine.commands.point and all(name in query for name in entity.key):
        document = collection.find_one({"_id": entity.key_of(query)}, fields)
        return [document] if document is not None else []
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
        return {name: values[name] for name in entity.key}, True
    if "id" in values:
        return {"id": values["id"]}, True
    if entity.clear_by and entity.clear_by in values:
        return {entity.clear_by: values[entity.clear_by]}, False
    names = " + ".join(entity.key)
    choices = f"its key ({names}) or its id" + (f", or {entity.clear_by} to clear them all" if entity.clear_by else "")
    raise RecordRejected(f"Name the record to delete: {choices}.", missing(entity.key))
