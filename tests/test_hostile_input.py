"""Hostile input: every payload of the corpus gets the 4xx the docs promise for it, says why, and writes nothing.

Each case is refused for the one reason it is named after: its answer names that reason (the field and message of
a 422, the message of a 400/413/415/404/405), and the same request with only that defect removed (`fixed`) is
accepted. Codes are those
of docs/security.md ("Input and transport", "What any request may cost") and docs/api.md.
"""

import json
import logging
from collections import Counter
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

import pytest

from fitkart_server.web.hardening import redact
from testbed.data.records import cart_item, new_id, order, product, profile, user_role, wishlist_item

COLLECTIONS = ("profiles", "products", "orders", "cart_items", "wishlist_items", "user_roles")
MAKERS = {"profiles": profile, "products": product, "orders": order, "cart_items": cart_item,
          "wishlist_items": wishlist_item, "user_roles": user_role}
JSON = "application/json"
# The cart item every test stores first: the one document the mirror may hold afterwards.
SEEDED_ID = "5eeded00-0000-4000-8000-000000000001"
# Flask answers every malformed JSON body with this text, whatever was wrong with it (see below).
GENERIC_400 = "The browser (or proxy) sent a request that this server could not understand."


class Request(NamedTuple):
    """One HTTP request of the corpus."""

    method: str
    path: str
    data: bytes | None
    content_type: str


class Case(NamedTuple):
    """A hostile request, the answer the docs promise for it, and the same request made harmless."""

    label: str
    request: Request
    code: int
    errors: dict[str, str] | None  # exactly the fields the answer names, each with a fragment of its message
    location: str  # where those fields are: the JSON body or the query string
    says: str | None  # a fragment of the answer's message
    fixed: Request | None  # the request with only the named defect removed: accepted (200)
    kept: bool  # whether the refusal is stored in sync_rejects (refused records and batches)


def encode(body) -> bytes | None:
    """A JSON body as bytes (None: no body)."""
    return None if body is None else json.dumps(body).encode()


def req(method: str, path: str, body=None, *, raw: bytes | None = None, content_type: str = JSON) -> Request:
    """A request with a JSON body, or raw bytes."""
    return Request(method, path, raw if raw is not None else encode(body), content_type)


def case(label: str, hostile: Request, *, code: int, errors: dict[str, str] | None = None, location: str = "json",
         says: str | None = None, fixed: Request | None = None, kept: bool | None = None):
    """One corpus entry as a pytest param; by default a 422 about the body is kept in sync_rejects, nothing else."""
    if kept is None:
        kept = code == 422 and location == "json"
    return pytest.param(Case(label, hostile, code, errors, location, says, fixed, kept), id=label)


def post(path: str, body=None, **options) -> Request:
    """A POST request."""
    return req("POST", path, body, **options)


def nested(depth: int) -> dict:
    """A JSON object nested `depth` levels deep."""
    value: dict = {}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


def raw_with(record: dict, field: str, raw_value: bytes) -> bytes:
    """The record as JSON with `field`'s value written as raw JSON text (text no JSON encoder would write)."""
    placeholder = f'"<{field}>"'.encode()
    return json.dumps({**record, field: f"<{field}>"}).encode().replace(placeholder, raw_value, 1)


def raw_key(record: dict, raw_name: bytes) -> bytes:
    """The record as JSON with one more key, its name written as raw JSON text."""
    return json.dumps(record).encode()[:-1] + b', ' + raw_name + b": 1}"


def upsert_batch(record: dict) -> dict:
    """A batch of one profile upsert."""
    return {"operations": [{"op": "upsert", "collection": "profiles", "record": record}]}


def variants(maker, hostile: dict, harmless: dict | None = None) -> tuple[dict, dict]:
    """One valid record with hostile fields merged in, and the same record with harmless ones instead."""
    base = maker()
    return {**base, **hostile}, {**base, **(harmless or {})}


