"""Refused writes are rate-limited per caller: past the limit 429 + Retry-After, nothing stored; good writes never."""

import json

import pytest

from .gunicorn_server import GunicornServer, request
from .records import cart_item, new_id
from .test_metrics import samples, value
from .tokens import JWT_SECRET, bearer, claims_for, hs256

INVALID = {"id": "not-a-uuid"}


@pytest.fixture
def limited(make_app, database_uri, decimal_mode):
    """A client of an app allowing five refused writes a minute per caller."""
    return make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode,
                    FITKART_REJECTS_RATE="5 per minute").test_client()


def test_refusals_past_the_limit_are_429_with_retry_after_and_not_stored(limited, mongo):
    """Five refusals are answered 422 and kept; the sixth write is 429 and leaves nothing behind."""
    statuses = [limited.post("/api/sync/cart_items", json=INVALID).status_code for _ in range(5)]
    assert statuses == [422] * 5
    response = limited.post("/api/sync/cart", json=INVALID)
    assert response.status_code == 429 and response.json["code"] == 429
    assert 0 < int(response.headers["Retry-After"]) <= 61  # the minute's end, rounded up
    assert limited.delete("/api/sync/cart_items", json={"$where": 1}).status_code == 429
    assert mongo.sync_rejects.count_documents({}) == 5
    assert limited.get("/api/sync/cart_items").status_code == 200  # reads are never limited


def test_good_writes_are_never_slowed(limited, mongo):
    """Fifty accepted writes in a row: none counts against the limit."""
    assert {limited.post("/api/sync/cart_items", json=cart_item()).status_code for _ in range(50)} == {200}
    assert limited.post("/api/sync/cart_items", json=INVALID).status_code == 422


def test_a_batch_stores_only_what_the_allowance_permits(limited, mongo):
    """A thousand invalid operations: each answered, five kept, the rest counted in /metrics."""
    before = samples(limited.get("/metrics").get_data(as_text=True))
    operations = [{"op": "upsert", "collection": "cart_items", "record": {"id": new_id()}} for _ in range(1000)]
    response = limited.post("/api/sync/batch", json={"operations": operations})
    assert response.status_code == 200
    assert [result["error"]["code"] for result in response.json["results"]] == [422] * 1000
    assert mongo.sync_rejects.count_documents({}) == 5
    after = samples(limited.get("/metrics").get_data(as_text=True))
    labels = {"collection": "cart_items", "result": "not_stored"}
    assert value(after, "fitkart_sync_results_total", **labels) - value(before, "fitkart_sync_results_total",
                                                                       **labels) == 995
    assert limited.post("/api/sync/batch", json={"operations": operations[:1]}).status_code == 429


def test_a_signed_in_user_is_served_while_an_anon_flood_is_cut(make_app, database_uri, decimal_mode, mongo):
    """The anon key's refused writes hit the limit of its address; a user's token still writes."""
    client = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode,
                      SUPABASE_JWT_SECRET=JWT_SECRET, FITKART_REJECTS_RATE="5 per minute").test_client()
    anon = bearer(hs256(claims_for(None, role="anon", issuer="supabase", audience=None)))
    flood = [client.post("/api/sync/cart_items", json=cart_item(), headers=anon).status_code for _ in range(30)]
    assert flood == [403] * 5 + [429] * 25
    me = new_id()
    user = bearer(hs256(claims_for(me)))
    assert client.post("/api/sync/cart_items", json=cart_item(user_id=me), headers=user).status_code == 200
    assert mongo.sync_rejects.count_documents({}) == 5


def test_gunicorn_workers_share_one_count(database_uri, decimal_mode, tmp_path, mongo):
    """Two workers, one allowance: exactly the limit is stored, whichever worker answers."""
    log_path = tmp_path / "server.log"
    server = GunicornServer(database_uri, decimal_mode, workers=2, threads=1, log_path=log_path,
                            env={"FITKART_REJECTS_RATE": "10 per minute", "FITKART_LOG_FORMAT": "json"}).start()
    try:
        statuses = [request(f"{server.url}/api/sync/cart_items", INVALID)[0] for _ in range(60)]
    finally:
        server.stop()
    assert statuses == [422] * 10 + [429] * 50
    assert mongo.sync_rejects.count_documents({}) == 10
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    workers = {line["pid"] for line in lines if line.get("route") == "/api/sync/cart_items"}
    assert len(workers) == 2, "both workers should have answered some of the requests"
