"""Marshmallow schemas: what clients may post for each table, and how records are shown."""

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from bson import Decimal128
from marshmallow import INCLUDE, Schema, ValidationError, fields, post_dump, pre_load, validate

from .documents import PROVENANCE_FIELD

CENT = Decimal("0.01")
MONEY_LIMIT = Decimal("100000000")  # numeric(10,2): eight digits before the point
INT4_MAX = 2**31 - 1
RESERVED_KEYS = ("_id", PROVENANCE_FIELD)


class Uuid(fields.UUID):
    """A Supabase uuid, kept as its canonical lowercase string."""

    def _deserialize(self, value, attr, data, **kwargs) -> str:
        return str(super()._deserialize(value, attr, data, **kwargs))

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else str(value)


class Timestamp(fields.AwareDateTime):
    """A timestamptz: stored as a UTC BSON date, which holds milliseconds."""

    def __init__(self, **kwargs) -> None:
        super().__init__(default_timezone=UTC, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs) -> datetime:
        moment = super()._deserialize(value, attr, data, **kwargs).astimezone(UTC)
        # Truncate as BSON does, so comparisons with stored values are exact.
        return moment.replace(microsecond=moment.microsecond // 1000 * 1000)

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        if value.tzinfo is None:  # stores opened without tz_aware hand back naive UTC
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat(timespec="milliseconds")


class Money(fields.Decimal):
    """A numeric(10,2) amount: non-negative, at most two decimal places."""

    def __init__(self, **kwargs) -> None:
        super().__init__(validate=validate.Range(min=0, max=MONEY_LIMIT, max_inclusive=False), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs) -> Decimal:
        amount = super()._deserialize(value, attr, data, **kwargs)
        if amount != amount.quantize(CENT):
            raise ValidationError("Not a numeric(10,2) amount: more than two decimal places.")
        return amount.quantize(CENT)

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        if isinstance(value, Decimal128):
            value = value.to_decimal()
        try:
            amount = Decimal(str(value)).quantize(CENT)
        except InvalidOperation:
            return None
        # A JSON number: every numeric(10,2) value has at most ten significant digits,
        # so the shortest float repr prints exactly its decimal value.
        return float(amount)


def text(max_length: int, **kwargs) -> fields.String:
    """A text column with a length limit."""
    return fields.String(validate=validate.Length(max=max_length), **kwargs)


def text_array(item_length: int = 200, max_items: int = 100, **kwargs) -> fields.List:
    """A text[] column."""
    return fields.List(text(item_length), validate=validate.Length(max=max_items), **kwargs)


def count(**kwargs) -> fields.Integer:
    """A non-negative Postgres integer."""
    return fields.Integer(strict=True, validate=validate.Range(min=0, max=INT4_MAX), **kwargs)


def find_bad_keys(value, path: str = "") -> list[str]:
    """List the paths of keys that MongoDB would read as operators or paths."""
    bad = []
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str) or key.startswith("$") or "." in key or "\x00" in key:
                bad.append(where)
            bad.extend(find_bad_keys(item, where))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            bad.extend(find_bad_keys(item, f"{path}[{index}]"))
    return bad


class RecordSchema(Schema):
    """Base of the six record schemas: unknown columns kept, hostile keys refused."""

    class Meta:
        # The mirror follows Supabase schema changes: columns it does not know are stored.
        unknown = INCLUDE

    @pre_load
    def refuse_hostile_keys(self, data, **kwargs):
        """Reject keys starting with `$`, containing `.` or NUL, anywhere; and reserved keys."""
        if not isinstance(data, dict):
            return data
        errors = {path: ["Key not allowed: it starts with '$' or contains '.' or NUL."]
                  for path in find_bad_keys(data)}
        for key in RESERVED_KEYS:
            if key in data:
                errors[key] = ["Key reserved by the mirror."]
        if errors:
            raise ValidationError(errors)
        return data

    @post_dump(pass_original=True)
    def keep_unknown_columns(self, data, original, **kwargs):
        """Show stored columns the schema does not declare, but not the mirror's own fields."""
        for key, value in original.items():
            if key not in data and key not in self.fields and key not in RESERVED_KEYS:
                data[key] = value
        return data


class ProfileSchema(RecordSchema):
    """A row of `profiles`; keyed by `user_id`."""

    id = Uuid()
    user_id = Uuid(required=True)
    full_name = text(500, allow_none=True)
    email = text(320, allow_none=True)
    avatar_url = text(2048, allow_none=True)
    body_measurements = fields.Raw(allow_none=True)
    style_preferences = text_array(allow_none=True)
    created_at = Timestamp()
    updated_at = Timestamp()


class ProductSchema(RecordSchema):
    """A row of `products`; keyed by `id`."""

    id = Uuid(required=True)
    name = text(500, required=True)
    description = text(10_000, allow_none=True)
    price = Money(required=True)
    category = text(100, required=True)
    brand = text(200, allow_none=True)
    sizes = text_array(50, required=True)
    colors = text_array(50, allow_none=True)
    images = text_array(2048, allow_none=True)
    stock_quantity = count(load_default=0, allow_none=True)
    is_active = fields.Boolean(load_default=True, allow_none=True)
    seller_id = Uuid(allow_none=True)
    created_at = Timestamp()
    updated_at = Timestamp()


class OrderSchema(RecordSchema):
    """A row of `orders`; keyed by `id`. `items` and `shipping_address` are jsonb."""

    id = Uuid(required=True)
    user_id = Uuid(required=True)
    status = text(50, load_default="pending")
    total_amount = Money(required=True)
    shipping_address = fields.Raw(allow_none=True)
    items = fields.List(fields.Dict(), required=True, validate=validate.Length(max=1000))
    created_at = Timestamp()
    updated_at = Timestamp()


class CartItemSchema(RecordSchema):
    """A row of `cart_items`; keyed by `id`. The table has no `updated_at`."""

    id = Uuid(required=True)
    user_id = Uuid(required=True)
    product_id = Uuid(required=True)
    size = text(50, required=True)
    color = text(50, allow_none=True)
    quantity = count(load_default=1)
    created_at = Timestamp()


class WishlistItemSchema(RecordSchema):
    """A row of `wishlist_items`; keyed by (`user_id`, `product_id`)."""

    id = Uuid()
    user_id = Uuid(required=True)
    product_id = Uuid(required=True)
    created_at = Timestamp()


class UserRoleSchema(RecordSchema):
    """A row of `user_roles`: one role per user, keyed by `user_id`."""

    id = Uuid()
    user_id = Uuid(required=True)
    role = fields.String(validate=validate.OneOf(["customer", "seller"]), load_default="customer")
    created_at = Timestamp()
    updated_at = Timestamp()
