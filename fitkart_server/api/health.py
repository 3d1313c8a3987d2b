"""`/healthz` (the process is up) and `/readyz` (the database answers)."""

from flask import Blueprint, jsonify

from .. import __version__
from ..db import DatabaseUnavailable, get_store

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """Answer while the process runs, whatever the database does."""
    return jsonify(status="ok", version=__version__)


@bp.get("/readyz")
def readyz():
    """200 when the database answers, 503 with the reason when it does not."""
    store = get_store()
    body = {"database": store.description, "mode": "embedded" if store.embedded else "server",
            "version": __version__}
    if store.embedded:
        body["warning"] = "Embedded mode: data lives in this process only and is lost when it stops."
    try:
        store.ping()
    except DatabaseUnavailable as error:
        return jsonify(status="unavailable", reason=str(error), **body), 503, {"Retry-After": "2"}
    return jsonify(status="ready", **body)
