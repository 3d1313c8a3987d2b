"""Ordinary shop changes made on the Supabase side, and every delivery of them the mirror may get.

Each change is one transaction on the real PostgreSQL (its triggers stamp `updated_at`); it
yields what reaches the mirror: the shop client's operation (with the version the TypeScript
client would stamp, made after the commit, as the shop calls localSync after Supabase answers)
and one Supabase webhook per row it changed. The convergence tests deliver those in shuffled,
repeated and late orders, beside the WAL follower and a database outage, and then `verify`.
"""

import time
import uuid
from dataclasses import dataclass, field

import psycopg
from psycopg.types.json import Jsonb

# The tables mirrored in the order a clean start empties them (products last: the others refer to them).
TABLES = ("cart_items", "wishlist_items", "orders", "profiles", "user_roles", "products")
# What a shop does; `user` and `product` pick from a small pool so changes meet the same rows.
KINDS = ("cart_add", "cart_quantity", "cart_remove", "wishlist_on", "wishlist_off", "profile_edit",
         "profile_delete", "role_set", "role_delete", "order_new", "order_status")
USERS = 1
PRODUCTS = 1


@dataclass(frozen=True)
class Delivery:
    """One request that reaches the mirror: a client batch operation or a webhook body."""

    path: str  # "client" or "webhook"
    body: dict
    change: int  # the change it came from
    table: str

    def send(self, client, secret: str):
        """Send it as its path does; the Flask test client's response."""
        if self.path == "client":
            return client.post("/api/sync/batch", json={"operations": [self.body]})
        return client.post("/api/webhooks/supabase", json=self.body, headers={"X-Webhook-Secret": secret})


