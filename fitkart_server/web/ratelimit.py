"""Refused writes are rate-limited per caller (Flask-Limiter), so no one can flood `sync_rejects`.

Only what is stored on a caller's behalf counts: each reject, and each tombstone of a delete
of a record that is not there. A burst of good writes is never slowed, whoever sends it.
Each caller (a signed-in user by id, the service role as one, anyone else by client address,
an IPv6 client by its /64) may have FITKART_REJECTS_RATE of them; past that, every write
request is answered 429 with `Retry-After` until the window ends, and stores nothing.
Each item is counted when it would be stored, with one atomic increment of the shared
counter, so concurrent requests cannot store more than the limit between them; what
comes past it is answered as usual and counted in /metrics, not stored.

Supabase's webhooks are never answered 429 (they are not retried: a refusal would be a lost
row): their rejects draw on an allowance of their own, past which they are not stored.
Failed operator sign-ins (401 on the status page, reject pages and /metrics) are limited
per address too, so an operator token cannot be guessed at speed.
"""

import ipaddress
import logging
import math
import os
import time

from flask import Blueprint, Flask, Response, current_app, g, request
from flask_limiter import ApplicationLimit, Limiter
from limits import RateLimitItem, parse
from limits.strategies import RateLimiter

from ..storage import limitstore  # noqa: F401 (registers the sqlite:// storage with `limits`)
from ..sync.rejects import Allowance
from .auth import WEBHOOK_PREFIX, client_address

log = logging.getLogger(__name__)

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
API_PREFIX = "/api/sync/"
STORAGE_FILE = "ratelimit.sqlite3"
# Failed operator sign-ins per address: enough for typing mistakes, far too few for guessing.
OPERATOR_FAILURES = "20 per minute"


def caller_key() -> str:
    """Whose allowance a request draws on: the signed-in user, the service role, else the client's address."""
    caller = g.get("caller")
    authenticator = current_app.extensions["fitkart_auth"]
    if caller is not None and caller.user_id:
        return f"user:{caller.user_id}"
    if caller is not None and caller.is_service and authenticator.verifier is not None:
        return "role:service_role"  # proved by its key, not by where it comes from
    return address_key()


def address_key() -> str:
    """The client's address as a limit key (IPv6: its /64, as one host usually holds a whole /64)."""
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
        return f"net:{ipaddress.ip_network(f'{ip}/64', strict=False)}"
    return f"addr:{ip}"


def is_write() -> bool:
    """A write to the mirror: what stores rejects and tombstones."""
    return request.method in WRITE_METHODS and request.path.startswith((API_PREFIX, WEBHOOK_PREFIX))


def is_exempt() -> bool:
    """No 429 for reads, preflights, health and operator pages, nor for Supabase's webhooks."""
    return not is_write() or request.path.startswith(WEBHOOK_PREFIX)


def spender(strategy: RateLimiter, item: RateLimitItem, identifiers: list[str]) -> Allowance:
    """An allowance that spends one unit of the caller's limit each time it is asked."""
    def spend() -> bool:
        try:
            return strategy.hit(item, *identifiers)
        except Exception:  # a counter that fails must not stop the write it guards (as swallow_errors)
            log.exception("Rate-limit counter failed; storing anyway.")
            return True
    return spend


def note_allowance(limiter: Limiter, rate: str) -> None:
    """before_request, after the limiter's check: what this write request spends when it stores something."""
    if not is_write():
        return
    if request.path.startswith(WEBHOOK_PREFIX):
        g.fitkart_allowance = spender(limiter.limiter, parse(rate), ["webhooks"])
        return
    current = limiter.current_limit  # the very counter the limiter's check read
    if current is not None:
        g.fitkart_allowance = spender(limiter.limiter, current.limit, list(current.request_args))


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
    rate = app.config["FITKART_REJECTS_RATE"]
    limiter = Limiter(
        key_func=caller_key,
        application_limits=[ApplicationLimit(
            limit_provider=rate, exempt_when=is_exempt,
            # Checked before the request (room for one more?), never deducted after it: each stored
            # item spends the counter itself, as it is stored (note_allowance).
            deduct_when=lambda response: False,
            error_message=f"Too many refused writes from this caller (FITKART_REJECTS_RATE: {rate}); nothing "
                          "is stored until the window ends: retry after Retry-After seconds.")],
        storage_uri=app.config["FITKART_RATELIMIT_STORAGE"] or default_storage(app),
        strategy="fixed-window",
        # Its headers would go on every write and override a 503's own Retry-After: only 429s get one.
        headers_enabled=False,
        # A storage that fails must not stop the writes it guards: they go through, and it is logged.
        swallow_errors=True,
    )
    limiter.init_app(app)
    app.before_request(lambda: note_allowance(limiter, rate))
    app.after_request(lambda response: add_retry_after(limiter, response))
    app.extensions["fitkart_limiter"] = limiter
    return limiter


def limit_operator_sign_ins(limiter: Limiter, *blueprints: Blueprint) -> None:
    """Count failed operator sign-ins (401) per address on these blueprints; past the limit, 429."""
    shared = limiter.shared_limit(OPERATOR_FAILURES, scope="operator-sign-in", key_func=address_key,
                                  deduct_when=lambda response: response.status_code == 401,
                                  error_message=f"Too many failed operator sign-ins from this address "
                                                f"({OPERATOR_FAILURES}): retry after Retry-After seconds.")
    for blueprint in blueprints:
        shared(blueprint)

