"""Sign-in hardening: JWKS edge cases, loopback rights behind a proxy, the operator sign-in cookie."""

import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import threading
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor, wait

import pytest

from fitkart_server.ops import operators
from testbed.data.records import cart_item
from testbed.servers.gunicorn import GunicornServer
from testbed.waiting import wait_until

from .tokens import JWT_SECRET, RsaSigningKey, SigningKey, bearer, claims_for, es256, hs256, rs256

LONG_COOLDOWN = 60  # longer than any test: every refetch after the first would show in the count
ADMIN_TOKEN = "operator-token-for-hardening-tests"
OUTSIDE = {"REMOTE_ADDR": "203.0.113.9"}
NO_REJECT = "/status/rejects/000000000000000000000000"
# What a reverse proxy on this machine adds when it relays a client from elsewhere.
PROXIED = [{"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9;proto=https"},
           {"X-Real-IP": "203.0.113.9"}]


def user_claims(jwks_server, user_id: str, **overrides) -> dict:
    """Claims of a signed-in user of the test project."""
    return claims_for(user_id, issuer=f"{jwks_server.url}/auth/v1", **overrides)


def write_own_cart(client, user_id: str, token: str):
    """POST a cart item of `user_id` with the token."""
    return client.post("/api/sync/cart_items", json=cart_item(user_id=user_id), headers=bearer(token))


@pytest.fixture
def supabase_app(make_app, database_uri, decimal_mode, jwks_server):
    """Build an app with Supabase authentication on (test secret and local JWKS) and a given JWKS cooldown."""
    def build(cooldown: int = LONG_COOLDOWN):
        return make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode,
                        SUPABASE_JWT_SECRET=JWT_SECRET, SUPABASE_URL=jwks_server.url,
                        FITKART_JWKS_COOLDOWN_SECONDS=cooldown)
    return build


# -- A: JWKS edge cases ----------------------------------------------------------------------


def test_an_empty_key_set_is_401_for_asymmetric_tokens_and_fetched_once(supabase_app, jwks_server):
    """`{"keys": []}` (legacy HS256 projects, local Supabase): RS256/ES256 tokens are 401, one fetch in all."""
    jwks_server.keys.clear()
    client = supabase_app().test_client()
    user_id = str(uuid.uuid4())
    claims = user_claims(jwks_server, user_id)
    strangers = (rs256(claims, RsaSigningKey("rsa-1")), es256(claims, SigningKey("ec-1")))
    for _ in range(10):
        for token in strangers:
            response = write_own_cart(client, user_id, token)
            assert response.status_code == 401 and response.json["message"] == "Invalid token."
    assert jwks_server.fetches == 1
    assert write_own_cart(client, user_id, hs256(claims)).status_code == 200


def test_concurrent_requests_share_one_fetch(supabase_app, jwks_server):
    """Sixteen requests at once against an empty key set: every one 401, the set fetched once."""
    jwks_server.keys.clear()
    app = supabase_app()
    user_id = str(uuid.uuid4())
    token = rs256(user_claims(jwks_server, user_id), RsaSigningKey("rsa-1"))
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda _: write_own_cart(app.test_client(), user_id, token).status_code, range(16)))
    assert statuses == [401] * 16 and jwks_server.fetches == 1


def test_unknown_kids_fetch_the_key_set_once_per_cooldown(supabase_app, jwks_server):
    """Made-up kids against a real key set: 401 each, and no refetch inside the cooldown."""
    client = supabase_app().test_client()
    user_id = str(uuid.uuid4())
    claims = user_claims(jwks_server, user_id)
    assert write_own_cart(client, user_id, es256(claims, jwks_server.keys[0])).status_code == 200
    for index in range(10):
        assert write_own_cart(client, user_id, es256(claims, SigningKey(f"made-up-{index}"))).status_code == 401
        assert write_own_cart(client, user_id, rs256(claims, RsaSigningKey(f"rsa-{index}"))).status_code == 401
    assert jwks_server.fetches == 1


