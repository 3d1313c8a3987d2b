"""gunicorn settings for deployment: `gunicorn -c gunicorn.conf.py wsgi:app`."""

import json
import multiprocessing
import os
import tempfile
from pathlib import Path

import gunicorn.util

# Loopback by default; set FITKART_BIND (with authentication configured, see docs/security.md) to serve others.
bind = os.environ.get("FITKART_BIND", "127.0.0.1:5000")
workers = int(os.environ.get("WEB_CONCURRENCY", min(2 * multiprocessing.cpu_count(), 8)))
# Threads overlap the database round trips of one worker.
worker_class = "gthread"
threads = int(os.environ.get("FITKART_THREADS", 4))
timeout = 30
graceful_timeout = 20
keepalive = 5
# The app logs one line per request itself (route, status, duration, request id; text or JSON).
accesslog = None
errorlog = "-"
# FITKART_LOG_FORMAT=json: gunicorn's own lines (start, workers, errors) as JSON lines too.
if os.environ.get("FITKART_LOG_FORMAT", "text").strip().lower() == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "fitkart_server.ops.requestlog.JsonLines"}},
        "handlers": {"error_console": {"class": "logging.StreamHandler", "formatter": "json",
                                       "stream": "ext://sys.stderr"}},
        # gunicorn merges this over its defaults key by key: every handler named here must exist.
        "root": {"level": "INFO", "handlers": ["error_console"]},
        "loggers": {"gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
                    # The app's own request line replaces gunicorn's access line.
                    "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False}},
    }


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's own refusals (400, 414, 431: before the app sees the request) in the API's JSON error shape, not
    its HTML page; the connection is closed after it, as gunicorn does. (Not imported from the app: the master must
    not load it before PROMETHEUS_MULTIPROC_DIR is set.)"""
    body = json.dumps({"code": status_int, "status": reason, "message": mesg or reason}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    gunicorn.util.write_nonblock(sock, head + body)


# Workers are forked from the master: each answers with it.
gunicorn.util.write_error = write_json_error
# No preload: each worker builds the app, and so its own MongoDB client, after the fork.
preload_app = False
# No control socket (gunicorn 25+): its default path ($HOME/.gunicorn/gunicorn.ctl) is one for every instance on
# the host, so a second FitKart Sync (or a test server) takes it over, and it runs a thread in the master that
# must be stopped around every fork. Nothing here uses gunicornc; signals (HUP, TERM, TTIN/TTOU) still work.
control_socket_disable = True

# Metrics of all workers in one scrape: each worker writes its samples to files in this
# directory (prometheus-client's multiprocess mode); set before any worker imports the app.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="fitkart-metrics-")


def on_starting(server) -> None:
    """Start from empty metric files: counters begin at zero with each master."""
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):  # only the metric files, whatever else lives there
        stale.unlink()


def child_exit(server, worker) -> None:
    """A worker that is gone no longer counts in live gauges."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
