"""Refused writes are rate-limited per caller (Flask-Limiter), so no one can flood `sync_rejects`.

Only refusals count (`deduct_when`): a burst of good writes is never slowed, whoever sends
it. Each caller (a signed-in user by id, anyone else by client address, an IPv6 client by
its /64) may have FITKART_REJECTS_RATE writes refused; past that, every write request is
answered 429 with `Retry-After` until the window ends, and stores nothing. Within the
limit a request stores at most as many rejects as the caller has left (a batch of a
thousand bad operations stores what the allowance permits; the rest are answered, counted
in /metrics and not stored).
"""

import ipaddress
import math
import os
import time

from flask import Flask, Response, current_app, g, request
from flask_limiter import Limiter

from . import limitstore  # noqa: F401 (registers the sqlite:// storage with `limits`)
from .auth import client_address

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
WRITE_PREFIXES = ("/api/sync/", "/api/webhooks/")
STORAGE_FILE = "ratelimit.sqlite3"


def caller_key() -> str:
    """Whose allowance a request draws on: the signed-in user, else the client's address (IPv6: its /64)."""
    caller = g.get("caller")
    if caller is not None and caller.user_id:
        return f"user:{caller.user_id}"
    authenticator = current_app.extensions["fitkart_auth"]
    address = client_address(request.remote_addr, request.headers.get("X-Forwarded-For"),
                              authenticator.trusted_proxies)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"addr:{address[:64]}"
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return f"addr:{ip.ipv4_mapped}"
        return f"net:{ipaddress.ip_network(f'{ip}/64', strict=False)}"  # one host usually holds a whole /64
    return f"addr:{ip}"


def is_not_a_write() -> bool:
    """Reads, preflights, health and operator pages never count."""
    return request.method not in WRITE_METHODS or not request.path.startswith(WRITE_PREFIXES)


def refusals() -> int:
    """How many writes this request had refused (each kept, or counted, as a reject)."""
    engine = g.get("fitkart_engine")
    return engine.reject_log.refused if engine is not None else 0


def note_allowance(limiter: Limiter) -> None:
    """before_request, after the limiter's check: how many rejects this request may still store."""
    limit = limiter.current_limit
    g.reject_allowance = None if limit is None else limit.remaining


def add_retry_after(limiter: Limiter, response: Response) -> Response:
    """A 429 says when the caller's window ends, in seconds."""
    limit = limiter.current_limit
    if response.status_code == 429 and limit is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(limit.reset_at - time.time())))
    return response


def default_storage(app: Flask) -> str:
    """A SQLite file in the instance folder: shared by every worker on this machine."""
    return f"sqlite:///{os.path.join(app.instance_path, STORAGE_FILE)}"


def init_app(app: Flask) -> Limiter:
    """Limit refused writes per caller; answer 429 with Retry-After past the limit."""
    limiter = Limiter(
        key_func=caller_key,
        application_limits=[app.config["FITKART_REJECTS_RATE"]],
        application_limits_exempt_when=is_not_a_write,
        application_limits_deduct_when=lambda response: refusals() > 0,
        # Checked as 1 before the request (is there room for one more?), deducted as the count after.
        application_limits_cost=lambda: max(refusals(), 1),
        storage_uri=app.config["FITKART_RATELIMIT_STORAGE"] or default_storage(app),
        strategy="fixed-window",
        # Its headers would go on every write and override a 503's own Retry-After: only 429s get one.
        headers_enabled=False,
        # A storage that fails must not stop the writes it guards: they go through, and it is logged.
        swallow_errors=True,
    )
    limiter.init_app(app)
    app.before_request(lambda: note_allowance(limiter))
    app.after_request(lambda response: add_retry_after(limiter, response))
    app.extensions["fitkart_limiter"] = limiter
    return limiter

