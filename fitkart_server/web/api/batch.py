"""`POST /api/sync/batch`: many upserts and deletes in one request, each on its own."""

import json

from flask import current_app, jsonify, request
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from flask_smorest.error_handler import ErrorSchema
from marshmallow import Schema, fields
from werkzeug.exceptions import BadRequest

from ...bounds import MAX_ECHO_BYTES
from ...model.entities import BY_COLLECTION
from ...sync.batch import OperationSchema, ref_of
from ...sync.write import OPERATIONS
from .. import writes
from ..auth import current_caller
from ..errors import error_body
from ..hardening import BATCH_JSON_DEPTH_ALLOWANCE, MAX_JSON_DEPTH, json_depth
from ..inflight import InFlight
from ..ratelimit import caller_key
from . import examples
from .bodies import json_body, record_body_doc

# The callers whose batch this worker is applying (see web/inflight.py).
BATCHES = InFlight()

blp = Blueprint("batch", __name__, url_prefix="/api/sync",
                description="Many operations in one request, applied in order.")


class BatchSchema(Schema):
    """A batch request."""

    operations = fields.List(fields.Nested(OperationSchema), required=True)


class BatchResultSchema(Schema):
    """One result per operation, in input order."""

    results = fields.List(fields.Dict(), required=True, metadata={"description": (
        'Each with the operation\'s `ref` when it sent one. '
        '`{"result": R, "record": {...}}` for an upsert, `{"deleted": n}` for a delete, '
        '`{"error": {code, status, message, errors}}` for an operation that was refused (400 for a record nested '
        f'deeper than {MAX_JSON_DEPTH} levels, 422 for an invalid one, 403 for another user\'s). Records are '
        'echoed while they add up to 1 MiB; later upsert results leave `record` out.')})


@blp.route("/batch")
class Batch(MethodView):
    """The batch endpoint."""

    # Its body may nest deeper than a record sent alone: the envelope's levels, and room to read a record too
    # deep and refuse it in its own result. Each record is held to MAX_JSON_DEPTH in `post`.
    json_depth_allowance = BATCH_JSON_DEPTH_ALLOWANCE

    @blp.doc(**record_body_doc(BatchSchema, "At most FITKART_MAX_BATCH operations.", examples.BATCH))
    @blp.response(200, BatchResultSchema)
    @blp.alt_response(413, schema=ErrorSchema, description="More operations than FITKART_MAX_BATCH.")
    @blp.alt_response(422, schema=ErrorSchema, description="The body is not `{\"operations\": [...]}`.")
    @blp.alt_response(429, schema=ErrorSchema,
                      description="This caller's batches being applied already hold FITKART_MAX_BATCH operations.")
    def post(self):
        """Apply operations in order; each succeeds or fails on its own."""
        body = json_body()
        operations = body.get("operations") if isinstance(body, dict) else None
        limit = current_app.config["FITKART_MAX_BATCH"]
        weight = len(operations) if isinstance(operations, list) else 0
        with BATCHES.slot(caller_key(), weight, limit) as admitted:
            if not admitted:
                abort(429, message="This caller's batches being applied here already hold FITKART_MAX_BATCH "
                                   "operations; send this one once they are answered (Retry-After).",
                      headers={"Retry-After": "1"})
            return self._apply(body, operations, limit)

    def _apply(self, body, operations, limit: int):
        """The batch's results, its operations applied in order."""
        if not isinstance(operations, list):
            problem = {"operations": ["Must be a list of operations."]}
            writes.record_reject(reason="Invalid batch.", errors=problem, payload=body, route=request.path,
                                 collection=None, operation="batch", caller=current_caller())
            abort(422, message="Invalid batch.", errors={"json": problem})
        if len(operations) > limit:
            writes.record_reject(reason=f"More than {limit} operations.", errors={}, payload=body, status=413,
                                 route=request.path, collection=None, operation="batch", caller=current_caller())
            abort(413, message=f"At most {limit} operations per batch (FITKART_MAX_BATCH); "
                               "split it and send the parts in order.")
        # Authorized and validated one by one; a refusal takes its operation's place. While the
        # database is away, operations are queued (`{"result": "queued"}`) and applied later.
        # Each record is held to the depth limit of a record sent alone: one deeper is refused in its own result,
        # the rest are applied as ever, in order (leaving it out moves no other operation's result).
        too_deep = {index: refusal for index, operation in enumerate(operations)
                    if (refusal := depth_refusal(operation)) is not None}
        applied = iter(writes.write_batch([operation for index, operation in enumerate(operations)
                                           if index not in too_deep], route=request.path))
        answers = [too_deep[index] if index in too_deep else next(applied) for index in range(len(operations))]
        results = [{"error": error_body(answer)} if isinstance(answer, Exception) else dict(answer)
                   for answer in answers]
        for operation, result in zip(operations, results, strict=True):
            if (ref := ref_of(operation)) is not None:
                result["ref"] = ref  # refused or not: the caller matches each result to its operation by it
        return jsonify(results=within_echo_budget(results))


def depth_refusal(operation) -> BadRequest | None:
    """The 400 of an operation whose record nests deeper than MAX_JSON_DEPTH (kept in sync_rejects), else None."""
    record = operation.get("record") if isinstance(operation, dict) else None
    if json_depth(record) <= MAX_JSON_DEPTH:
        return None
    refusal = BadRequest(f"Record nested deeper than {MAX_JSON_DEPTH} levels, the limit of a record sent alone.")
    # Kept as the engine keeps a refused operation: the record as its payload, its table and kind when valid.
    writes.record_reject(reason=refusal.description, errors={}, payload=record, status=400, route=request.path,
                         collection=_named(operation.get("collection"), list(BY_COLLECTION)),
                         operation=_named(operation.get("op"), OPERATIONS), caller=current_caller())
    return refusal


def _named(value, choices: list[str] | tuple[str, ...]) -> str | None:
    """`value` when it is one of `choices` (what a reject may name), else None."""
    return value if isinstance(value, str) and value in choices else None


def within_echo_budget(results: list[dict]) -> list[dict]:
    """The results, echoing stored records while they add up to MAX_ECHO_BYTES (the first always)."""
    echoed = 0
    for result in results:
        record = result.get("record")
        if record is None:
            continue
        size = len(json.dumps(record, default=str))
        if echoed and echoed + size > MAX_ECHO_BYTES:
            del result["record"]  # the result stands; the record can be read with GET
        else:
            echoed += size
    return results