# A valid record of each table carrying the same hostile fields, and that record alone.
WHERE = {c: variants(MAKERS[c], {"$where": "sleep(100)"}) for c in COLLECTIONS}
KEYS = {
    "nested-$gt": variants(profile, {"body_measurements": {"$gt": ""}}, {"body_measurements": {"gt": ""}}),
    "nested-$set-in-items": variants(order, {"items": [{"$set": {"price": 0}}]}, {"items": [{"set": {"price": 0}}]}),
    "dotted-key": variants(profile, {"body_measurements": {"a.b": 1}}, {"body_measurements": {"a_b": 1}}),
    "dotted-top-key": variants(cart_item, {"quantity.x": 1}, {"quantity_x": 1}),
    "nul-key": variants(profile, {"evil\u0000": 1}, {"evil": 1}),
    "deep-$ne": variants(profile, {"body_measurements": nested(10) | {"x": {"$ne": 1}}},
                         {"body_measurements": nested(10) | {"x": {"ne": 1}}}),
    "newline-column": variants(profile, {"a\nb": 1}, {"a_b": 1}),
    "quoted-column": variants(profile, {'a"b': 1}, {"a_b": 1}),
    "backslash-column": variants(cart_item, {"a\\b": 1}, {"a_b": 1}),
    "space-column": variants(cart_item, {"drop table": 1}, {"drop_table": 1}),
    "_id": variants(cart_item, {"_id": "000000000000000000000000"}),
    "_fitkart": variants(cart_item, {"_fitkart": {"version": 999}}),
    "operator-as-id": variants(cart_item, {"id": {"$gt": ""}}),
    "operator-as-user": variants(profile, {"user_id": {"$ne": None}}),
    "operator-timestamp": variants(order, {"updated_at": {"$currentDate": True}}),
}
USER = new_id()
VALUES = {
    "array-as-user": variants(profile, {"user_id": [USER]}, {"user_id": USER}),
    "array-10001-items": variants(profile, {"body_measurements": list(range(10_001))},
                                  {"body_measurements": list(range(10_000))}),
    "object-10001-keys": variants(profile, {"body_measurements": {f"k{i}": i for i in range(10_001)}},
                                  {"body_measurements": {f"k{i}": i for i in range(10_000)}}),
    "too-many-styles": variants(profile, {"style_preferences": ["x"] * 101}, {"style_preferences": ["x"] * 100}),
    "too-many-items": variants(order, {"items": [{"q": 1}] * 1001}, {"items": [{"q": 1}] * 1000}),
    "long-unknown-string": variants(cart_item, {"note": "x" * 100_001}, {"note": "x" * 100_000}),
    "long-name": variants(product, {"name": "n" * 501}, {"name": "n" * 500}),
    "long-size": variants(cart_item, {"size": "s" * 51}, {"size": "s" * 50}),
    "int-past-64-bits": variants(profile, {"body_measurements": {"x": 2**64}}, {"body_measurements": {"x": 2**63 - 1}}),
    "quantity-past-int4": variants(cart_item, {"quantity": 2**31}, {"quantity": 2**31 - 1}),
    "negative-price": variants(product, {"price": -0.01}, {"price": 0}),
    "bool-as-quantity": variants(cart_item, {"quantity": True}, {"quantity": 1}),
    "string-as-quantity": variants(cart_item, {"quantity": "9; drop"}, {"quantity": 9}),
    "role-admin": variants(user_role, {"role": "admin"}, {"role": "seller"}),
}
NOT_A_KEY = "Key not allowed: it starts with '$' or contains '.' or NUL."
NOT_A_COLUMN = "Not a column name"
# Ten columns of 100,000 characters are a body just under 1 MiB; eleven are over it.
WIDE = {f"note{i}": "x" * 100_000 for i in range(11)}
WIDE_FITS = {f"note{i}": "x" * 100_000 for i in range(10)}


def key_case(label: str, path: str, field: str, message: str = NOT_A_KEY):
    """A record refused for one key, the field the answer must name."""
    hostile, harmless = KEYS[label]
    return case(label, post(path, hostile), code=422, errors={field: message}, fixed=post(path, harmless))


def value_case(label: str, path: str, field: str, message: str):
    """A record refused for one value, the field the answer must name."""
    hostile, harmless = VALUES[label]
    return case(label, post(path, hostile), code=422, errors={field: message}, fixed=post(path, harmless))


