"""Authentication: Supabase tokens checked with PyJWT against a test secret and a local JWKS."""

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid

import pytest

from testbed.data.records import cart_item, product

from .tokens import JWT_SECRET, SigningKey, bearer, claims_for, es256, hs256


def user_claims(jwks_server, user_id: str, **overrides) -> dict:
    """Claims of a signed-in user of the test project."""
    return claims_for(user_id, issuer=f"{jwks_server.url}/auth/v1", **overrides)


def write_own_cart(client, user_id: str, token: str):
    """POST a cart item of `user_id` with the token."""
    return client.post("/api/sync/cart_items", json=cart_item(user_id=user_id), headers=bearer(token))


def test_hs256_user_token_is_accepted(secure_client, jwks_server):
    """A token signed with the project's JWT secret proves its `sub`."""
    user_id = str(uuid.uuid4())
    response = write_own_cart(secure_client, user_id, hs256(user_claims(jwks_server, user_id)))
    assert response.status_code == 200 and response.json["result"] == "created"


def test_es256_user_token_is_checked_with_cached_jwks(secure_client, jwks_server):
    """The JWKS is fetched once, not per request."""
    user_id = str(uuid.uuid4())
    token = es256(user_claims(jwks_server, user_id), jwks_server.keys[0])
    for _ in range(5):
        assert write_own_cart(secure_client, user_id, token).status_code == 200
    assert jwks_server.fetches == 1


def test_rotated_key_is_found_by_refreshing_on_an_unknown_kid(secure_client, jwks_server):
    """A new kid makes the server refetch the JWKS (once its short cooldown has passed)."""
    user_id = str(uuid.uuid4())
    assert write_own_cart(secure_client, user_id,
                          es256(user_claims(jwks_server, user_id), jwks_server.keys[0])).status_code == 200
    rotated = SigningKey("key-2")
    jwks_server.keys.append(rotated)
    time.sleep(1.1)  # FITKART_JWKS_COOLDOWN_SECONDS is 1 in the tests
    response = write_own_cart(secure_client, user_id, es256(user_claims(jwks_server, user_id), rotated))
    assert response.status_code == 200 and jwks_server.fetches == 2


def test_made_up_kids_do_not_cause_a_fetch_each(secure_client, jwks_server):
    """Twenty unknown kids in a row: 401 each, and the JWKS is fetched at most twice."""
    user_id = str(uuid.uuid4())
    for index in range(20):
        stranger = SigningKey(f"made-up-{index}")
        response = write_own_cart(secure_client, user_id, es256(user_claims(jwks_server, user_id), stranger))
        assert response.status_code == 401
    assert jwks_server.fetches <= 2


