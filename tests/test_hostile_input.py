"""Hostile input: every payload of the corpus is a 4xx JSON error, writes nothing, and never a 5xx."""

import json
import logging

import pytest

from fitkart_server.web.hardening import redact
from testbed.data.records import cart_item, new_id, order, product, profile

COLLECTIONS = ("profiles", "products", "orders", "cart_items", "wishlist_items", "user_roles")
JSON = "application/json"


def nested(depth: int) -> dict:
    """A JSON object nested `depth` levels deep."""
    value: dict = {}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


def case(label: str, method: str, path: str, body=None, raw: bytes | None = None, content_type: str = JSON):
    """One hostile request: a JSON body, or raw bytes."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    return pytest.param(method, path, data, content_type, id=label)


CORPUS = [
    *[case(f"$where-{c}", "post", f"/api/sync/{c}", {"$where": "sleep(100)", "user_id": new_id()})
      for c in COLLECTIONS],
    case("nested-$gt", "post", "/api/sync/profiles", profile(body_measurements={"$gt": ""})),
    case("nested-$set-in-items", "post", "/api/sync/orders", order(items=[{"$set": {"price": 0}}])),
    case("dotted-key", "post", "/api/sync/profiles", profile(body_measurements={"a.b": 1})),
    case("dotted-top-key", "post", "/api/sync/cart_items", cart_item(**{"quantity.x": 1})),
    case("nul-key", "post", "/api/sync/profiles", profile(**{"evil\u0000": 1})),
    case("deep-$ne", "post", "/api/sync/profiles", profile(body_measurements=nested(10) | {"x": {"$ne": 1}})),
    case("newline-column", "post", "/api/sync/profiles", profile(**{"a\nb": 1})),
    case("quoted-column", "post", "/api/sync/profiles", profile(**{'a"b': 1})),
    case("backslash-column", "post", "/api/sync/cart_items", cart_item(**{"a\\b": 1})),
    case("space-column", "post", "/api/sync/cart_items", cart_item(**{"drop table": 1})),
    case("_id", "post", "/api/sync/cart_items", cart_item(_id="000000000000000000000000")),
    case("_fitkart", "post", "/api/sync/cart_items", cart_item(_fitkart={"version": 999})),
    case("operator-as-id", "post", "/api/sync/cart_items", cart_item(id={"$gt": ""})),
    case("operator-as-user", "post", "/api/sync/profiles", {"user_id": {"$ne": None}}),
    case("array-as-user", "post", "/api/sync/profiles", {"user_id": [new_id()]}),
    case("operator-timestamp", "post", "/api/sync/orders", order(updated_at={"$currentDate": True})),
    case("depth-33", "post", "/api/sync/profiles", profile(body_measurements=nested(33))),
    case("depth-5000", "post", "/api/sync/profiles", raw=b'{"body_measurements":' + b"[" * 5000 + b"]" * 5000 + b"}"),
    case("depth-33-batch", "post", "/api/sync/batch", {"operations": [nested(31)]}),
    case("array-10001-items", "post", "/api/sync/profiles", profile(body_measurements=list(range(10_001)))),
    case("object-10001-keys", "post", "/api/sync/profiles",
         profile(body_measurements={f"k{i}": i for i in range(10_001)})),
    case("too-many-styles", "post", "/api/sync/profiles", profile(style_preferences=["x"] * 101)),
    case("too-many-items", "post", "/api/sync/orders", order(items=[{"q": 1}] * 1001)),
    case("long-unknown-string", "post", "/api/sync/cart_items", cart_item(note="x" * 100_001)),
    case("long-name", "post", "/api/sync/products", product(name="n" * 501)),
    case("long-size", "post", "/api/sync/cart_items", cart_item(size="s" * 51)),
    case("malformed-utf8", "post", "/api/sync/profiles", raw=b'{"user_id": "\xff\xfe\xfd"}'),
    case("overlong-utf8", "post", "/api/sync/profiles", raw=b'{"full_name": "\xc0\xaf"}'),
    case("lone-surrogate-value", "post", "/api/sync/profiles", raw=b'{"user_id": "%s", "full_name": "\\ud800"}'
         % new_id().encode()),
    case("lone-surrogate-key", "post", "/api/sync/profiles", raw=b'{"user_id": "%s", "\\udfff": 1}'
         % new_id().encode()),
    case("NaN", "post", "/api/sync/products", raw=json.dumps(product()).replace("1499.5", "NaN").encode()),
    case("Infinity", "post", "/api/sync/orders", raw=json.dumps(order()).replace("2998.0", "Infinity").encode()),
    case("-Infinity", "post", "/api/sync/products", raw=b'{"price": -Infinity}'),
    case("1e400", "post", "/api/sync/products", raw=json.dumps(product()).replace("1499.5", "1e400").encode()),
    case("int-past-64-bits", "post", "/api/sync/profiles", profile(body_measurements={"x": 2**64})),
    case("quantity-past-int4", "post", "/api/sync/cart_items", cart_item(quantity=2**40)),
    case("negative-price", "post", "/api/sync/products", product(price=-0.01)),
    case("bool-as-quantity", "post", "/api/sync/cart_items", cart_item(quantity=True)),
    case("string-as-quantity", "post", "/api/sync/cart_items", cart_item(quantity="9; drop")),
    case("role-admin", "post", "/api/sync/user_roles", {"user_id": new_id(), "role": "admin"}),
    case("text-plain", "post", "/api/sync/cart_items", json.dumps(cart_item()).encode(), "text/plain"),
    case("form-encoded", "post", "/api/sync/cart_items", b"id=1&quantity=2", "application/x-www-form-urlencoded"),
    case("multipart", "post", "/api/sync/cart_items", b"--x\r\n\r\n--x--", "multipart/form-data; boundary=x"),
    case("no-content-type", "post", "/api/sync/cart_items", json.dumps(cart_item()).encode(), ""),
    case("xml", "post", "/api/sync/cart", b"<cart><id>1</id></cart>", "application/xml"),
    case("array-body", "post", "/api/sync/cart_items", [cart_item()]),
    case("string-body", "post", "/api/sync/cart_items", "cart"),
    case("number-body", "post", "/api/sync/cart_items", 42),
    case("null-body", "post", "/api/sync/cart_items", raw=b"null"),
    case("empty-body", "post", "/api/sync/cart_items", raw=b""),
    case("truncated-json", "post", "/api/sync/cart_items", raw=b'{"id": '),
    case("duplicate-keys", "post", "/api/sync/profiles", raw=b'{"user_id": "a", "user_id": "b"}'),
    case("over-1-MiB", "post", "/api/sync/profiles", profile(full_name="x" * (1024 * 1024))),
    case("batch-not-a-list", "post", "/api/sync/batch", {"operations": "all"}),
    case("batch-missing", "post", "/api/sync/batch", {"$where": "1"}),
    case("batch-over-limit", "post", "/api/sync/batch", {"operations": [{}] * 1001}),
    case("delete-operator-ref", "delete", "/api/sync/cart_items/%7B%22$ne%22:null%7D"),
    case("delete-regex-ref", "delete", "/api/sync/cart/.*"),
    case("delete-traversal-ref", "delete", "/api/sync/cart/..%2F..%2Fetc"),
    case("delete-bracket-filter", "delete", "/api/sync/cart_items?user_id[$ne]=1"),
    case("delete-json-filter", "delete", '/api/sync/cart_items?user_id={"$ne":null}'),
    case("delete-everything-body", "delete", "/api/sync/cart_items", {"$where": "true"}),
    case("delete-empty-body", "delete", "/api/sync/wishlist_items", {}),
    case("delete-orders-of-user", "delete", f"/api/sync/orders?user_id={new_id()}"),
    case("delete-plain-text", "delete", "/api/sync/cart_items", b"id=1", "text/plain"),
    case("list-json-filter", "get", '/api/sync/cart_items?user_id={"$ne":null}'),
    case("list-huge-limit", "get", "/api/sync/cart_items?limit=100000000"),
    case("list-operator-cursor", "get", "/api/sync/cart_items?cursor[$gt]=0&cursor=zz"),
    case("get-long-ref", "get", "/api/sync/cart_items/" + "a" * 10_000),
    case("unknown-collection", "post", "/api/sync/users", {"id": new_id()}),
    case("method-put", "put", "/api/sync/cart_items", cart_item()),
    case("method-patch", "patch", "/api/sync/cart/" + new_id(), {"quantity": 2}),
]


@pytest.mark.parametrize(("method", "path", "data", "content_type"), CORPUS)
def test_hostile_request_is_a_4xx_and_writes_nothing(client, mongo, method, path, data, content_type):
    """The request is refused with a JSON 4xx and no mirrored collection changes."""
    seeded = cart_item()
    client.post("/api/sync/cart_items", json=seeded)
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.open(path, method=method.upper(), data=data, headers=headers)
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)[:300]
    assert response.is_json and response.json["code"] == response.status_code
    assert list(mongo.cart_items.find({}, {"id": 1, "_id": 0})) == [{"id": seeded["id"]}]
    for collection in COLLECTIONS:
        if collection != "cart_items":
            assert mongo[collection].count_documents({}) == 0, collection
    assert mongo.sync_tombstones.count_documents({}) == 0


def test_corpus_is_large_enough():
    """The issue asks for at least fifty hostile payloads."""
    assert len(CORPUS) >= 50


def test_query_string_filters_stay_plain_strings(client):
    """`user_id[$ne]` is not read as an operator: it is no filter the server knows."""
    mine = cart_item()
    client.post("/api/sync/cart_items", json=mine)
    response = client.get(f"/api/sync/cart_items?user_id={mine['user_id']}&user_id[$ne]=x")
    assert [item["id"] for item in response.json["items"]] == [mine["id"]]


def test_security_headers_on_every_response(client):
    """nosniff everywhere, and API answers are not cached."""
    for path in ("/api/sync/cart_items", "/healthz", "/api/sync/nowhere", "/api/openapi.json"):
        response = client.get(path)
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "no-store"


def test_cors_never_allows_credentials(make_app):
    """Even with FITKART_CORS_ORIGINS=*, no credentialed cross-origin requests."""
    app = make_app(FITKART_MONGODB_URI="embedded", FITKART_CORS_ORIGINS=["*"])
    response = app.test_client().options("/api/sync/cart", headers={
        "Origin": "http://anywhere.example", "Access-Control-Request-Method": "POST"})
    assert response.headers.get("Access-Control-Allow-Origin") in ("*", "http://anywhere.example")
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_tokens_never_reach_the_logs(caplog):
    """Bearer tokens and JWT-shaped strings are masked in every log record."""
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    with caplog.at_level(logging.INFO):
        logging.getLogger("fitkart_server.test").info("header was %s", f"Authorization: Bearer {token}")
        logging.getLogger("gunicorn.access").info("token=%s", token)
    assert token not in caplog.text and "[redacted]" in caplog.text
    assert redact("Bearer abc.def-ghi") == "Bearer [redacted]"