def malformed(label: str, path: str, raw: bytes, fixed: Request, says: str):
    """A body that is not JSON the server reads: 400 (`says`: the reason its answer should give)."""
    return case(label, post(path, raw=raw), code=400, says=says, fixed=fixed)


def not_json(label: str, method: str, path: str, data: bytes, content_type: str, fixed: Request):
    """A body of another media type: 415."""
    return case(label, req(method, path, raw=data, content_type=content_type), code=415, says="application/json",
                fixed=fixed)


# Valid records the raw and size cases below are built on (their `fixed` requests send them as they are).
DEEP, BATCH_DEEP, TEXT, BIG, DUPLICATE = profile(), profile(), profile(), profile(), profile()
NUMBERS, TOTALS, CART, ROUTED = product(), order(), cart_item(), cart_item()
DELETED_ID = new_id()
# One valid operation: a batch of 1,000 of them is the largest allowed (one create, then 999 times unchanged).
UPSERT = upsert_batch(profile())["operations"][0]

CORPUS = [
    # Operators and unsafe keys, at the top of a record and anywhere inside it (422, naming the key).
    *[case(f"$where-{c}", post(f"/api/sync/{c}", WHERE[c][0]), code=422, errors={"$where": NOT_A_KEY},
           fixed=post(f"/api/sync/{c}", WHERE[c][1])) for c in COLLECTIONS],
    key_case("nested-$gt", "/api/sync/profiles", "body_measurements.$gt"),
    key_case("nested-$set-in-items", "/api/sync/orders", "items[0].$set"),
    key_case("dotted-key", "/api/sync/profiles", "body_measurements.a.b"),
    key_case("dotted-top-key", "/api/sync/cart_items", "quantity.x"),
    key_case("nul-key", "/api/sync/profiles", "evil\u0000"),
    key_case("deep-$ne", "/api/sync/profiles", "body_measurements.x.$ne"),
    key_case("newline-column", "/api/sync/profiles", "a\nb", NOT_A_COLUMN),
    key_case("quoted-column", "/api/sync/profiles", 'a"b', NOT_A_COLUMN),
    key_case("backslash-column", "/api/sync/cart_items", "a\\b", NOT_A_COLUMN),
    key_case("space-column", "/api/sync/cart_items", "drop table", NOT_A_COLUMN),
    key_case("_id", "/api/sync/cart_items", "_id", "Key reserved by the mirror."),
    key_case("_fitkart", "/api/sync/cart_items", "_fitkart", "Key reserved by the mirror."),
    key_case("operator-as-id", "/api/sync/cart_items", "id.$gt"),
    key_case("operator-as-user", "/api/sync/profiles", "user_id.$ne"),
    key_case("operator-timestamp", "/api/sync/orders", "updated_at.$currentDate"),
    value_case("array-as-user", "/api/sync/profiles", "user_id", "Not a valid UUID."),
    # The last of duplicate keys is the one read: the operator is what is checked, and refused.
    case("duplicate-keys-operator-last",
         post("/api/sync/profiles", raw=raw_with(DUPLICATE, "user_id",
                                                 b'"%s", "user_id": {"$ne": null}' % DUPLICATE["user_id"].encode())),
         code=422, errors={"user_id.$ne": NOT_A_KEY}, fixed=post("/api/sync/profiles", DUPLICATE)),
    # Nesting over 32 levels, counted from the body's top (400); a batch body may nest 32 more, its records
    # still 32 at most each (one deeper is its own operation's 400: see test_batch_depth_and_health_cors.py).
    malformed("depth-33", "/api/sync/profiles", encode(DEEP | {"body_measurements": nested(32)}),
              post("/api/sync/profiles", DEEP | {"body_measurements": nested(31)}), "nested deeper than 32"),
    malformed("depth-5000", "/api/sync/profiles",
              raw_with(DEEP, "body_measurements", b"[" * 5000 + b"]" * 5000),
              post("/api/sync/profiles", DEEP), "nested deeper than 32"),
    # (Its fixed record is 29 deep: the answer echoes it 3 levels down, and the test client reads answers at 32.)
    malformed("depth-65-batch", "/api/sync/batch", encode(upsert_batch(BATCH_DEEP | {"body_measurements": nested(61)})),
              post("/api/sync/batch", upsert_batch(BATCH_DEEP | {"body_measurements": nested(28)})),
              "nested deeper than 64"),
    # Sizes past the documented limits (422 naming the field; 413 for the body and the batch).
    value_case("array-10001-items", "/api/sync/profiles", "body_measurements", "More than 10000 items."),
    value_case("object-10001-keys", "/api/sync/profiles", "body_measurements", "More than 10000 keys."),
    value_case("too-many-styles", "/api/sync/profiles", "style_preferences", "maximum length 100."),
    value_case("too-many-items", "/api/sync/orders", "items", "maximum length 1000."),
    value_case("long-unknown-string", "/api/sync/cart_items", "note", "Longer than 100000 characters."),
    value_case("long-name", "/api/sync/products", "name", "maximum length 500."),
    value_case("long-size", "/api/sync/cart_items", "size", "maximum length 50."),
    case("over-1-MiB", post("/api/sync/profiles", BIG | WIDE), code=413, says="capacity limit",
         fixed=post("/api/sync/profiles", BIG | WIDE_FITS)),
    case("batch-over-limit", post("/api/sync/batch", {"operations": [UPSERT] * 1001}), code=413,
         says="At most 1000 operations per batch", kept=True,
         fixed=post("/api/sync/batch", {"operations": [UPSERT] * 1000})),
    # Text that is not UTF-8 (400), or Unicode no database can hold (422).
    malformed("malformed-utf8", "/api/sync/profiles", raw_with(TEXT, "full_name", b'"\xff\xfe\xfd"'),
              post("/api/sync/profiles", TEXT | {"full_name": "\u00ff\u00fe\u00fd"}), "utf-8"),
    malformed("overlong-utf8", "/api/sync/profiles", raw_with(TEXT, "full_name", b'"\xc0\xaf"'),
              post("/api/sync/profiles", TEXT | {"full_name": "/"}), "utf-8"),
    # JSON in another encoding than UTF-8 (the standard library alone would read these).
    malformed("utf16-body", "/api/sync/profiles", json.dumps(TEXT).encode("utf-16"), post("/api/sync/profiles", TEXT),
              "utf-8"),
    malformed("utf32-body", "/api/sync/profiles", json.dumps(TEXT).encode("utf-32"), post("/api/sync/profiles", TEXT),
              "utf-8"),
    malformed("utf8-bom-body", "/api/sync/profiles", b"\xef\xbb\xbf" + json.dumps(TEXT).encode(),
              post("/api/sync/profiles", TEXT), "byte order mark"),
    case("lone-surrogate-value", post("/api/sync/profiles", raw=raw_with(TEXT, "full_name", b'"\\ud800"')),
         code=422, errors={"full_name": "Not valid Unicode."},
         fixed=post("/api/sync/profiles", raw=raw_with(TEXT, "full_name", b'"\\ud800\\udc00"'))),  # a pair
    case("lone-surrogate-key", post("/api/sync/profiles", raw=raw_key(TEXT, b'"\\udfff"')),
         code=422, errors={"\udfff": "Key is not valid Unicode."},
         fixed=post("/api/sync/profiles", raw=raw_key(TEXT, b'"x"'))),
    # Numbers JSON has not, or past a double (400); past what the column holds (422).
    malformed("NaN", "/api/sync/products", raw_with(NUMBERS, "price", b"NaN"),
              post("/api/sync/products", NUMBERS), "NaN"),
    malformed("Infinity", "/api/sync/orders", raw_with(TOTALS, "total_amount", b"Infinity"),
              post("/api/sync/orders", TOTALS), "Infinity"),
    malformed("-Infinity", "/api/sync/products", raw_with(NUMBERS, "price", b"-Infinity"),
              post("/api/sync/products", NUMBERS), "Infinity"),
    malformed("1e400", "/api/sync/profiles", raw_with(DEEP, "body_measurements", b'{"x": 1e400}'),
              post("/api/sync/profiles", DEEP | {"body_measurements": {"x": 1.7e308}}), "out of range"),
    value_case("int-past-64-bits", "/api/sync/profiles", "body_measurements.x", "Integer too large"),
    value_case("quantity-past-int4", "/api/sync/cart_items", "quantity", "less than or equal to 2147483647"),
    value_case("negative-price", "/api/sync/products", "price", "greater than or equal to 0"),
    value_case("bool-as-quantity", "/api/sync/cart_items", "quantity", "Not a valid integer."),
    value_case("string-as-quantity", "/api/sync/cart_items", "quantity", "Not a valid integer."),
    value_case("role-admin", "/api/sync/user_roles", "role", "Must be one of: customer, seller."),
    # Bodies that are not JSON (415), whatever they hold.
    not_json("text-plain", "POST", "/api/sync/cart_items", encode(CART), "text/plain",
             post("/api/sync/cart_items", CART)),
    not_json("form-encoded", "POST", "/api/sync/cart_items", b"id=1&quantity=2", "application/x-www-form-urlencoded",
             post("/api/sync/cart_items", CART)),
    not_json("multipart", "POST", "/api/sync/cart_items", b"--x\r\n\r\n--x--", "multipart/form-data; boundary=x",
             post("/api/sync/cart_items", CART)),
    not_json("no-content-type", "POST", "/api/sync/cart_items", encode(CART), "",
             post("/api/sync/cart_items", CART)),
    not_json("xml", "POST", "/api/sync/cart", b"<cart><id>1</id></cart>", "application/xml",
             post("/api/sync/cart", CART)),
    not_json("delete-plain-text", "DELETE", "/api/sync/cart_items", encode({"id": DELETED_ID}), "text/plain",
             req("DELETE", "/api/sync/cart_items", {"id": DELETED_ID})),
    # JSON that is not a record (422) or not JSON at all (400).
    *[case(label, post("/api/sync/cart_items", raw=raw), code=422, errors={"_schema": "Invalid input type."},
           fixed=post("/api/sync/cart_items", CART))
      for label, raw in [("array-body", encode([CART])), ("string-body", b'"cart"'),
                         ("number-body", b"42"), ("null-body", b"null")]],
    malformed("empty-body", "/api/sync/cart_items", b"", post("/api/sync/cart_items", CART),
              "Expecting value"),
    malformed("truncated-json", "/api/sync/cart_items", encode(CART)[:-20],
              post("/api/sync/cart_items", CART), "Unterminated string"),
    # A batch that is not one (422), over the limit above.
    case("batch-not-a-list", post("/api/sync/batch", {"operations": "all"}), code=422,
         errors={"operations": "Must be a list of operations."}, fixed=post("/api/sync/batch", {"operations": []})),
    case("batch-missing", post("/api/sync/batch", {"$where": "1"}), code=422,
         errors={"operations": "Must be a list of operations."}, fixed=post("/api/sync/batch", {"operations": []})),
    # Deletes that name nothing, or name it as a query (422): never "delete everything".
    case("delete-operator-ref", req("DELETE", "/api/sync/cart_items/%7B%22$ne%22:null%7D"), code=422,
         errors={"id": "Not a valid UUID."}, fixed=req("DELETE", f"/api/sync/cart_items/{DELETED_ID}")),
    case("delete-regex-ref", req("DELETE", "/api/sync/cart/.*"), code=422, errors={"id": "Not a valid UUID."},
         fixed=req("DELETE", f"/api/sync/cart/{DELETED_ID}")),
    case("delete-traversal-ref", req("DELETE", "/api/sync/cart/..%2F..%2Fetc"), code=404,
         says="requested URL was not found", fixed=req("DELETE", f"/api/sync/cart/{DELETED_ID}")),
    case("delete-bracket-filter", req("DELETE", "/api/sync/cart_items?user_id[$ne]=1"), code=422,
         errors={"id": "Missing data for required field."}, says="Name the record to delete",
         fixed=req("DELETE", f"/api/sync/cart_items?user_id={USER}")),
    case("delete-json-filter", req("DELETE", '/api/sync/cart_items?user_id={"$ne":null}'), code=422,
         errors={"user_id": "Not a valid UUID."}, location="query",
         fixed=req("DELETE", f"/api/sync/cart_items?user_id={USER}")),
    case("delete-everything-body", req("DELETE", "/api/sync/cart_items", {"$where": "true"}), code=422,
         errors={"id": "Missing data for required field."}, says="Name the record to delete",
         fixed=req("DELETE", "/api/sync/cart_items", {"id": DELETED_ID})),
    case("delete-empty-body", req("DELETE", "/api/sync/wishlist_items", {}), code=422,
         errors={"user_id": "Missing data for required field.", "product_id": "Missing data for required field."},
         says="Name the record to delete",
         fixed=req("DELETE", "/api/sync/wishlist_items", {"user_id": USER, "product_id": DELETED_ID})),
    case("delete-orders-of-user", req("DELETE", f"/api/sync/orders?user_id={USER}"), code=422,
         errors={"user_id": "Unknown field."}, location="query", says="orders cannot be cleared by user_id",
         fixed=req("DELETE", f"/api/sync/wishlist_items?user_id={USER}")),
    # Reads whose query strings are not plain values (422), or name nothing stored (404).
    case("list-json-filter", req("GET", '/api/sync/cart_items?user_id={"$ne":null}'), code=422,
         errors={"user_id": "Not a valid UUID."}, location="query",
         fixed=req("GET", f"/api/sync/cart_items?user_id={USER}")),
    case("list-huge-limit", req("GET", "/api/sync/cart_items?limit=100000000"), code=422,
         errors={"limit": "less than or equal to 500"}, location="query",
         fixed=req("GET", "/api/sync/cart_items?limit=500")),
    case("list-operator-cursor", req("GET", '/api/sync/cart_items?cursor={"$gt":""}'), code=422,
         errors={"cursor": "Not a cursor this server returned."}, location="query",
         fixed=req("GET", f"/api/sync/cart_items?cursor={SEEDED_ID}")),
    case("get-long-ref", req("GET", "/api/sync/cart_items/" + "a" * 10_000), code=404,
         says="No cart_items record with id aaaa", fixed=req("GET", f"/api/sync/cart_items/{SEEDED_ID}")),
    # Routes and methods that do not exist (404, 405).
    case("unknown-collection", post("/api/sync/users", {"id": new_id()}), code=404,
         says="requested URL was not found", fixed=post("/api/sync/user_roles", user_role())),
    case("method-put", req("PUT", "/api/sync/cart_items", ROUTED), code=405, says="method is not allowed",
         fixed=post("/api/sync/cart_items", ROUTED)),
    case("method-patch", req("PATCH", f"/api/sync/cart/{ROUTED['id']}", {"quantity": 2}), code=405,
         says="method is not allowed", fixed=post("/api/sync/cart", ROUTED | {"quantity": 2})),
]


