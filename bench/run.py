"""Benchmark FitKart Sync as deployed, against the ceiling of the same database, in one run.

    .venv/bin/python -m bench.run [--seconds 15] [--connections 8] [--threads 4]

Starts a MongoDB-compatible server (mongod if installed, else FerretDB, as the tests do) and
gunicorn with gunicorn.conf.py, then prints one table: raw pymongo ceilings, single upserts
over HTTP (wrk with bench/mix.lua), batch ingest, their ratios to the ceilings, the
server's memory before and after, and `flask fitkart verify` at 100,000 and 1,000,000 rows
(bench/verify_scale.py). Figures, not pass/fail.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import uuid
from http.client import HTTPConnection
from pathlib import Path

import pymongo
from pymongo import InsertOne

from bench import verify_scale
from testbed.servers.gunicorn import GunicornServer
from testbed.servers.mongo import MongoServer
from testbed.servers.postgres import PostgresServer

HERE = Path(__file__).resolve().parent


def rss_mb(pids: list[int]) -> float:
    """Resident memory of processes, in MB."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def cart_doc(index: int) -> dict:
    """A cart row like the frontend's."""
    return {"id": str(uuid.uuid4()), "user_id": str(uuid.uuid4()), "product_id": str(uuid.uuid4()), "size": "M",
            "color": "indigo", "quantity": 1 + index % 5, "created_at": "2025-12-19T14:24:22.123456+00:00"}


def per_second(worker, concurrency: int, done: list[int]) -> float:
    """Run `worker(slot)` in `concurrency` threads; the units they counted in `done`, per second."""
    threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(concurrency)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.monotonic() - started)


def ceiling_update_one(database, seconds: float, concurrency: int) -> float:
    """Raw update_one(upsert=True) round trips per second with `concurrency` client threads."""
    collection = database["ceiling_update"]
    collection.create_index("id", unique=True)
    done = [0] * concurrency
    deadline = time.monotonic() + seconds

    def worker(slot: int) -> None:
        while time.monotonic() < deadline:
            document = cart_doc(done[slot])
            collection.update_one({"id": document["id"]}, {"$set": document}, upsert=True)
            done[slot] += 1

    return per_second(worker, concurrency, done)


def ceiling_bulk_write(database, seconds: float, size: int) -> float:
    """Raw bulk_write documents per second, `size` new documents per call (InsertOne, as a batch of new rows).

    Inserts, not upserts: FerretDB v1 runs an upsert that inserts by scanning the collection,
    so a bulk of upserts slows down with every document already stored; MongoDB does not.
    """
    collection = database["ceiling_bulk"]
    collection.create_index("id", unique=True)
    written, started = 0, time.monotonic()
    while written == 0 or time.monotonic() - started < seconds:
        collection.bulk_write([InsertOne(cart_doc(written + n)) for n in range(size)], ordered=False)
        written += size
    return written / (time.monotonic() - started)


def wrk(url: str, seconds: int, connections: int, threads: int) -> dict:
    """Single upserts over HTTP with wrk and the FitKart mix; requests/s and latency percentiles."""
    output = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
                             "--timeout", "10s", "-s", str(HERE / "mix.lua"), url],
                            check=True, capture_output=True, text=True).stdout
    result = json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[7:])
    result["rps"] = result["requests"] / result["seconds"]
    return result


