"""Deletes by ref, by key body and by user, tombstones, and out-of-order delivery."""

from datetime import UTC, datetime, timedelta

import pytest

from testbed.data.records import cart_item, new_id, profile, stamp, wishlist_item

# The engine's rules hold under each write plan (sync/plan.py): every test here runs under both.
WRITE_PLANS = ("point", "guarded")


def post(client, collection: str, record):
    """POST one record to a collection."""
    return client.post(f"/api/sync/{collection}", json=record)


def test_delete_by_ref_then_again_is_zero(client, mongo):
    """A retried delete is {"deleted": 0}, not an error."""
    item = cart_item()
    post(client, "cart_items", item)
    assert client.delete(f"/api/sync/cart_items/{item['id']}").json == {"deleted": 1}
    assert client.delete(f"/api/sync/cart_items/{item['id']}").json == {"deleted": 0}
    assert client.delete(f"/api/sync/cart_items/{new_id()}").json == {"deleted": 0}
    assert mongo.cart_items.count_documents({}) == 0


def test_delete_with_an_invalid_ref_is_422(client, mongo):
    """A ref that is not a uuid is a validation error, and kept as a reject."""
    response = client.delete("/api/sync/cart_items/not-a-uuid")
    assert response.status_code == 422
    assert "id" in response.json["errors"]["json"]
    assert mongo.sync_rejects.count_documents({"op": "delete"}) == 1


def test_wishlist_deletes_by_key_body_and_by_id(client, mongo):
    """The app deletes wishlist rows by (user_id, product_id); the Supabase id works too."""
    first, second = wishlist_item(), wishlist_item()
    post(client, "wishlist_items", first)
    post(client, "wishlist_items", second)
    by_key = client.delete("/api/sync/wishlist_items",
                           json={"user_id": first["user_id"], "product_id": first["product_id"]})
    assert by_key.json == {"deleted": 1}
    assert client.delete(f"/api/sync/wishlist_items/{second['id']}").json == {"deleted": 1}
    assert mongo.wishlist_items.count_documents({}) == 0


def test_clear_a_users_cart_and_wishlist(client, mongo):
    """`?user_id=U` removes that user's rows and nobody else's."""
    user, other = new_id(), new_id()
    for owner in (user, user, other):
        post(client, "cart_items", cart_item(user_id=owner))
        post(client, "wishlist_items", wishlist_item(user_id=owner))
    assert client.delete(f"/api/sync/cart_items?user_id={user}").json == {"deleted": 2}
    assert client.delete(f"/api/sync/wishlist_items?user_id={user}").json == {"deleted": 2}
    assert mongo.cart_items.distinct("user_id") == [other]
    assert mongo.wishlist_items.distinct("user_id") == [other]
    assert mongo.sync_tombstones.count_documents({"collection": "cart_items"}) == 2


@pytest.mark.parametrize(("method_path", "body"), [
    ("/api/sync/cart_items", None),
    ("/api/sync/cart_items", {}),
    ("/api/sync/wishlist_items", {"user_id": "x"}),
    (f"/api/sync/orders?user_id={new_id()}", None),
])
def test_delete_that_names_no_record_is_422(client, mongo, method_path, body):
    """A delete never means "everything": it must name a record, or a user where clearing exists."""
    post(client, "cart_items", cart_item())
    response = client.delete(method_path, json=body) if body is not None else client.delete(method_path)
    assert response.status_code == 422
    assert mongo.cart_items.count_documents({}) == 1


def test_deleted_id_is_never_resurrected(client, mongo):
    """A late or repeated upsert of a deleted Supabase id is stale, whatever its timestamp."""
    item = cart_item()
    post(client, "cart_items", item)
    client.delete(f"/api/sync/cart/{item['id']}")
    assert post(client, "cart_items", {"id": item["id"], "quantity": 3}).json == {
        "result": "stale", "record": None}
    assert post(client, "cart_items", {**item, "created_at": stamp(59)}).json["result"] == "stale"
    assert mongo.cart_items.count_documents({}) == 0


def test_delete_before_its_upsert_wins(client, mongo):
    """Out of order: the delete arrives first; the insert that follows it is stale."""
    item = cart_item()
    assert client.delete(f"/api/sync/cart/{item['id']}").json == {"deleted": 0}
    assert post(client, "cart_items", item).json["result"] == "stale"
    assert mongo.cart_items.count_documents({}) == 0


def test_replayed_delete_leaves_the_same_state(client, mongo):
    """Replaying a delete changes neither the records nor the tombstones."""
    item = cart_item()
    post(client, "cart_items", item)
    client.delete(f"/api/sync/cart/{item['id']}")
    tombstones = list(mongo.sync_tombstones.find())
    for _ in range(3):
        client.delete(f"/api/sync/cart/{item['id']}")
    assert list(mongo.sync_tombstones.find()) == tombstones


def test_key_tombstone_blocks_older_versions_but_not_newer_ones(client, mongo):
    """For a key without the same id, only a version newer than the delete may come back."""
    user_id = new_id()
    post(client, "profiles", profile(user_id=user_id))
    assert client.delete(f"/api/sync/profiles/{user_id}").json == {"deleted": 1}
    older = profile(user_id=user_id, updated_at=stamp(30))  # 2025: before the delete
    assert post(client, "profiles", older).json["result"] == "stale"
    newer_time = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    newer = profile(user_id=user_id, updated_at=newer_time)
    assert post(client, "profiles", newer).json["result"] == "created"
    assert mongo.profiles.count_documents({"user_id": user_id}) == 1


def test_wishlist_readd_after_remove_is_created(client, mongo):
    """Removing then adding the same product again makes a new row with a new id."""
    first = wishlist_item()
    post(client, "wishlist_items", first)
    client.delete("/api/sync/wishlist_items",
                  json={"user_id": first["user_id"], "product_id": first["product_id"]})
    again = {**first, "id": new_id(), "created_at": datetime.now(UTC).isoformat()}
    assert post(client, "wishlist_items", again).json["result"] == "created"
    assert post(client, "wishlist_items", first).json["result"] == "stale"
    assert mongo.wishlist_items.find_one()["id"] == again["id"]


def test_expired_tombstones_no_longer_block(client, mongo):
    """After FITKART_TOMBSTONE_DAYS a tombstone is ignored, even where no TTL index removes it."""
    item = cart_item()
    post(client, "cart_items", item)
    client.delete(f"/api/sync/cart/{item['id']}")
    mongo.sync_tombstones.update_many({}, {"$set": {"deleted_at": datetime.now(UTC) - timedelta(days=31)}})
    assert post(client, "cart_items", item).json["result"] == "created"


def test_tombstones_have_a_ttl_index_where_the_database_has_them(client, mongo, mongo_server):
    """MongoDB expires tombstones by a TTL index; FerretDB v1 (SQLite) gets a plain index."""
    client.delete(f"/api/sync/cart/{new_id()}")
    index = mongo.sync_tombstones.index_information()["deleted_at_ttl"]
    if mongo_server.is_ferretdb:
        assert "expireAfterSeconds" not in index
    else:
        assert index["expireAfterSeconds"] == 30 * 86400
