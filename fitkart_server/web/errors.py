"""One JSON error shape for the whole API: flask-smorest's `{code, status, message, errors}`."""

from flask import Flask, Response, current_app
from flask_smorest import Api
from pymongo.errors import ConnectionFailure, OperationFailure
from werkzeug.exceptions import Forbidden as ForbiddenError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge, ServiceUnavailable, UnprocessableEntity

from ..model.policy import Forbidden
from ..storage.spool import SpoolFull
from ..storage.store import DatabaseUnavailable, is_refused_login, unavailable
from ..sync.write import RecordRejected
from ..version import __version__
from .ratelimit import past_limit
from .tokens import KeysUnavailable

RETRY_AFTER_SECONDS = 2
# On every answer of this server: a client tells its own refusals (the data's fault) from a gateway's, which
# cannot carry it by accident. Exposed to browsers with Retry-After (see create_app's CORS).
SERVER_HEADER = "FitKart-Sync"


def as_http_error(error: Exception) -> HTTPException:
    """The HTTP error an engine or database failure stands for, with its details attached."""
    if isinstance(error, HTTPException):  # refused before the engine, e.g. a batch record nested too deep
        return error
    if isinstance(error, RecordRejected):
        http_error = UnprocessableEntity()
        http_error.data = {"message": error.message, "errors": {"json": error.errors}}
    elif isinstance(error, Forbidden):
        http_error = ForbiddenError()
        http_error.data = {"message": error.message}
    else:
        http_error = ServiceUnavailable()
        if isinstance(error, DatabaseUnavailable):
            message = str(error)
        elif isinstance(error, SpoolFull):
            message = f"database unreachable, and the spool of writes waiting for it {error.why}: nothing was kept"
        elif isinstance(error, KeysUnavailable):
            message = "Supabase signing keys (JWKS) unreachable"
        else:
            message = "database unreachable"
        http_error.data = {"message": message, "headers": {"Retry-After": str(RETRY_AFTER_SECONDS)}}
    return http_error


def error_body(error: Exception) -> dict:
    """The JSON body of an error, for places that report errors inside a 200 (batches)."""
    http_error = as_http_error(error)
    data = getattr(http_error, "data", None) or {"message": http_error.description}
    details = {key: data[key] for key in ("message", "errors") if key in data}
    return {"code": http_error.code, "status": http_error.name, **details}


def init_app(app: Flask, api: Api) -> None:
    """Send engine and driver errors through the API's JSON error handler.

    Uncaught exceptions become flask-smorest's JSON 500 (Flask logs the trace; the
    client never sees it); HTTP errors such as 404, 405, 413 and 415 get the same shape.
    """
    def handle(error: Exception):
        if isinstance(error, (RecordRejected, Forbidden)) and (cut := past_limit()) is not None:
            return api.handle_http_exception(cut)  # refused, and past the caller's limit: not stored
        return api.handle_http_exception(as_http_error(error))

    def handle_http(error: HTTPException):
        data = getattr(error, "data", None) or {}
        if "message" not in data:  # say why, e.g. which JSON was malformed, or that the query string is invalid
            places = {"query": "query string", "json": "body"}
            invalid = [name for place, name in places.items() if place in data.get("messages", {})]
            message = f"Invalid {' and '.join(invalid)}." if invalid else error.description
            error.data = {**data, "message": message}
        if isinstance(error, RequestEntityTooLarge) and "errors" not in error.data:
            # The limit it passed: a client sets a change aside for its size only when it is larger than this.
            error.data = {**error.data, "errors": {"max_bytes": current_app.config["MAX_CONTENT_LENGTH"]}}
        return api.handle_http_exception(error)

    @app.after_request
    def mark(response: Response) -> Response:
        response.headers[SERVER_HEADER] = __version__
        return response

    def handle_refused_login(error: OperationFailure):
        if not is_refused_login(error):
            raise error  # any other refusal is a fault of ours: a 500, logged with its trace
        return handle(unavailable(error))

    for error_class in (DatabaseUnavailable, ConnectionFailure, KeysUnavailable, RecordRejected, Forbidden, SpoolFull):
        app.register_error_handler(error_class, handle)
    # Credentials revoked while running: 503 like an outage, until the database accepts us again.
    app.register_error_handler(OperationFailure, handle_refused_login)
    app.register_error_handler(HTTPException, handle_http)
