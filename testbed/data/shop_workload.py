"""A randomized shop workload on the Supabase side: inserts, updates, deletes and rolled-back transactions.

Each step is one transaction of one to four changes across the six tables (products first, for the
cart and wishlist foreign keys); about one in ten is rolled back. Used by the WAL follower's tests
and its benchmark.
"""

import json
import random
import uuid

import psycopg

ROLLED_BACK = 0.1


class ShopWorkload:
    """Random transactions against the FitKart tables of one database."""

    def __init__(self, url: str, seed: int) -> None:
        self.connection = psycopg.connect(url, autocommit=True)
        self.random = random.Random(seed)
        self.committed = self.rolled_back = self.changes = 0

    def step(self) -> None:
        """One transaction; rolled back sometimes (its changes must never reach the mirror)."""
        rollback = self.random.random() < ROLLED_BACK
        try:
            with self.connection.transaction(force_rollback=rollback):
                for _ in range(self.random.randint(1, 4)):
                    self.random.choice(CHANGES)(self)
                    self.changes += 0 if rollback else 1
        except psycopg.errors.UniqueViolation:
            return  # a random wishlist pair or user taken twice: the transaction did not happen
        if rollback:
            self.rolled_back += 1
        else:
            self.committed += 1

    def close(self) -> None:
        self.connection.close()

    def _some(self, table: str, column: str = "id") -> str | None:
        """A random existing row's column, or None when the table is empty."""
        row = self.connection.execute(
            f"SELECT {column} FROM public.{table} ORDER BY random() LIMIT 1").fetchone()  # the names are fixed here
        return row[0] if row else None

    def _money(self) -> str:
        return f"{self.random.randint(1, 99999)}.{self.random.randint(0, 99):02d}"

    def new_product(self) -> None:
        self.connection.execute(
            "INSERT INTO products (name, price, category, sizes, colors, stock_quantity, seller_id) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [f"Kurta {self.random.randint(1, 10**6)}", self._money(), self.random.choice(["ethnic", "denim"]),
             self.random.sample(["S", "M", "L", "XL"], 2), self.random.choice([None, ["indigo", "white, off"]]),
             self.random.randint(0, 50), uuid.uuid4()])

    def change_product(self) -> None:
        self.connection.execute("UPDATE products SET price = %s, stock_quantity = %s, is_active = %s WHERE id = %s",
                                [self._money(), self.random.randint(0, 50), self.random.random() < 0.8,
                                 self._some("products")])

    def drop_product(self) -> None:
        # Cascades to cart and wishlist rows: the log carries those deletes too.
        if self.random.random() < 0.3:
            self.connection.execute("DELETE FROM products WHERE id = %s", [self._some("products")])

    def new_profile(self) -> None:
        self.connection.execute(
            "INSERT INTO profiles (user_id, full_name, email, body_measurements, style_preferences) "
            "VALUES (%s, %s, %s, %s, %s)",
            [uuid.uuid4(), "Asha Rao", "asha@example.com",
             json.dumps({"height": self.random.randint(150, 190), "fit": {"waist": 1.5}}), ["boho", "minimal"]])

    def change_profile(self) -> None:
        self.connection.execute("UPDATE profiles SET full_name = %s WHERE id = %s",
                                [f"Asha {self.random.randint(1, 999)}", self._some("profiles")])

    def drop_profile(self) -> None:
        self.connection.execute("DELETE FROM profiles WHERE id = %s", [self._some("profiles")])

    def new_cart_item(self) -> None:
        product = self._some("products")
        if product:
            self.connection.execute("INSERT INTO cart_items (user_id, product_id, size, quantity) "
                                    "VALUES (%s, %s, 'M', %s)", [uuid.uuid4(), product, self.random.randint(1, 5)])

    def change_cart_item(self) -> None:
        self.connection.execute("UPDATE cart_items SET quantity = %s WHERE id = %s",
                                [self.random.randint(1, 9), self._some("cart_items")])

    def drop_cart_item(self) -> None:
        self.connection.execute("DELETE FROM cart_items WHERE id = %s", [self._some("cart_items")])

    def new_wishlist_item(self) -> None:
        product = self._some("products")
        if product:
            self.connection.execute("INSERT INTO wishlist_items (user_id, product_id) VALUES (%s, %s)",
                                    [uuid.uuid4(), product])

    def drop_wishlist_item(self) -> None:
        self.connection.execute("DELETE FROM wishlist_items WHERE id = %s", [self._some("wishlist_items")])

    def new_order(self) -> None:
        items = [{"product_id": str(uuid.uuid4()), "price": 1499.5, "quantity": self.random.randint(1, 3)}]
        self.connection.execute(
            "INSERT INTO orders (user_id, total_amount, items, shipping_address) VALUES (%s, %s, %s, %s)",
            [uuid.uuid4(), self._money(), json.dumps(items), json.dumps({"city": "Bengaluru"})])

    def change_order(self) -> None:
        self.connection.execute("UPDATE orders SET status = %s WHERE id = %s",
                                [self.random.choice(["paid", "shipped", "delivered"]), self._some("orders")])

    def new_user_role(self) -> None:
        self.connection.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, %s)",
                                [uuid.uuid4(), self.random.choice(["customer", "seller"])])

    def change_user_role(self) -> None:
        self.connection.execute("UPDATE user_roles SET role = %s WHERE id = %s",
                                [self.random.choice(["customer", "seller"]), self._some("user_roles")])

    def drop_user_role(self) -> None:
        self.connection.execute("DELETE FROM user_roles WHERE id = %s", [self._some("user_roles")])


# Weighted towards inserts, so the tables grow while rows are also updated and deleted.
CHANGES = [ShopWorkload.new_product, ShopWorkload.new_product, ShopWorkload.change_product, ShopWorkload.drop_product,
           ShopWorkload.new_profile, ShopWorkload.change_profile, ShopWorkload.drop_profile,
           ShopWorkload.new_cart_item, ShopWorkload.new_cart_item, ShopWorkload.change_cart_item,
           ShopWorkload.drop_cart_item, ShopWorkload.new_wishlist_item, ShopWorkload.drop_wishlist_item,
           ShopWorkload.new_order, ShopWorkload.change_order, ShopWorkload.new_user_role,
           ShopWorkload.change_user_role, ShopWorkload.drop_user_role]
