"""The WAL follower: how fast it applies changes, and how far behind it runs under a steady write rate.

    .venv/bin/python -m bench.follow [--backlog 2000] [--rate 20 --seconds 30] [--large 200000 --stop-after 30]

Starts Debian's PostgreSQL with wal_level=logical (and wal2json) and the tests' database server
(FerretDB unless `mongod` is on PATH). Throughput: `--backlog` random shop transactions are
committed while no follower runs, then `flask fitkart follow --once` applies them; changes per
second is what it applied over its wall time (slot reads, engine writes and confirmations). Lag:
a follower runs as its own process while transactions are committed at `--rate` per second for
`--seconds`; its lag (WAL bytes after its confirmed position, and the age of the commit it last
applied while behind) is sampled from `sync_follow` every second. One large transaction: `--large` cart
rows committed at once; a follower runs as its own process and gets SIGTERM `--stop-after` seconds into following
(PostgreSQL may still be decoding, or the follower applying): how long it took to exit, its resident memory and
lag (sampled each second) meanwhile; a last `follow --once` then applies the transaction whole.
"""

import argparse
import signal
import statistics
import tempfile
import time
from pathlib import Path

import pymongo

from testbed.data.shop_workload import ShopWorkload
from testbed.data.supabase_rows import generate_rows
from testbed.servers.follower import start_follower
from testbed.servers.mongo import MongoServer
from testbed.servers.postgres import PostgresServer, ensure_wal2json, postgres_bindir


def throughput(postgres: PostgresServer, mongo_uri: str, backlog: int) -> None:
    """Apply a backlog of `backlog` transactions with `follow --once`; print changes per second."""
    url = postgres.create_database("throughput")
    slot = ("--slot", "bench_throughput")
    assert start_follower(mongo_uri + "/throughput", url, "--once", *slot).wait() == 0  # the slot, on empty tables
    workload = ShopWorkload(url, seed=7)
    for _ in range(backlog):
        workload.step()
    workload.close()
    with tempfile.TemporaryFile() as log:
        started = time.monotonic()
        status = start_follower(mongo_uri + "/throughput", url, "--once", *slot, log=log).wait()
        elapsed = time.monotonic() - started
        log.seek(0)
        output = log.read().decode(errors="replace")
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    state = pymongo.MongoClient(mongo_uri)["throughput"]["sync_follow"].find_one({"_id": "bench_throughput"})
    changes = state.get("total_changes", 0)
    print(f"backlog of {workload.committed} committed transactions ({changes} changes) applied in {elapsed:.1f} s "
          f"(process start included): {changes / elapsed:,.0f} changes/s, "
          f"{workload.committed / elapsed:,.0f} transactions/s; exit {status}; {summary}")


def steady(postgres: PostgresServer, mongo_uri: str, rate: float, seconds: float) -> None:
    """Commit `rate` transactions per second for `seconds` while a follower runs; print its lag."""
    name = f"steady_{int(rate)}"
    url = postgres.create_database(name)
    database = pymongo.MongoClient(mongo_uri)[name]
    process = start_follower(mongo_uri + "/" + name, url, "--poll-seconds", "0.2", "--slot", name)
    try:
        while (database["sync_follow"].find_one({"_id": name}) or {}).get("state") != "following":
            time.sleep(0.2)
        workload = ShopWorkload(url, seed=8)
        samples: list[tuple[int, float]] = []
        started = next_sample = time.monotonic()
        steps = 0
        while time.monotonic() - started < seconds:
            workload.step()
            steps += 1
            now = time.monotonic()
            if now >= next_sample:
                state = database["sync_follow"].find_one({"_id": name}) or {}
                samples.append((state.get("lag_bytes", 0), state.get("lag_seconds", 0.0)))
                next_sample += 1
            time.sleep(max(0.0, started + steps / rate - time.monotonic()))
        committed = workload.committed
        workload.close()
        caught_up = time.monotonic()
        while (database["sync_follow"].find_one({"_id": name}) or {}).get("lag_seconds", 1) > 0:
            time.sleep(0.2)
        drain = time.monotonic() - caught_up
    finally:
        process.terminate()
        process.wait()
    lag_bytes = [sample[0] for sample in samples]
    lag_seconds = [sample[1] for sample in samples]
    print(f"steady {rate:g} transactions/s for {seconds:g} s ({committed} committed): lag median "
          f"{statistics.median(lag_bytes):,.0f} bytes / {statistics.median(lag_seconds):.2f} s, max "
          f"{max(lag_bytes):,} bytes / {max(lag_seconds):.2f} s; caught up {drain:.1f} s after the writes stopped")


