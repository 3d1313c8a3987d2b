"""Verifying Supabase access tokens with PyJWT: HS256 by the JWT secret, ES256/RS256 by JWKS."""

from dataclasses import dataclass

import jwt
from jwt import PyJWKClient, PyJWKClientConnectionError, PyJWKClientError

from .policy import ANON, AUTHENTICATED, SERVICE_ROLE, Caller

ASYMMETRIC = ("ES256", "RS256")
USER_AUDIENCE = "authenticated"
LEGACY_KEY_ISSUER = "supabase"  # the anon and service_role API keys' `iss`


class InvalidToken(Exception):
    """The token cannot be trusted; callers only ever learn "invalid token"."""


class KeysUnavailable(Exception):
    """The signing keys could not be fetched, so no ES256/RS256 token can be checked now."""


@dataclass
class TokenVerifier:
    """Checks signature, `exp`, `aud` and `iss` of Supabase access tokens and API keys."""

    jwt_secret: str | None
    supabase_url: str | None
    leeway_seconds: int = 30
    jwks_cooldown_seconds: float = 30
    jwks_lifespan_seconds: float = 600

    def __post_init__(self) -> None:
        self.supabase_url = self.supabase_url.rstrip("/") if self.supabase_url else None
        # PyJWKClient caches the key set and refetches it only for an unknown `kid`,
        # at most once per cooldown: a stream of made-up kids cannot turn into fetches.
        self.jwks = PyJWKClient(
            f"{self.supabase_url}/auth/v1/.well-known/jwks.json", cache_jwk_set=True,
            lifespan=self.jwks_lifespan_seconds, timeout=5,
            cooldown_duration=self.jwks_cooldown_seconds) if self.supabase_url else None

    @property
    def user_issuer(self) -> str | None:
        """The `iss` of user tokens, when the project URL is known."""
        return f"{self.supabase_url}/auth/v1" if self.supabase_url else None

    def caller(self, token: str) -> Caller:
        """The caller a token proves, or InvalidToken."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken from None
        algorithm = header.get("alg")
        if algorithm == "HS256" and self.jwt_secret:
            key = self.jwt_secret
        elif algorithm in ASYMMETRIC and self.jwks is not None:
            key = self._public_key(header.get("kid"))
        else:  # `none`, HS256 without a secret, anything unexpected
            raise InvalidToken
        try:
            claims = jwt.decode(token, key, algorithms=[algorithm], leeway=self.leeway_seconds,
                                options={"require": ["exp"], "verify_aud": False, "verify_iss": False})
        except jwt.PyJWTError:
            raise InvalidToken from None
        return self._caller_from_claims(claims)

    def _public_key(self, kid: str | None):
        """The JWKS key with this `kid`."""
        if not kid:
            raise InvalidToken
        try:
            return self.jwks.get_signing_key(kid).key
        except PyJWKClientConnectionError:
            raise KeysUnavailable from None
        except PyJWKClientError:
            raise InvalidToken from None

    def _caller_from_claims(self, claims: dict) -> Caller:
        """Check `aud`/`iss` for the token's role and say who it is."""
        role, issuer = claims.get("role"), claims.get("iss")
        # API keys (anon, service_role) carry `iss: supabase`; user tokens the project's auth URL.
        is_api_key = role in (SERVICE_ROLE, ANON)
        issuers = {self.user_issuer, LEGACY_KEY_ISSUER} if is_api_key else {self.user_issuer}
        if self.user_issuer and issuer not in issuers:
            raise InvalidToken
        if is_api_key:
            return Caller(role)
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if role == AUTHENTICATED and USER_AUDIENCE in audiences and claims.get("sub"):
            return Caller(AUTHENTICATED, str(claims["sub"]).lower())
        raise InvalidToken