def _forge_hs256(claims: dict, key: bytes, kid: str) -> str:
    """An HS256 token MACed with arbitrary bytes (PyJWT rightly refuses to make this one)."""
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{part(claims)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def _alg_none(claims: dict) -> str:
    """An unsigned token."""
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@pytest.mark.parametrize("case", ["expired", "wrong_audience", "wrong_issuer", "tampered", "alg_none",
                                  "hs_with_public_key", "unknown_kid", "wrong_secret", "no_sub",
                                  "garbage"])
def test_bad_tokens_are_401_invalid_token(secure_client, jwks_server, case):
    """Each forgery or mistake is a 401 that says only "invalid token"."""
    user_id = str(uuid.uuid4())
    claims = user_claims(jwks_server, user_id)
    key = jwks_server.keys[0]
    token = {
        "expired": lambda: hs256({**claims, "exp": int(time.time()) - 120}),
        "wrong_audience": lambda: hs256({**claims, "aud": "anon"}),
        "wrong_issuer": lambda: hs256({**claims, "iss": "https://other.supabase.co/auth/v1"}),
        "tampered": lambda: _tamper(hs256(claims)),
        "alg_none": lambda: _alg_none(claims),
        "hs_with_public_key": lambda: _forge_hs256(claims, key.public_pem(), key.kid),
        "unknown_kid": lambda: es256(claims, SigningKey("nobody")),
        "wrong_secret": lambda: hs256(claims, secret="another-secret-of-at-least-32-characters"),
        "no_sub": lambda: hs256({k: v for k, v in claims.items() if k != "sub"}),
        "garbage": lambda: "not.a.jwt",
    }[case]()
    response = write_own_cart(secure_client, user_id, token)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json["message"] == "Invalid token."


def _tamper(token: str) -> str:
    """Change the payload of a signed token, keeping its signature."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = str(uuid.uuid4())
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def test_expiry_has_a_small_leeway(secure_client, jwks_server):
    """A token expired ten seconds ago still passes (clock skew); two minutes ago does not."""
    user_id = str(uuid.uuid4())
    token = hs256({**user_claims(jwks_server, user_id), "exp": int(time.time()) - 10})
    assert write_own_cart(secure_client, user_id, token).status_code == 200


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc"])
def test_missing_bearer_token_is_401(secure_client, header):
    """No token, or another scheme, is a 401 with the Bearer challenge."""
    headers = {} if header is None else {"Authorization": header}
    response = secure_client.get("/api/sync/cart_items", headers=headers)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")


def test_service_role_key_has_full_rights(secure_client):
    """The legacy service_role API key (iss supabase, no sub or aud) may write anyone's rows."""
    key = hs256(claims_for(None, role="service_role", issuer="supabase", audience=None, ref="fitkart"))
    response = secure_client.post("/api/sync/cart_items", json=cart_item(), headers=bearer(key))
    assert response.status_code == 200
    assert secure_client.get("/api/sync/cart_items", headers=bearer(key)).json["items"]


def test_anon_key_reads_products_but_writes_nothing(secure_client):
    """The anon API key sees the public catalogue only."""
    service = hs256(claims_for(None, role="service_role", issuer="supabase", audience=None))
    anon = hs256(claims_for(None, role="anon", issuer="supabase", audience=None))
    secure_client.post("/api/sync/products", json=product(), headers=bearer(service))
    assert len(secure_client.get("/api/sync/products", headers=bearer(anon)).json["items"]) == 1
    write = secure_client.post("/api/sync/cart_items", json=cart_item(), headers=bearer(anon))
    assert write.status_code == 403
    assert secure_client.get("/api/sync/cart_items", headers=bearer(anon)).status_code == 403


def test_health_docs_and_preflight_need_no_token(secure_client):
    """Health checks, the OpenAPI document and CORS preflights are public."""
    assert secure_client.get("/healthz").status_code == 200
    assert secure_client.get("/readyz").status_code == 200
    assert secure_client.get("/api/openapi.json").status_code == 200
    preflight = secure_client.options("/api/sync/cart", headers={
        "Origin": "http://localhost:8080", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type"})
    assert preflight.status_code == 200
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()


def test_unreachable_jwks_is_503_not_401(make_app, database_uri, decimal_mode):
    """When the signing keys cannot be fetched, the client is told to retry, not that its token is bad."""
    app = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode,
                   SUPABASE_URL="http://127.0.0.1:9")
    token = es256(claims_for(str(uuid.uuid4()), issuer="http://127.0.0.1:9/auth/v1"), SigningKey("k"))
    response = app.test_client().get("/api/sync/cart_items", headers=bearer(token))
    assert response.status_code == 503 and response.headers["Retry-After"]


def test_auto_mode_without_configuration_serves_loopback_only(make_app, database_uri, decimal_mode, caplog):
    """No secret, no URL: loopback clients keep full rights, every other address gets 403."""
    with caplog.at_level(logging.WARNING):
        app = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode)
    assert "only loopback clients" in caplog.text
    client = app.test_client()
    assert client.post("/api/sync/cart", json=cart_item()).status_code == 200
    for address in ("::1", "127.8.9.10"):
        assert client.get("/api/sync/cart_items", environ_base={"REMOTE_ADDR": address}).status_code == 200
    for address in ("10.1.2.3", "192.168.1.20", "203.0.113.9", "::ffff:10.0.0.1"):
        response = client.post("/api/sync/cart", json=cart_item(), environ_base={"REMOTE_ADDR": address})
        assert response.status_code == 403 and response.is_json
        assert client.get("/readyz", environ_base={"REMOTE_ADDR": address}).status_code == 403


def test_forwarded_for_is_believed_only_from_trusted_proxies(make_app, database_uri, decimal_mode):
    """X-Forwarded-For counts when FITKART_TRUSTED_PROXIES names the peer, and never otherwise."""
    app = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode,
                   FITKART_TRUSTED_PROXIES=["127.0.0.1", "10.0.0.0/8"])
    client = app.test_client()

    def status(peer: str, forwarded: str | None) -> int:
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        response = client.get("/api/sync/cart_items", headers=headers, environ_base={"REMOTE_ADDR": peer})
        return response.status_code

    assert status("127.0.0.1", "203.0.113.9") == 403  # a local proxy relaying an outside client
    assert status("127.0.0.1", "127.0.0.1") == 200
    assert status("127.0.0.1", "127.0.0.1, 10.0.0.7") == 200  # two trusted hops, then a loopback client
    assert status("127.0.0.1", "203.0.113.9, 127.0.0.1") == 403  # trusted hops skipped: the client is outside
    assert status("198.51.100.7", "127.0.0.1") == 403  # an untrusted peer cannot claim loopback
    untrusting = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode)
    # Untrusted, the header names no client, but says the loopback peer relays one: not a local client.
    assert untrusting.test_client().get("/api/sync/cart_items", headers={"X-Forwarded-For": "203.0.113.9"},
                                        environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 403


def test_explicit_off_serves_everyone(make_app, database_uri, decimal_mode):
    """FITKART_AUTH=off is the operator's explicit choice: no address check."""
    app = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode, FITKART_AUTH="off")
    response = app.test_client().get("/api/sync/cart_items", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert response.status_code == 200


@pytest.mark.parametrize(("settings", "message"), [
    ({"FITKART_AUTH": "supabase"}, "SUPABASE_JWT_SECRET or SUPABASE_URL"),
    ({"FITKART_AUTH": "maybe"}, "FITKART_AUTH"),
    ({"FITKART_TRUSTED_PROXIES": ["not-an-address"]}, "FITKART_TRUSTED_PROXIES"),
])
def test_bad_auth_settings_stop_the_app(make_app, settings, message):
    """Misconfigured security is refused at start, naming the setting."""
    with pytest.raises(ValueError, match=message):
        make_app(FITKART_MONGODB_URI="embedded", **settings)


def test_secret_is_not_needed_for_es256_only_projects(make_app, database_uri, decimal_mode, jwks_server):
    """SUPABASE_URL alone turns authentication on; HS256 tokens are then refused."""
    app = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode,
                   SUPABASE_URL=jwks_server.url)
    client = app.test_client()
    user_id = str(uuid.uuid4())
    claims = user_claims(jwks_server, user_id)
    assert write_own_cart(client, user_id, es256(claims, jwks_server.keys[0])).status_code == 200
    assert write_own_cart(client, user_id, hs256(claims, JWT_SECRET)).status_code == 401
