"""Moving the old Express + mongoose server's data into the new collections.

mongoose pluralised its model names (`cartitems`, `wishlistitems`, `userroles`) and added
`__v` to every document; `profiles`, `products` and `orders` kept their names, so their
legacy documents are the ones without the mirror's `_fitkart`. Every document goes through
the sync engine (validation, merge, rejects), so a legacy record is never written as is.
"""

from datetime import datetime

from bson import Decimal128, ObjectId

from ..model.documents import PROVENANCE_FIELD
from ..model.entities import BY_COLLECTION
from ..sync.engine import SyncEngine
from ..sync.write import RecordRejected

LEGACY_COLLECTIONS = {"cartitems": "cart_items", "wishlistitems": "wishlist_items", "userroles": "user_roles",
                      "profiles": "profiles", "products": "products", "orders": "orders"}
ROUTE = "flask fitkart migrate-legacy"


def as_json(value):
    """A mongoose-stored value as the JSON a client would have sent."""
    if isinstance(value, dict):
        return {key: as_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_json(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, Decimal128):
        return str(value.to_decimal())
    return value


def migrate(engine: SyncEngine) -> dict[str, dict[str, int]]:
    """Move every legacy document; per old collection, how many moved and how many could not."""
    database = engine.database
    report = {}
    for old_name, new_name in LEGACY_COLLECTIONS.items():
        entity = BY_COLLECTION[new_name]
        old = database[old_name]
        in_place = old_name == new_name
        counts = {"moved": 0, "failed": 0}
        query = {PROVENANCE_FIELD: {"$exists": False}} if in_place else {}
        for legacy in list(old.find(query)):
            payload = as_json({key: value for key, value in legacy.items() if key not in ("_id", "__v")})
            if in_place:
                # The record is rewritten under its key as _id; the mongoose copy (ObjectId _id,
                # same unique key) makes room first and comes back if the record is refused.
                old.delete_one({"_id": legacy["_id"]})
            try:
                engine.upsert_record(entity, payload, source="reconcile", route=ROUTE)
            except RecordRejected:
                if in_place:
                    old.insert_one(legacy)
                counts["failed"] += 1  # kept where it is, and in sync_rejects with the reason
                continue
            if not in_place:
                old.delete_one({"_id": legacy["_id"]})
            counts["moved"] += 1
        report[old_name] = counts
    return report
