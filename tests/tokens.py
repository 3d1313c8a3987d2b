"""Supabase-style tokens for tests: a test HS256 secret and test EC/RSA key pairs served as JWKS."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

JWT_SECRET = "test-jwt-secret-with-at-least-32-characters"
JWKS_PATH = "/auth/v1/.well-known/jwks.json"


class SigningKey:
    """An ES256 key pair with a kid, as Supabase's asymmetric signing keys are."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.private = ec.generate_private_key(ec.SECP256R1())

    def jwk(self) -> dict:
        """The public half as a JWKS entry."""
        return {**ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True), "kid": self.kid,
                "alg": "ES256", "use": "sig"}

    def public_pem(self) -> bytes:
        """The public key as PEM (what an HS/RS confusion attack would sign with)."""
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


class RsaSigningKey:
    """An RS256 key pair with a kid (projects may also sign with RSA keys)."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict:
        """The public half as a JWKS entry."""
        return {**RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True), "kid": self.kid,
                "alg": "RS256", "use": "sig"}


class JwksServer:
    """A tiny HTTP server on loopback serving a JWKS document, counting the fetches.

    `down` makes it answer 503 (still counted), as a JWKS endpoint in an outage would; `hold`, an Event,
    makes it hang until the event is set, as a slow one would.
    """

    def __init__(self) -> None:
        self.keys: list[SigningKey | RsaSigningKey] = []
        self.fetches = 0
        self.down = False
        self.hold: threading.Event | None = None
        self._counting = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != JWKS_PATH:
                    self.send_error(404)
                    return
                with server._counting:
                    server.fetches += 1
                if server.hold is not None:
                    server.hold.wait(120)
                if server.down:
                    self.send_error(503)
                    return
                body = json.dumps({"keys": [key.jwk() for key in server.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """The Supabase project URL this server stands in for."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()


def claims_for(user_id: str | None, *, role: str = "authenticated", issuer: str | None = None,
               audience: str | None = "authenticated", expires_in: int = 3600, **extra) -> dict:
    """Claims like those of a Supabase access token (or API key, with role and no sub)."""
    now = int(time.time())
    claims = {"role": role, "iat": now, "exp": now + expires_in, **extra}
    if user_id is not None:
        claims["sub"] = user_id
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    return claims


def hs256(claims: dict, secret: str = JWT_SECRET) -> str:
    """A token signed with the shared JWT secret."""
    return jwt.encode(claims, secret, algorithm="HS256")


def es256(claims: dict, key: SigningKey, kid: str | None = None) -> str:
    """A token signed with an EC signing key, its kid (or the given one) in the header."""
    return jwt.encode(claims, key.private, algorithm="ES256", headers={"kid": kid or key.kid})


def rs256(claims: dict, key: RsaSigningKey, kid: str | None = None) -> str:
    """A token signed with an RSA signing key, its kid (or the given one) in the header."""
    return jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": kid or key.kid})


def bearer(token: str) -> dict:
    """The Authorization header carrying a token."""
    return {"Authorization": f"Bearer {token}"}
