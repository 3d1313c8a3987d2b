"""The writers beside the API at size, for bench.scale: the WAL follower, repair and the spool's replay.

Each runs as an operator runs it (the follower and repair as `flask fitkart` processes with no setting but the
two URLs; the replay through the app's own Replayer) against a real PostgreSQL and the mirror's server, and
reports rows per second over its wall time.
"""

import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import psycopg

from fitkart_server import create_app
from fitkart_server.model.policy import SERVICE
from testbed.data.records import cart_item, profile
from testbed.data.supabase_rows import generate_rows
from testbed.servers.follower import ROOT, start_follower


@dataclass
class Throughput:
    """What one writer did: rows (or entries) in how many seconds, and its peak memory when it was a process."""

    name: str
    rows: int
    seconds: float
    peak_rss_mb: float | None = None

    @property
    def per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else float("nan")

    def row(self) -> list[str]:
        memory = f"{self.peak_rss_mb:,.0f}" if self.peak_rss_mb is not None else "—"
        return [self.name, f"{self.rows:,}", f"{self.seconds:,.1f}", f"{self.per_second:,.0f}", memory]


def waited(process: subprocess.Popen) -> tuple[int, float, float]:
    """Wait for a process: its exit status, wall seconds since now, and its peak resident memory in MB."""
    started = time.monotonic()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, time.monotonic() - started, usage.ru_maxrss / 1024


def follower_on_one_transaction(postgres, mongo_uri: str, rows: int) -> Throughput:
    """`follow --once` applying one transaction of `rows` cart rows (its slot made first, on empty tables)."""
    url = postgres.create_database("follow_large")
    mirror, slot = f"{mongo_uri}/follow_large", ("--slot", "bench_large")  # slot names are the server's
    assert start_follower(mirror, url, "--once", *slot).wait() == 0
    generate_rows(url, products=10, carts=rows, wishlists=0, profiles=0)  # one transaction
    status, seconds, peak = waited(start_follower(mirror, url, "--once", *slot))
    assert status == 0, f"follow exited {status}"
    return Throughput(f"follower: one transaction of {rows:,} rows", rows + 10, seconds, peak)


def follower_on_small_transactions(postgres, mongo_uri: str, transactions: int) -> Throughput:
    """`follow --once` applying `transactions` one-row transactions."""
    url = postgres.create_database("follow_small")
    mirror, slot = f"{mongo_uri}/follow_small", ("--slot", "bench_small")
    assert start_follower(mirror, url, "--once", *slot).wait() == 0
    generate_rows(url, products=10, carts=0, wishlists=0, profiles=0)
    with psycopg.connect(url, autocommit=True) as connection:
        product = connection.execute("SELECT id FROM public.products LIMIT 1").fetchone()[0]
        for _ in range(transactions):
            connection.execute("INSERT INTO public.cart_items (user_id, product_id, size, quantity) "
                               "VALUES (gen_random_uuid(), %s, 'M', 1)", [product])
    status, seconds, peak = waited(start_follower(mirror, url, "--once", *slot))
    assert status == 0, f"follow exited {status}"
    return Throughput(f"follower: {transactions:,} one-row transactions", transactions + 10, seconds, peak)


def repair_of_missing_rows(postgres, mongo_uri: str, rows: int) -> Throughput:
    """`flask fitkart repair` filling an empty mirror from `rows` Supabase rows of the six tables."""
    url = postgres.create_database("repair")
    generated = generate_rows(url, products=rows // 10, carts=rows // 2, wishlists=rows // 5,
                              profiles=rows - rows // 10 - rows // 2 - rows // 5)
    environment = {name: value for name, value in os.environ.items() if not name.startswith("FITKART_")}
    environment["FITKART_MONGODB_URI"] = f"{mongo_uri}/repair"
    process = subprocess.Popen([sys.executable, "-m", "flask", "--app", "fitkart_server", "fitkart", "repair",
                                "--database-url", url], cwd=ROOT, env=environment, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    status, seconds, peak = waited(process)
    assert status == 0, f"repair exited {status}"
    return Throughput(f"repair: {generated:,} missing rows", generated, seconds, peak)


def spool_drain(mongo_uri: str, entries: int, seed: int = 5) -> Throughput:
    """The spool's replay of a mixed backlog of one caller: new cart rows, partial updates, deletes, profiles."""
    chooser = random.Random(seed)
    with tempfile.TemporaryDirectory() as files:
        app = create_app({"FITKART_MONGODB_URI": f"{mongo_uri}/spool_drain",
                          "FITKART_SPOOL_PATH": f"{files}/spool.sqlite3",
                          "FITKART_RATELIMIT_STORAGE": f"sqlite:///{files}/ratelimit.sqlite3"})
        spool, replayer = app.extensions["fitkart_spool"], app.extensions["fitkart_replayer"]
        stored: list[dict] = []
        for _ in range(entries):
            draw = chooser.random()
            if draw < 0.6 or len(stored) < 10:
                row = cart_item()
                stored.append(row)
                spool.append("upsert", "cart_items", row, SERVICE, "client", "/api/sync/cart")
            elif draw < 0.8:
                row = chooser.choice(stored)
                spool.append("upsert", "cart_items", {"id": row["id"], "quantity": chooser.randint(1, 9)}, SERVICE,
                             "client", "/api/sync/cart")
            elif draw < 0.9:
                row = stored.pop(chooser.randrange(len(stored)))
                spool.append("delete", "cart_items", {"id": row["id"]}, SERVICE, "client",
                             f"/api/sync/cart/{row['id']}")
            else:
                spool.append("upsert", "profiles", profile(), SERVICE, "client", "/api/sync/profile")
        started = time.monotonic()
        replayed = replayer.replay()
        seconds = time.monotonic() - started
        replayer.stop()
        app.extensions["fitkart_store"].close()
    assert replayed == entries, f"{replayed} of {entries} replayed"
    return Throughput(f"spool replay: {entries:,} mixed entries", entries, seconds)