def send(client, request: Request):
    """Send one corpus request."""
    headers = {"Content-Type": request.content_type} if request.content_type else {}
    return client.open(request.path, method=request.method, data=request.data, headers=headers)


def assert_refused_as_named(hostile: Case, response) -> None:
    """The answer has the case's code, the one error shape, and names the case's reason."""
    text = response.get_data(as_text=True)[:500]
    assert response.status_code == hostile.code, text
    assert response.is_json and response.json["code"] == hostile.code, text
    answer = response.json
    if hostile.errors is not None:
        named = answer["errors"][hostile.location]
        assert set(named) == set(hostile.errors), text  # that reason and no other
        for field, fragment in hostile.errors.items():
            assert any(fragment in message for message in named[field]), (field, named[field])
    # A 400 answer does not say why (see test_malformed_json_answer_says_why); its reason is checked with debug on.
    if hostile.says is not None and hostile.code != 400:
        assert hostile.says in answer["message"], text


def route(request: Request) -> str:
    """The path of a request as a reject records it: decoded, without its query string."""
    return unquote(urlsplit(request.path).path)


def rejects(mongo) -> Counter:
    """The stored rejects, by route.

    Not by status: a batch over FITKART_MAX_BATCH is answered 413 but kept with status 422.
    """
    return Counter(reject["route"] for reject in mongo.sync_rejects.find({}, {"route": 1}))