@pytest.mark.parametrize("case", ["es256_naming_an_rsa_kid", "rs256_naming_an_ec_kid"])
def test_a_kid_of_the_other_key_family_is_401(supabase_app, jwks_server, case):
    """The header's `alg` must fit the named key's type; RSA keys with their own kid still work."""
    rsa_key = RsaSigningKey("rsa-1")
    jwks_server.keys.append(rsa_key)
    ec_key = jwks_server.keys[0]
    client = supabase_app().test_client()
    user_id = str(uuid.uuid4())
    claims = user_claims(jwks_server, user_id)
    token = {"es256_naming_an_rsa_kid": lambda: es256(claims, ec_key, kid=rsa_key.kid),
             "rs256_naming_an_ec_kid": lambda: rs256(claims, rsa_key, kid=ec_key.kid)}[case]()
    response = write_own_cart(client, user_id, token)
    assert response.status_code == 401 and response.json["message"] == "Invalid token."
    assert write_own_cart(client, user_id, rs256(claims, rsa_key)).status_code == 200
    assert write_own_cart(client, user_id, es256(claims, ec_key)).status_code == 200


def _part(data) -> str:
    """One base64url segment of a token."""
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unsigned_parts(header: dict, claims: dict) -> str:
    """A token with the given header and claims and a signature of junk."""
    return f"{_part(header)}.{_part(claims)}.{_part(b'junk')}"


def _hs256_any(claims: dict) -> str:
    """An HS256 token with the test secret over any claims (PyJWT will not sign a list `iss`)."""
    signing_input = f"{_part({'alg': 'HS256', 'typ': 'JWT'})}.{_part(claims)}"
    return f"{signing_input}.{_part(hmac.new(JWT_SECRET.encode(), signing_input.encode(), hashlib.sha256).digest())}"


@pytest.mark.parametrize("case", ["kid_is_a_list", "kid_is_a_number", "no_kid", "alg_is_a_list", "alg_es512",
                                  "issuer_is_a_list", "subject_is_a_number", "audience_is_an_object"])
def test_odd_headers_and_claims_are_401(supabase_app, jwks_server, case):
    """Strange types where strings belong are refused as invalid tokens, never a 500."""
    client = supabase_app().test_client()
    user_id = str(uuid.uuid4())
    claims = user_claims(jwks_server, user_id)
    token = {
        "kid_is_a_list": lambda: _unsigned_parts({"alg": "ES256", "kid": ["key-1"]}, claims),
        "kid_is_a_number": lambda: _unsigned_parts({"alg": "RS256", "kid": 1}, claims),
        "no_kid": lambda: _unsigned_parts({"alg": "ES256"}, claims),
        "alg_is_a_list": lambda: _unsigned_parts({"alg": ["ES256"], "kid": "key-1"}, claims),
        "alg_es512": lambda: _unsigned_parts({"alg": "ES512", "kid": "key-1"}, claims),
        "issuer_is_a_list": lambda: _hs256_any({**claims, "iss": [claims["iss"]]}),
        "subject_is_a_number": lambda: hs256({**claims, "sub": 12345}),
        "audience_is_an_object": lambda: hs256({**claims, "aud": {"authenticated": True}}),
    }[case]()
    response = write_own_cart(client, user_id, token)
    assert response.status_code == 401 and response.json["message"] == "Invalid token."


class StoppedClock:
    """Stands in for the `time` module of fitkart_server.web.tokens: `monotonic()` is what the test sets.

    The key set's cooldown is then measured on this clock, so "inside one cooldown" holds however slowly the
    machine runs the requests, and the cooldown passes without being waited for.
    """

    def __init__(self) -> None:
        self.now = time.monotonic()

    def monotonic(self) -> float:
        return self.now

    def __getattr__(self, name: str):
        return getattr(time, name)


def test_an_unreachable_key_set_is_503_for_asymmetric_tokens_only(supabase_app, jwks_server, monkeypatch):
    """JWKS down: ES256 tokens get 503 + Retry-After, asked once per cooldown; HS256 tokens still pass."""
    from fitkart_server.web import tokens

    clock = StoppedClock()
    monkeypatch.setattr(tokens, "time", clock)
    cooldown = 2
    client = supabase_app(cooldown=cooldown).test_client()
    jwks_server.down = True
    user_id = str(uuid.uuid4())
    claims = user_claims(jwks_server, user_id)
    token = es256(claims, jwks_server.keys[0])
    began = clock.now
    for _ in range(5):  # all at one moment of the key set's clock: inside one cooldown
        response = write_own_cart(client, user_id, token)
        assert response.status_code == 503 and response.headers["Retry-After"]
        assert write_own_cart(client, user_id, hs256(claims)).status_code == 200
    assert jwks_server.fetches == 1
    jwks_server.down = False
    clock.now = began + cooldown - 0.01  # the set is back, but the cooldown since the failed fetch is not over
    assert write_own_cart(client, user_id, token).status_code == 503
    assert jwks_server.fetches == 1
    clock.now = began + cooldown + 0.01  # over: asked again, and the token passes
    assert write_own_cart(client, user_id, token).status_code == 200
    assert jwks_server.fetches == 2


