"""`POST /api/webhooks/supabase`: Supabase Database Webhooks, applied through the sync engine.

Webhooks come unordered and may repeat; the engine's rules (staleness by updated_at,
tombstones, idempotent writes) make that safe. Authenticated by a shared secret in a
header, compared in constant time.
"""

import hmac
from datetime import datetime

from flask import current_app, jsonify, request
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from flask_smorest.error_handler import ErrorSchema
from marshmallow import Schema, ValidationError, fields, validate

from ...bounds import ErrorBudget
from ...clock import as_utc, to_millisecond
from ...model.entities import BY_COLLECTION, Entity
from .. import writes
from . import examples
from .bodies import json_body, record_body_doc

blp = Blueprint("webhooks", __name__, url_prefix="/api/webhooks",
                description="Row changes pushed by Supabase Database Webhooks.")
EVENTS = ("INSERT", "UPDATE", "DELETE")


class WebhookSchema(Schema):
    """The payload Supabase Database Webhooks send."""

    type = fields.String(required=True, validate=validate.OneOf(EVENTS))
    # A PostgreSQL name is at most 63 bytes: a longer one is no table's (and is never echoed back).
    table = fields.String(required=True, validate=validate.Length(max=63))
    schema = fields.String(load_default="public", validate=validate.Length(max=63))
    record = fields.Dict(allow_none=True)
    old_record = fields.Dict(allow_none=True)


def check_secret() -> None:
    """403 while no secret is configured; 401 unless the configured header carries it."""
    secret = current_app.config["FITKART_WEBHOOK_SECRET"]
    if not secret:
        abort(403, message="Webhooks are off: set FITKART_WEBHOOK_SECRET.")
    sent = request.headers.get(current_app.config["FITKART_WEBHOOK_HEADER"], "")
    if not hmac.compare_digest(sent.encode(), secret.encode()):
        abort(401, message="Invalid webhook secret.")


@blp.route("/supabase")
class SupabaseWebhook(MethodView):
    """The receiver."""

    @blp.doc(**record_body_doc(WebhookSchema, "`{type, table, schema, record, old_record}` as Supabase sends it.",
                               examples.WEBHOOK))
    @blp.response(200, description="Applied: the upsert result or the delete count.")
    @blp.alt_response(202, description="Not a mirrored table: ignored.")
    @blp.alt_response(401, schema=ErrorSchema, description="Missing or wrong secret.")
    @blp.alt_response(403, schema=ErrorSchema, description="Webhooks are off (no FITKART_WEBHOOK_SECRET).")
    @blp.alt_response(422, schema=ErrorSchema, description="Not a webhook payload, or an invalid record.")
    def post(self):
        """Apply one row change from Supabase."""
        check_secret()
        body = json_body()
        errors = WebhookSchema().validate(body) if isinstance(body, dict) else {"_schema": ["Not an object."]}
        if errors:
            errors = ErrorBudget().take(errors)  # 60,000 unknown keys are one short answer
            writes.record_reject(reason="Invalid webhook payload.", errors=errors, payload=body,
                                 route=request.path, collection=None, operation="webhook", source="webhook")
            abort(422, message="Invalid webhook payload.", errors={"json": errors})
        entity = BY_COLLECTION.get(body["table"])
        if entity is None or body.get("schema", "public") != "public":
            return jsonify(ignored=True, table=body["table"]), 202
        # Supabase does not retry a webhook: while the database is away it is queued (202), not lost.
        if body["type"] == "DELETE":
            answer, status = writes.write("delete", entity, body.get("old_record") or {}, route=request.path,
                                          source="webhook")
        else:
            answer, status = writes.write("upsert", entity, body.get("record") or {}, route=request.path,
                                          source="webhook", changed_at=change_time(entity, body))
        return jsonify(answer), status


def change_time(entity: Entity, body: dict) -> datetime | None:
    """When a webhook's row change was made, as far as the row says: its `updated_at`, or for an INSERT into a
    table without one its `created_at`; None (its arrival) otherwise. A webhook carries no commit time, and it
    may arrive long after its change: judged by its arrival, it would hide a client's later change."""
    record = body.get("record")
    if not isinstance(record, dict) or (entity.timestamp_field != "updated_at" and body["type"] != "INSERT"):
        return None
    try:
        stamp = entity.schema.fields[entity.timestamp_field].deserialize(record.get(entity.timestamp_field))
    except (ValidationError, TypeError, ValueError):
        return None  # the engine says what is wrong with the record
    return to_millisecond(as_utc(stamp)) if isinstance(stamp, datetime) else None
