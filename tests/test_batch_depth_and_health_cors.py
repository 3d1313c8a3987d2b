"""A record's nesting limit is the same alone or in a batch; health checks answer browsers on allowed origins.

A JSON body may nest MAX_JSON_DEPTH (32) levels. A batch wraps each record in three levels of its own
(`{"operations": [{"record": ...}]}`), so its body may nest BATCH_JSON_DEPTH_ALLOWANCE more, and each record in it
is held to MAX_JSON_DEPTH on its own: one too deep is that operation's error (400), the others are applied. The
single-record routes keep the 32 limit. `/healthz` and `/readyz` send CORS headers for FITKART_CORS_ORIGINS, as
`/api/*` does.
"""

import json

import pytest

from fitkart_server.web.hardening import (
    BATCH_ENVELOPE_LEVELS,
    BATCH_JSON_DEPTH_ALLOWANCE,
    MAX_JSON_DEPTH,
    json_depth,
)
from testbed.data.records import cart_item, order, product, profile, stamp, wishlist_item

ALLOWED_ORIGIN = "http://localhost:8080"  # in the default FITKART_CORS_ORIGINS


def nested(depth: int) -> dict:
    """A JSON object nested `depth` levels deep."""
    value: dict = {}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


def deep_order(depth: int, **fields) -> dict:
    """A valid order nested exactly `depth` levels deep (the record, its items list, then one nested item)."""
    record = order(items=[nested(depth - 2)], **fields)
    assert json_depth(record) == depth
    return record


def answer(response) -> dict:
    """A response's JSON, read with the standard library: echoing a 32-deep record nests it deeper than 32."""
    return json.loads(response.get_data())


def upsert(collection: str, record: dict) -> dict:
    """One upsert operation of a batch."""
    return {"op": "upsert", "collection": collection, "record": record}


def four_valid_operations() -> list[dict]:
    """Four upserts of valid, shallow records of four other tables."""
    return [upsert("cart_items", cart_item()), upsert("products", product()),
            upsert("profiles", profile()), upsert("wishlist_items", wishlist_item())]


def assert_stored(mongo, operations: list[dict]) -> None:
    """Every operation's record is in the mirror."""
    for operation in operations:
        assert mongo[operation["collection"]].count_documents({"id": operation["record"]["id"]}) == 1, operation


def test_a_record_accepted_alone_is_accepted_in_a_batch(client, mongo):
    """The deepest record a single route accepts (32 levels) is applied in a batch with four other operations."""
    alone = deep_order(MAX_JSON_DEPTH)
    response = client.post("/api/sync/orders", json=alone)
    assert response.status_code == 200 and answer(response)["result"] == "created", answer(response)
    changed = {**alone, "status": "shipped", "updated_at": stamp(30)}
    others = four_valid_operations()
    operations = [upsert("orders", changed), *others]
    assert json_depth({"operations": operations}) == MAX_JSON_DEPTH + BATCH_ENVELOPE_LEVELS
    response = client.post("/api/sync/batch", json={"operations": operations})
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert [result.get("result") for result in answer(response)["results"]] == ["updated", *["created"] * 4]
    assert mongo.orders.find_one({"id": alone["id"]})["status"] == "shipped"
    assert_stored(mongo, others)
    assert mongo.sync_rejects.count_documents({}) == 0


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1,
                                   MAX_JSON_DEPTH + BATCH_JSON_DEPTH_ALLOWANCE - BATCH_ENVELOPE_LEVELS])
def test_a_record_too_deep_is_refused_in_its_own_result(client, runner, mongo, depth):
    """A record past 32 levels in a batch is that operation's 400 (a reject, not replayable); the others apply."""
    before, after = four_valid_operations()[:2], four_valid_operations()[2:]
    too_deep = deep_order(depth)
    body = {"operations": [*before, upsert("orders", too_deep), *after]}
    response = client.post("/api/sync/batch", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    results = response.json["results"]
    assert [result.get("result") for result in results] == ["created", "created", None, "created", "created"]
    error = results[2]["error"]
    assert error["code"] == 400 and error["status"] == "Bad Request", error
    assert f"nested deeper than {MAX_JSON_DEPTH} levels" in error["message"], error
    assert mongo.orders.count_documents({}) == 0
    assert_stored(mongo, before + after)
    reject = mongo.sync_rejects.find_one()
    assert mongo.sync_rejects.count_documents({}) == 1 and reject["status"] == 400, reject
    assert reject["collection"] == "orders" and reject["op"] == "upsert", reject
    assert json.loads(reject["payload"])["id"] == too_deep["id"]
    replay = runner.invoke(args=["fitkart", "rejects", "--replay", str(reject["_id"])])
    assert replay.exit_code == 2 and "nested deeper" in replay.output, replay.output


def test_a_batch_body_past_the_allowance_is_refused_whole(client, mongo):
    """A batch body nested past MAX_JSON_DEPTH + BATCH_JSON_DEPTH_ALLOWANCE is a 400 for the whole request."""
    limit = MAX_JSON_DEPTH + BATCH_JSON_DEPTH_ALLOWANCE
    operations = [upsert("orders", deep_order(limit + 1 - BATCH_ENVELOPE_LEVELS)), *four_valid_operations()]
    response = client.post("/api/sync/batch", json={"operations": operations})
    assert response.status_code == 400, response.get_data(as_text=True)[:500]
    assert f"nested deeper than {limit} levels" in response.json["message"]
    assert mongo.cart_items.count_documents({}) == 0 and mongo.orders.count_documents({}) == 0
    # One level less is within the allowance: the batch is read, and only the deep record refused.
    operations[0] = upsert("orders", deep_order(limit - BATCH_ENVELOPE_LEVELS))
    assert client.post("/api/sync/batch", json={"operations": operations}).status_code == 200
    assert_stored(mongo, operations[1:])


def test_a_single_record_route_keeps_the_32_limit(client, mongo):
    """A record sent alone nested 33 levels deep is a 400, as before; 32 levels is accepted."""
    response = client.post("/api/sync/orders", json=deep_order(MAX_JSON_DEPTH + 1))
    assert response.status_code == 400
    assert response.json["message"] == f"Malformed JSON: JSON nested deeper than {MAX_JSON_DEPTH} levels"
    assert mongo.orders.count_documents({}) == 0
    assert client.post("/api/sync/orders", json=deep_order(MAX_JSON_DEPTH)).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_checks_answer_allowed_origins_only(client, path):
    """An allowed origin may read /healthz and /readyz from the browser; any other origin may not."""
    allowed = client.get(path, headers={"Origin": ALLOWED_ORIGIN})
    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "Access-Control-Allow-Credentials" not in allowed.headers
    other = client.get(path, headers={"Origin": "http://evil.example"})
    assert other.status_code == 200
    assert "Access-Control-Allow-Origin" not in other.headers