def test_a_slow_key_set_never_holds_requests_for_its_fetch(supabase_app, jwks_server):
    """The JWKS endpoint hangs until the test lets it answer, and the fetch may take a minute: eight concurrent
    requests needing its keys are each answered 503 + Retry-After while that fetch still runs (none waits for it,
    none queues behind it); once it ends, the same token passes, from that one fetch."""
    app = supabase_app()
    app.extensions["fitkart_auth"].verifier.jwks.timeout_seconds = 60
    jwks_server.hold = threading.Event()
    user_id = str(uuid.uuid4())
    token = es256(user_claims(jwks_server, user_id), jwks_server.keys[0])
    pool = ThreadPoolExecutor(8)
    try:
        sent = [pool.submit(write_own_cart, app.test_client(), user_id, token) for _ in range(8)]
        answered, _ = wait(sent, timeout=20)  # a third of the fetch's minute: answered without it
        assert len(answered) == 8 and not jwks_server.hold.is_set()
        assert all(future.result().status_code == 503 and future.result().headers["Retry-After"] for future in sent)
    finally:
        jwks_server.hold.set()
        pool.shutdown()
    assert wait_until(lambda: write_own_cart(app.test_client(), user_id, token).status_code == 200)
    assert jwks_server.fetches == 1


class UnreadableKey:
    """A JWKS entry PyJWT has no implementation for (`kty: oct`, `alg: none`): it raises NotImplementedError."""

    kid = "odd"

    def jwk(self) -> dict:
        return {"kid": self.kid, "kty": "oct", "alg": "none", "k": "AA"}


def test_a_key_set_with_an_entry_pyjwt_cannot_read_still_serves_its_other_keys(supabase_app, jwks_server):
    """An entry PyJWT cannot read is left out; the project's real key still verifies tokens."""
    jwks_server.keys.insert(0, UnreadableKey())
    client = supabase_app().test_client()
    user_id = str(uuid.uuid4())
    token = es256(user_claims(jwks_server, user_id), jwks_server.keys[1])
    assert write_own_cart(client, user_id, token).status_code == 200


def test_a_fetch_that_fails_in_an_unforeseen_way_is_a_failed_fetch_not_a_stuck_one(supabase_app, jwks_server,
                                                                                   monkeypatch):
    """The fetch raising something no one foresaw: that request is a 503, and the next fetch (the cooldown being
    over) is made and serves the token — the key set is never left waiting on a fetch that died."""
    from fitkart_server.web import tokens

    real, calls = tokens.fetch_keys, []

    def fails_once(url: str, timeout_seconds: float):
        calls.append(url)
        if len(calls) == 1:
            raise RuntimeError("unforeseen")
        return real(url, timeout_seconds)

    monkeypatch.setattr(tokens, "fetch_keys", fails_once)
    client = supabase_app(cooldown=0).test_client()
    user_id = str(uuid.uuid4())
    token = es256(user_claims(jwks_server, user_id), jwks_server.keys[0])
    assert write_own_cart(client, user_id, token).status_code == 503
    assert write_own_cart(client, user_id, token).status_code == 200 and len(calls) == 2


# -- D1: loopback rights through a proxy ------------------------------------------------------


@pytest.fixture
def loopback_only_app(make_app, database_uri, decimal_mode):
    """No Supabase settings: authentication off, loopback clients only."""
    return make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode)


@pytest.mark.parametrize("headers", PROXIED, ids=["x-forwarded-for", "forwarded", "x-real-ip"])
def test_a_local_proxy_does_not_pass_on_loopback_rights(loopback_only_app, headers):
    """Loopback-only mode: a loopback peer relaying someone (forwarding headers, no trusted proxies) gets 403."""
    client = loopback_only_app.test_client()
    for path in ("/api/sync/cart_items", "/", "/metrics", NO_REJECT):
        assert client.get(path, headers=headers).status_code == 403
    assert client.post("/api/sync/cart", json=cart_item(), headers=headers).status_code == 403
    # The same loopback client, not relayed, keeps its rights.
    assert client.get("/").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/api/sync/cart_items").status_code == 200


