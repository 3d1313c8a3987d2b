"""Verifying Supabase access tokens with PyJWT: HS256 by the JWT secret, ES256/RS256 by the project's JWKS.

The JWKS is fetched at start and when first needed (in the background: a request waits for it at
most a second), kept for `jwks_lifespan_seconds`, and fetched early only for a `kid` it lacks.
Whatever a fetch ends in (keys, an empty set, an error), the next one waits out
`jwks_cooldown_seconds`: no stream of tokens, made-up or not, turns into a stream of fetches.
A token that cannot be verified is InvalidToken (401); KeysUnavailable (503) only says that the
keys a token needs could not be fetched.
"""

import http.client
import json
import logging
import math
import os
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt import PyJWK

from ..model.policy import ANON, AUTHENTICATED, SERVICE_ROLE, Caller

log = logging.getLogger(__name__)

# The asymmetric algorithms accepted, each with the key type (`kty`) that can verify it.
ASYMMETRIC = {"ES256": "EC", "RS256": "RSA"}
USER_AUDIENCE = "authenticated"
LEGACY_KEY_ISSUER = "supabase"  # the anon and service_role API keys' `iss`
JWKS_PATH = "/auth/v1/.well-known/jwks.json"
JWKS_MAX_BYTES = 1024 * 1024  # a key set is a few KB; anything near this is not one


class InvalidToken(Exception):
    """The token cannot be trusted; callers only ever learn "invalid token"."""


class KeysUnavailable(Exception):
    """The signing keys could not be fetched, so no ES256/RS256 token can be checked now."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Keys come from the configured URL only, never from wherever it points on to."""

    def redirect_request(self, *args, **kwargs) -> None:
        return None


