"""Refused writes are rate-limited per caller (Flask-Limiter's counters), so no one can flood `sync_rejects`.

The limit is on what storing costs, never on good writes: only what is stored on a caller's
behalf counts — each reject, and each tombstone of a delete of a record that is not there.
Each caller (a signed-in user by id, the service role as one, anyone else by client address,
an IPv6 client by its /64) may have FITKART_REJECTS_RATE of them. A write that would be
accepted is always accepted, past the limit too; past it, a refused write on a record route is
answered 429 with `Retry-After` and stores nothing (in a batch, each refused operation keeps
its own answer, not stored), and a delete of nothing is answered 429 with no tombstone.
Each item is counted when it would be stored, with one atomic increment of the shared
counter, so concurrent requests cannot store more than the limit between them; what comes
past it is counted in /metrics, not stored.

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
from flask_limiter import Limiter
from limits import RateLimitItem, parse
from limits.strategies import RateLimiter
from pymongo.collection import Collection
from werkzeug.exceptions import TooManyRequests

from ..model.documents import RATE_LIMITS
from ..storage import limitstore  # noqa: F401 (registers the mirror:// and sqlite:// storages with `limits`)
from ..sync.rejects import Allowance
from .auth import WEBHOOK_PREFIX, client_address, request_is_local

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


def spender(strategy: RateLimiter, item: RateLimitItem, identifiers: list[str], *, says_past: bool) -> Allowance:
    """An allowance that spends one unit of the caller's limit each time it is asked; `says_past`: a refusal
    it cannot store makes the request's answer a 429 (see past_limit)."""
    def spend() -> bool:
        try:
            allowed = strategy.hit(item, *identifiers)
        except Exception:  # a counter that fails must not stop the write it guards
            log.exception("Rate-limit counter failed; storing anyway.")
            return True
        if not allowed and says_past:
            g.fitkart_past_limit = (strategy, item, identifiers)
        return allowed
    return spend


def note_allowance(limiter: Limiter, item: RateLimitItem) -> None:
    """before_request: what this write request spends when it stores something."""
    if not is_write():
        return
    if request.path.startswith(WEBHOOK_PREFIX):
        g.fitkart_allowance = spender(limiter.limiter, item, ["webhooks"], says_past=False)
        return
    g.fitkart_allowance = spender(limiter.limiter, item, ["refused-writes", caller_key()], says_past=True)


class PastLimit(TooManyRequests):
    """The caller is past FITKART_REJECTS_RATE: this write's refusal (or tombstone) was not stored."""

    def __init__(self, rate: str, retry_after: int) -> None:
        super().__init__()
        self.data = {"message": f"Too many refused writes from this caller (FITKART_REJECTS_RATE: {rate}): this "
                                "one was not stored. Writes that can be applied still are; retry this one after "
                                "Retry-After seconds.",
                     "headers": {"Retry-After": str(retry_after)}}


def past_limit() -> PastLimit | None:
    """The 429 for this request when something it refused could not be stored (None: nothing was cut)."""
    spent = g.get("fitkart_past_limit")
    if spent is None:
        return None
    strategy, item, identifiers = spent
    try:
        reset_at = strategy.get_window_stats(item, *identifiers).reset_time
    except Exception:  # the counter's store failed since: the window's length is the most to wait
        reset_at = time.time() + item.get_expiry()
    return PastLimit(current_app.config["FITKART_REJECTS_RATE"], max(1, math.ceil(reset_at - time.time())))


def add_retry_after(limiter: Limiter, response: Response) -> Response:
    """A 429 of the limiter's own (failed operator sign-ins) says when the window ends, in seconds."""
    limit = limiter.current_limit
    if response.status_code == 429 and limit is not None and "Retry-After" not in response.headers:
        response.headers["Retry-After"] = str(max(1, math.ceil(limit.reset_at - time.time())))
    return response


def local_storage(app: Flask) -> str:
    """A SQLite file in the instance folder: shared by every worker on this machine."""
    return f"sqlite:///{os.path.join(app.instance_path, STORAGE_FILE)}"


def storage_settings(app: Flask) -> tuple[str, dict]:
    """FITKART_RATELIMIT_STORAGE, or by default this machine's file (exact) added up with every other host's in the
    mirror's database (see limitstore.MirrorStorage)."""
    chosen = app.config["FITKART_RATELIMIT_STORAGE"]
    if chosen and chosen != "mirror://":
        return chosen, {}

    def counters() -> Collection:
        return app.extensions["fitkart_store"].quick().bookkeeping(RATE_LIMITS)  # never waits long on the database
    return "mirror://", {"collection": counters, "fallback": local_storage(app)}


def init_app(app: Flask) -> Limiter:
    """Count what refused writes store per caller (the limiter's counters) and failed operator sign-ins."""
    rate = app.config["FITKART_REJECTS_RATE"]
    item = parse(rate)  # once; a wrong setting fails at start, not at the first refusal
    storage_uri, storage_options = storage_settings(app)
    limiter = Limiter(
        key_func=address_key,
        storage_uri=storage_uri,
        storage_options=storage_options,
        strategy="fixed-window",
        # Its headers would go on every limited response and override a 503's own Retry-After.
        headers_enabled=False,
        # A storage that fails must not stop the writes it guards: they go through, and it is logged.
        swallow_errors=True,
    )
    limiter.init_app(app)
    app.before_request(lambda: note_allowance(limiter, item))
    app.after_request(lambda response: add_retry_after(limiter, response))
    app.extensions["fitkart_limiter"] = limiter
    return limiter


def limit_operator_sign_ins(limiter: Limiter, *blueprints: Blueprint) -> None:
    """Count failed operator sign-ins (401) per address on these blueprints; past the limit, 429."""
    # A client on this machine is an operator without a token, so it is never a guesser: failures relayed by a
    # local proxy (counted on the proxy's address) slow the guessers only, never the local operator or Prometheus.
    shared = limiter.shared_limit(OPERATOR_FAILURES, scope="operator-sign-in", key_func=address_key,
                                  exempt_when=request_is_local,
                                  deduct_when=lambda response: response.status_code == 401,
                                  error_message=f"Too many failed operator sign-ins from this address "
                                                f"({OPERATOR_FAILURES}): retry after Retry-After seconds.")
    for blueprint in blueprints:
        shared(blueprint)

