"""The FitKart mix of single writes, one definition for wrk (bench/mix.lua), the ceilings and the census.

bench/run.py passes SHARES and MIN_EXISTING to bench/mix.lua as arguments, so wrk draws the same
proportions; the script's own defaults (for running wrk by hand) must stay equal to these.
"""

import itertools
import random
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

# Percent of requests of each kind, in the order bench/mix.lua draws them (keep its defaults equal).
SHARES: dict[str, int] = {"new_cart": 35, "same_row": 15, "partial": 20, "delete": 10, "profile": 10, "order": 10}
# Below this many cart rows of its own, a client adds a row whatever it drew (bench/mix.lua: the same).
MIN_EXISTING = 10
LABELS: dict[str, str] = {"new_cart": "new cart row", "same_row": "same row, new total",
                          "partial": "partial {id, quantity}", "delete": "delete", "profile": "profile upsert",
                          "order": "order upsert"}
# The field each collection is keyed by (the server's `_id`; the Express design's filter).
KEY_FIELD: dict[str, str] = {"cart_items": "id", "profiles": "user_id", "orders": "id"}
TIMESTAMPS = ("created_at", "updated_at")
USER = "5b0e6f8a-3c1d-4f2e-9a7b-1c2d3e4f5a6b"
CREATED = "2025-12-19T14:24:22.123456+00:00"
assert sum(SHARES.values()) == 100


@dataclass(frozen=True)
class Request:
    """One write of the mix: the HTTP request the server gets, and what it names."""

    kind: str
    method: str
    path: str
    collection: str
    key: str
    body: dict | None  # None for a delete


def new_id() -> str:
    """A fresh Supabase uuid."""
    return str(uuid.uuid4())


def cart_row(row_id: str, quantity: int) -> dict:
    """A cart row as the shop's frontend sends it (bench/mix.lua's cart_row)."""
    return {"id": row_id, "user_id": USER, "product_id": new_id(), "size": "M", "color": "indigo",
            "quantity": quantity, "created_at": CREATED}


def profile_body(number: int) -> dict:
    """A new user's profile (bench/mix.lua's profile upsert)."""
    return {"user_id": new_id(), "email": f"user{number}@example.com", "full_name": "Asha Rao", "avatar_url": None,
            "body_measurements": {"height_cm": 165, "chest_cm": 86.5, "waist_cm": 70},
            "style_preferences": ["minimal", "ethnic"], "updated_at": CREATED}


def order_body() -> dict:
    """A checkout (bench/mix.lua's order upsert)."""
    return {"id": new_id(), "user_id": USER, "status": "pending", "total_amount": 4497.00,
            "shipping_address": {"line1": "12 MG Road", "city": "Bengaluru", "pincode": "560001"},
            "items": [{"id": new_id(), "product_id": new_id(), "name": "Linen Kurta", "price": 1499, "quantity": 3,
                       "size": "M", "image": "https://cdn.example/kurta.jpg"}],
            "created_at": "2025-12-19T14:25:00+00:00", "updated_at": "2025-12-19T14:25:00+00:00"}


class Mix:
    """One client's stream of mix requests; like one wrk thread, it remembers the cart rows it made."""

    def __init__(self, seed: int | None = None) -> None:
        self.random = random.Random(seed)
        self.existing: list[str] = []
        self.count = 0
        self.bounds = list(itertools.accumulate(SHARES.values()))

    def kind(self) -> str:
        """The next kind, drawn with SHARES' weights (a roll of 1..100, as in bench/mix.lua)."""
        roll = self.random.randint(1, 100)
        if len(self.existing) < MIN_EXISTING:
            return "new_cart"
        return next(kind for kind, bound in zip(SHARES, self.bounds, strict=True) if roll <= bound)

    def next(self) -> Request:
        """The next request of the mix."""
        self.count += 1
        kind = self.kind()
        if kind == "new_cart":
            row = cart_row(new_id(), self.random.randint(1, 5))
            self.existing.append(row["id"])
            return Request(kind, "POST", "/api/sync/cart", "cart_items", row["id"], row)
        if kind == "same_row":
            row = cart_row(self.random.choice(self.existing), self.random.randint(1, 5))
            return Request(kind, "POST", "/api/sync/cart", "cart_items", row["id"], row)
        if kind == "partial":
            body = {"id": self.random.choice(self.existing), "quantity": self.random.randint(1, 9)}
            return Request(kind, "POST", "/api/sync/cart", "cart_items", body["id"], body)
        if kind == "delete":
            index = self.random.randrange(len(self.existing))
            self.existing[index], self.existing[-1] = self.existing[-1], self.existing[index]
            row_id = self.existing.pop()
            return Request(kind, "DELETE", f"/api/sync/cart/{row_id}", "cart_items", row_id, None)
        if kind == "profile":
            body = profile_body(self.count)
            return Request(kind, "POST", "/api/sync/profile", "profiles", body["user_id"], body)
        body = order_body()
        return Request(kind, "POST", "/api/sync/order", "orders", body["id"], body)


def provenance() -> dict:
    """The bookkeeping the server adds to every document it writes (same size, same place)."""
    return {"written_at": datetime.now(UTC), "source": "client", "version": 1}


def stored_fields(body: dict) -> dict:
    """A record's fields as the server stores them: timestamps as dates, its provenance beside them."""
    fields = {name: datetime.fromisoformat(value) if name in TIMESTAMPS else value for name, value in body.items()}
    return {**fields, "_fitkart": provenance()}


class CartPool:
    """Cart rows that exist, for batches of partial updates: each taken with a quantity it does not hold yet."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.quantities: dict[str, int] = {}
        self.ids: list[str] = []
        self.cursor = 0

    def add(self, rows: list[dict]) -> None:
        """Remember rows that are now stored."""
        with self.lock:
            for row in rows:
                if row["id"] not in self.quantities:
                    self.ids.append(row["id"])
                self.quantities[row["id"]] = row["quantity"]

    def take(self, count: int) -> list[dict]:
        """`count` distinct rows as partial updates {id, quantity}, each changing the quantity.

        Consecutive slices of a ring, so concurrent streams update different rows.
        """
        with self.lock:
            count = min(count, len(self.ids))
            taken = []
            for _ in range(count):
                row_id = self.ids[self.cursor % len(self.ids)]
                self.cursor += 1
                self.quantities[row_id] += 1
                taken.append({"id": row_id, "quantity": self.quantities[row_id]})
            return taken

    def __len__(self) -> int:
        return len(self.ids)
