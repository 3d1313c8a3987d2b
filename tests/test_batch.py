"""`POST /api/sync/batch`: operations applied in order, each on its own."""

from .records import cart_item, new_id, product


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
    assert mongo.sync_rejects.count_documents({"op": "batch"}) == 1


def test_batch_body_must_hold_a_list_of_operations(client, mongo):
    """Anything but {"operations": [...]} is a 422."""
    for body in ({"ops": []}, [], {"operations": {}}):
        assert client.post("/api/sync/batch", json=body).status_code == 422
    assert mongo.sync_rejects.count_documents({}) == 3
