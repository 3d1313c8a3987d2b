"""MongoEngine documents: the mirror's collections, their fields and indexes.

The write engine talks to pymongo directly (one round trip per decision, no
per-request document objects); these classes are the declaration it reads:
collection names, fields and the indexes that `flask fitkart init-db` creates.
`strict: False` keeps columns the mirror does not know yet, as Supabase evolves.
"""

from decimal import Decimal

from bson import Decimal128
from mongoengine import (
    BooleanField,
    DateTimeField,
    DictField,
    Document,
    DynamicField,
    EmbeddedDocument,
    EmbeddedDocumentField,
    IntField,
    ListField,
    StringField,
)

# The mirror's own collections, beside the six tables (declared here and nowhere else).
REJECTS = "sync_rejects"  # refused writes (Reject)
TOMBSTONES = "sync_tombstones"  # remembered deletes (Tombstone)
RUNS = "sync_runs"  # the outcome of each verify, repair and backfill
CHECKPOINTS = "sync_backfill"  # where an interrupted backfill resumes
CAPABILITIES = "sync_capabilities"  # the probe of what the database can store
FOLLOW = "sync_follow"  # each WAL follower's slot, position and lag
RATE_LIMITS = "sync_rate_limits"  # the rate limiter's counters, shared by every host (storage/limitstore.py)
MOVING = "sync_moving"  # records migrate-ids is moving under their key (a copy, until each move is done)

PROVENANCE_FIELD = "_fitkart"


class MoneyField(DynamicField):
    """A numeric(10,2) value stored as Decimal128, double or string (FITKART_DECIMAL_MODE)."""

    def to_python(self, value):
        """Read any of the three stored forms back as a Decimal."""
        if isinstance(value, Decimal128):
            return value.to_decimal()
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            return Decimal(str(value))
        return value


class Provenance(EmbeddedDocument):
    """When and through which path the server last wrote a document, and the order of the change it took."""

    written_at = DateTimeField(required=True)
    source = StringField(required=True, choices=("client", "webhook", "reconcile", "wal"))
    version = IntField(required=True, min_value=1)
    # When the change it last took was made, and the last client version applied (sync/ordering.py).
    changed_at = DateTimeField()
    client = ListField(IntField())


class MirrorDocument(Document):
    """Base of the six mirrored tables: provenance kept apart from Supabase columns.

    MongoEngine reserves `id` for `_id`, so the Supabase `id` column is `supabase_id` here.
    """

    provenance = EmbeddedDocumentField(Provenance, db_field=PROVENANCE_FIELD)
    meta = {"abstract": True, "strict": False, "auto_create_index": False}


def _unique(*fields: str, sparse: bool = False) -> dict:
    """Declare a unique index over the given fields."""
    return {"fields": list(fields), "unique": True, "sparse": sparse}


class Profile(MirrorDocument):
    """A shop user's profile (`public.profiles`)."""

    supabase_id = StringField(db_field="id")
    user_id = StringField(required=True)
    full_name = StringField()
    email = StringField()
    avatar_url = StringField()
    body_measurements = DynamicField()
    style_preferences = ListField(StringField())
    created_at = DateTimeField()
    updated_at = DateTimeField()
    # Profiles are keyed by user_id; the legacy client never sends their Supabase id.
    meta = {"collection": "profiles", "indexes": [_unique("user_id"), _unique("supabase_id", sparse=True)]}


class Product(MirrorDocument):
    """A catalogue product (`public.products`)."""

    supabase_id = StringField(required=True, db_field="id")
    name = StringField(required=True)
    description = StringField()
    price = MoneyField(required=True)
    category = StringField(required=True)
    brand = StringField()
    sizes = ListField(StringField())
    colors = ListField(StringField())
    images = ListField(StringField())
    stock_quantity = IntField()
    is_active = BooleanField()
    seller_id = StringField()
    created_at = DateTimeField()
    updated_at = DateTimeField()
    meta = {"collection": "products", "indexes": [_unique("supabase_id"), "seller_id"]}


class Order(MirrorDocument):
    """A checked-out order (`public.orders`)."""

    supabase_id = StringField(required=True, db_field="id")
    user_id = StringField(required=True)
    status = StringField()
    total_amount = MoneyField(required=True)
    shipping_address = DynamicField()
    items = ListField(DictField())
    created_at = DateTimeField()
    updated_at = DateTimeField()
    meta = {"collection": "orders", "indexes": [_unique("supabase_id"), "user_id"]}


class CartItem(MirrorDocument):
    """One line of a user's cart (`public.cart_items`, which has no updated_at)."""

    supabase_id = StringField(required=True, db_field="id")
    user_id = StringField(required=True)
    product_id = StringField(required=True)
    size = StringField(required=True)
    color = StringField()
    quantity = IntField()
    created_at = DateTimeField()
    meta = {"collection": "cart_items", "indexes": [_unique("supabase_id"), "user_id"]}


class WishlistItem(MirrorDocument):
    """A product on a user's wishlist (`public.wishlist_items`)."""

    supabase_id = StringField(db_field="id")
    user_id = StringField(required=True)
    product_id = StringField(required=True)
    created_at = DateTimeField()
    meta = {
        "collection": "wishlist_items",
        "indexes": [_unique("user_id", "product_id"), _unique("supabase_id", sparse=True)],
    }


class UserRole(MirrorDocument):
    """A user's single role, customer or seller (`public.user_roles`)."""

    supabase_id = StringField(db_field="id")
    user_id = StringField(required=True)
    role = StringField(choices=("customer", "seller"))
    created_at = DateTimeField()
    updated_at = DateTimeField()
    meta = {"collection": "user_roles", "indexes": [_unique("user_id"), _unique("supabase_id", sparse=True)]}


class Reject(Document):
    """A write the server refused, kept so an operator can see and replay it."""

    at = DateTimeField(required=True)
    route = StringField()
    collection_name = StringField(db_field="collection")
    operation = StringField(db_field="op")
    source = StringField()
    reason = StringField(required=True)
    # JSON text, not sub-documents: hostile keys (`$where`, `a.b`) must still be storable.
    errors = StringField()
    payload = StringField()
    payload_truncated = BooleanField()
    meta = {"collection": REJECTS, "indexes": ["-at"], "auto_create_index": False}


class Tombstone(Document):
    """The memory of a delete, so late or repeated upserts cannot resurrect the record.

    Its _id says what it remembers: `<collection>|key|<key>` or `<collection>|id|<Supabase id>`,
    so every check is a primary-key lookup.
    """

    id = StringField(primary_key=True)
    collection_name = StringField(required=True, db_field="collection")
    deleted_at = DateTimeField(required=True)
    # The TTL index on deleted_at is created by storage/store.py: its lifetime is a setting.
    meta = {"collection": TOMBSTONES, "indexes": ["collection_name"], "auto_create_index": False}
