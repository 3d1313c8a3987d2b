"""Refused writes are rate-limited per caller: past the limit a refusal is 429 + Retry-After and not stored;
a write that can be applied always is."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from testbed.data.records import cart_item, new_id
from testbed.servers.gunicorn import GunicornServer, request

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


def test_after_a_burst_of_refusals_the_same_callers_good_writes_are_all_applied(client, mongo):
    """As a new user runs it (no Supabase settings: every loopback client is one caller): 65 refused writes, then
    ten new cart rows, a change and a delete from that caller — every one applied, none 429."""
    assert [client.post("/api/sync/cart", json=INVALID).status_code for _ in range(65)] == [422] * 60 + [429] * 5
    rows = [cart_item() for _ in range(10)]
    assert [client.post("/api/sync/cart", json=row).status_code for row in rows] == [200] * 10
    assert client.post("/api/sync/cart", json={**rows[0], "quantity": 7}).json["result"] == "updated"
    assert client.delete(f"/api/sync/cart/{rows[1]['id']}").json == {"deleted": 1}
    batch = client.post("/api/sync/batch", json={"operations": [
        {"op": "upsert", "collection": "cart_items", "record": cart_item()},
        {"op": "upsert", "collection": "cart_items", "record": INVALID}]})
    assert batch.status_code == 200
    assert [result.get("result") or result["error"]["code"] for result in batch.json["results"]] == ["created", 422]
    assert mongo.cart_items.count_documents({}) == 10 and mongo.sync_rejects.count_documents({}) == 60


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
    again = limited.post("/api/sync/batch", json={"operations": operations[:1]})
    assert again.status_code == 200 and again.json["results"][0]["error"]["code"] == 422
    assert mongo.sync_rejects.count_documents({}) == 5


def test_a_signed_in_user_is_served_while_an_anon_flood_is_cut(make_app, database_uri, decimal_mode, mongo):
    """The anon key's refused writes hit the limit of its address; a user's token still writes."""
    client = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode,
                      SUPABASE_JWT_SECRET=JWT_SECRET, FITKART_REJECTS_RATE="5 per minute").test_client()
    anon = bearer(hs256(claims_for(None, role="anon", issuer="supabase", audience=None)))
    flood = [client.post("/api/sync/cart_items", json=cart_item(), headers=anon).status_code for _ in range(30)]
    assert flood == [403] * 5 + [429] * 25  # refused all along; kept while the allowance lasted
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


def test_concurrent_refusals_store_no_more_than_the_limit(database_uri, decimal_mode, mongo):
    """Two hundred refused writes at once from one caller, over two workers of eight threads, with the rate
    limiter's default storage (its counters in the mirror's database, as deployed): twenty stored in all."""
    server = GunicornServer(database_uri, decimal_mode, workers=2, threads=8,
                            env={"FITKART_REJECTS_RATE": "20 per hour", "FITKART_RATELIMIT_STORAGE": ""}).start()
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = list(pool.map(lambda _: request(f"{server.url}/api/sync/cart_items", INVALID)[0], range(200)))
    finally:
        server.stop()
    assert (statuses.count(422), statuses.count(429)) == (20, 180)
    assert mongo.sync_rejects.count_documents({}) == 20


def test_a_new_worker_reads_the_counts_before_it_counts_anything(mongo, tmp_path):
    """A worker that has not counted yet (just started, or on another host) sees the counts already made: a
    limit checked before it is spent (failed operator sign-ins) holds from its first request."""
    from fitkart_server.storage.limitstore import MirrorStorage

    def host(name: str) -> MirrorStorage:
        return MirrorStorage("mirror://", collection=lambda: mongo.sync_rate_limits,
                             fallback=f"sqlite:///{tmp_path / name}")

    key = "LIMITER/operator-sign-in/addr:203.0.113.9/20/1/minute"
    counting = host("one.sqlite3")
    for _ in range(3):
        counting.incr(key, 60)
    assert host("one.sqlite3").get(key) == 3  # another worker of that host
    assert host("two.sqlite3").get(key) == 3  # a worker of another host
    assert host("two.sqlite3").incr(key, 60) == 4


def test_deletes_of_nothing_spend_the_allowance(limited, mongo):
    """Each tombstone of a delete of nothing is stored on the caller's behalf: five, then 429."""
    deletes = [{"op": "delete", "collection": "cart_items", "record": {"id": new_id()}} for _ in range(8)]
    answers = limited.post("/api/sync/batch", json={"operations": deletes}).json["results"]
    assert answers == [{"deleted": 0}] * 8  # each answered; the three past the limit leave no tombstone
    assert mongo.sync_tombstones.count_documents({}) == 5
    refused = limited.delete(f"/api/sync/cart_items/{new_id()}")
    assert refused.status_code == 429 and "FITKART_REJECTS_RATE" in refused.json["message"]


