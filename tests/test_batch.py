"""`POST /api/sync/batch`: operations applied in order, each on its own."""

import json

import pytest

from testbed.data.records import cart_item, new_id, product

# The engine's rules hold under each write plan (sync/plan.py): every test here runs under both.
WRITE_PLANS = ("point", "guarded")


def test_batch_applies_operations_in_order_with_one_result_each(client, mongo):
    """Results follow input order; a refused operation does not stop the others."""
    kept, dropped = cart_item(), cart_item()
    operations = [
        {"op": "upsert", "collection": "cart_items", "record": kept},
        {"op": "upsert", "collection": "cart_items", "record": dropped},
        {"op": "upsert", "collection": "cart_items", "record": {"id": new_id(), "quantity": 1}},
        {"op": "delete", "collection": "cart_items", "record": {"id": dropped["id"]}},
        {"op": "truncate", "collection": "cart_items", "record": {}},
        {"op": "upsert", "collection": "products", "record": product(price=10)},
        {"op": "upsert", "collection": "cart_items", "record": {"id": kept["id"], "quantity": 7}},
    ]
    response = client.post("/api/sync/batch", json={"operations": operations})
    assert response.status_code == 200
    results = response.json["results"]
    assert [r.get("result") for r in results] == ["created", "created", None, None, None, "created",
                                                  "updated"]
    assert results[3] == {"deleted": 1}
    assert results[2]["error"]["code"] == 422 and "size" in results[2]["error"]["errors"]["json"]
    assert "op" in results[4]["error"]["errors"]["json"]
    assert [doc["quantity"] for doc in mongo.cart_items.find()] == [7]
    assert mongo.sync_rejects.count_documents({}) == 2


def test_delete_then_upsert_in_one_batch_keeps_the_delete(client, mongo):
    """An upsert of a record deleted earlier in the same batch is stale."""
    item = cart_item()
    operations = [{"op": "upsert", "collection": "cart_items", "record": item},
                  {"op": "delete", "collection": "cart_items", "record": {"id": item["id"]}},
                  {"op": "upsert", "collection": "cart_items", "record": item}]
    results = client.post("/api/sync/batch", json={"operations": operations}).json["results"]
    assert results[2] == {"result": "stale", "record": None}
    assert mongo.cart_items.count_documents({}) == 0


def test_batch_over_the_limit_is_413(app, client, mongo):
    """More than FITKART_MAX_BATCH operations is refused whole, and kept as a reject."""
    app.config["FITKART_MAX_BATCH"] = 2
    operations = [{"op": "upsert", "collection": "cart_items", "record": cart_item()}] * 3
    response = client.post("/api/sync/batch", json={"operations": operations})
    assert response.status_code == 413 and "FITKART_MAX_BATCH" in response.json["message"]
    assert mongo.cart_items.count_documents({}) == 0
    assert mongo.sync_rejects.count_documents({"op": "batch", "status": 413}) == 1


def test_batch_body_must_hold_a_list_of_operations(client, mongo):
    """Anything but {"operations": [...]} is a 422."""
    for body in ({"ops": []}, [], {"operations": {}}):
        assert client.post("/api/sync/batch", json=body).status_code == 422
    assert mongo.sync_rejects.count_documents({}) == 3


