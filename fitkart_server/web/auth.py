"""Who is calling: a Supabase token, or, with authentication off, a loopback client.

`FITKART_AUTH=auto` (the default) checks tokens when a Supabase secret or URL is set;
otherwise it serves loopback clients only, so the existing frontend works on a
developer's machine and an exposed server without authentication cannot happen by accident.

Loopback rights (this mode, and the operator pages) go to local clients only, as `is_local_client`
decides: a loopback peer that relays someone else (a reverse proxy on this machine) is not one.
"""

import ipaddress
import logging
from collections.abc import Mapping

from flask import Flask, current_app, g, request
from flask_smorest import abort

from ..model.policy import SERVICE, Caller
from .tokens import InvalidToken, TokenVerifier

log = logging.getLogger(__name__)

MODES = ("supabase", "off", "auto")
PROTECTED_PREFIX = "/api/sync"
# Authenticated by their own shared secret, whatever the client address.
WEBHOOK_PREFIX = "/api/webhooks/"
BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="fitkart-sync"'}
# What a reverse proxy adds to name the client it relays (nginx's X-Real-IP among them).
FORWARDING_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: list[str]) -> list[Network]:
    """FITKART_TRUSTED_PROXIES entries (addresses or CIDR ranges) as networks."""
    try:
        return [ipaddress.ip_network(entry, strict=False) for entry in entries]
    except ValueError as error:
        raise ValueError(f"FITKART_TRUSTED_PROXIES: {error}") from None


def client_address(remote_addr: str | None, forwarded_for: str | None, trusted: list[Network]) -> str:
    """The client's address: X-Forwarded-For is believed only as far as trusted proxies vouch."""
    address = remote_addr or ""
    if not trusted or not _within(address, trusted):
        return address
    hops = [hop.strip() for hop in (forwarded_for or "").split(",") if hop.strip()]
    for hop in reversed(hops):  # the right-most hops were added by our own proxies
        if not _within(hop, trusted):
            return hop
    return hops[0] if hops else address


def is_local_client(remote_addr: str | None, headers: Mapping[str, str], trusted: list[Network]) -> bool:
    """Whether the client is on this machine: its address is loopback and no proxy we cannot see past relays it."""
    peer = remote_addr or ""
    forwarded_for = headers.get("X-Forwarded-For")
    if not is_loopback(client_address(peer, forwarded_for, trusted)):
        return False
    if forwarded_for and _within(peer, trusted):
        return True  # trusted proxies vouched for every hop back to a loopback client
    # A loopback peer naming someone it relays: the client is elsewhere, whatever the peer's address.
    return not any(headers.get(name) for name in FORWARDING_HEADERS)


def request_is_local() -> bool:
    """`is_local_client` for the current request, with the app's trusted proxies."""
    trusted = current_app.extensions["fitkart_auth"].trusted_proxies
    return is_local_client(request.remote_addr, request.headers, trusted)


def request_is_https() -> bool:
    """Whether the client used HTTPS: to this server, or to a trusted proxy as its X-Forwarded-Proto says."""
    if request.is_secure:
        return True
    if not _within(request.remote_addr or "", current_app.extensions["fitkart_auth"].trusted_proxies):
        return False  # anyone else could claim https
    # The left-most value is the scheme the client used at the first proxy.
    return request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower() == "https"


def is_loopback(address: str) -> bool:
    """127.0.0.0/8 or ::1 (an IPv4-mapped loopback counts too)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def _within(address: str, networks: list[Network]) -> bool:
    """Whether an address string lies in any of the networks."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def resolve_mode(config: dict) -> str:
    """`supabase` or `off` for FITKART_AUTH (auto: supabase when a secret or URL is set)."""
    mode = config["FITKART_AUTH"]
    if mode not in MODES:
        raise ValueError(f"FITKART_AUTH must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "auto":
        configured = config["SUPABASE_JWT_SECRET"] or config["SUPABASE_URL"]
        return "supabase" if configured else "off"
    return mode


class Authenticator:
    """Decides, once per request, who the caller is (or answers 401/403)."""

    def __init__(self, mode: str, loopback_only: bool, verifier: TokenVerifier | None,
                 trusted_proxies: list[Network]) -> None:
        self.mode = mode
        self.loopback_only = loopback_only
        self.verifier = verifier
        self.trusted_proxies = trusted_proxies

    def authenticate(self) -> None:
        """before_request: set `g.caller`, or abort."""
        if request.path.startswith(WEBHOOK_PREFIX):
            return
        if self.loopback_only and not is_local_client(request.remote_addr, request.headers, self.trusted_proxies):
            abort(403, message="Authentication is off, so only loopback clients are served (a request relayed "
                               "by a proxy is not one). Set SUPABASE_JWT_SECRET or SUPABASE_URL to serve others.")
        if self.verifier is None:
            g.caller = SERVICE  # authentication off: the local frontend has full rights
            return
        if request.method == "OPTIONS" or not request.path.startswith(PROTECTED_PREFIX):
            return  # CORS preflights, health checks and the API docs carry no token
        g.caller = self.caller_from_header(request.headers.get("Authorization", ""))

    def caller_from_header(self, header: str) -> Caller:
        """The caller an `Authorization: Bearer` header proves; 401 when it proves nothing."""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            abort(401, message="Missing bearer token.", headers=BEARER_CHALLENGE)
        try:
            return self.verifier.caller(token.strip())
        except InvalidToken:
            abort(401, message="Invalid token.",
                  headers={"WWW-Authenticate": 'Bearer realm="fitkart-sync", error="invalid_token"'})


def current_caller() -> Caller:
    """The caller of the current request, as `authenticate` set it."""
    return g.caller


def init_app(app: Flask) -> None:
    """Choose the mode, say it in the start-up log, check every request."""
    mode = resolve_mode(app.config)
    loopback_only = mode == "off" and app.config["FITKART_AUTH"] == "auto"
    verifier = None
    if mode == "supabase":
        if not (app.config["SUPABASE_JWT_SECRET"] or app.config["SUPABASE_URL"]):
            raise ValueError("FITKART_AUTH=supabase needs SUPABASE_JWT_SECRET or SUPABASE_URL")
        verifier = TokenVerifier(app.config["SUPABASE_JWT_SECRET"], app.config["SUPABASE_URL"],
                                 leeway_seconds=app.config["FITKART_JWT_LEEWAY_SECONDS"],
                                 jwks_cooldown_seconds=app.config["FITKART_JWKS_COOLDOWN_SECONDS"])
        if verifier.jwks is not None and not app.testing:
            verifier.jwks.prefetch()  # each worker, as it starts: the first token then finds the keys
    authenticator = Authenticator(mode, loopback_only, verifier,
                                  parse_networks(app.config["FITKART_TRUSTED_PROXIES"]))
    app.extensions["fitkart_auth"] = authenticator
    app.before_request(authenticator.authenticate)
    if loopback_only:
        app.logger.warning("AUTHENTICATION OFF: no SUPABASE_JWT_SECRET or SUPABASE_URL is set, so only "
                           "loopback clients (127.0.0.0/8, ::1, not relayed by a proxy) are served; "
                           "others get 403.")
    elif mode == "off":
        app.logger.warning("AUTHENTICATION OFF (FITKART_AUTH=off): every client has full rights.")
    else:
        app.logger.info("Supabase authentication on (%s).", ", ".join(
            name for name in ("SUPABASE_JWT_SECRET", "SUPABASE_URL") if app.config[name]))