def test_supabase_and_the_service_role_are_not_cut_by_an_anon_flood(make_app, database_uri, decimal_mode, mongo):
    """The anon key's flood from one address reaches its limit; webhooks and the service role still write."""
    client = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode,
                      SUPABASE_JWT_SECRET=JWT_SECRET, FITKART_WEBHOOK_SECRET="hook-secret",
                      FITKART_REJECTS_RATE="5 per minute").test_client()
    anon = bearer(hs256(claims_for(None, role="anon", issuer="supabase", audience=None)))
    for _ in range(10):
        client.post("/api/sync/cart_items", json=INVALID, headers=anon)
    assert client.post("/api/sync/cart_items", json=INVALID, headers=anon).status_code == 429
    hook = {"type": "INSERT", "table": "cart_items", "schema": "public", "record": cart_item(), "old_record": None}
    assert client.post("/api/webhooks/supabase", json=hook,
                       headers={"X-Webhook-Secret": "hook-secret"}).json["result"] == "created"
    service = bearer(hs256(claims_for(None, role="service_role", issuer="supabase", audience=None)))
    assert client.post("/api/sync/cart_items", json=cart_item(), headers=service).status_code == 200


def test_webhooks_are_never_429_but_their_rejects_are_capped(make_app, database_uri, decimal_mode, mongo):
    """Ten invalid webhook rows past a limit of five: all answered 422, five kept."""
    client = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode,
                      FITKART_WEBHOOK_SECRET="hook-secret", FITKART_REJECTS_RATE="5 per minute").test_client()
    hook = {"type": "INSERT", "table": "cart_items", "schema": "public", "record": INVALID, "old_record": None}
    statuses = [client.post("/api/webhooks/supabase", json=hook, headers={"X-Webhook-Secret": "hook-secret"})
                .status_code for _ in range(10)]
    assert statuses == [422] * 10
    assert mongo.sync_rejects.count_documents({"source": "webhook"}) == 5


def test_operator_token_guessing_is_cut(make_app, database_uri, decimal_mode):
    """Twenty wrong operator tokens from one address, then 429, on the sign-in form and /metrics alike."""
    client = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode,
                      FITKART_AUTH="off", FITKART_ADMIN_TOKEN="the-real-admin-token").test_client()
    remote = {"REMOTE_ADDR": "203.0.113.7"}
    statuses = [client.post("/status/sign-in", data={"token": f"guess-{index}"}, environ_base=remote).status_code
                for index in range(20)]
    assert statuses == [401] * 20
    assert client.post("/status/sign-in", data={"token": "guess"}, environ_base=remote).status_code == 429
    assert client.get("/metrics", headers={"Authorization": "Bearer guess"}, environ_base=remote).status_code == 429
    other = {"REMOTE_ADDR": "203.0.113.8"}
    assert client.get("/metrics", headers={"Authorization": "Bearer the-real-admin-token"},
                      environ_base=other).status_code == 200


def test_relayed_failed_sign_ins_never_lock_the_local_operator_out(make_app, database_uri, decimal_mode):
    """Twenty failed sign-ins relayed by a proxy on this machine: the guesser behind it is cut (429), while the
    operator on the machine itself and a local Prometheus still read /metrics and the status page."""
    client = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode,
                      FITKART_AUTH="off", FITKART_ADMIN_TOKEN="the-real-admin-token").test_client()
    relayed = {"environ_base": {"REMOTE_ADDR": "127.0.0.1"}, "headers": {"X-Forwarded-For": "203.0.113.9"}}
    statuses = [client.post("/status/sign-in", data={"token": f"guess-{index}"}, **relayed).status_code
                for index in range(21)]
    assert statuses == [401] * 20 + [429]
    local = {"REMOTE_ADDR": "127.0.0.1"}
    assert client.get("/metrics", environ_base=local).status_code == 200
    assert client.get("/", environ_base=local).status_code == 200


def test_ipv6_clients_of_one_slash_64_share_one_allowance(make_app, database_uri, decimal_mode, mongo):
    """Two addresses of one IPv6 /64 (one host usually holds a whole /64) are one caller; another /64 is another."""
    client = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode, FITKART_AUTH="off",
                      FITKART_REJECTS_RATE="5 per minute").test_client()
    for number in range(5):
        address = {"REMOTE_ADDR": f"2001:db8:0:1::{number + 1}"}
        assert client.post("/api/sync/cart", json=INVALID, environ_base=address).status_code == 422
    same_host = {"REMOTE_ADDR": "2001:db8:0:1:ffff::9"}
    assert client.post("/api/sync/cart", json=INVALID, environ_base=same_host).status_code == 429
    other_host = {"REMOTE_ADDR": "2001:db8:0:2::1"}
    assert client.post("/api/sync/cart", json=INVALID, environ_base=other_host).status_code == 422


def test_the_default_limit_is_sixty_refusals_a_minute(client, mongo):
    """With FITKART_REJECTS_RATE unset, as a new user runs it: sixty refusals kept, the sixty-first write is 429."""
    statuses = [client.post("/api/sync/cart_items", json=INVALID).status_code for _ in range(61)]
    assert statuses == [422] * 60 + [429]
    assert mongo.sync_rejects.count_documents({}) == 60
