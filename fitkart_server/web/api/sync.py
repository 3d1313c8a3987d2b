"""One blueprint per mirrored table, each made from the table's declaration."""

from flask import jsonify, request
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from flask_smorest.error_handler import ErrorSchema

from ...model.entities import ENTITIES, Entity
from ...storage.store import get_engine
from .. import writes
from ..auth import current_caller
from . import examples
from .bodies import (
    ClearArgs,
    DeleteResult,
    ListArgs,
    has_body,
    json_body,
    page_schema,
    record_body_doc,
    upsert_result_schema,
)

PREFIX = "/api/sync"


def entity_blueprint(entity: Entity) -> Blueprint:
    """The routes of one table: list, upsert, delete, and one record by its ref."""
    blp = Blueprint(entity.collection, __name__, url_prefix=PREFIX,
                    description=f"The mirror of Supabase table `{entity.collection}`, keyed by "
                                f"{' + '.join(entity.key)}.")

    class Records(MethodView):
        """The table as a whole."""

        @blp.arguments(ListArgs, location="query", as_kwargs=True)
        @blp.response(200, page_schema(entity))
        def get(self, user_id=None, limit=100, cursor=None):
            """List records in key order, a page at a time."""
            if user_id is not None and "user_id" not in entity.schema.fields:
                abort(422, message=f"{entity.collection} has no user_id.",
                      errors={"query": {"user_id": ["Unknown field."]}})
            items, next_cursor = get_engine().list_records(
                entity, caller=current_caller(), user_id=user_id, limit=limit, cursor=cursor)
            return jsonify(items=items, next_cursor=next_cursor)

        @blp.doc(**record_body_doc(entity.schema_class, "One record; absent fields keep their "
                                   "stored values, a new record needs every required field.",
                                   examples.RECORDS[entity.collection]))
        @blp.response(200, upsert_result_schema(entity))
        @blp.alt_response(422, schema=ErrorSchema, description="Invalid record (kept in sync_rejects).")
        def post(self):
            """Create or update one record by its key (202 `queued` while the database is away)."""
            answer, status = writes.write("upsert", entity, json_body(), route=request.path)
            return jsonify(answer), status

        @blp.arguments(ClearArgs, location="query", as_kwargs=True)
        @blp.response(200, DeleteResult)
        @blp.alt_response(422, schema=ErrorSchema, description="The request names no record.")
        def delete(self, user_id=None):
            """Delete the record named by a JSON body of its key fields, or all of `?user_id=`."""
            selector = json_body() if has_body() else {}
            if user_id is not None and not selector:
                if entity.clear_by is None:
                    abort(422, message=f"{entity.collection} cannot be cleared by user_id.",
                          errors={"query": {"user_id": ["Unknown field."]}})
                selector = {entity.clear_by: user_id}
            answer, status = writes.write("delete", entity, selector, route=request.path)
            return jsonify(answer), status

    class Record(MethodView):
        """One record, named by its ref (its key, or its Supabase id for compound keys)."""

        @blp.response(200, entity.schema_class)
        @blp.alt_response(404, schema=ErrorSchema, description="No such record.")
        def get(self, ref: str):
            """Read one record."""
            record = get_engine().find_record(entity, ref, caller=current_caller())
            if record is None:
                abort(404, message=f"No {entity.collection} record with {entity.ref_field} {ref}.")
            return jsonify(record)

        @blp.response(200, DeleteResult)
        def delete(self, ref: str):
            """Delete one record; deleting what is not there is `{"deleted": 0}`."""
            answer, status = writes.write("delete", entity, {entity.ref_field: ref}, route=request.path)
            return jsonify(answer), status

    names = [entity.collection] + ([entity.legacy_route] if entity.legacy_route else [])
    for name in names:  # the legacy client's routes are aliases of the canonical ones
        blp.add_url_rule(f"/{name}", view_func=Records)
        blp.add_url_rule(f"/{name}/<ref>", view_func=Record,
                         parameters=[{"in": "path", "name": "ref", "schema": {"type": "string"},
                                      "description": f"The record's {entity.ref_field}."}])
    return blp


def entity_blueprints() -> list[Blueprint]:
    """A blueprint for each mirrored table."""
    return [entity_blueprint(entity) for entity in ENTITIES]