@dataclass
class Shop:
    """The Supabase side of one example: a few users and products, and the changes made so far."""

    connection: psycopg.Connection
    users: list[str] = field(default_factory=lambda: [str(uuid.uuid4()) for _ in range(USERS)])
    products: list[str] = field(default_factory=list)
    seq: int = 0
    changes: int = 0

    @classmethod
    def opened(cls, url: str) -> "Shop":
        """Empty the shop's tables and stock a few products."""
        connection = psycopg.connect(url, autocommit=True)
        for table in TABLES:
            connection.execute(f"DELETE FROM public.{table}")  # the names are fixed above
        shop = cls(connection)
        for number in range(PRODUCTS):
            (product,) = connection.execute(
                "INSERT INTO products (name, price, category, sizes) VALUES (%s, 999.5, 'ethnic', '{M}') "
                "RETURNING id", [f"Kurta {number}"]).fetchone()
            shop.products.append(str(product))
        return shop

    def close(self) -> None:
        self.connection.close()

    def make(self, kind: str, user: int, product: int, number: int) -> list[Delivery]:
        """Make one change (a kind that finds nothing to change makes the row instead); what reaches the mirror."""
        user_id, product_id = self.users[user % USERS], self.products[product % PRODUCTS]
        # Apart by more than the mirror's millisecond: two versions of a row never share a timestamp.
        time.sleep(0.003)
        client, events = getattr(self, kind)(user_id, product_id, number)
        self.changes += 1
        self.seq += 1
        # The client stamps its change after Supabase answered, as the shop calls localSync then.
        version = {"at": int(time.time() * 1000), "seq": self.seq}
        change = self.changes
        return [Delivery("client", {**client, "version": version}, change, client["collection"]),
                *(Delivery("webhook", event, change, event["table"]) for event in events)]

    # -- the kinds of change: each returns the client's operation and the webhook events -------------------

    def cart_add(self, user_id, product_id, number):
        row = self._one("INSERT INTO cart_items (user_id, product_id, size, quantity) VALUES (%s, %s, 'M', %s) "
                        "RETURNING to_jsonb(cart_items.*)", [user_id, product_id, 1 + number % 5])
        return _upsert("cart_items", row), [_event("INSERT", "cart_items", row)]

    def cart_quantity(self, user_id, product_id, number):
        row = self._one("UPDATE cart_items SET quantity = %s WHERE id = (SELECT id FROM cart_items WHERE user_id = %s "
                        "ORDER BY created_at LIMIT 1) RETURNING to_jsonb(cart_items.*)", [1 + number % 9, user_id])
        if row is None:
            return self.cart_add(user_id, product_id, number)
        return _upsert("cart_items", {"id": row["id"], "quantity": row["quantity"]}), \
            [_event("UPDATE", "cart_items", row)]

    def cart_remove(self, user_id, product_id, number):
        row = self._one("DELETE FROM cart_items WHERE id = (SELECT id FROM cart_items WHERE user_id = %s "
                        "ORDER BY created_at LIMIT 1) RETURNING to_jsonb(cart_items.*)", [user_id])
        if row is None:
            return self.cart_add(user_id, product_id, number)
        return _delete("cart_items", {"id": row["id"]}), [_event("DELETE", "cart_items", None, row)]

    def wishlist_on(self, user_id, product_id, number):
        if self._exists("wishlist_items", user_id, product_id):
            return self.wishlist_off(user_id, product_id, number)
        row = self._one("INSERT INTO wishlist_items (user_id, product_id) VALUES (%s, %s) "
                        "RETURNING to_jsonb(wishlist_items.*)", [user_id, product_id])
        return _upsert("wishlist_items", row), [_event("INSERT", "wishlist_items", row)]

    def wishlist_off(self, user_id, product_id, number):
        row = self._one("DELETE FROM wishlist_items WHERE user_id = %s AND product_id = %s "
                        "RETURNING to_jsonb(wishlist_items.*)", [user_id, product_id])
        if row is None:
            return self.wishlist_on(user_id, product_id, number)
        # The shop's heart names the row by its key, not its id.
        return _delete("wishlist_items", {"user_id": user_id, "product_id": product_id}), \
            [_event("DELETE", "wishlist_items", None, row)]

    def profile_edit(self, user_id, product_id, number):
        row = self._one("UPDATE profiles SET full_name = %s WHERE user_id = %s RETURNING to_jsonb(profiles.*)",
                        [f"Asha {number}", user_id])
        if row is None:
            row = self._one("INSERT INTO profiles (user_id, full_name, email) VALUES (%s, %s, 'asha@example.com') "
                            "RETURNING to_jsonb(profiles.*)", [user_id, f"Asha {number}"])
            return _upsert("profiles", row), [_event("INSERT", "profiles", row)]
        return _upsert("profiles", row), [_event("UPDATE", "profiles", row)]

    def profile_delete(self, user_id, product_id, number):
        row = self._one("DELETE FROM profiles WHERE user_id = %s RETURNING to_jsonb(profiles.*)", [user_id])
        if row is None:
            return self.profile_edit(user_id, product_id, number)
        return _delete("profiles", {"user_id": user_id}), [_event("DELETE", "profiles", None, row)]

    def role_set(self, user_id, product_id, number):
        role = ("customer", "seller")[number % 2]
        row = self._one("UPDATE user_roles SET role = %s WHERE user_id = %s RETURNING to_jsonb(user_roles.*)",
                        [role, user_id])
        if row is None:
            row = self._one("INSERT INTO user_roles (user_id, role) VALUES (%s, %s) RETURNING to_jsonb(user_roles.*)",
                            [user_id, role])
            return _upsert("user_roles", row), [_event("INSERT", "user_roles", row)]
        return _upsert("user_roles", row), [_event("UPDATE", "user_roles", row)]

    def role_delete(self, user_id, product_id, number):
        row = self._one("DELETE FROM user_roles WHERE user_id = %s RETURNING to_jsonb(user_roles.*)", [user_id])
        if row is None:
            return self.role_set(user_id, product_id, number)
        return _delete("user_roles", {"user_id": user_id}), [_event("DELETE", "user_roles", None, row)]

    def order_new(self, user_id, product_id, number):
        row = self._one("INSERT INTO orders (user_id, total_amount, items) VALUES (%s, %s, %s) "
                        "RETURNING to_jsonb(orders.*)",
                        [user_id, 999.5 * (1 + number % 3), Jsonb([{"product_id": product_id}])])
        return _upsert("orders", row), [_event("INSERT", "orders", row)]

    def order_status(self, user_id, product_id, number):
        row = self._one("UPDATE orders SET status = %s WHERE id = (SELECT id FROM orders WHERE user_id = %s "
                        "ORDER BY created_at LIMIT 1) RETURNING to_jsonb(orders.*)",
                        [("paid", "shipped", "delivered")[number % 3], user_id])
        if row is None:
            return self.order_new(user_id, product_id, number)
        return _upsert("orders", row), [_event("UPDATE", "orders", row)]

    def _one(self, query: str, params: list) -> dict | None:
        found = self.connection.execute(query, params).fetchone()
        return None if found is None else found[0]

    def _exists(self, table: str, user_id: str, product_id: str) -> bool:
        return self.connection.execute(f"SELECT 1 FROM public.{table} WHERE user_id = %s AND product_id = %s",
                                       [user_id, product_id]).fetchone() is not None


def _upsert(collection: str, record: dict) -> dict:
    return {"op": "upsert", "collection": collection, "record": record}


def _delete(collection: str, record: dict) -> dict:
    return {"op": "delete", "collection": collection, "record": record}


def _event(kind: str, table: str, record: dict | None, old: dict | None = None) -> dict:
    """A Supabase Database Webhook's body."""
    return {"type": kind, "table": table, "schema": "public", "record": record, "old_record": old}