def test_a_batch_of_distinct_upserts_is_decided_together_with_the_same_rules(client, mongo):
    """The bulk path (upserts only, each record once) gives every rule the one-by-one path gives."""
    from testbed.data.records import order, profile, stamp

    stored = order(updated_at=stamp(30))
    client.post("/api/sync/orders", json=stored)
    same = profile()
    client.post("/api/sync/profiles", json=same)
    deleted = cart_item()
    client.delete(f"/api/sync/cart/{deleted['id']}")
    fresh = [cart_item(), cart_item()]
    operations = [
        {"op": "upsert", "collection": "cart_items", "record": fresh[0]},
        {"op": "upsert", "collection": "orders", "record": {**stored, "status": "shipped", "updated_at": stamp(40)}},
        {"op": "upsert", "collection": "profiles", "record": same},
        {"op": "upsert", "collection": "cart_items", "record": deleted},
        {"op": "upsert", "collection": "products", "record": product(price=-1)},
        {"op": "upsert", "collection": "cart_items", "record": {"id": new_id(), "quantity": 2}},
        {"op": "upsert", "collection": "cart_items", "record": fresh[1]},
    ]
    results = client.post("/api/sync/batch", json={"operations": operations}).json["results"]
    assert [r.get("result") for r in results] == ["created", "updated", "unchanged", "stale", None, None, "created"]
    assert results[4]["error"]["code"] == 422 and "price" in results[4]["error"]["errors"]["json"]
    assert set(results[5]["error"]["errors"]["json"]) == {"user_id", "product_id", "size"}
    assert results[1]["record"]["status"] == "shipped"
    assert sorted(doc["id"] for doc in mongo.cart_items.find()) == sorted(item["id"] for item in fresh)
    assert mongo.orders.find_one({"id": stored["id"]})["_fitkart"]["version"] == 2
    assert mongo.sync_rejects.count_documents({}) == 2
    stale_order = {**stored, "status": "pending", "updated_at": stamp(35)}
    again = client.post("/api/sync/batch", json={"operations": [
        {"op": "upsert", "collection": "orders", "record": stale_order}]}).json["results"]
    assert again[0]["result"] == "stale" and again[0]["record"]["status"] == "shipped"


def test_refusals_are_kept_in_the_order_the_operations_came(client, mongo):
    """A malformed operation is refused where it stands: the batch's shared field-error budget and the
    rejects kept follow the operations' order, whichever way the batch is applied."""
    noisy = {**cart_item(), **{f"$k{n}": 1 for n in range(60)}}  # 60 keys MongoDB cannot store: 60 field errors
    operations = [{"op": "upsert", "collection": "cart_items", "record": noisy},
                  {"op": "bogus", "collection": "cart_items", "record": {}}]
    results = client.post("/api/sync/batch", json={"operations": operations}).json["results"]
    first, second = (result["error"]["errors"]["json"] for result in results)
    assert len([name for name in first if name != "_more"]) == 50 and "_more" in first
    assert list(second) == ["_more"]  # the budget was spent by the operation before it
    kept = [reject["op"] for reject in mongo.sync_rejects.find().sort("at", 1)]
    assert kept == ["upsert", "bogus"]


def test_a_batch_of_five_hundred_partial_updates_is_applied(client, mongo):
    """A batch of 500 partial updates of stored rows: every one updated, at once (FerretDB v1.24 stops
    answering a single update command of 100 or more, so updates go in commands of fewer)."""
    rows = [cart_item() for _ in range(500)]
    created = client.post("/api/sync/batch", json={"operations": [
        {"op": "upsert", "collection": "cart_items", "record": row} for row in rows]})
    assert created.status_code == 200
    response = client.post("/api/sync/batch", json={"operations": [
        {"op": "upsert", "collection": "cart_items", "record": {"id": row["id"], "quantity": 9}} for row in rows]})
    assert response.status_code == 200, response.get_json()
    assert {result["result"] for result in response.json["results"]} == {"updated"}
    assert mongo.cart_items.count_documents({"quantity": 9}) == 500


@pytest.mark.parametrize("op", [{"$set": 1}, {"a.b": 1}, {"nul\u0000": 1}, "\ud800", 2**70, [0] * 400_000],
                         ids=["dollar-key", "dotted-key", "nul-key", "lone-surrogate", "past-64-bits", "long-list"])