def batch_ingest(url: str, seconds: float, concurrency: int, size: int = 500) -> float:
    """Documents per second through POST /api/sync/batch, `size` upserts per request."""
    host, port = url.removeprefix("http://").split(":")
    done = [0] * concurrency
    deadline = time.monotonic() + seconds

    def worker(slot: int) -> None:
        connection = HTTPConnection(host, int(port), timeout=60)
        while time.monotonic() < deadline:
            operations = [{"op": "upsert", "collection": "cart_items", "record": cart_doc(n)} for n in range(size)]
            connection.request("POST", "/api/sync/batch", json.dumps({"operations": operations}),
                               {"Content-Type": "application/json"})
            response = connection.getresponse()
            body = json.loads(response.read())
            if response.status != 200 or any("error" in result for result in body["results"]):
                raise RuntimeError(f"batch failed: {response.status}")
            done[slot] += size
        connection.close()

    return per_second(worker, concurrency, done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15, help="length of each timed phase")
    parser.add_argument("--connections", default="2,4,8,16",
                        help="concurrent HTTP connections (C) to try, comma-separated; the peak is reported")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--batch-streams", type=int, default=2, help="concurrent batch senders")
    parser.add_argument("--ferretdb-backend", choices=("sqlite", "postgresql"), default="sqlite",
                        help="where FerretDB keeps its data when there is no mongod (sqlite: as the tests)")
    parser.add_argument("--verify-rows", type=int, action="append",
                        help="verify at scale with this many rows (repeatable; default 100000 and 1000000; 0: skip)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install -y wrk")

    backend_postgres = PostgresServer().start() if args.ferretdb_backend == "postgresql" else None
    server = MongoServer(backend_postgres.create_database("ferretdb", fitkart_tables=False)
                         if backend_postgres else None).start()
    decimal_mode = "decimal128" if server.supports_decimal128 else "double"
    client = pymongo.MongoClient(server.base_uri)
    database = client["bench"]
    app = GunicornServer(f"{server.base_uri}/bench", decimal_mode).start()
    try:
        print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
              f"Python {platform.python_version()}; database: {server.description}; "
              f"gunicorn: {app.env['WEB_CONCURRENCY']} workers x {app.env['FITKART_THREADS']} threads", flush=True)
        pids = [app.process.pid, *app.worker_pids()]
        rss_before = rss_mb(pids)
        # Single upserts at each concurrency; the targets are judged at the one with peak throughput,
        # against the update_one ceiling at that same concurrency.
        sweep = {c: wrk(app.url, args.seconds, c, min(args.threads, c))
                 for c in (int(n) for n in args.connections.split(","))}
        peak = max(sweep, key=lambda c: sweep[c]["rps"])
        single = sweep[peak]
        update_rate = ceiling_update_one(database, args.seconds, peak)
        bulk_rate = ceiling_bulk_write(database, args.seconds, size=500)
        batch_rate = batch_ingest(app.url, args.seconds, args.batch_streams)
        rss_after = rss_mb([app.process.pid, *app.worker_pids()])
        app.stop()
        sizes = [rows for rows in (args.verify_rows or [100_000, 1_000_000]) if rows > 0]
        at_scale = verify_scale.run_sizes(server, sizes, decimal_mode) if sizes else []
    finally:
        app.stop()
        client.close()
        server.remove()
        if backend_postgres:
            backend_postgres.stop()

    rows = [(f"HTTP single upserts at C={c}: requests/s, p99 ms", f"{r['rps']:,.0f}, {r['p99_ms']:.1f}",
             "peak" if c == peak else "") for c, r in sweep.items()]
    rows += [
        ("ceiling: pymongo update_one(upsert) round trips/s", f"{update_rate:,.0f}", f"C={peak}"),
        ("ceiling: pymongo bulk_write documents/s", f"{bulk_rate:,.0f}", "500 new per call"),
        ("HTTP single upserts requests/s (wrk, FitKart mix)", f"{single['rps']:,.0f}",
         f"C={peak}, {single['non2xx']} non-2xx, {single['errors']} socket errors"),
        ("HTTP single upserts latency p50 / p95 / p99 ms",
         f"{single['p50_ms']:.1f} / {single['p95_ms']:.1f} / {single['p99_ms']:.1f}", ""),
        ("HTTP batch ingest documents/s", f"{batch_rate:,.0f}", f"500 per request, {args.batch_streams} streams"),
        ("server RSS before / after MB", f"{rss_before:.0f} / {rss_after:.0f}", "master + workers"),
        ("ratio: single upserts / update_one ceiling", f"{single['rps'] / update_rate:.0%}", "target >= 50%"),
        ("ratio: batch ingest / bulk_write ceiling", f"{batch_rate / bulk_rate:.0%}", "target >= 60%"),
    ]
    width = max(len(name) for name, *_ in rows)
    print(f"{'measure':<{width}}  {'value':>16}  note")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>16}  {note}")
    if at_scale:
        verify_scale.print_table(at_scale)


if __name__ == "__main__":
    main()
