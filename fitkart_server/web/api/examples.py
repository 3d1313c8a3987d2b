"""Example request bodies for the API docs: one FitKart-shaped record per table, and a batch."""

USER = "0b3f6f3e-5b7a-4c8e-9d61-2f1a7c9e4b10"
PRODUCT = "7d1e2c3b-4a5f-4e6d-8c9b-0a1b2c3d4e5f"

RECORDS: dict[str, dict] = {
    "profiles": {
        "user_id": USER, "full_name": "Asha Rao", "email": "asha@example.com",
        "avatar_url": "https://example.com/avatars/asha.png",
        "body_measurements": {"height_cm": 165, "chest_cm": 86.5, "waist_cm": 70},
        "style_preferences": ["minimal", "ethnic"], "updated_at": "2025-12-19T14:24:22.123Z",
    },
    "products": {
        "id": PRODUCT, "name": "Linen Kurta", "description": "Breathable summer kurta", "price": "1499.50",
        "category": "ethnic", "brand": "FitKart", "sizes": ["S", "M", "L"], "colors": ["white", "indigo"],
        "images": ["https://example.com/kurta.jpg"], "stock_quantity": 25, "is_active": True,
        "seller_id": "5c4b3a29-1807-4f6e-9d5c-4b3a29180706", "updated_at": "2025-12-19T14:24:22.123Z",
    },
    "orders": {
        "id": "3e2d1c0b-9a8f-4e7d-a6c5-b4a392817161", "user_id": USER, "status": "pending",
        "total_amount": "2999.00",
        "shipping_address": {"line1": "12 MG Road", "city": "Bengaluru", "postal_code": "560001"},
        "items": [{"product_id": PRODUCT, "name": "Linen Kurta", "price": 1499.5, "quantity": 2, "size": "M"}],
        "updated_at": "2025-12-19T14:24:22.123Z",
    },
    "cart_items": {
        "id": "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a", "user_id": USER, "product_id": PRODUCT,
        "size": "M", "color": "white", "quantity": 2, "created_at": "2025-12-19T14:24:22.123Z",
    },
    "wishlist_items": {
        "id": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", "user_id": USER, "product_id": PRODUCT,
        "created_at": "2025-12-19T14:24:22.123Z",
    },
    "user_roles": {
        "id": "6a5b4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d", "user_id": USER, "role": "customer",
        "updated_at": "2025-12-19T14:24:22.123Z",
    },
}

BATCH = {"operations": [
    {"op": "upsert", "collection": "cart_items", "record": RECORDS["cart_items"]},
    {"op": "upsert", "collection": "cart_items", "record": {"id": RECORDS["cart_items"]["id"], "quantity": 3}},
    {"op": "delete", "collection": "wishlist_items", "record": {"user_id": USER, "product_id": PRODUCT}},
]}

WEBHOOK = {"type": "UPDATE", "table": "orders", "schema": "public",
           "record": {**RECORDS["orders"], "status": "shipped", "updated_at": "2025-12-20T09:00:00.000Z"},
           "old_record": RECORDS["orders"]}
