"""Rows inserted into the real PostgreSQL standing in for Supabase, in FitKart's shapes."""

import uuid

import psycopg
from psycopg.types.json import Jsonb


def seed_shop(database_url: str) -> dict[str, list[dict]]:
    """A small shop: two sellers' products, a customer's cart, wishlist, order, profile and roles."""
    customer, seller = str(uuid.uuid4()), str(uuid.uuid4())
    rows: dict[str, list[dict]] = {name: [] for name in
                                   ("products", "profiles", "user_roles", "cart_items", "wishlist_items", "orders")}
    with psycopg.connect(database_url) as connection:
        def insert(table: str, values: dict) -> dict:
            columns = ", ".join(values)
            marks = ", ".join(["%s"] * len(values))
            params = [_adapt(table, column, value) for column, value in values.items()]
            row = connection.execute(f"INSERT INTO public.{table} ({columns}) VALUES ({marks}) RETURNING *",
                                     params).fetchone()
            names = [column.name for column in connection.execute(
                f"SELECT * FROM public.{table} LIMIT 0").description]
            record = dict(zip(names, row, strict=True))
            rows[table].append(record)
            return record

        kurta = insert("products", {"name": "Linen Kurta", "description": "Summer kurta", "price": "1499.50",
                                    "category": "ethnic", "brand": "FitKart", "sizes": ["S", "M", "L"],
                                    "colors": ["white"], "images": ["k.jpg"], "stock_quantity": 25,
                                    "is_active": True, "seller_id": seller})
        jeans = insert("products", {"name": "Slim Jeans", "price": "2199.00", "category": "denim",
                                    "sizes": ["30", "32"], "seller_id": seller})
        insert("profiles", {"user_id": customer, "full_name": "Asha Rao", "email": "asha@example.com",
                            "body_measurements": {"height_cm": 165, "chest_cm": 86.5},
                            "style_preferences": ["minimal", "ethnic"]})
        insert("profiles", {"user_id": seller, "full_name": "Ravi Sells", "email": "ravi@example.com"})
        insert("user_roles", {"user_id": customer})
        insert("user_roles", {"user_id": seller, "role": "seller"})
        insert("cart_items", {"user_id": customer, "product_id": kurta["id"], "size": "M", "color": "white",
                              "quantity": 2})
        insert("cart_items", {"user_id": customer, "product_id": jeans["id"], "size": "32"})
        insert("wishlist_items", {"user_id": customer, "product_id": jeans["id"]})
        insert("wishlist_items", {"user_id": seller, "product_id": kurta["id"]})
        insert("orders", {"user_id": customer, "total_amount": "2999.00", "status": "pending",
                          "shipping_address": {"line1": "12 MG Road", "city": "Bengaluru"},
                          "items": [{"id": str(uuid.uuid4()), "product_id": str(kurta["id"]), "name": "Linen Kurta",
                                     "price": 1499.5, "quantity": 2, "size": "M", "image": "k.jpg"}]})
    return rows


JSONB = {"profiles": ("body_measurements",), "orders": ("shipping_address", "items")}


def _adapt(table: str, column: str, value):
    """jsonb columns take JSON; everything else goes as is."""
    return Jsonb(value) if column in JSONB.get(table, ()) else value


def generate_rows(database_url: str, *, products: int, carts: int, wishlists: int, profiles: int,
                  orders: int = 0, roles: int = 0) -> int:
    """Bulk rows made inside PostgreSQL (generate_series); how many in all."""
    with psycopg.connect(database_url) as connection:
        connection.execute(
            "INSERT INTO public.products (name, price, category, sizes, seller_id, stock_quantity) "
            "SELECT 'Product ' || n, (500 + n %% 4500)::numeric(10,2) + 0.99, 'cat' || n %% 7, ARRAY['S','M'], "
            "gen_random_uuid(), n %% 50 FROM generate_series(1, %s) n", [products])
        ids = "WITH ids AS (SELECT array_agg(id ORDER BY id) AS a FROM public.products) "
        connection.execute(
            ids + "INSERT INTO public.cart_items (user_id, product_id, size, quantity) "
            "SELECT gen_random_uuid(), ids.a[1 + n %% %s], 'M', 1 + n %% 5 FROM generate_series(1, %s) n, ids",
            [products, carts])
        connection.execute(
            ids + "INSERT INTO public.wishlist_items (user_id, product_id) "
            "SELECT gen_random_uuid(), ids.a[1 + n %% %s] FROM generate_series(1, %s) n, ids", [products, wishlists])
        connection.execute(
            "INSERT INTO public.profiles (user_id, full_name, email, body_measurements, style_preferences) "
            "SELECT gen_random_uuid(), 'User ' || n, 'user' || n || '@example.com', "
            "jsonb_build_object('height_cm', 150 + n %% 40), ARRAY['casual'] FROM generate_series(1, %s) n",
            [profiles])
        connection.execute(
            "INSERT INTO public.orders (user_id, status, total_amount, shipping_address, items) "
            "SELECT gen_random_uuid(), 'pending', (999 + n %% 9000)::numeric(10,2) + 0.5, "
            "jsonb_build_object('line1', n || ' MG Road', 'city', 'Bengaluru'), "
            "jsonb_build_array(jsonb_build_object('product_id', gen_random_uuid(), 'name', 'Kurta', "
            "'price', 999.5, 'quantity', 1 + n %% 3, 'size', 'M')) FROM generate_series(1, %s) n", [orders])
        connection.execute(
            "INSERT INTO public.user_roles (user_id, role) "
            "SELECT gen_random_uuid(), CASE WHEN n %% 20 = 0 THEN 'seller' ELSE 'customer' END::public.user_role "
            "FROM generate_series(1, %s) n", [roles])
    return products + carts + wishlists + profiles + orders + roles