def resident_mb(pid: int) -> float:
    """A process's resident memory now (VmRSS), in MB; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def large(postgres: PostgresServer, mongo_uri: str, rows: int, stops: list[float]) -> None:
    """One transaction of `rows` cart rows; a follower stopped with SIGTERM after each of `stops` seconds, then a
    `follow --once`; print each stop's exit time, peak memory and lag, and the rows the mirror ends with."""
    name = "large"
    url = postgres.create_database(name)
    slot = ("--slot", "bench_large_stop")
    database = pymongo.MongoClient(mongo_uri)[name]
    assert start_follower(mongo_uri + "/" + name, url, "--once", *slot).wait() == 0  # the slot, on empty tables
    generate_rows(url, products=10, carts=rows, wishlists=0, profiles=0)  # one transaction
    for after in stops:
        process = start_follower(mongo_uri + "/" + name, url, "--poll-seconds", "0.2", *slot)
        while (database["sync_follow"].find_one({"_id": slot[1]}) or {}).get("state") != "following":
            time.sleep(0.05)  # counted from when it follows: a SIGTERM before its handler is set just kills it
        started, peak, lags = time.monotonic(), 0.0, []
        while time.monotonic() - started < after and process.poll() is None:
            peak = max(peak, resident_mb(process.pid))
            lags.append((database["sync_follow"].find_one({"_id": slot[1]}) or {}).get("lag_seconds", 0.0))
            time.sleep(min(1.0, max(0.0, started + after - time.monotonic())))
        stopped = time.monotonic()
        process.send_signal(signal.SIGTERM)
        status = process.wait()
        print(f"SIGTERM after {after:g} s: exited {status} in {time.monotonic() - stopped:.2f} s; peak RSS "
              f"{peak:.0f} MB; lag seconds sampled {min(lags, default=0):.1f}..{max(lags, default=0):.1f}; "
              f"cart rows in the mirror {database['cart_items'].count_documents({}):,}")
    started = time.monotonic()
    status = start_follower(mongo_uri + "/" + name, url, "--once", *slot).wait()
    print(f"follow --once then: exit {status} in {time.monotonic() - started:.1f} s; cart rows in the mirror "
          f"{database['cart_items'].count_documents({}):,} of {rows:,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backlog", type=int, default=2000,
                        help="Transactions applied by one `follow --once` (0: none).")
    parser.add_argument("--rate", type=float, action="append", help="Transactions per second (repeatable).")
    parser.add_argument("--seconds", type=float, default=30, help="Of each steady rate (0: none).")
    parser.add_argument("--large", type=int, default=0, help="Rows of one transaction to stop a follower in.")
    parser.add_argument("--stop-after", type=float, action="append", help="Seconds before each SIGTERM (repeatable).")
    arguments = parser.parse_args()
    ensure_wal2json(postgres_bindir())
    postgres = PostgresServer({"wal_level": "logical", "synchronous_commit": "on"}).start()
    mongo = MongoServer().start()
    try:
        print(f"mirror: {mongo.base_uri}; {postgres.bindir}")
        if arguments.backlog:
            throughput(postgres, mongo.base_uri, arguments.backlog)
        for rate in (arguments.rate or [20.0]) if arguments.seconds else []:
            steady(postgres, mongo.base_uri, rate, arguments.seconds)
        if arguments.large:
            large(postgres, mongo.base_uri, arguments.large, arguments.stop_after or [1.0, 30.0])
    finally:
        mongo.remove()
        postgres.stop()


if __name__ == "__main__":
    main()
