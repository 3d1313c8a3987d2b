"""Reading the mirror: one record by ref, pages of records, how records look."""

import pytest

from testbed.data.records import cart_item, new_id, product, wishlist_item


def test_get_one_record_or_404(client):
    """A stored record by its ref; an unknown ref is a JSON 404."""
    item = cart_item()
    client.post("/api/sync/cart_items", json=item)
    record = client.get(f"/api/sync/cart_items/{item['id']}").json
    assert record["id"] == item["id"] and "_id" not in record and "_fitkart" not in record
    assert client.get(f"/api/sync/cart/{item['id']}").json == record
    missing = client.get(f"/api/sync/cart_items/{new_id()}")
    assert missing.status_code == 404 and missing.json["code"] == 404


def test_wishlist_item_is_read_by_its_supabase_id(client):
    """Compound-key tables use the Supabase id as the URL ref."""
    item = wishlist_item()
    client.post("/api/sync/wishlist_items", json=item)
    assert client.get(f"/api/sync/wishlist_items/{item['id']}").json["product_id"] == item["product_id"]


def test_list_pages_through_a_users_records_in_a_stable_order(client):
    """limit and next_cursor walk every record once, in key order; user_id filters."""
    user = new_id()
    ids = []
    for _ in range(5):
        item = cart_item(user_id=user)
        ids.append(item["id"])
        client.post("/api/sync/cart_items", json=item)
    client.post("/api/sync/cart_items", json=cart_item())
    seen, cursor, pages = [], None, 0
    while True:
        query = f"/api/sync/cart_items?user_id={user}&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(query).json
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids) and pages == 3
    assert len(client.get("/api/sync/cart_items").json["items"]) == 6


@pytest.mark.parametrize("query", ["limit=501", "limit=0", "limit=x", "cursor=not-hex!", "user_id=nope"])
def test_bad_list_parameters_are_422(client, query):
    """limit is 1..500, cursor is one this server gave, user_id a uuid."""
    response = client.get(f"/api/sync/cart_items?{query}")
    assert response.status_code == 422 and "query" in response.json["errors"]


def test_products_cannot_be_filtered_by_user(client):
    """products has no user_id column."""
    assert client.get(f"/api/sync/products?user_id={new_id()}").status_code == 422


def test_money_is_shown_as_a_number_with_its_exact_value(client):
    """19.99 stays 19.99 in responses, whatever the storage mode."""
    item = product(price=19.99)
    assert client.post("/api/sync/products", json=item).json["record"]["price"] == 19.99
    raw = client.get(f"/api/sync/products/{item['id']}").get_data(as_text=True)
    assert '"price":19.99' in raw.replace(" ", "")