@pytest.mark.parametrize("auth", ["off", "supabase"])
@pytest.mark.parametrize("headers", PROXIED, ids=["x-forwarded-for", "forwarded", "x-real-ip"])
def test_operator_pages_want_a_token_from_a_relayed_client(make_app, database_uri, decimal_mode, auth, headers):
    """Where operator pages are reachable, a relayed loopback peer gets the sign-in form (401), not the pages."""
    app = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode, FITKART_AUTH=auth,
                   SUPABASE_JWT_SECRET=JWT_SECRET)
    client = app.test_client()
    page = client.get("/", headers=headers)
    assert page.status_code == 401 and 'name="token"' in page.get_data(as_text=True)
    assert client.get("/metrics", headers=headers).status_code == 401
    assert client.get(NO_REJECT, headers=headers).status_code == 401
    assert client.get("/").status_code == 200


def test_trusted_proxies_still_vouch_for_loopback_clients(make_app, database_uri, decimal_mode):
    """With FITKART_TRUSTED_PROXIES, X-Forwarded-For decides; a relay it does not name, or cannot read, does not."""
    def client_of(trusted: list[str]):
        return make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode,
                        FITKART_TRUSTED_PROXIES=trusted).test_client()

    trusting = client_of(["127.0.0.1"])
    local = {"X-Forwarded-For": "127.0.0.1"}
    assert trusting.get("/", headers=local).status_code == 200
    assert trusting.get("/api/sync/cart_items", headers=local).status_code == 200
    assert trusting.get("/", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 403
    # A trusted proxy that says who the client is only in `Forwarded`: the client is unknown.
    assert trusting.get("/", headers={"Forwarded": "for=203.0.113.9"}).status_code == 403
    assert trusting.get("/").status_code == 200
    elsewhere = client_of(["10.0.0.0/8"])  # the loopback peer is not one of the trusted proxies
    assert elsewhere.get("/", headers=local).status_code == 403
    assert elsewhere.get("/api/sync/cart_items", headers=local).status_code == 403


# -- D2: the operator sign-in cookie ------------------------------------------------------------


@pytest.fixture
def operator_app(make_app, database_uri, decimal_mode):
    """Build an app (authentication off, so only the operator check guards the pages) with FITKART_ADMIN_TOKEN."""
    def build(**settings):
        return make_app(**{"FITKART_MONGODB_URI": database_uri, "FITKART_DECIMAL_MODE": decimal_mode,
                           "FITKART_AUTH": "off", "FITKART_ADMIN_TOKEN": ADMIN_TOKEN, **settings})
    return build


def sign_in(client, token: str, **options):
    """POST the sign-in form from outside; the response (303 and a cookie when accepted)."""
    return client.post("/status/sign-in", data={"token": token}, **{"environ_base": OUTSIDE, **options})


def cookie_value(response) -> str:
    """The value of the operator cookie a response sets."""
    header = next(value for value in response.headers.getlist("Set-Cookie")
                  if value.startswith(f"{operators.COOKIE}="))
    return header.split(";", 1)[0].split("=", 1)[1]


def readable_forms(value: str) -> str:
    """The cookie as set and with every base64url segment decoded, to look for the token in."""
    decoded = []
    for segment in value.replace(".", " ").split():
        with contextlib.suppress(ValueError):  # not every segment is base64
            decoded.append(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)).decode("latin-1"))
    return " ".join([value, urllib.parse.unquote(value), *decoded])


def assert_holds_nothing_of(value: str, token: str) -> None:
    """Neither the token nor any part of it can be read from the cookie."""
    readable = readable_forms(value)
    for part in [token, *token.split(".")]:
        assert part not in readable


def test_the_sign_in_cookie_holds_a_signed_session_not_the_token(operator_app):
    """After signing in with FITKART_ADMIN_TOKEN the cookie opens the pages and holds nothing of the token."""
    client = operator_app().test_client()
    signed = sign_in(client, ADMIN_TOKEN)
    assert signed.status_code == 303
    value = cookie_value(signed)
    assert_holds_nothing_of(value, ADMIN_TOKEN)
    header = signed.headers["Set-Cookie"]
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Max-Age=43200" in header
    assert "Secure" not in header  # plain HTTP: a Secure cookie would never come back
    assert client.get("/", environ_base=OUTSIDE).status_code == 200
    assert client.get("/metrics", environ_base=OUTSIDE).status_code == 200
    assert client.get(NO_REJECT, environ_base=OUTSIDE).status_code == 404


def test_a_service_role_sign_in_cookie_holds_nothing_of_the_key(secure_app):
    """The service-role key (full rights on the API) never travels back in the cookie."""
    service = hs256(claims_for(None, role="service_role", issuer="supabase", audience=None))
    client = secure_app.test_client()
    signed = sign_in(client, service)
    assert signed.status_code == 303
    assert_holds_nothing_of(cookie_value(signed), service)
    assert client.get("/", environ_base=OUTSIDE).status_code == 200
    # The cookie opens operator pages only; the API still wants the token itself.
    assert client.get("/api/sync/cart_items", environ_base=OUTSIDE).status_code == 401


