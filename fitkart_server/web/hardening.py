"""Defences for every request: strict JSON, security headers, secrets kept out of logs."""

import json
import logging
import re
from typing import Any

from flask import Flask, Request, Response, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest

from ..bounds import MAX_MESSAGE, cut, cut_bytes

MAX_JSON_DEPTH = 32
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


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON, refusing NaN, infinities and nesting deeper than 32 (as 400s)."""

    def loads(self, s, **kwargs):
        """Parse a request body strictly; any refusal is a ValueError, which Flask makes a 400."""
        try:
            value = json.loads(s, parse_constant=_refuse_constant, parse_float=_finite_float, **kwargs)
        except RecursionError:
            raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
        if json_depth(value) > MAX_JSON_DEPTH:
            raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
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
