"""The unchanged FitKart frontend's requests, replayed exactly, then the database checked."""

from datetime import UTC, datetime

from testbed.data.records import new_id, stamp

HEADERS = {"Origin": "http://localhost:8080"}


def test_legacy_client_session_is_mirrored(client, mongo):
    """Sign up, add two items, change a quantity with {id, quantity}, remove one, check out."""
    user_id, kurta_id, jeans_id = new_id(), new_id(), new_id()
    # Sign-up: the profile built from the auth user; avatar_url absent.
    assert client.post("/api/sync/profile", json={
        "user_id": user_id, "email": "asha@example.com", "full_name": "Asha Rao"},
        headers=HEADERS).status_code == 200
    # Add to cart: the full inserted rows, as Supabase returns them.
    first = {"id": new_id(), "user_id": user_id, "product_id": kurta_id, "size": "M",
             "color": "indigo", "quantity": 1, "created_at": stamp(1)}
    second = {"id": new_id(), "user_id": user_id, "product_id": jeans_id, "size": "32",
              "color": None, "quantity": 1, "created_at": stamp(2)}
    for row in (first, second):
        assert client.post("/api/sync/cart", json=row, headers=HEADERS).json["result"] == "created"
    # Add the same product again: the existing row with its new total.
    again = {k: first[k] for k in ("id", "user_id", "product_id", "size", "color")} | {"quantity": 2}
    assert client.post("/api/sync/cart", json=again, headers=HEADERS).json["result"] == "updated"
    # Change quantity: only {id, quantity}.
    response = client.post("/api/sync/cart", json={"id": first["id"], "quantity": 3}, headers=HEADERS)
    assert response.json["result"] == "updated"
    # Remove the second line.
    assert client.delete(f"/api/sync/cart/{second['id']}", headers=HEADERS).json == {"deleted": 1}
    # Checkout.
    order = {"id": new_id(), "user_id": user_id, "status": "pending", "total_amount": 4497.0,
             "shipping_address": {"line1": "12 MG Road", "city": "Bengaluru"},
             "items": [{"id": first["id"], "product_id": kurta_id, "name": "Linen Kurta", "price": 1499,
                        "quantity": 3, "size": "M", "image": "https://cdn.example/kurta.jpg"}],
             "created_at": stamp(5), "updated_at": stamp(5)}
    assert client.post("/api/sync/order", json=order, headers=HEADERS).json["result"] == "created"

    profiles = list(mongo.profiles.find({}, {"_id": 0, "_fitkart": 0}))
    assert profiles == [{"user_id": user_id, "email": "asha@example.com", "full_name": "Asha Rao"}]
    carts = list(mongo.cart_items.find({}, {"_id": 0, "_fitkart": 0}))
    assert carts == [{"id": first["id"], "user_id": user_id, "product_id": kurta_id, "size": "M",
                      "color": "indigo", "quantity": 3,
                      "created_at": datetime(2025, 12, 19, 14, 24, 1, 123000, tzinfo=UTC)}]
    stored_order = mongo.orders.find_one({"id": order["id"]}, {"_id": 0, "_fitkart": 0})
    assert stored_order["user_id"] == user_id
    assert stored_order["status"] == "pending"
    assert float(str(stored_order["total_amount"])) == 4497.0
    assert stored_order["items"] == order["items"]
    assert stored_order["shipping_address"] == order["shipping_address"]
    assert stored_order["created_at"] == datetime(2025, 12, 19, 14, 24, 5, 123000, tzinfo=UTC)
    assert mongo.sync_rejects.count_documents({}) == 0


def test_legacy_origin_gets_cors_headers(client):
    """The Vite dev origin may call the server from the browser; other origins may not."""
    preflight = client.options("/api/sync/cart", headers={
        "Origin": "http://localhost:8080", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Content-Type"})
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://localhost:8080"
    other = client.options("/api/sync/cart", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in other.headers
