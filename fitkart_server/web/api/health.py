"""`/healthz` (the process is up) and `/readyz` (the database answers)."""

from flask import Blueprint, jsonify

from ...storage.store import DatabaseUnavailable, Store, get_store
from ...version import __version__
from .. import writes

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """Answer while the process runs, whatever the database does."""
    return jsonify(status="ok", version=__version__)


@bp.get("/readyz")
def readyz():
    """200 when the database answers, 503 with the reason when it does not or cannot store money as set."""
    store = get_store()
    body = {"database": store.description, "mode": "embedded" if store.embedded else "server",
            "version": __version__}
    if store.embedded:
        body["warning"] = "Embedded mode: data lives in this process only and is lost when it stops."
    body["spool"] = writes.spool_state()
    try:
        store.ping()
    except DatabaseUnavailable as error:
        return jsonify(status="unavailable", reason=str(error), **body, **money(store)), 503, {"Retry-After": "2"}
    if store.money_problem:
        # Set up wrongly: writes without money are served, but whoever watches readiness must hear of it.
        return jsonify(status="unavailable", reason=store.money_problem, **body, **money(store)), 503
    return jsonify(status="ready", **body, **money(store))


def money(store: Store) -> dict:
    """How money is stored and which write plan writes use (each `auto` until the database was first used), and why."""
    return {"decimal_mode": store.chosen_decimal_mode, "decimal_mode_reason": store.decimal_mode_reason,
            "write_plan": store.chosen_write_plan, "write_plan_reason": store.write_plan_reason}
