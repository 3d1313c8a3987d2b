"""Out-of-order delivery: an older version never overwrites a newer one."""

from testbed.data.records import cart_item, order, profile, stamp

# The engine's rules hold under each write plan (sync/plan.py): every test here runs under both.
WRITE_PLANS = ("point", "guarded")


def post(client, collection: str, record):
    """POST one record to a collection."""
    return client.post(f"/api/sync/{collection}", json=record)


def test_older_updated_at_is_stale_and_changes_nothing(client, mongo):
    """The newer order status stays when the older version arrives late."""
    newer = order(status="shipped", updated_at=stamp(30))
    older = {**newer, "status": "pending", "updated_at": stamp(10)}
    post(client, "orders", newer)
    snapshot = mongo.orders.find_one({"id": newer["id"]})
    response = post(client, "orders", older)
    assert response.json["result"] == "stale"
    assert response.json["record"]["status"] == "shipped"
    assert mongo.orders.find_one({"id": newer["id"]}) == snapshot


def test_same_or_newer_updated_at_applies(client, mongo):
    """Equal timestamps are not stale; newer ones update."""
    person = profile(full_name="Asha", updated_at=stamp(10))
    post(client, "profiles", person)
    assert post(client, "profiles", {**person, "full_name": "Asha R"}).json["result"] == "updated"
    later = {**person, "full_name": "Asha Rao", "updated_at": stamp(20)}
    assert post(client, "profiles", later).json["result"] == "updated"
    assert mongo.profiles.find_one({"user_id": person["user_id"]})["full_name"] == "Asha Rao"


def test_tables_without_updated_at_order_by_created_at(client, mongo):
    """cart_items has no updated_at: a payload with an older created_at is stale."""
    item = cart_item(quantity=2, created_at=stamp(20))
    post(client, "cart_items", item)
    response = post(client, "cart_items", {**item, "quantity": 9, "created_at": stamp(5)})
    assert response.json["result"] == "stale"
    assert mongo.cart_items.find_one({"id": item["id"]})["quantity"] == 2


def test_payload_without_a_timestamp_applies(client, mongo):
    """The legacy {id, quantity} carries no time: it is applied in arrival order."""
    item = cart_item(quantity=2)
    post(client, "cart_items", item)
    assert post(client, "cart_items", {"id": item["id"], "quantity": 4}).json["result"] == "updated"
    assert mongo.cart_items.find_one({"id": item["id"]})["quantity"] == 4
