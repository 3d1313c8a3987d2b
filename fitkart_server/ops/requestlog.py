"""One log line per request, with a request id; text or JSON lines (FITKART_LOG_FORMAT).

The id is the caller's `X-Request-ID` when it is a sane one (so a proxy's id follows the
request through), else a new one; either way it is returned in `X-Request-ID`. Lines pass
through hardening's redaction like every other record: tokens and secrets never appear.
"""

import json
import logging
import re
import time
import uuid

from flask import Flask, Response, g, request

from ..bounds import cut_bytes
from ..web.hardening import redact

LOG_FORMATS = ("text", "json")
MAX_LINE = 16 * 1024  # characters of one JSON log line
REQUEST_ID_HEADER = "X-Request-ID"
# Letters, digits and a few separators, not too long: anything else could forge log lines.
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

log = logging.getLogger("fitkart_server.requests")


class JsonLines(logging.Formatter):
    """Each record as one JSON object: time, level, logger, message and the request's fields."""

    FIELDS = ("request_id", "method", "route", "path", "status", "duration_ms", "remote_addr")

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
                "level": record.levelname, "logger": record.name, "pid": record.process,  # which worker
                "message": record.getMessage()}
        # Messages are redacted when records are made; these fields are redacted here.
        line.update({name: redact(value) if isinstance(value := getattr(record, name), str) else value
                     for name in self.FIELDS if hasattr(record, name)})
        if record.exc_info:  # the bounded, redacted text hardening made when the record was created
            line["exception"] = record.exc_text or self.formatException(record.exc_info)
        text = json.dumps(line, default=str)
        if len(text) > MAX_LINE:  # JSON escapes can grow a bounded message sixfold: cut further
            for name in ("message", "exception"):
                if name in line:
                    line[name] = cut_bytes(line[name], MAX_LINE // 16)
            text = json.dumps(line, default=str)
        return text


JsonLines.converter = time.gmtime


def configure_logging(log_format: str) -> None:
    """Root logging for a served app: INFO, as text or JSON lines on standard error."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"FITKART_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def request_id() -> str:
    """The current request's id."""
    return g.request_id


def _begin() -> None:
    offered = request.headers.get(REQUEST_ID_HEADER, "")
    # A token offered as an id (it would pass the pattern) is not one: never echo or log it.
    sane = SANE_REQUEST_ID.match(offered) and redact(offered) == offered
    g.request_id = offered if sane else uuid.uuid4().hex
    g.request_began = time.perf_counter()


def _end(response: Response) -> Response:
    """Return the id and log the request's line."""
    began = g.pop("request_began", None)
    if began is None:  # failed before _begin ran
        return response
    response.headers[REQUEST_ID_HEADER] = g.request_id
    route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
    duration_ms = round((time.perf_counter() - began) * 1000, 1)
    fields = {"request_id": g.request_id, "method": request.method, "route": route, "path": request.path,
              "status": response.status_code, "duration_ms": duration_ms, "remote_addr": request.remote_addr}
    log.info("%s %s %s %.1fms id=%s", request.method, route, response.status_code, duration_ms, g.request_id,
             extra=fields)
    return response


class WithoutServerAccessLines(logging.Filter):
    """Drops the development server's access line (`flask run`): the app's own line already says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        # werkzeug's WSGIRequestHandler.log_request logs '<address> - - [<time>] "%s" %s %s' at INFO
        # (its trailing newline stripped).
        return not (record.levelno == logging.INFO and isinstance(record.msg, str)
                    and record.msg.endswith('"%s" %s %s'))


def init_app(app: Flask) -> None:
    """Give every request an id and one log line (registered first, so it also times the other hooks)."""
    app.before_request(_begin)
    app.after_request(_end)
    server_log = logging.getLogger("werkzeug")
    if not any(isinstance(kept, WithoutServerAccessLines) for kept in server_log.filters):
        server_log.addFilter(WithoutServerAccessLines())
