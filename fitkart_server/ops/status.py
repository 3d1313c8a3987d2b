"""The status page at `/`: is the mirror alive and in sync, without opening mongosh.

Server-rendered (Jinja), no scripts: a meta refresh reloads it every few seconds, and a
database that does not answer gives a page with a banner, not an error page.
"""

import json
from datetime import datetime

from bson import ObjectId
from bson.errors import InvalidId
from flask import Blueprint, Flask, Response, current_app, make_response, redirect, render_template, request, url_for
from flask_smorest import abort
from pymongo.errors import PyMongoError

from ..clock import utc_now
from ..model.documents import REJECTS
from ..reconcile.follow import follow_state
from ..reconcile.slotwatch import SlotWatch, follower_warnings
from ..storage.store import DatabaseUnavailable, get_store
from ..version import __version__
from ..web.auth import request_is_https
from ..web.writes import spool_state
from .operators import COOKIE, SESSION_SECONDS, is_operator, operator_credential, session_cookie
from .stats import collection_stats, latest_rejects, latest_run

REFRESH_SECONDS = 5
SPARK_WIDTH, SPARK_HEIGHT = 120, 24
# Scripts are not needed at all; styles and the icon come from this server only.
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                           "base-uri 'none'; frame-ancestors 'none'")

bp = Blueprint("status", __name__)


def sparkline(counts: list[int]) -> str:
    """SVG polyline points for per-minute counts, scaled to the busiest minute."""
    peak = max(counts, default=0) or 1
    step = SPARK_WIDTH / max(len(counts) - 1, 1)
    return " ".join(f"{index * step:.1f},{SPARK_HEIGHT - 1 - count / peak * (SPARK_HEIGHT - 2):.1f}"
                    for index, count in enumerate(counts))


def uptime(started: datetime, now: datetime) -> str:
    """How long the server has run, as `3d 4h 5m` / `4h 5m` / `5m 6s`."""
    seconds = int((now - started).total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    return f"{hours}h {minutes}m" if hours else f"{minutes}m {seconds}s"


def _page(template: str, status: int = 200, **context) -> Response:
    """A rendered page with this page's security headers."""
    response = make_response(render_template(template, **context), status)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Cache-Control"] = "no-store"  # it shows personal data and live figures
    return response


def _sign_in_page(message: str | None = None) -> Response:
    """The token form shown to a caller who is not (yet) an operator."""
    return _page("status/sign_in.html", 401, message=message)


@bp.get("/")
def status_page():
    """Database state, per-collection activity, the latest rejects and verify run."""
    if not is_operator():
        return _sign_in_page()
    store = get_store()
    now = utc_now()
    context = {"version": __version__, "now": now, "refresh": REFRESH_SECONDS,
               "uptime": uptime(current_app.extensions["fitkart_started"], now),
               "database": store.description, "mode": "embedded" if store.embedded else "server",
               "sparkline": sparkline, "spark": (SPARK_WIDTH, SPARK_HEIGHT)}
    try:
        store.ping()
        database = store.database()
        context.update(up=True, database_version=database.client.server_info().get("version"),
                       collections=collection_stats(database, now), rejects=latest_rejects(database),
                       verify=latest_run(database, "verify"), followers=follow_state(database))
        context.update(_slots_now(context["followers"]))
    except (DatabaseUnavailable, PyMongoError) as error:
        context.update(up=False, reason=str(error))
    # After the database was used: that is when FITKART_DECIMAL_MODE and FITKART_WRITE_PLAN=auto are resolved.
    context.update(decimal_mode=store.chosen_decimal_mode, decimal_mode_reason=store.decimal_mode_reason,
                   money_problem=store.money_problem, spool=spool_state(),
                   write_plan=store.chosen_write_plan, write_plan_reason=store.write_plan_reason)
    return _page("status/index.html", **context)


def _slots_now(followers: list[dict]) -> dict:
    """Each follower's slot as PostgreSQL sees it (when SUPABASE_DB_URL is set), and what is past the thresholds."""
    url = current_app.config.get("SUPABASE_DB_URL")
    if url and "fitkart_slot_watch" not in current_app.extensions:  # one per process: it keeps its readings
        current_app.extensions["fitkart_slot_watch"] = SlotWatch(url)
    watch = current_app.extensions["fitkart_slot_watch"] if url else None
    slots = watch.readings([follower["_id"] for follower in followers]) if watch else {}
    warnings = [warning for follower in followers
                for warning in follower_warnings(follower, slots.get(follower["_id"]), current_app.config)]
    return {"slots": slots, "slot_warnings": warnings, "slots_read": watch is not None}


@bp.get("/status/rejects/<reject_id>")
def reject_page(reject_id: str):
    """One refused write with its reason, errors and payload."""
    if not is_operator():
        return _sign_in_page()
    try:
        found = get_store().database()[REJECTS].find_one({"_id": ObjectId(reject_id)})
    except InvalidId:
        found = None
    if found is None:
        abort(404, message=f"No reject {reject_id}.")
    return _page("status/reject.html", reject=found, errors=_pretty(found.get("errors")),
                 payload=_pretty(found.get("payload")), now=utc_now(), version=__version__)


@bp.post("/status/sign-in")
def sign_in():
    """Check an operator token; an HttpOnly cookie for this site then holds a signed session, never the token."""
    token = (request.form.get("token") or "").strip()
    credential = operator_credential(token) if token else None
    if credential is None:
        return _sign_in_page("That token is not FITKART_ADMIN_TOKEN or a service-role token.")
    response = redirect(url_for("status.status_page"), 303)
    # Secure whenever the browser used HTTPS, also when a trusted proxy ended it.
    response.set_cookie(COOKIE, session_cookie(credential), httponly=True, samesite="Strict",
                        secure=request_is_https(), max_age=SESSION_SECONDS)
    return response


def _pretty(text: str | None) -> str:
    """Stored JSON text, indented when it parses (a truncated payload does not)."""
    if not text:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def init_app(app: Flask) -> None:
    """Serve the status page and remember when this server started."""
    app.extensions["fitkart_started"] = utc_now()
    app.register_blueprint(bp)
