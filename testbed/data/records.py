"""FitKart-shaped records, as the shop's Supabase tables return them."""

import uuid


def new_id() -> str:
    """A fresh Supabase uuid."""
    return str(uuid.uuid4())


def stamp(second: int = 0, micro: int = 123456) -> str:
    """A timestamptz as Supabase renders it, `second` seconds into a fixed minute."""
    return f"2025-12-19T14:24:{second:02d}.{micro:06d}+00:00"


def product(**fields) -> dict:
    """A products row."""
    return {"id": new_id(), "name": "Linen Kurta", "description": "Breathable summer kurta",
            "price": 1499.5, "category": "ethnic", "brand": "FitKart Basics",
            "sizes": ["S", "M", "L"], "colors": ["white", "indigo"],
            "images": ["https://cdn.example/kurta.jpg"], "stock_quantity": 25, "is_active": True,
            "seller_id": new_id(), "created_at": stamp(0), "updated_at": stamp(0), **fields}


def cart_item(**fields) -> dict:
    """A cart_items row (the table has no updated_at)."""
    return {"id": new_id(), "user_id": new_id(), "product_id": new_id(), "size": "M",
            "color": "indigo", "quantity": 1, "created_at": stamp(0), **fields}


def order(**fields) -> dict:
    """An orders row with two items."""
    return {"id": new_id(), "user_id": new_id(), "status": "pending", "total_amount": 2998.0,
            "shipping_address": {"line1": "12 MG Road", "city": "Bengaluru", "pincode": "560001"},
            "items": [{"id": new_id(), "product_id": new_id(), "name": "Linen Kurta", "price": 1499.0,
                       "quantity": 2, "size": "M", "image": "https://cdn.example/kurta.jpg"}],
            "created_at": stamp(0), "updated_at": stamp(0), **fields}


def profile(**fields) -> dict:
    """A profiles row."""
    return {"id": new_id(), "user_id": new_id(), "full_name": "Asha Rao", "email": "asha@example.com",
            "avatar_url": None, "body_measurements": {"height_cm": 165, "chest_cm": 86},
            "style_preferences": ["minimal", "ethnic"], "created_at": stamp(0), "updated_at": stamp(0),
            **fields}


def wishlist_item(**fields) -> dict:
    """A wishlist_items row."""
    return {"id": new_id(), "user_id": new_id(), "product_id": new_id(), "created_at": stamp(0), **fields}


def user_role(**fields) -> dict:
    """A user_roles row."""
    return {"id": new_id(), "user_id": new_id(), "role": "customer", "created_at": stamp(0),
            "updated_at": stamp(0), **fields}