def assert_mirror_untouched(mongo) -> None:
    """The mirror holds the seeded cart item alone, and no tombstone."""
    assert list(mongo.cart_items.find({}, {"id": 1, "_id": 0})) == [{"id": SEEDED_ID}]
    for collection in COLLECTIONS:
        if collection != "cart_items":
            assert mongo[collection].count_documents({}) == 0, collection
    assert mongo.sync_tombstones.count_documents({}) == 0


@pytest.mark.parametrize("hostile", CORPUS)
def test_hostile_request_gets_its_documented_refusal_and_writes_nothing(client, mongo, hostile):
    """The promised code and reason, no mirrored collection changes; without the defect, the request passes."""
    assert client.post("/api/sync/cart_items", json=cart_item(id=SEEDED_ID)).status_code == 200
    assert_refused_as_named(hostile, send(client, hostile.request))
    assert_mirror_untouched(mongo)
    assert rejects(mongo) == Counter([route(hostile.request)] if hostile.kept else [])
    if hostile.fixed is not None:
        accepted = send(client, hostile.fixed)
        assert accepted.status_code == 200, accepted.get_data(as_text=True)[:500]
        if hostile.fixed.path.endswith("/batch"):  # each operation applied, none refused on its own
            assert all("error" not in result for result in accepted.json["results"]), accepted.json["results"][:3]


