"""Who may see the operator pages (status, rejected payloads, metrics).

Rejected payloads can hold personal data. Clients on this machine may look (`auth.is_local_client`:
loopback, and not relayed by a proxy unless FITKART_TRUSTED_PROXIES vouches for it); anyone else
must prove to be an operator with `Authorization: Bearer <token>`, where the token is
FITKART_ADMIN_TOKEN or a Supabase service-role token, or with the `fitkart_operator` cookie that
the status page's sign-in form sets after checking such a token.

The cookie never holds the token, nor anything it could be recovered from: only which kind of
credential was shown (`admin-token` or `service-role`) and when, signed with itsdangerous
(HMAC-SHA256), and it counts for 12 hours. The signing key is derived from the server's own
secrets (SECRET_KEY, FITKART_ADMIN_TOKEN, SUPABASE_JWT_SECRET), so every gunicorn worker accepts
a cookie another signed, and changing any of them signs every operator out. With none of them
set the key is random per process, so a sign-in holds in one worker only: set FITKART_SECRET_KEY
(or FITKART_ADMIN_TOKEN) when running several.
"""

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping

from flask import current_app, request
from flask_smorest import abort
from itsdangerous import BadData, URLSafeTimedSerializer

from ..model.policy import SERVICE_ROLE
from ..web.auth import request_is_local
from ..web.tokens import InvalidToken, KeysUnavailable

COOKIE = "fitkart_operator"
SESSION_SECONDS = 12 * 3600
ADMIN_TOKEN = "admin-token"
SERVICE_ROLE_TOKEN = "service-role"
KEY_SOURCES = ("SECRET_KEY", "FITKART_ADMIN_TOKEN", "SUPABASE_JWT_SECRET")
COOKIE_SALT = "fitkart-operator-session"
# Only for a server with no secret of its own (see the module docstring).
_PROCESS_KEY = secrets.token_bytes(32)


class NotOperator(Exception):
    """The caller is not local and proved no operator token."""


def signing_key(config: Mapping) -> bytes:
    """The cookie's key: an HMAC of the configured secrets, the same in every worker of a server."""
    material = [_text(config.get(name)) for name in KEY_SOURCES]
    if not any(material):
        return _PROCESS_KEY
    # As a JSON list, distinct settings never run together into the same input.
    return hmac.new(COOKIE_SALT.encode(), json.dumps(material).encode(), hashlib.sha256).digest()


def _text(value: str | bytes | None) -> str:
    """A secret setting as text (Flask allows SECRET_KEY as bytes)."""
    if isinstance(value, bytes):
        return value.hex()
    return value or ""


def session_serializer() -> URLSafeTimedSerializer:
    """Signs and reads this app's sign-in cookies."""
    return URLSafeTimedSerializer(signing_key(current_app.config), salt=COOKIE_SALT)


def session_cookie(credential: str) -> str:
    """The cookie value for an operator who showed this kind of credential: signed, timed, no token."""
    return session_serializer().dumps({"operator": credential})


def has_session() -> bool:
    """Whether the request carries a sign-in cookie this server signed in the last 12 hours."""
    value = request.cookies.get(COOKIE)
    if not value:
        return False
    try:
        session = session_serializer().loads(value, max_age=SESSION_SECONDS)
    except BadData:  # forged, altered, expired, or signed with other secrets
        return False
    return isinstance(session, dict) and session.get("operator") in (ADMIN_TOKEN, SERVICE_ROLE_TOKEN)


def presented_token() -> str | None:
    """The bearer token of the request's Authorization header."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def operator_credential(token: str) -> str | None:
    """Which operator credential a token is (`admin-token`, `service-role`), or None."""
    admin_token = current_app.config.get("FITKART_ADMIN_TOKEN")
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return ADMIN_TOKEN
    verifier = current_app.extensions["fitkart_auth"].verifier
    if verifier is None:
        return None
    try:
        return SERVICE_ROLE_TOKEN if verifier.caller(token).role == SERVICE_ROLE else None
    except (InvalidToken, KeysUnavailable):
        return None


def is_operator_token(token: str) -> bool:
    """FITKART_ADMIN_TOKEN, or a Supabase token whose role is service_role."""
    return operator_credential(token) is not None


def is_operator() -> bool:
    """Whether the current request may see operator pages."""
    if request_is_local() or has_session():
        return True
    token = presented_token()
    return token is not None and is_operator_token(token)


def require_operator() -> None:
    """Abort with a JSON 401 unless the caller is an operator."""
    if not is_operator():
        abort(401, message="Operator pages need a local client, FITKART_ADMIN_TOKEN or a service-role "
                           "token (Authorization: Bearer).",
              headers={"WWW-Authenticate": 'Bearer realm="fitkart-sync"'})
