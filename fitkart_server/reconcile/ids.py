"""`migrate-ids`: records stored under an `_id` other than their key moved under it, so every write reaches them.

The engine stores each record under its key (`Entity.key_of`: the Supabase id, a user_id, or
`user_id|product_id`), and under the point write plan it finds records by that `_id` alone. A
document another program wrote (an ObjectId `_id`, say) is found there only once it is moved.
A move keeps a copy in `sync_moving` first: a run stopped halfway finishes it on the next start,
so a record is never only half moved. Resumable and idempotent, like `convert-money`.
"""

import contextlib
from dataclasses import dataclass

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from ..model.documents import MOVING
from ..model.entities import Entity
from .sources import PAGE_SIZE


@dataclass
class IdMigration:
    """What migrate-ids did in one table."""

    collection: str
    moved: int = 0
    keyed: int = 0  # already under their key
    no_key: int = 0  # lacking a key column: left where they are (verify shows them)
    taken: int = 0  # another record holds the key: left where they are (verify and repair decide)


def key_of(entity: Entity, document: dict) -> str | None:
    """The `_id` the engine would store this document under; None when a key column is missing."""
    if any(document.get(name) in (None, "") for name in entity.key):
        return None
    return entity.key_of({name: str(document[name]).lower() for name in entity.key})


def migrate_ids(database: Database, entity: Entity, batch_size: int = PAGE_SIZE) -> IdMigration:
    """Move every document of one table that is not under its key; finish any move an earlier run left."""
    report = IdMigration(entity.collection)
    collection, moving = database[entity.collection], database[MOVING]
    for held in list(moving.find({"collection": entity.collection})):
        _finish(collection, moving, entity, held, report)
    misplaced = []  # only the _ids: the documents are read again one at a time
    with collection.find({}, {name: 1 for name in entity.key}).batch_size(batch_size) as cursor:
        for document in cursor:
            key = key_of(entity, document)
            if key is None:
                report.no_key += 1
            elif document["_id"] == key:
                report.keyed += 1
            else:
                misplaced.append(document["_id"])
    for old_id in misplaced:
        document = collection.find_one({"_id": old_id})
        if document is not None:  # else deleted meanwhile
            held = {"collection": entity.collection, "document": document}
            moving.insert_one(held)
            collection.delete_one({"_id": old_id})
            _finish(collection, moving, entity, held, report)
    return report


def _finish(collection: Collection, moving: Collection, entity: Entity, held: dict, report: IdMigration) -> None:
    """Put a held document under its key (or back where it was, when the key is taken), then let it go."""
    document = held["document"]
    try:
        collection.insert_one({**document, "_id": key_of(entity, document)})
        report.moved += 1
    except DuplicateKeyError:
        # The key (or a unique column) is another record's: the document stays as it was, unless a write made
        # meanwhile already stored the record under its key, which then wins.
        with contextlib.suppress(DuplicateKeyError):
            collection.insert_one(document)
        report.taken += 1
    moving.delete_one({"_id": held["_id"]})
