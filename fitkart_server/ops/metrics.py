"""Prometheus metrics at `/metrics`: requests, sync results, latencies, database up.

Under gunicorn every worker is a process of its own: with PROMETHEUS_MULTIPROC_DIR set
(gunicorn.conf.py sets it) each keeps its samples in files there and `/metrics` adds them up,
so one scrape sees all workers. Without it (`flask run`, tests) the process's own registry serves.

Every label value comes from a fixed set, whatever clients send: made-up methods count as `other`,
URLs no route matches as `<unmatched>`, and statuses are the server's own answers.
"""

import os
import threading
import time

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from pymongo import monitoring
from pymongo.errors import PyMongoError

from ..clock import as_utc, utc_now
from ..reconcile.follow import follow_state
from ..storage.store import DatabaseUnavailable, get_store
from ..web.writes import spool_state
from .operators import require_operator

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
UNMATCHED_ROUTE = "<unmatched>"

REQUESTS = Counter("fitkart_http_requests_total", "HTTP requests answered, by route and status.",
                   ["method", "route", "status"])
REQUEST_SECONDS = Histogram("fitkart_http_request_duration_seconds", "Time to answer an HTTP request.",
                            ["route"], buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
SYNC_RESULTS = Counter("fitkart_sync_results_total", "Records written or refused, by collection and result "
                       "(created, updated, unchanged, stale, deleted, rejected, forbidden).",
                       ["collection", "result"])
DATABASE_SECONDS = Histogram("fitkart_db_command_duration_seconds", "Database round trips, by command.",
                             ["command"], buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))
DATABASE_UP = Gauge("fitkart_db_up", "1 when the database answered the last check, else 0.",
                    multiprocess_mode="mostrecent")
# Read from the spool file at each scrape: every worker sees the same file.
SPOOL_ENTRIES = Gauge("fitkart_spool_entries", "Writes queued while the database is away.",
                      multiprocess_mode="mostrecent")
SPOOL_REPLAY_FAILING = Gauge("fitkart_spool_replay_failing",
                             "1 while this process's spool replayer keeps failing (it tries again; see /readyz).",
                             multiprocess_mode="max")
SPOOL_BYTES = Gauge("fitkart_spool_bytes", "Bytes the queued writes take.", multiprocess_mode="mostrecent")
SPOOL_OLDEST_SECONDS = Gauge("fitkart_spool_oldest_seconds", "Age of the oldest queued write.",
                             multiprocess_mode="mostrecent")

# Read from the mirror's `sync_follow` at each scrape: the follower is its own process.
FOLLOW_LAG_BYTES = Gauge("fitkart_follow_lag_bytes", "WAL written after the follower's confirmed position, by slot.",
                         ["slot"], multiprocess_mode="mostrecent")
FOLLOW_RETAINED_BYTES = Gauge("fitkart_follow_retained_bytes", "WAL PostgreSQL keeps for the follower's slot (from "
                              "its restart position), by slot.", ["slot"], multiprocess_mode="mostrecent")
FOLLOW_LAG_SECONDS = Gauge("fitkart_follow_lag_seconds", "Age of the last commit applied while behind, by slot.",
                           ["slot"], multiprocess_mode="mostrecent")

FOLLOW_MEASURED_AGE = Gauge("fitkart_follow_measured_age_seconds", "Seconds since the follower last measured its "
                            "lag, by slot: a stopped or killed follower's lag figures grow old here.", ["slot"],
                            multiprocess_mode="mostrecent")

bp = Blueprint("metrics", __name__)


def count_sync_result(collection: str, result: str, count: int = 1) -> None:
    """Count written or refused records (the sync engine's observer)."""
    SYNC_RESULTS.labels(collection, result).inc(count)


class DatabaseLatency(monitoring.CommandListener):
    """Times every command pymongo sends, from its own command monitoring events."""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        DATABASE_SECONDS.labels(event.command_name).observe(event.duration_micros / 1e6)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        DATABASE_SECONDS.labels(event.command_name).observe(event.duration_micros / 1e6)


_listening = threading.Lock()
_listener: DatabaseLatency | None = None


def _listen_to_database() -> None:
    """Register the command listener once per process (pymongo applies it to clients made later)."""
    global _listener
    with _listening:
        if _listener is None:
            _listener = DatabaseLatency()
            monitoring.register(_listener)


def method_label(method: str) -> str:
    """The method as a label: one of the standard ones, else `other`."""
    # Werkzeug passes any token as the method: each made-up one would be a new series forever.
    return method if method in KNOWN_METHODS else OTHER_METHOD


def route_label() -> str:
    """The matched route pattern (not the URL: ids would explode the labels), else `<unmatched>`."""
    return request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE


def _observed(response: Response) -> Response:
    """Count the request under its method and route labels, and time it."""
    route = route_label()
    if route != "/metrics":
        REQUESTS.labels(method_label(request.method), route, str(response.status_code)).inc()
        started = g.get("request_began")  # set by requestlog, whose hooks wrap these
        if started is not None:
            REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)
    return response


@bp.get("/metrics")
def metrics():
    """The Prometheus text format, of every worker when running under gunicorn."""
    require_operator()
    try:
        get_store().ping()
        DATABASE_UP.set(1)
        for follower in follow_state(get_store().database()):
            FOLLOW_LAG_BYTES.labels(follower["_id"]).set(follower.get("lag_bytes") or 0)
            FOLLOW_RETAINED_BYTES.labels(follower["_id"]).set(follower.get("retained_bytes") or 0)
            FOLLOW_LAG_SECONDS.labels(follower["_id"]).set(follower.get("lag_seconds") or 0)
            if follower.get("measured_at"):
                FOLLOW_MEASURED_AGE.labels(follower["_id"]).set(
                    (utc_now() - as_utc(follower["measured_at"])).total_seconds())
    except (DatabaseUnavailable, PyMongoError):
        DATABASE_UP.set(0)
    spool = spool_state()
    if spool["entries"] is not None:
        SPOOL_ENTRIES.set(spool["entries"])
        SPOOL_BYTES.set(spool["bytes"])
        SPOOL_OLDEST_SECONDS.set(spool["oldest_seconds"])
    SPOOL_REPLAY_FAILING.set(1 if spool["replay"] == "failing" else 0)
    registry = REGISTRY
    if os.environ.get(MULTIPROCESS_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    """Count every request and every sync result; serve `/metrics`."""
    _listen_to_database()
    app.extensions["fitkart_store"].observer = count_sync_result
    app.after_request(_observed)
    app.register_blueprint(bp)
