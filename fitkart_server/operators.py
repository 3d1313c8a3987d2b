"""Who may see the operator pages (status, rejected payloads, metrics).

Rejected payloads can hold personal data. Loopback clients may look; anyone else must
prove to be an operator with `Authorization: Bearer <token>` (or the `fitkart_operator`
cookie the status page's sign-in form sets), where the token is FITKART_ADMIN_TOKEN or a
Supabase service-role token. Loopback is decided as for the API (X-Forwarded-For believed
only from FITKART_TRUSTED_PROXIES).
"""

import hmac

from flask import current_app, request
from flask_smorest import abort

from .auth import client_address, is_loopback
from .policy import SERVICE_ROLE
from .tokens import InvalidToken, KeysUnavailable

COOKIE = "fitkart_operator"


class NotOperator(Exception):
    """The caller is not loopback and proved no operator token."""


def presented_token() -> str | None:
    """The bearer token of the request, from its Authorization header or the sign-in cookie."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.cookies.get(COOKIE) or None


def is_operator_token(token: str) -> bool:
    """FITKART_ADMIN_TOKEN, or a Supabase token whose role is service_role."""
    admin_token = current_app.config.get("FITKART_ADMIN_TOKEN")
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return True
    verifier = current_app.extensions["fitkart_auth"].verifier
    if verifier is None:
        return False
    try:
        return verifier.caller(token).role == SERVICE_ROLE
    except (InvalidToken, KeysUnavailable):
        return False


def is_operator() -> bool:
    """Whether the current request may see operator pages."""
    authenticator = current_app.extensions["fitkart_auth"]
    address = client_address(request.remote_addr, request.headers.get("X-Forwarded-For"),
                              authenticator.trusted_proxies)
    if is_loopback(address):
        return True
    token = presented_token()
    return token is not None and is_operator_token(token)


def require_operator() -> None:
    """Abort with a JSON 401 unless the caller is an operator."""
    if not is_operator():
        abort(401, message="Operator pages need a loopback client, FITKART_ADMIN_TOKEN or a service-role "
                           "token (Authorization: Bearer).",
              headers={"WWW-Authenticate": 'Bearer realm="fitkart-sync"'})