MALFORMED = [entry for entry in CORPUS if entry.values[0].code == 400]


@pytest.mark.parametrize("hostile", MALFORMED)
def test_malformed_json_answer_says_why(make_app, hostile):
    """A 400 names what was wrong with the body (Flask alone would answer only "bad request")."""
    response = send(make_app(FITKART_MONGODB_URI="embedded").test_client(), hostile.request)
    assert response.status_code == 400
    message = response.json["message"]
    assert message != GENERIC_400 and hostile.says.lower() in message.lower(), message


def test_the_corpus_in_one_session_is_answered_case_by_case_and_kept(make_app, database_uri, decimal_mode, mongo):
    """Sent one after another to one server: each case gets its own code, and each refused record is kept once."""
    app = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode,
                   FITKART_REJECTS_RATE="100000 per minute")
    client = app.test_client()
    assert client.post("/api/sync/cart_items", json=cart_item(id=SEEDED_ID)).status_code == 200
    cases = [entry.values[0] for entry in CORPUS]
    answers = {hostile.label: send(client, hostile.request).status_code for hostile in cases}
    assert answers == {hostile.label: hostile.code for hostile in cases}
    assert_mirror_untouched(mongo)
    assert rejects(mongo) == Counter(route(hostile.request) for hostile in cases if hostile.kept)


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


def test_tokens_never_reach_the_logs(make_app, caplog):
    """Bearer tokens and JWT-shaped strings are masked in every log record, once an app is built.

    The mask is process-wide (a log record factory), so another test's app would leave it on: the test starts from
    a process without it, builds its own app, and puts back what it found.
    """
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    found = logging.getLogRecordFactory()
    logging.setLogRecordFactory(logging.LogRecord)
    try:
        app = make_app(FITKART_MONGODB_URI="embedded")
        with caplog.at_level(logging.INFO):
            app.logger.warning("header was %s", f"Authorization: Bearer {token}")
            logging.getLogger("fitkart_server.test").info("header was %s", f"Authorization: Bearer {token}")
            logging.getLogger("gunicorn.access").info("token=%s", token)
    finally:
        logging.setLogRecordFactory(found)
    logged = [record.getMessage() for record in caplog.records if record.pathname == __file__]
    assert logged == ["header was Authorization: Bearer [redacted]"] * 2 + ["token=[redacted]"]
    assert token not in caplog.text
    assert redact("Bearer abc.def-ghi") == "Bearer [redacted]"
