"""The acknowledged-writes checker: clients writing cart rows through faults, and what the mirror must then hold.

Each client thread owns its rows and changes one at a time, as the shop's frontend does with the
legacy routes: it creates a row, changes its quantity, or deletes it, waiting for each answer.
After the faults and the drain, for every row whose writes were all answered (200/201/202 applied
or queued; 503 "nothing was kept"), the mirror holds exactly what the last acknowledged write left:
the row with its last quantity, or nothing when it was deleted (nothing resurrected), and never
two documents of one id (nothing duplicated). A row with a write that got no answer at all (cut off,
timed out) is left out: it may or may not have landed.
"""

import http.client
import json
import random
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from .data.records import cart_item

ACKNOWLEDGED = {200, 201, 202}
NOTHING_KEPT = 503  # the server says nothing was kept (the spool full or locked, the database refusing us)


def call(method: str, url: str, body: dict | None = None, timeout: float = 30) -> int:
    """One request as the frontend makes it; its status (0: no answer)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        with error:
            return error.code
    except (OSError, ValueError, http.client.HTTPException):
        return 0


@dataclass
class Row:
    """One cart row a client owns: what its acknowledged writes left, and whether that is certain."""

    record: dict
    stored: bool = False  # whether the last acknowledged write left it in the mirror
    quantity: int = 0
    certain: bool = True  # False once a write of it got no answer


@dataclass
class AcknowledgedWrites:
    """Client threads writing their own cart rows against `url` until stopped; every answer is remembered."""

    url: str
    threads: int = 4
    timeout: float = 30
    body_bytes: int = 0  # padding per row (a `note` this long), to fill a spool sooner
    pause: float = 0.0  # seconds each client waits between its writes (a shop's pace, not a flood)
    rows: list[Row] = field(default_factory=list)
    statuses: list[tuple[float, int, float]] = field(default_factory=list)  # (sent at, status, seconds)

    def __post_init__(self) -> None:
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.workers = [threading.Thread(target=self._run, args=(seed,), daemon=True) for seed in range(self.threads)]

    def __enter__(self) -> "AcknowledgedWrites":
        for worker in self.workers:
            worker.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for worker in self.workers:
            worker.join(self.timeout * 2)

    def _run(self, seed: int) -> None:
        chance = random.Random(seed)
        own: list[Row] = []
        while not self.stopping.wait(self.pause):
            roll = chance.random()
            if not own or roll < 0.5:
                pad = {"note": "x" * self.body_bytes} if self.body_bytes else {}
                row = Row(cart_item(quantity=chance.randint(1, 99), **pad))
                own.append(row)
                with self.lock:
                    self.rows.append(row)
                self._send(row, "POST", "/api/sync/cart", row.record, stored=True, quantity=row.record["quantity"])
            elif roll < 0.8:
                row = chance.choice(own)
                quantity = chance.randint(1, 99)
                record = {**row.record, "quantity": quantity}
                self._send(row, "POST", "/api/sync/cart", record, stored=True, quantity=quantity)
            else:
                row = chance.choice(own)
                own.remove(row)  # Supabase never gives a deleted row's id again: its later writes would be stale
                self._send(row, "DELETE", f"/api/sync/cart/{row.record['id']}", None, stored=False, quantity=0)

    def _send(self, row: Row, method: str, path: str, body: dict | None, *, stored: bool, quantity: int) -> None:
        sent = time.monotonic()
        status = call(method, self.url + path, body, self.timeout)
        with self.lock:
            self.statuses.append((sent, status, time.monotonic() - sent))
            if status in ACKNOWLEDGED:
                row.stored, row.quantity = stored, quantity
            elif status != NOTHING_KEPT and not 400 <= status < 500:
                row.certain = False  # no answer, or a 5xx that does not say nothing was kept

    def seen(self, since: float = 0.0) -> set[int]:
        """The statuses of requests sent after `since` (a monotonic time)."""
        with self.lock:
            return {status for sent, status, _ in self.statuses if sent >= since}

    def acknowledged(self) -> int:
        """How many writes were acknowledged so far."""
        with self.lock:
            return sum(status in ACKNOWLEDGED for _, status, _ in self.statuses)

    def check(self, mongo) -> None:
        """The mirror holds what every acknowledged write left: nothing lost, resurrected or duplicated."""
        assert self.acknowledged(), "no write was acknowledged at all"
        held: dict[str, list[int]] = {}
        for document in mongo.cart_items.find({}, {"id": 1, "quantity": 1}):
            held.setdefault(document["id"], []).append(document["quantity"])
        duplicated = [key for key, quantities in held.items() if len(quantities) > 1]
        certain = [row for row in self.rows if row.certain]
        lost = [row.record["id"] for row in certain if row.stored and held.get(row.record["id"]) != [row.quantity]]
        resurrected = [row.record["id"] for row in certain if not row.stored and row.record["id"] in held]
        assert not duplicated, f"{len(duplicated)} rows stored twice, e.g. {duplicated[:3]}"
        assert not lost, f"{len(lost)} of {len(certain)} acknowledged rows lost or stale, e.g. {lost[:3]}"
        assert not resurrected, f"{len(resurrected)} deleted rows came back, e.g. {resurrected[:3]}"