def test_an_operation_whose_op_is_not_a_kind_is_refused_alone_and_kept_small(client, runner, mongo, op):
    """Whatever an operation's `op` holds, that operation is a 422 kept as a small reject (an op that is not a
    short text is not stored as sent), the batch answers 200, the operations around it are applied, and the
    rejects can be listed."""
    good = [{"op": "upsert", "collection": "cart_items", "record": cart_item()} for _ in range(2)]
    body = json.dumps({"operations": [good[0], {"op": op, "collection": "cart_items", "record": {"id": "x"}}, good[1]]},
                      separators=(",", ":"))
    answer = client.post("/api/sync/batch", data=body, content_type="application/json")
    assert answer.status_code == 200, answer.json
    assert [result.get("result") or result["error"]["code"] for result in answer.json["results"]] == \
        ["created", 422, "created"]
    (reject,) = mongo.sync_rejects.find({})
    assert reject["op"] in (None, "?") and len(json.dumps(reject, default=str)) < 128 * 1024
    listed = runner.invoke(args=["fitkart", "rejects"])
    assert listed.exit_code == 0, listed.output


def test_a_batch_past_what_the_callers_batches_in_flight_may_hold_is_429_and_does_nothing(client, mongo):
    """While this worker applies a full batch of the caller (FITKART_MAX_BATCH operations held), another from it is
    429 with `Retry-After: 1` and applies nothing; small batches in flight together are let in (sixteen tabs of one
    shop behind one address); once the full one is done, the batch is applied."""
    from fitkart_server.web.api.batch import BATCHES

    batch = {"operations": [{"op": "upsert", "collection": "cart_items", "record": cart_item()}]}
    with BATCHES.slot("addr:127.0.0.1", 10, 1000) as admitted:
        assert admitted
        assert client.post("/api/sync/batch", json=batch).json["results"][0]["result"] == "created"
    with BATCHES.slot("addr:127.0.0.1", 1000, 1000) as admitted:
        assert admitted
        busy = client.post("/api/sync/batch", json=batch)
        assert (busy.status_code, busy.headers["Retry-After"], busy.json["code"]) == (429, "1", 429)
        assert mongo.cart_items.count_documents({}) == 1
    assert client.post("/api/sync/batch", json=batch).json["results"][0]["result"] == "unchanged"


def test_each_result_echoes_its_operations_ref_whatever_its_outcome(client, mongo):
    """An operation's `ref` comes back in its result, applied or refused, so a caller matches results by it; a ref
    that is not a short string refuses its operation alone."""
    row = cart_item()
    operations = [{"op": "upsert", "collection": "cart_items", "record": row, "ref": "a"},
                  {"op": "upsert", "collection": "cart_items", "record": {"id": new_id()}, "ref": "b"},
                  {"op": "delete", "collection": "cart_items", "record": {"id": row["id"]}, "ref": "c"},
                  {"op": "upsert", "collection": "cart_items", "record": cart_item()},
                  {"op": "upsert", "collection": "cart_items", "record": cart_item(), "ref": "x" * 65}]
    results = client.post("/api/sync/batch", json={"operations": operations}).json["results"]
    assert [result.get("ref") for result in results] == ["a", "b", "c", None, None]
    assert results[0]["result"] == "created" and results[1]["error"]["code"] == 422 and results[2] == {
        "deleted": 1, "ref": "c"}
    assert "ref" in results[4]["error"]["errors"]["json"]


def test_every_answer_carries_the_servers_mark_which_a_page_may_read(app, client):
    """FitKart-Sync is on the server's own answers (a 200, a 404, a 413 for a body past the limit, which names
    the limit), and a page of an allowed origin may read it and Retry-After."""
    origin = app.config["FITKART_CORS_ORIGINS"][0]
    answers = [client.post("/api/sync/batch", json={"operations": []}, headers={"Origin": origin}),
               client.get("/api/sync/nothing", headers={"Origin": origin}),
               client.post("/api/sync/batch", data="x" * (app.config["MAX_CONTENT_LENGTH"] + 1),
                           content_type="application/json", headers={"Origin": origin})]
    assert [answer.status_code for answer in answers] == [200, 404, 413]
    for answer in answers:
        assert answer.headers["FitKart-Sync"], answer.headers
        exposed = {name.strip().lower() for name in answer.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"fitkart-sync", "retry-after"} <= exposed
    assert answers[2].json["errors"] == {"max_bytes": app.config["MAX_CONTENT_LENGTH"]}
