"""`flask fitkart migrate-legacy`: the old mongoose collections, moved through the engine."""

from datetime import UTC, datetime

from bson import ObjectId

from testbed.data.records import new_id


def seed_legacy(mongo) -> dict:
    """What a machine that ran the old Express server holds: mongoose documents with `__v`."""
    user = new_id()
    cart = {"_id": ObjectId(), "__v": 0, "id": new_id(), "user_id": user, "product_id": new_id(), "size": "M",
            "color": "indigo", "quantity": 2, "created_at": datetime(2025, 12, 1, 10, 0, tzinfo=UTC)}
    orphan = {"_id": ObjectId(), "__v": 0, "id": new_id(), "product_id": new_id(), "size": "L", "quantity": 1}
    wish = {"_id": ObjectId(), "__v": 0, "user_id": user, "product_id": new_id()}
    role = {"_id": ObjectId(), "__v": 0, "user_id": user, "role": "customer"}
    profile = {"_id": ObjectId(), "__v": 0, "user_id": user.upper(), "email": "asha@example.com",
               "full_name": "Asha Rao"}
    order = {"_id": ObjectId(), "__v": 0, "id": new_id(), "user_id": user, "status": "pending",
             "total_amount": 2998, "items": [{"product_id": new_id(), "quantity": 2, "price": 1499}]}
    mongo.cartitems.insert_many([cart, orphan])
    mongo.wishlistitems.insert_one(wish)
    mongo.userroles.insert_one(role)
    mongo.profiles.insert_one(profile)
    mongo.orders.insert_one(order)
    return {"user": user, "cart": cart, "orphan": orphan, "order": order}


def test_migrate_legacy_moves_everything_it_can(runner, mongo):
    """Documents land in the new collections, validated and stamped; what cannot move is reported and kept."""
    seeded = seed_legacy(mongo)
    result = runner.invoke(args=["fitkart", "migrate-legacy"])
    assert result.exit_code == 1, result.output  # one document could not be moved
    lines = {line.split()[0]: line.split() for line in result.output.splitlines()}
    assert lines["cartitems"][2] == "1" and lines["cartitems"][-1] == "1"
    assert lines["wishlistitems"][2] == "1" and lines["userroles"][2] == "1"
    assert lines["profiles"][2] == "1" and lines["orders"][2] == "1"

    cart = mongo.cart_items.find_one({"id": seeded["cart"]["id"]})
    assert cart["quantity"] == 2 and "__v" not in cart and cart["_fitkart"]["source"] == "reconcile"
    assert cart["created_at"] == seeded["cart"]["created_at"]
    assert mongo.wishlist_items.count_documents({"user_id": seeded["user"]}) == 1
    assert mongo.user_roles.find_one({"user_id": seeded["user"]})["role"] == "customer"
    profiles = list(mongo.profiles.find())
    assert len(profiles) == 1 and profiles[0]["user_id"] == seeded["user"] and "__v" not in profiles[0]
    order = mongo.orders.find_one({"id": seeded["order"]["id"]})
    assert "__v" not in order and order["_fitkart"]["version"] >= 1
    # The cart item without user_id stays behind, with its reason in sync_rejects.
    assert [doc["_id"] for doc in mongo.cartitems.find()] == [seeded["orphan"]["_id"]]
    reject = mongo.sync_rejects.find_one({"route": "flask fitkart migrate-legacy"})
    assert "user_id" in reject["errors"]
    assert mongo.wishlistitems.count_documents({}) == 0 and mongo.userroles.count_documents({}) == 0


def test_migrate_legacy_is_idempotent(runner, mongo):
    """A second run moves nothing more and changes no mirrored record."""
    seed_legacy(mongo)
    runner.invoke(args=["fitkart", "migrate-legacy"])
    snapshot = {name: list(mongo[name].find()) for name in ("profiles", "orders", "cart_items",
                                                            "wishlist_items", "user_roles")}
    again = runner.invoke(args=["fitkart", "migrate-legacy"])
    assert "moved      0" in again.output
    assert {name: list(mongo[name].find()) for name in snapshot} == snapshot