def usable_keys(document: Any) -> dict[str, PyJWK]:
    """The signing keys of a JWKS document by kid; entries PyJWT cannot use are left out."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeysUnavailable
    keys = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str) or entry.get("use", "sig") != "sig":
            continue
        try:
            keys[entry["kid"]] = PyJWK(entry)
        except (jwt.PyJWTError, TypeError, ValueError, NotImplementedError):
            continue  # an algorithm or curve this server does not verify with (`none` is not implemented)
    return keys


def fetch_keys(url: str, timeout_seconds: float) -> dict[str, PyJWK]:
    """GET a JWKS and parse it; KeysUnavailable when that fails in any way."""
    opener = urllib.request.build_opener(_NoRedirects())
    try:
        with opener.open(url, timeout=timeout_seconds) as response:
            if response.status != 200:
                raise KeysUnavailable
            body = response.read(JWKS_MAX_BYTES + 1)
    except (OSError, http.client.HTTPException):  # URLError, HTTPError and timeouts are OSErrors
        raise KeysUnavailable from None
    if len(body) > JWKS_MAX_BYTES:
        raise KeysUnavailable
    try:
        return usable_keys(json.loads(body))
    except (ValueError, RecursionError):
        raise KeysUnavailable from None


@dataclass
class KeySet:
    """A project's signing keys by kid, fetched at most once per cooldown, in the background.

    A request that needs a key the set lacks starts a fetch (or finds one running) and waits for it
    at most `wait_seconds`: a slow JWKS endpoint costs a request that long, then a 503 it may retry,
    never the fetch's whole timeout, and no thread queues behind another's fetch.
    """

    url: str
    cooldown_seconds: float
    lifespan_seconds: float
    timeout_seconds: float = 5
    wait_seconds: float = 1
    _keys: dict[str, PyJWK] = field(default_factory=dict, init=False, repr=False)
    _fetched_at: float = field(default=-math.inf, init=False)  # last fetch that gave a key set
    _tried_at: float = field(default=-math.inf, init=False)  # last fetch, whatever it gave
    _failed: bool = field(default=False, init=False)  # whether that last fetch gave nothing
    _fetching: threading.Event | None = field(default=None, init=False, repr=False)  # set when it ends
    _fetching_pid: int = field(default=0, init=False)  # the process whose thread runs that fetch
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def key(self, kid: str) -> PyJWK:
        """The key with this kid; InvalidToken when the project has none, KeysUnavailable when unknown now."""
        found = self._cached(kid)
        if found is not None:
            return found
        with self._lock:
            if self._fetching_pid != os.getpid():
                self._fetching = None  # a fetch of the process this one was forked from: its thread is not here
            if self._fetching is None and self._may_fetch():
                self._start_fetch()
            running = self._fetching
        if running is not None and running.wait(self.wait_seconds) is False:
            raise KeysUnavailable  # still fetching: the client retries in a moment
        found = self._cached(kid)
        if found is not None:
            return found
        if self._failed or not self._fresh():
            raise KeysUnavailable  # the key may well exist: the client should retry, not sign in again
        raise InvalidToken

    def prefetch(self) -> None:
        """Fetch the set now, in the background, so the first token finds it (a failure costs no cooldown)."""
        with self._lock:
            if self._fetching is None or self._fetching_pid != os.getpid():
                self._start_fetch(counted=False)

    def _cached(self, kid: str) -> PyJWK | None:
        """The key from the cached set while it is fresh (one read: a fetch may swap the set meanwhile)."""
        keys = self._keys
        return keys.get(kid) if self._fresh() else None

    def _fresh(self) -> bool:
        """Whether the cached set is recent enough to trust."""
        return time.monotonic() - self._fetched_at < max(self.lifespan_seconds, self.cooldown_seconds)

    def _may_fetch(self) -> bool:
        """Whether the cooldown since the last fetch, of any outcome, has passed."""
        return time.monotonic() - self._tried_at >= self.cooldown_seconds

    def _start_fetch(self, counted: bool = True) -> None:
        """Fetch the set in a thread of its own (under the lock); `counted`: the cooldown runs from now."""
        if counted:
            self._tried_at = time.monotonic()
        self._fetching, self._fetching_pid = threading.Event(), os.getpid()
        threading.Thread(target=self._fetch, args=(self._fetching, counted), name="fitkart-jwks",
                         daemon=True).start()

    def _fetch(self, done: threading.Event, counted: bool) -> None:
        """Fetch the set once; on failure keep the previous one until its lifespan ends."""
        keys = None
        try:
            keys = fetch_keys(self.url, self.timeout_seconds)
        except KeysUnavailable:
            pass
        except Exception:  # a set PyJWT cannot read in some way of its own: a failed fetch, never a stuck one
            log.exception("The JWKS at %s could not be read; ES256/RS256 tokens get 503 until it can.", self.url)
        finally:
            with self._lock:
                if keys is not None:
                    self._keys, self._fetched_at, self._failed = keys, time.monotonic(), False
                elif counted:
                    self._failed = True
                if self._fetching is done:
                    self._fetching = None
            done.set()


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
        self.jwks = KeySet(f"{self.supabase_url}{JWKS_PATH}", cooldown_seconds=self.jwks_cooldown_seconds,
                           lifespan_seconds=self.jwks_lifespan_seconds) if self.supabase_url else None

    @property
    def user_issuer(self) -> str | None:
        """The `iss` of user tokens, when the project URL is known."""
        return f"{self.supabase_url}/auth/v1" if self.supabase_url else None

    def caller(self, token: str) -> Caller:
        """The caller a token proves, or InvalidToken (or KeysUnavailable when its keys cannot be fetched)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken from None
        algorithm = header.get("alg")
        if algorithm == "HS256" and self.jwt_secret:
            key = self.jwt_secret
        elif isinstance(algorithm, str) and algorithm in ASYMMETRIC and self.jwks is not None:
            key = self._public_key(algorithm, header.get("kid"))
        else:  # `none`, HS256 without a secret, anything unexpected
            raise InvalidToken
        try:
            claims = jwt.decode(token, key, algorithms=[algorithm], leeway=self.leeway_seconds,
                                options={"require": ["exp"], "verify_aud": False, "verify_iss": False})
        except (jwt.PyJWTError, TypeError, ValueError):  # a key PyJWT cannot use must not become a 500
            raise InvalidToken from None
        return self._caller_from_claims(claims)

    def _public_key(self, algorithm: str, kid: Any) -> Any:
        """The JWKS key with this `kid`, which must be of the type the header's `alg` needs."""
        if not isinstance(kid, str) or not kid:
            raise InvalidToken
        found = self.jwks.key(kid)
        # An ES256 header naming an RSA key (or the reverse) would reach the wrong verifier.
        if found.key_type != ASYMMETRIC[algorithm] or found.algorithm_name != algorithm:
            raise InvalidToken
        return found.key

    def _caller_from_claims(self, claims: dict) -> Caller:
        """Check `aud`/`iss` for the token's role and say who it is."""
        role, issuer = claims.get("role"), claims.get("iss")
        if not isinstance(role, str) or not isinstance(issuer, str | None):
            raise InvalidToken  # claims of the wrong type prove nothing (and must not reach set lookups)
        # API keys (anon, service_role) carry `iss: supabase`; user tokens the project's auth URL.
        is_api_key = role in (SERVICE_ROLE, ANON)
        issuers = {self.user_issuer, LEGACY_KEY_ISSUER} if is_api_key else {self.user_issuer}
        if self.user_issuer and issuer not in issuers:
            raise InvalidToken
        if is_api_key:
            return Caller(role)
        audience, subject = claims.get("aud"), claims.get("sub")
        audiences = audience if isinstance(audience, list) else [audience]
        if role == AUTHENTICATED and USER_AUDIENCE in audiences and isinstance(subject, str) and subject:
            return Caller(AUTHENTICATED, subject.lower())
        raise InvalidToken
