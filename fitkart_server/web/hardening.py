"""Defences for every request: strict JSON, security headers, secrets kept out of logs."""

import json
import logging
import re
from typing import Any

from flask import Flask, Request, Response, current_app, has_request_context, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest

from ..bounds import MAX_MESSAGE, cut, cut_bytes

# How deeply a request body's arrays and objects may nest (400 past it), and so a record sent alone.
MAX_JSON_DEPTH = 32
# The levels a batch wraps each record in: the body object, its `operations` list, and the operation.
BATCH_ENVELOPE_LEVELS = 3
# How much deeper than MAX_JSON_DEPTH a batch body may nest. At least its envelope's levels, so that a record
# accepted alone is accepted in a batch; more, so that a record somewhat too deep is read and refused in its own
# operation's result (400, at MAX_JSON_DEPTH: see api/batch.py) while the batch's other operations apply, rather
# than one record sinking the whole batch. A body past it is refused unread, as any body past its limit.
BATCH_JSON_DEPTH_ALLOWANCE = MAX_JSON_DEPTH
# A log record's message, and a trace's text, are cut to this many bytes: no request can make
# the server write megabytes of log, whatever ends up in a message (a line stays under 16 KB).
MAX_LOG_BYTES = 6 * 1024
# Bearer tokens and anything shaped like a JWT (three base64url parts) are masked in logs.
SECRET_PATTERNS = (re.compile(r"(?i)(bearer\s+)[\w\-.~+/=]+"),
                   re.compile(r"\beyJ[\w-]*\.[\w-]+\.[\w-]*"))


def _refuse_constant(name: str):
    """NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    """A JSON number that fits a double (1e400 is refused rather than read as infinity)."""
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def json_depth(value) -> int:
    """How deeply arrays and objects nest in a parsed JSON value."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def json_depth_limit() -> int:
    """How deeply this request's body may nest: MAX_JSON_DEPTH, more where its view allows more.

    A view (function or MethodView class) allows more with a `json_depth_allowance` attribute. The route is
    known before the body is read, so the limit is the route's whoever reads the body first.
    """
    if not has_request_context() or request.endpoint is None:
        return MAX_JSON_DEPTH
    view = current_app.view_functions.get(request.endpoint)
    return MAX_JSON_DEPTH + getattr(getattr(view, "view_class", view), "json_depth_allowance", 0)


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON, refusing NaN, infinities and nesting past the request's depth limit (as 400s)."""

    def loads(self, s, **kwargs):
        """Parse a request body strictly; any refusal is a ValueError, which Flask makes a 400."""
        limit = json_depth_limit()
        if isinstance(s, bytes | bytearray):
            # UTF-8 alone, as RFC 8259 asks of JSON between systems: the standard library would also take UTF-16,
            # UTF-32 and a byte order mark. A UnicodeDecodeError is a ValueError: a 400 saying where.
            if s.startswith(b"\xef\xbb\xbf"):
                raise ValueError("a byte order mark before the JSON (send UTF-8 without one)")
            s = bytes(s).decode("utf-8")
        try:
            value = json.loads(s, parse_constant=_refuse_constant, parse_float=_finite_float, **kwargs)
        except RecursionError:
            raise ValueError(f"JSON nested deeper than {limit} levels") from None
        if json_depth(value) > limit:
            raise ValueError(f"JSON nested deeper than {limit} levels")
        return value


class StrictRequest(Request):
    """A request whose malformed JSON is answered 400 with the reason (Flask's own answer says only "bad request")."""

    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        if e is None:  # not JSON at all: Flask's own 415
            return super().on_json_loading_failed(e)
        # The parser's reason names a position or a limit, never the body's content.
        raise BadRequest(f"Malformed JSON: {cut(str(e), MAX_MESSAGE)}") from e


def redact(text: str) -> str:
    """The text with bearer tokens and JWTs masked."""
    for pattern in SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "[redacted]", text)
    return text


class RedactSecrets(logging.Filter):
    """A log filter that masks tokens in every record it passes, and cuts long messages and traces."""

    formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the message (and a trace's text) with its redacted, bounded form."""
        message = record.getMessage()
        cleaned = redact(cut_bytes(message, MAX_LOG_BYTES))
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:  # formatters reuse exc_text once it is set
            record.exc_text = redact(cut_bytes(self.formatter.formatException(record.exc_info), MAX_LOG_BYTES))
        return True


def install_log_redaction() -> None:
    """Mask tokens in every log record, whichever logger or handler it goes through."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "redacts_secrets", False):
        return
    redactor = RedactSecrets()

    def make_record(*args, **kwargs) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        redactor.filter(record)
        return record

    make_record.redacts_secrets = True
    logging.setLogRecordFactory(make_record)


def add_security_headers(response: Response) -> Response:
    """nosniff everywhere; API answers are personal data, never cached."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    if request.path.startswith("/api/") or request.path in ("/healthz", "/readyz"):
        response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    """Strict JSON parsing, security headers and log redaction for this app."""
    app.json = StrictJSONProvider(app)
    app.request_class = StrictRequest
    app.after_request(add_security_headers)
    install_log_redaction()
