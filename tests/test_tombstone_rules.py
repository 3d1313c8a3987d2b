"""A client's delete of a record that is not there binds only that client; expired tombstones are purged."""

import time
from datetime import timedelta

import pytest

from fitkart_server.clock import utc_now
from fitkart_server.sync.tombstones import MAX_TOMBSTONE_CLIENTS
from testbed.data.records import cart_item, new_id

from .tokens import JWT_SECRET, bearer, claims_for, hs256

# The engine's rules hold under each write plan (sync/plan.py): every test here runs under both.
WRITE_PLANS = ("point", "guarded")

SECRET = "webhook-shared-secret"


@pytest.fixture
def shop(make_app, database_uri, decimal_mode, jwks_server):
    """A client of the secured app with webhooks on, and a header per user."""
    app = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode,
                   SUPABASE_JWT_SECRET=JWT_SECRET,
                   SUPABASE_URL=jwks_server.url, FITKART_WEBHOOK_SECRET=SECRET)
    issuer = f"{jwks_server.url}/auth/v1"
    return app.test_client(), lambda user_id: bearer(hs256(claims_for(user_id, issuer=issuer)))


def webhook(client, kind: str, record: dict):
    """Deliver one Supabase Database Webhook."""
    body = {"type": kind, "table": "cart_items", "schema": "public",
            "record": None if kind == "DELETE" else record, "old_record": record if kind == "DELETE" else None}
    return client.post("/api/webhooks/supabase", json=body, headers={"X-Webhook-Secret": SECRET})


def test_a_delete_of_nothing_does_not_block_another_users_create(shop, mongo):
    """A deletes an id no record has yet; B's create of that id is still created."""
    client, user = shop
    alice, bob = new_id(), new_id()
    item = cart_item(user_id=bob)
    assert client.delete(f"/api/sync/cart_items/{item['id']}", headers=user(alice)).json == {"deleted": 0}
    response = client.post("/api/sync/cart_items", json=item, headers=user(bob))
    assert response.json["result"] == "created"
    assert mongo.cart_items.count_documents({"_id": item["id"]}) == 1


def test_a_delete_of_nothing_does_not_block_supabase(shop, mongo):
    """After a client's delete of nothing, Supabase's own INSERT webhook of that id is applied."""
    client, user = shop
    item = cart_item()
    client.delete(f"/api/sync/cart_items/{item['id']}", headers=user(new_id()))
    assert webhook(client, "INSERT", item).json["result"] == "created"


def test_a_delete_of_nothing_still_guards_its_own_late_create(shop, mongo):
    """Out of order from one user: the delete first, then its create: stale, as before."""
    client, user = shop
    me = new_id()
    item = cart_item(user_id=me)
    client.delete(f"/api/sync/cart_items/{item['id']}", headers=user(me))
    assert client.post("/api/sync/cart_items", json=item, headers=user(me)).json["result"] == "stale"
    assert mongo.cart_items.count_documents({}) == 0


def test_supabase_delete_of_nothing_guards_its_late_insert(shop, mongo):
    """Webhooks out of order: DELETE before INSERT leaves the row deleted, for every writer."""
    client, user = shop
    item = cart_item()
    assert webhook(client, "DELETE", item).json == {"deleted": 0}
    assert webhook(client, "INSERT", item).json["result"] == "stale"
    assert client.post("/api/sync/cart_items", json=item, headers=user(item["user_id"])).json["result"] == "stale"


def test_a_delete_of_a_stored_record_blocks_everyone(shop, mongo):
    """A real delete: neither another user's create nor a late INSERT webhook brings the id back."""
    client, user = shop
    me = new_id()
    item = cart_item(user_id=me)
    client.post("/api/sync/cart_items", json=item, headers=user(me))
    assert client.delete(f"/api/sync/cart_items/{item['id']}", headers=user(me)).json == {"deleted": 1}
    assert webhook(client, "INSERT", item).json["result"] == "stale"
    assert client.post("/api/sync/cart_items", json=item, headers=user(me)).json["result"] == "stale"


def test_the_server_purges_expired_tombstones_and_rate_limit_counters_itself(make_app, database_uri, decimal_mode,
                                                                              mongo):
    """With no TTL index (FerretDB), the server's own housekeeping deletes tombstones past their lifetime, and the
    rate limiter's counters of windows that have ended."""
    old = utc_now() - timedelta(days=31)
    mongo.sync_tombstones.insert_many([
        {"_id": "cart_items|key|expired", "collection": "cart_items", "deleted_at": old},
        {"_id": "cart_items|key|alive", "collection": "cart_items", "deleted_at": utc_now()}])
    mongo.sync_rate_limits.insert_many([
        {"_id": "LIMITER/a|0", "count": 3, "expire_at": utc_now() - timedelta(seconds=1)},
        {"_id": "LIMITER/a|1", "count": 3, "expire_at": utc_now() + timedelta(minutes=1)}])
    client = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode).test_client()
    assert client.post("/api/sync/cart_items", json=cart_item()).status_code == 200
    deadline = time.monotonic() + 10
    while mongo.sync_rate_limits.count_documents({"_id": "LIMITER/a|0"}) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [doc["_id"] for doc in mongo.sync_tombstones.find()] == ["cart_items|key|alive"]
    assert [doc["_id"] for doc in mongo.sync_rate_limits.find()] == ["LIMITER/a|1"]


def test_a_delete_of_nothing_remembers_at_most_sixteen_clients(shop, mongo):
    """Twenty users delete one id no record has: its tombstone binds the first sixteen, and holds no more."""
    client, user = shop
    target = new_id()
    for _ in range(20):
        assert client.delete(f"/api/sync/cart_items/{target}", headers=user(new_id())).json == {"deleted": 0}
    tombstones = list(mongo.sync_tombstones.find({"by": {"$exists": True}}))
    assert tombstones and all(len(tombstone["by"]) == MAX_TOMBSTONE_CLIENTS for tombstone in tombstones)
