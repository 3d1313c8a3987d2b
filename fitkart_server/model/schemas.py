"""Marshmallow schemas: what clients may post for each table, and how records are shown."""

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from bson import Decimal128
from marshmallow import INCLUDE, Schema, ValidationError, fields, post_dump, pre_load, validate

from ..bounds import MAX_FIELD_ERRORS, MAX_PATH, MORE, cut, more_message
from ..clock import as_utc, to_millisecond
from .documents import PROVENANCE_FIELD

CENT = Decimal("0.01")
MONEY_LIMIT = Decimal("100000000")  # numeric(10,2): eight digits before the point
INT4_MAX = 2**31 - 1
RESERVED_KEYS = ("_id", PROVENANCE_FIELD)
# Columns the schema does not declare are kept if named like Postgres columns (at most 63
# bytes). Besides being what Supabase sends, it keeps out top-level keys with quotes or
# control characters, which FerretDB v1 stores but then cannot read back.
COLUMN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


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
        try:
            return to_millisecond(super()._deserialize(value, attr, data, **kwargs).astimezone(UTC))
        except OverflowError:
            raise ValidationError("Timestamp out of range.") from None

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        return as_utc(value).isoformat(timespec="milliseconds")


class Money(fields.Decimal):
    """A numeric(10,2) amount: non-negative, at most two decimal places."""

    def __init__(self, **kwargs) -> None:
        super().__init__(validate=validate.Range(min=0, max=MONEY_LIMIT, max_inclusive=False), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs) -> Decimal:
        amount = super()._deserialize(value, attr, data, **kwargs)
        # Before quantize, which cannot represent 1e30 to the cent and would raise.
        if not amount.is_finite() or not -MONEY_LIMIT < amount < MONEY_LIMIT:
            raise ValidationError("Not a numeric(10,2) amount: at most eight digits before the point.")
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


INT64 = 2**63
MAX_ITEMS = 10_000  # per array, per object
MAX_STRING = 100_000  # characters in any one string of a payload


def find_unstorable(value, limit: int = MAX_FIELD_ERRORS) -> dict[str, list[str]]:
    """Map each path in a JSON value that MongoDB must not receive to the reason why.

    Keys starting with `$` or holding `.` or NUL would be read as operators or paths;
    lone surrogates cannot be encoded; integers past 64 bits do not fit BSON. The walk
    stops at `limit` problems (then the `_more` key says so), and paths are cut short, so
    a hostile record costs no more to refuse than a small one.
    """
    problems: dict[str, list[str]] = {}
    stack = [(value, "")]
    while stack:
        item, path = stack.pop()
        if len(problems) >= limit:
            problems[MORE] = more_message(None)
            break
        if isinstance(item, dict):
            if len(item) > MAX_ITEMS:
                _flag(problems, path, f"More than {MAX_ITEMS} keys.")
            children = []
            for key, child in item.items():
                if len(problems) >= limit:
                    break
                where = _child_path(path, str(key))
                if not isinstance(key, str) or key.startswith("$") or "." in key or "\x00" in key:
                    _flag(problems, where, "Key not allowed: it starts with '$' or contains '.' or NUL.")
                elif _has_surrogate(key):
                    _flag(problems, where, "Key is not valid Unicode.")
                if isinstance(child, dict | list | str | int):
                    children.append((child, where))
            stack.extend(reversed(children))  # reported in the record's own order
        elif isinstance(item, list):
            if len(item) > MAX_ITEMS:
                _flag(problems, path, f"More than {MAX_ITEMS} items.")
            stack.extend((child, cut(f"{path}[{index}]", MAX_PATH)) for index, child in reversed(list(enumerate(item)))
                         if isinstance(child, dict | list | str | int))
        elif isinstance(item, str):
            if len(item) > MAX_STRING:
                _flag(problems, path, f"Longer than {MAX_STRING} characters.")
            elif _has_surrogate(item):
                _flag(problems, path, "Not valid Unicode.")
        elif isinstance(item, int) and not isinstance(item, bool) and not -INT64 <= item < INT64:
            _flag(problems, path, "Integer too large for a 64-bit number.")
    return problems


def _child_path(path: str, key: str) -> str:
    """The path of a key below `path`, cut to MAX_PATH characters (a hostile chain of keys is long)."""
    return cut(f"{path}.{cut(key, MAX_PATH)}" if path else cut(key, MAX_PATH), MAX_PATH)


def _flag(problems: dict[str, list[str]], path: str, reason: str) -> None:
    """Note one problem at a path (`_schema` for the whole record)."""
    problems.setdefault(path or "_schema", []).append(reason)


def _has_surrogate(text: str) -> bool:
    """Whether a string holds a lone UTF-16 surrogate (JSON allows "\\ud800"; UTF-8 does not)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class RecordSchema(Schema):
    """Base of the six record schemas: unknown columns kept, hostile keys refused."""

    class Meta:
        # The mirror follows Supabase schema changes: columns it does not know are stored.
        unknown = INCLUDE

    @pre_load
    def refuse_unstorable_values(self, data, **kwargs):
        """Reject hostile keys anywhere (`$...`, `a.b`, NUL), the mirror's own keys, and unstorable values."""
        if not isinstance(data, dict):
            return data
        errors = find_unstorable(data)
        for key in data:
            if len(errors) >= MAX_FIELD_ERRORS:
                errors[MORE] = more_message(None)
                break
            if key in RESERVED_KEYS:
                errors[key] = ["Key reserved by the mirror."]
            elif key not in self.fields and isinstance(key, str) and not COLUMN_NAME.match(key):
                errors.setdefault(cut(key, MAX_PATH), []).append(
                    "Not a column name: letters, digits and _, not starting with a digit, at most 63.")
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
