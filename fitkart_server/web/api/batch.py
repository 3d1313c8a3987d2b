"""`POST /api/sync/batch`: many upserts and deletes in one request, each on its own."""

import json

from flask import current_app, jsonify, request
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from flask_smorest.error_handler import ErrorSchema
from marshmallow import Schema, fields

from ...bounds import MAX_ECHO_BYTES
from ...sync.batch import OperationSchema
from .. import writes
from ..auth import current_caller
from ..errors import error_body
from . import examples
from .bodies import json_body, record_body_doc

blp = Blueprint("batch", __name__, url_prefix="/api/sync",
                description="Many operations in one request, applied in order.")


class BatchSchema(Schema):
    """A batch request."""

    operations = fields.List(fields.Nested(OperationSchema), required=True)


class BatchResultSchema(Schema):
    """One result per operation, in input order."""

    results = fields.List(fields.Dict(), required=True, metadata={"description": (
        '`{"result": R, "record": {...}}` for an upsert, `{"deleted": n}` for a delete, '
        '`{"error": {code, status, message, errors}}` for an operation that was refused. Records are '
        'echoed while they add up to 1 MiB; later upsert results leave `record` out.')})


@blp.route("/batch")
class Batch(MethodView):
    """The batch endpoint."""

    @blp.doc(**record_body_doc(BatchSchema, "At most FITKART_MAX_BATCH operations.", examples.BATCH))
    @blp.response(200, BatchResultSchema)
    @blp.alt_response(413, schema=ErrorSchema, description="More operations than FITKART_MAX_BATCH.")
    @blp.alt_response(422, schema=ErrorSchema, description="The body is not `{\"operations\": [...]}`.")
    def post(self):
        """Apply operations in order; each succeeds or fails on its own."""
        body = json_body()
        operations = body.get("operations") if isinstance(body, dict) else None
        limit = current_app.config["FITKART_MAX_BATCH"]
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
        answers = writes.write_batch(operations, route=request.path)
        return jsonify(results=within_echo_budget(
            [{"error": error_body(answer)} if isinstance(answer, Exception) else answer for answer in answers]))


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
