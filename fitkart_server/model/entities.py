"""The six mirrored tables, each declared once: document, schema, key and legacy route."""

from dataclasses import dataclass, field
from functools import cached_property

from marshmallow import Schema, missing

from . import documents, schemas
from .policy import OwnRole, OwnRows, SellerCatalogue


@dataclass(frozen=True)
class Entity:
    """One mirrored Supabase table and everything the sync engine needs to know about it."""

    document: type[documents.MirrorDocument]
    schema_class: type[schemas.RecordSchema]
    key: tuple[str, ...]
    legacy_route: str | None = None
    # The field whose value clears a user's records at once (`DELETE ...?user_id=U`).
    clear_by: str | None = None
    # Who may read and write which rows (the shop's row-level security).
    rules: OwnRows = field(default_factory=OwnRows)

    @property
    def collection(self) -> str:
        """The MongoDB collection, named exactly like the Supabase table."""
        return self.document._get_collection_name()

    @property
    def name(self) -> str:
        """The document class name, used in the OpenAPI document."""
        return self.document.__name__

    @cached_property
    def schema(self) -> Schema:
        """A schema instance for loading partial records and dumping stored ones."""
        return self.schema_class()

    @cached_property
    def ref_field(self) -> str:
        """The field a URL `<ref>` names: the key when it is one field, else Supabase `id`."""
        return self.key[0] if len(self.key) == 1 else "id"

    @cached_property
    def timestamp_field(self) -> str:
        """The column that orders versions: `updated_at`, or `created_at` where there is none."""
        return "updated_at" if "updated_at" in self.schema.fields else "created_at"

    @cached_property
    def required_on_create(self) -> tuple[str, ...]:
        """NOT NULL columns without a default: a new record must carry them."""
        return tuple(name for name, f in self.schema.fields.items() if f.required)

    @cached_property
    def insert_defaults(self) -> dict:
        """Column defaults Supabase applies on insert, applied the same way here."""
        return {name: f.load_default for name, f in self.schema.fields.items()
                if f.load_default is not missing}

    def key_of(self, record: dict) -> str:
        """The record's key as one string, for tombstones."""
        return "|".join(str(record[name]) for name in self.key)


ENTITIES: tuple[Entity, ...] = (
    Entity(documents.Profile, schemas.ProfileSchema, ("user_id",), legacy_route="profile"),
    Entity(documents.Product, schemas.ProductSchema, ("id",), rules=SellerCatalogue()),
    Entity(documents.Order, schemas.OrderSchema, ("id",), legacy_route="order"),
    Entity(documents.CartItem, schemas.CartItemSchema, ("id",), legacy_route="cart", clear_by="user_id"),
    Entity(documents.WishlistItem, schemas.WishlistItemSchema, ("user_id", "product_id"), clear_by="user_id"),
    Entity(documents.UserRole, schemas.UserRoleSchema, ("user_id",), rules=OwnRole()),
)

BY_COLLECTION: dict[str, Entity] = {entity.collection: entity for entity in ENTITIES}
