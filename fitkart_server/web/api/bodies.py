"""Request bodies and response envelopes shared by the sync routes."""

from flask import request
from marshmallow import Schema, fields, validate

from ...model.entities import Entity
from ...model.schemas import Uuid

CURSOR = validate.Regexp(r"^[0-9a-f|-]{1,200}$", error="Not a cursor this server returned.")


def json_body():
    """The request's JSON body: 415 when it is not JSON, 400 when it is malformed."""
    return request.get_json()


def has_body() -> bool:
    """Whether the request carries a body at all."""
    return bool(request.content_length) or request.headers.get("Transfer-Encoding") == "chunked"


def record_body_doc(schema: type[Schema] | Schema, description: str, example: dict) -> dict:
    """OpenAPI for a JSON request body; the engine, not webargs, validates it (and keeps rejects)."""
    return {"requestBody": {"required": True, "description": description,
                            "content": {"application/json": {"schema": schema, "example": example}}}}


class ListArgs(Schema):
    """Query string of a list request."""

    user_id = Uuid(metadata={"description": "Only this user's records."})
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))
    cursor = fields.String(validate=CURSOR, metadata={"description": "`next_cursor` of the previous page."})


class ClearArgs(Schema):
    """Query string of a collection delete."""

    user_id = Uuid(metadata={"description": "Delete every record of this user (cart, wishlist)."})


class DeleteResult(Schema):
    """How many records a delete removed (0 when there was nothing to delete)."""

    deleted = fields.Integer(required=True)


def upsert_result_schema(entity: Entity) -> type[Schema]:
    """The envelope of an upsert response for one entity."""
    return Schema.from_dict({
        "result": fields.String(required=True, validate=validate.OneOf(
            ["created", "updated", "unchanged", "stale"])),
        "record": fields.Nested(entity.schema_class, allow_none=True),
    }, name=f"{entity.name}UpsertResult")


def page_schema(entity: Entity) -> type[Schema]:
    """The envelope of a list response for one entity."""
    return Schema.from_dict({
        "items": fields.List(fields.Nested(entity.schema_class)),
        "next_cursor": fields.String(allow_none=True),
    }, name=f"{entity.name}Page")