def _tamper(value: str) -> str:
    """The cookie with one character of its payload changed."""
    index = 2
    flipped = "A" if value[index] != "A" else "B"
    return value[:index] + flipped + value[index + 1:]


@pytest.mark.parametrize("case", ["tampered", "signature_cut", "raw_token", "another_server", "expired", "garbage"])
def test_a_forged_or_stale_cookie_opens_nothing(operator_app, case):
    """Only a cookie this server signed within 12 hours counts; the bare token in the cookie does not."""
    app = operator_app()
    client = app.test_client()
    genuine = cookie_value(sign_in(client, ADMIN_TOKEN))
    with app.app_context():  # the same session, as if signed just over 12 hours ago
        serializer = operators.session_serializer()
        signer = serializer.make_signer(serializer.salt)
        signer.get_timestamp = lambda: int(time.time()) - operators.SESSION_SECONDS - 60
        expired = signer.sign(serializer.dump_payload(serializer.loads(genuine))).decode()
    other = operator_app(FITKART_ADMIN_TOKEN="another-operator-token").test_client()
    cookie = {
        "tampered": lambda: _tamper(genuine),
        "signature_cut": lambda: genuine.rsplit(".", 1)[0],
        "raw_token": lambda: ADMIN_TOKEN,
        "another_server": lambda: cookie_value(sign_in(other, "another-operator-token")),
        "expired": lambda: expired,
        "garbage": lambda: "x" * 300,
    }[case]()
    fresh = app.test_client()
    fresh.set_cookie(operators.COOKIE, cookie)
    assert fresh.get("/", environ_base=OUTSIDE).status_code == 401
    assert fresh.get("/metrics", environ_base=OUTSIDE).status_code == 401
    fresh.set_cookie(operators.COOKIE, genuine)
    assert fresh.get("/", environ_base=OUTSIDE).status_code == 200


def test_the_cookie_is_secure_over_https(operator_app):
    """HTTPS, directly or as a trusted proxy says in X-Forwarded-Proto: the cookie is Secure; not otherwise."""
    direct = operator_app().test_client()
    assert "Secure" in sign_in(direct, ADMIN_TOKEN, base_url="https://localhost").headers["Set-Cookie"]
    proxied = operator_app(FITKART_TRUSTED_PROXIES=["10.0.0.1"]).test_client()
    relayed = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    via_proxy = sign_in(proxied, ADMIN_TOKEN, environ_base={"REMOTE_ADDR": "10.0.0.1"}, headers=relayed)
    assert "Secure" in via_proxy.headers["Set-Cookie"]
    untrusted = sign_in(proxied, ADMIN_TOKEN, headers={"X-Forwarded-Proto": "https"})
    assert "Secure" not in untrusted.headers["Set-Cookie"]


def _http(port: int, method: str, path: str, headers: dict, body: str | None = None) -> http.client.HTTPResponse:
    """One request on a connection of its own (so successive ones may reach different workers)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def test_the_cookie_works_in_every_gunicorn_worker(database_uri, decimal_mode):
    """Behind a local proxy (X-Forwarded-For, nothing trusted): one sign-in holds across workers."""
    server = GunicornServer(database_uri, decimal_mode, workers=3, threads=1,
                            env={"FITKART_ADMIN_TOKEN": ADMIN_TOKEN, "SUPABASE_JWT_SECRET": JWT_SECRET}).start()
    relayed = {"X-Forwarded-For": "203.0.113.9"}
    try:
        assert _http(server.port, "GET", "/", relayed).status == 401
        assert _http(server.port, "GET", "/metrics", relayed).status == 401
        assert _http(server.port, "GET", "/api/sync/cart_items", relayed).status == 401
        form = {**relayed, "Content-Type": "application/x-www-form-urlencoded"}
        signed = _http(server.port, "POST", "/status/sign-in", form, urllib.parse.urlencode({"token": ADMIN_TOKEN}))
        assert signed.status == 303
        cookie = signed.getheader("Set-Cookie").split(";", 1)[0]
        assert ADMIN_TOKEN not in cookie
        statuses = {_http(server.port, "GET", "/", {**relayed, "Cookie": cookie}).status for _ in range(30)}
        assert statuses == {200}
        assert _http(server.port, "GET", "/metrics", {**relayed, "Cookie": cookie}).status == 200
    finally:
        server.stop()
