"""Tombstones: the deletes the mirror remembers, so a late or replayed upsert cannot bring a record back."""

from collections.abc import Callable
from datetime import datetime, timedelta

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from ..clock import as_utc, utc_now
from ..model.entities import Entity
from .plan import Commands

# Clients a tombstone of a delete-of-nothing remembers; more would let one id hold unbounded data.
MAX_TOMBSTONE_CLIENTS = 16
# Looks a tombstone up by its _id: the collection itself, or what a batch read beforehand.
Finder = Callable[[str], dict | None]


def id_tombstone(entity: Entity, record_id: str) -> str:
    """The tombstone _id that remembers a deleted Supabase id (the key's own where the key is id)."""
    return f"{entity.collection}|{'key' if entity.key == ('id',) else 'id'}|{record_id}"


def key_tombstone(entity: Entity, key: str) -> str:
    """The tombstone _id that remembers a deleted key."""
    return f"{entity.collection}|key|{key}"


def tombstone_ids(entity: Entity, key: str | None, record_id: str | None) -> list[str]:
    """The tombstones of one deleted record: by its key, and by its Supabase id when that differs."""
    ids = [key_tombstone(entity, key)] if key is not None else []
    if record_id is not None and id_tombstone(entity, record_id) not in ids:
        ids.append(id_tombstone(entity, record_id))
    return ids


class Tombstones:
    """The `sync_tombstones` collection and the rules that read and write it."""

    def __init__(self, collection: Collection, lifetime: timedelta, commands: Commands | None = None) -> None:
        self.collection = collection
        self.lifetime = lifetime
        self.commands = commands or Commands()

    def find(self, tombstone_id: str) -> dict | None:
        """One tombstone by its _id."""
        return self.collection.find_one({"_id": tombstone_id})

    def find_many(self, ids: list[str]) -> dict[str, dict]:
        """Tombstones by _id (one read, or one point read each: see plan.py)."""
        return self.commands.find_each(self.collection, ids)

    def binds(self, entity: Entity, values: dict, find: Finder, writer: str | None) -> bool:
        """Whether a delete already removed this Supabase id, or this key after `values`' time.

        A tombstone left by a client's delete of a record that was not there (yet) binds only
        that client (`by`): it guards its own create arriving after its delete, but no one
        else's write and no write from Supabase (webhook, repair) can be blocked by it.
        """
        # Expired tombstones are ignored even where the database cannot expire them (FerretDB).
        alive_since = utc_now() - self.lifetime

        def binding(found: dict | None) -> bool:
            return (found is not None and as_utc(found["deleted_at"]) > alive_since
                    and ("by" not in found or (writer is not None and writer in found["by"])))

        seen: dict[str, dict | None] = {}
        if values.get("id") is not None:  # Supabase never reuses an id
            tombstone_id = id_tombstone(entity, values["id"])
            found = seen[tombstone_id] = find(tombstone_id)
            if binding(found):
                return True
        stamp = values.get(entity.timestamp_field)
        if stamp is None or not all(name in values for name in entity.key):
            return False
        by_key = key_tombstone(entity, entity.key_of(values))
        # Where the key is the id, both are one tombstone: it was looked up already.
        found = seen[by_key] if by_key in seen else find(by_key)
        return binding(found) and as_utc(found.get("binds_through") or found["deleted_at"]) >= stamp

    def take_back_if_deleted(self, collection: Collection, entity: Entity, values: dict, doc_id: str,
                             writer: str | None) -> bool:
        """After creating a record: whether a delete binds it after all, in which case it is deleted again.

        Its tombstones are read after the insert: a delete that landed before the insert left a
        tombstone that is seen here, and one landing after it finds the record and removes it. (Read
        before the insert, a delete landing between the read and the insert went unseen, and the
        deleted record came back.)
        """
        if not self.binds(entity, values, self.find, writer):
            return False
        collection.delete_one({"_id": doc_id})
        return True

    def remember(self, entity: Entity, records: list[tuple[str | None, str | None, datetime | None]],
                 deleted_at: datetime, *, overwrite: bool, by: str | None = None) -> None:
        """Create the tombstones (by key and by Supabase id) of deleted records: (key, id, binds through).

        A key tombstone binds versions of the key stamped up to its `binds_through` (the time given,
        else the delete's): a delete that named one Supabase id binds only what is not newer than the
        row it deleted, never a row made again after it.

        An existing tombstone gets the new time when `overwrite` and it is later (and then binds everyone),
        else stays as it is (a repeated delete of what is already gone changes nothing),
        except that a tombstone binding only some clients also binds `by` from then on.
        Insert first, update on a duplicate: an upsert would make FerretDB v1 scan the whole collection.
        """
        for key, record_id, through in records:
            for tombstone_id in tombstone_ids(entity, key, record_id):
                tombstone = {"_id": tombstone_id, "collection": entity.collection, "deleted_at": deleted_at,
                             "binds_through": through or deleted_at}
                try:
                    self.collection.insert_one(tombstone if by is None else {**tombstone, "by": [by]})
                except DuplicateKeyError:
                    self._merge(tombstone_id, tombstone["binds_through"], deleted_at, overwrite, by)

    def _merge(self, tombstone_id: str, through: datetime, deleted_at: datetime, overwrite: bool,
               by: str | None) -> None:
        """Fold a new delete into the tombstone already there (see `remember`)."""
        if self.commands.point and not overwrite:
            self._merge_on_read(tombstone_id, by)
        elif overwrite:  # the later of two deletes' own times: one replayed late cannot move it back
            self.collection.update_one({"_id": tombstone_id}, {"$max": {"deleted_at": deleted_at,
                                                                        "binds_through": through},
                                                               "$unset": {"by": ""}})
        elif by is None:  # Supabase confirms a delete some clients made: it now binds all
            self.collection.update_one({"_id": tombstone_id, "by": {"$exists": True}}, {"$unset": {"by": ""}})
        else:  # another client's delete of nothing: it binds that client too (a few at most)
            self.collection.update_one(
                {"_id": tombstone_id, "by": {"$exists": True}, f"by.{MAX_TOMBSTONE_CLIENTS - 1}": {"$exists": False}},
                {"$addToSet": {"by": by}})

    def _merge_on_read(self, tombstone_id: str, by: str | None) -> None:
        """`_merge` for a delete of nothing, decided on a read by _id and written by _id (the point plan)."""
        found = self.collection.find_one({"_id": tombstone_id}, {"by": 1})
        if found is None or "by" not in found:
            return  # gone since, or it binds everyone already
        if by is None:
            self.collection.update_one({"_id": tombstone_id}, {"$unset": {"by": ""}})
        elif by not in found["by"] and len(found["by"]) < MAX_TOMBSTONE_CLIENTS:
            self.collection.update_one({"_id": tombstone_id}, {"$addToSet": {"by": by}})

    def forget(self, entity: Entity, values: dict) -> None:
        """Drop the tombstones of a record Supabase says exists, so it can be updated again."""
        self.forget_each(entity, [values])

    def forget_each(self, entity: Entity, records: list[dict]) -> None:
        """Drop the tombstones of records Supabase says exist (one delete, or one per tombstone: see plan.py)."""
        self.commands.delete_each(self.collection, [tombstone_id for values in records for tombstone_id in
                                                    tombstone_ids(entity, entity.key_of(values), values.get("id"))])
