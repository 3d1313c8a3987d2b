"""GET /api/sync/<collection> without `limit`: pages of 100 records (docs/api.md: default 100, at most 500)."""

from testbed.data.records import cart_item


def test_a_page_without_limit_holds_100_records_and_a_cursor_to_the_rest(client):
    """101 records: the first page has 100 and a next_cursor, the second the last one; 100 records fit one page."""
    items = [cart_item() for _ in range(101)]
    batch = client.post("/api/sync/batch", json={"operations": [
        {"op": "upsert", "collection": "cart_items", "record": item} for item in items]})
    assert batch.status_code == 200 and all(result["result"] == "created" for result in batch.json["results"])
    ids = sorted(item["id"] for item in items)

    first = client.get("/api/sync/cart_items").json
    assert [record["id"] for record in first["items"]] == ids[:100]
    assert first["next_cursor"] is not None
    second = client.get(f"/api/sync/cart_items?cursor={first['next_cursor']}").json
    assert [record["id"] for record in second["items"]] == ids[100:] and second["next_cursor"] is None

    assert client.delete(f"/api/sync/cart_items/{ids[-1]}").json == {"deleted": 1}
    whole = client.get("/api/sync/cart_items").json
    assert len(whole["items"]) == 100 and whole["next_cursor"] is None
