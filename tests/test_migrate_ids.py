"""`flask fitkart migrate-ids`: records another program stored under its own _id, moved under their key."""

from datetime import datetime

from bson import ObjectId

from fitkart_server.model.documents import MOVING
from fitkart_server.model.entities import BY_COLLECTION
from fitkart_server.reconcile import ids
from testbed.data.records import cart_item, wishlist_item


def stored(record: dict) -> dict:
    """A record as another program would have stored it: its timestamps as dates."""
    return {name: datetime.fromisoformat(value) if name.endswith("_at") else value for name, value in record.items()}


# Runs under both plans: the point plan reaches a record by its key's _id alone, so it needs them most.
WRITE_PLANS = ("point", "guarded")


def test_records_under_other_ids_are_moved_and_then_reached_by_every_write(client, runner, mongo):
    """Documents with ObjectId _ids move under their key; a partial update and a delete then reach them."""
    item, wish = cart_item(quantity=1), wishlist_item()
    mongo.cart_items.insert_one({"_id": ObjectId(), **stored(item)})
    mongo.wishlist_items.insert_one({"_id": ObjectId(), **stored(wish)})
    keyed = cart_item()
    assert client.post("/api/sync/cart_items", json=keyed).json["result"] == "created"
    result = runner.invoke(args=["fitkart", "migrate-ids"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines()}
    assert lines["cart_items"][2] == "1" and lines["cart_items"][5] == "1"  # moved 1, already keyed 1
    assert lines["wishlist_items"][2] == "1"
    assert mongo.cart_items.find_one({"_id": item["id"]})["quantity"] == 1
    assert mongo.wishlist_items.count_documents({"_id": f"{wish['user_id']}|{wish['product_id']}"}) == 1
    assert client.post("/api/sync/cart_items", json={"id": item["id"], "quantity": 4}).json["result"] == "updated"
    key = {"user_id": wish["user_id"], "product_id": wish["product_id"]}
    assert client.delete("/api/sync/wishlist_items", json=key).json == {"deleted": 1}
    assert runner.invoke(args=["fitkart", "migrate-ids"]).output.count("moved       0") == 6  # nothing left


def test_a_record_whose_key_is_taken_is_left_and_the_exit_says_so(runner, mongo):
    """A second document of one key cannot move (the first holds it): it stays as it was, exit 1."""
    item = cart_item()
    mongo.cart_items.insert_one({"_id": item["id"], **stored(item)})
    twin = {"_id": ObjectId(), **stored(item), "id": item["id"].upper()}  # the same key in capitals: lowered, taken
    mongo.cart_items.insert_one(twin)
    result = runner.invoke(args=["fitkart", "migrate-ids"])
    assert result.exit_code == 1, result.output
    assert "key taken     1" in result.output
    assert mongo.cart_items.count_documents({}) == 2 and mongo.cart_items.count_documents({"_id": twin["_id"]}) == 1


def test_a_move_cut_short_is_finished_by_the_next_run(mongo):
    """A run stopped after taking a document out (its copy held in sync_moving) is finished by the next one."""
    item = cart_item()
    mongo[MOVING].insert_one({"collection": "cart_items", "document": {"_id": ObjectId(), **stored(item)}})
    report = ids.migrate_ids(mongo, BY_COLLECTION["cart_items"])
    assert (report.moved, report.keyed) == (1, 1)  # moved, then found under its key by the same run's scan
    assert mongo.cart_items.find_one({"_id": item["id"]})["size"] == item["size"]
    assert mongo[MOVING].count_documents({}) == 0
