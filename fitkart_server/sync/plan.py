"""The write plan: which commands the rules send, chosen for what the database server can do fast.

- `guarded` (servers with real indexes: MongoDB): a filter may carry the rules, so a change to a
  stored record is one atomic guarded command, and many records are read or deleted with `$in`.
- `point` (servers that push down only `_id` equality: FerretDB v1): every command on the write
  path has a filter of exactly `{_id: value}`, or is an insert; only a read or delete of more than
  POINT_AT_MOST documents at once is one `$in`, which costs less there than that many point reads.
  Any other filter makes FerretDB v1 decode the whole collection in Go. The rules are decided in
  Python on a read by `_id`; the write goes by `_id`, and returns what it replaced, so a writer
  that got in between is seen and its values put back (FerretDB v1 has no atomic compare-and-set
  to lose: its findAndModify is a read and a write).

Both plans keep the same rules and give the same answers; only the commands differ.
"""

from collections.abc import Iterable

from pymongo import ReturnDocument
from pymongo.collection import Collection

from ..model.documents import PROVENANCE_FIELD

GUARDED = "guarded"
POINT = "point"
PLANS = (GUARDED, POINT)
# Under the point plan, more documents than this are read (or deleted) with one `$in` instead of one command
# each. On FerretDB v1 a filter of `{_id: value}` is itself a scan in SQL (its SQLite backend's `_id` index is
# on another expression than its query's), and one `$in`, decoded in Go, costs 11 to 19 of them (1,000 to
# 100,000 documents: docs/operations.md); a point read of a stored record stops where it finds it, on average
# halfway.
POINT_AT_MOST = 16


def plan_for(build_info: dict) -> tuple[str, str]:
    """The plan for a server that answered `buildInfo` so, and why.

    FerretDB v1 (it names its own version, `ferretdbVersion: v1.x`) pushes a filter down to its
    storage only when it is exactly `{_id: value}`; every other server is taken to have indexes.
    """
    ferretdb = str(build_info.get("ferretdbVersion") or "")
    if ferretdb.lstrip("v").startswith("1."):
        return POINT, f"FerretDB {ferretdb} pushes down only _id equality"
    server = f"FerretDB {ferretdb}" if ferretdb else f"MongoDB {build_info.get('version', '?')}"
    return GUARDED, f"{server} uses indexes for any filter"


class Commands:
    """The commands that read, change and delete records by `_id`, as the plan sends them."""

    def __init__(self, plan: str = GUARDED) -> None:
        if plan not in PLANS:
            raise ValueError(f"Unknown write plan {plan!r}: one of {', '.join(PLANS)}.")
        self.plan = plan

    @property
    def point(self) -> bool:
        """Whether every write-path command goes by `_id` alone."""
        return self.plan == POINT

    def one_by_one(self, count: int) -> bool:
        """Whether `count` documents are read or deleted one command each (point plan, up to POINT_AT_MOST)."""
        return self.point and count <= POINT_AT_MOST

    def find_each(self, collection: Collection, ids: Iterable, projection: dict | None = None) -> dict:
        """The stored documents with these `_id`s, by `_id`: one `$in` read, or one point read each."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        if self.one_by_one(len(wanted)):
            found = (collection.find_one({"_id": doc_id}, projection) for doc_id in wanted)
            return {doc["_id"]: doc for doc in found if doc is not None}
        query = {"_id": wanted[0]} if len(wanted) == 1 else {"_id": {"$in": wanted}}
        return {doc["_id"]: doc for doc in collection.find(query, projection)}

    def delete_each(self, collection: Collection, ids: Iterable) -> int:
        """Delete the documents with these `_id`s; how many went."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return 0
        if self.one_by_one(len(wanted)) or len(wanted) == 1:
            return sum(collection.delete_one({"_id": doc_id}).deleted_count for doc_id in wanted)
        return collection.delete_many({"_id": {"$in": wanted}}).deleted_count

    def update_if_version(self, collection: Collection, doc_id, version: int | None, update: dict) -> bool:
        """Apply `update` to the record if it still has `version` (a compare-and-set); whether it did.

        Guarded: the version is in the filter. Point: the update goes by `_id` and returns the record
        it replaced; if another writer changed it since it was read, the fields this update set are
        put back as that writer left them, and the caller decides again (False).
        """
        if not self.point:
            return collection.update_one({"_id": doc_id, VERSION: version}, update).matched_count == 1
        before = collection.find_one_and_update({"_id": doc_id}, update, return_document=ReturnDocument.BEFORE)
        if before is None:
            return False  # deleted since: nothing was written (no upsert)
        if stored_version(before) == version:
            return True
        put_back(collection, before, update)
        return False


VERSION = f"{PROVENANCE_FIELD}.version"


def stored_version(document: dict) -> int | None:
    """The version the mirror's bookkeeping gives a stored record (None: written by something else)."""
    return (document.get(PROVENANCE_FIELD) or {}).get("version")


def put_back(collection: Collection, before: dict, update: dict) -> None:
    """Undo an update that overwrote another writer's change: the fields it set, as they were before it."""
    names = {name.split(".")[0] for operator in update.values() for name in operator}
    restored = {name: before[name] for name in names if name in before}
    removed = {name: "" for name in names if name not in before}
    collection.update_one({"_id": before["_id"]}, {**({"$set": restored} if restored else {}),
                                                   **({"$unset": removed} if removed else {})})
