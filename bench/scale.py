"""What a write costs as the mirror grows: each request kind at 1,000, 10,000 and 100,000 cart rows, per write plan.

    .venv/bin/python -m bench.scale [--sizes 1000,10000,100000] [--requests 40] [--plans guarded,point]
                                    [--ferretdb-backend sqlite|postgresql] [--write-markdown]

Starts a MongoDB-compatible server (mongod if installed, else FerretDB, as the tests do) and grows
`cart_items` to each size with rows stored as the server stores them (inserted directly: the growth is
not what is measured). At each size, per write plan, it starts gunicorn with its defaults and that
FITKART_WRITE_PLAN, and sends one request at a time: a new row, a full row of a stored record, a partial
`{id, quantity}` and a delete, each `--requests` times on rows no earlier request touched (a kind stops
early after `--kind-seconds`), then batches of 500 partial updates. Prints the median and p99 of each,
and the ratio of the largest size's median to the smallest's; only 200 answers count. First, the other
writers (bench/writers.py): the WAL follower on one transaction of `--follower-rows` rows and on
`--follower-transactions` one-row transactions, repair of `--repair-rows` missing rows, and the spool's
replay of `--spool-entries` mixed entries, each in rows per second.
"""

import argparse
import math
import random
import statistics
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import bson
import pymongo
from pymongo.database import Database

from bench import report, writers
from bench.load import percentile
from bench.mix import cart_row, new_id, stored_fields
from testbed.servers.gunicorn import GunicornServer, request
from testbed.servers.mongo import MongoServer
from testbed.servers.postgres import PostgresServer, ensure_wal2json, postgres_bindir

KINDS = ("new row", "full row of a stored record", "partial {id, quantity}", "delete")
BATCH = "batch of 500 partial updates"
BATCH_SIZE = 500
DATABASE = "scale"


@dataclass
class Timings:
    """One request kind's answer times (ms) at one size under one plan, and the answers that were not 200."""

    seconds: list[float] = field(default_factory=list)
    failures: dict[int, int] = field(default_factory=dict)

    def add(self, status: int, elapsed: float) -> None:
        if status == 200:
            self.seconds.append(elapsed * 1000)
        else:
            self.failures[status] = self.failures.get(status, 0) + 1

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def p99(self) -> float:
        return percentile(self.seconds, 0.99) if self.seconds else float("nan")

    def cell(self) -> str:
        """`median / p99 ms (n)`, and what failed (a negative status: a batch with that many operations not
        applied)."""
        failed = ", ".join(f"{count} x {status or 'no answer'}" for status, count in sorted(self.failures.items()))
        if not self.seconds:
            return f"none answered 200 ({failed})"
        text = f"{self.median:,.1f} / {self.p99:,.1f} ({len(self.seconds)})"
        return f"{text}; {failed}" if failed else text


class Rows:
    """The cart rows stored, and which of them no request has touched yet."""

    def __init__(self) -> None:
        self.untouched: list[dict] = []
        self.count = 0

    def grow(self, database: Database, size: int) -> float:
        """Insert rows as the server stores them until the collection holds `size`; the seconds it took."""
        started = time.monotonic()
        while self.count < size:
            rows = [cart_row(new_id(), 1) for _ in range(min(1000, size - self.count))]
            documents = []
            for row in rows:
                document = {"_id": row["id"], **stored_fields(row)}
                document["_fitkart"]["bytes"] = len(bson.encode(document)) + 32
                documents.append(document)
            database.cart_items.insert_many(documents, ordered=False)
            self.untouched.extend(rows)
            self.count += len(rows)
        random.shuffle(self.untouched)
        return time.monotonic() - started

    def take(self, count: int = 1) -> list[dict]:
        """Rows no request has touched (each is used once), from the end of the shuffled list: no copy of the rest."""
        taken = self.untouched[-count:]
        del self.untouched[-count:]
        return taken


def timed(url: str, body: dict | None = None, method: str = "POST") -> tuple[int, float]:
    """One request's status and seconds."""
    started = time.perf_counter()
    if method == "DELETE":
        status = delete(url)
    else:
        status, _ = request(url, body, timeout=120)
    return status, time.perf_counter() - started


def delete(url: str) -> int:
    """A DELETE as the shop's localSync sends it; the status."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=120) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def measure(server: GunicornServer, rows: Rows, requests: int, kind_seconds: float,
            batches: int) -> dict[str, Timings]:
    """Each kind's timings on this server, one request at a time, then the batches."""
    base = f"{server.url}/api/sync"
    results = {kind: Timings() for kind in (*KINDS, BATCH)}
    for _ in range(3):  # warm-up: connections, indexes, the plan's choice
        request(f"{base}/cart_items", cart_row(new_id(), 1), timeout=120)
    for kind in KINDS:
        deadline = time.monotonic() + kind_seconds
        for _ in range(requests):
            if kind == "new row":
                answer = timed(f"{base}/cart_items", cart_row(new_id(), 2))
            elif kind == "delete":
                answer = timed(f"{base}/cart/{rows.take()[0]['id']}", method="DELETE")
            elif kind == "partial {id, quantity}":
                answer = timed(f"{base}/cart_items", {"id": rows.take()[0]["id"], "quantity": 3})
            else:
                answer = timed(f"{base}/cart_items", {**rows.take()[0], "quantity": 4})
            results[kind].add(*answer)
            if time.monotonic() > deadline:
                break
    for _ in range(batches):
        operations = [{"op": "upsert", "collection": "cart_items", "record": {"id": row["id"], "quantity": 5}}
                      for row in rows.take(BATCH_SIZE)]
        started = time.perf_counter()
        status, body = request(f"{base}/batch", {"operations": operations}, timeout=120)
        elapsed = time.perf_counter() - started
        # A batch answers 200 with one result per operation: it counts only when every operation was applied.
        applied = [result for result in body.get("results", []) if result.get("result") == "updated"]
        if status == 200 and len(applied) != len(operations):
            status = -len(operations) + len(applied)  # shown as "-N": N operations not applied
        results[BATCH].add(status, elapsed)
        if status != 200:
            break  # queued (202) or refused: the next one would only queue behind it
    return results


def run(args: argparse.Namespace) -> tuple[str, dict[int, dict[str, dict[str, Timings]]], list[writers.Throughput]]:
    """Grow the collection through each size and measure every plan there, then the other writers; the backend
    and the figures."""
    backend_postgres = PostgresServer().start() if args.ferretdb_backend == "postgresql" else None
    server = MongoServer(backend_postgres.create_database("ferretdb", fitkart_tables=False)
                         if backend_postgres else None).start()
    backend = "mongod" if server.kind == "mongod" else f"FerretDB v1.24.2, {args.ferretdb_backend} backend"
    figures: dict[int, dict[str, dict[str, Timings]]] = {}
    others: list[writers.Throughput] = []
    rows = Rows()
    client = pymongo.MongoClient(server.base_uri, tz_aware=True)
    try:
        if not args.skip_writers:
            others = measure_writers(args, server.base_uri)
        for size in args.sizes:
            grown = rows.grow(client[DATABASE], size)
            print(f"\n{size:,} cart rows (grown in {grown:.1f} s)", flush=True)
            figures[size] = {}
            for plan in args.plans:
                # The defaults a new user gets, but for the plan; its own spool, so a queued batch stays its own.
                app = GunicornServer(f"{server.base_uri}/{DATABASE}", None, env={"FITKART_WRITE_PLAN": plan})
                app.start()
                try:
                    figures[size][plan] = measure(app, rows, args.requests, args.kind_seconds, args.batches)
                finally:
                    app.stop()
                for kind, timings in figures[size][plan].items():
                    print(f"  {plan:<8} {kind:<30} {timings.cell()}", flush=True)
    finally:
        client.close()
        server.remove()
        if backend_postgres:
            backend_postgres.stop()
    return backend, figures, others


def measure_writers(args: argparse.Namespace, mongo_uri: str) -> list[writers.Throughput]:
    """The WAL follower, repair and the spool's replay, each on a database of its own; printed as they end."""
    ensure_wal2json(postgres_bindir())
    postgres = PostgresServer({"wal_level": "logical", "synchronous_commit": "on"}).start()
    measured = []
    try:
        for measure_one in (lambda: writers.follower_on_one_transaction(postgres, mongo_uri, args.follower_rows),
                            lambda: writers.follower_on_small_transactions(postgres, mongo_uri,
                                                                          args.follower_transactions),
                            lambda: writers.repair_of_missing_rows(postgres, mongo_uri, args.repair_rows),
                            lambda: writers.spool_drain(mongo_uri, args.spool_entries)):
            measured.append(measure_one())
            print("  " + "  ".join(measured[-1].row()), flush=True)
    finally:
        postgres.stop()
    return measured


def writers_table(measured: list[writers.Throughput]) -> report.Table:
    """Rows per second of each writer beside the API, and a process's peak memory."""
    return report.Table("The other writers", ["writer", "rows", "seconds", "rows/s", "peak RSS (MB)"],
                        [throughput.row() for throughput in measured])


def scale_table(figures: dict[int, dict[str, dict[str, Timings]]], plans: list[str]) -> report.Table:
    """Median / p99 ms (requests answered 200) per kind and plan at each size, and largest ÷ smallest median."""
    sizes = sorted(figures)
    rows = []
    for kind in (*KINDS, BATCH):
        for plan in plans:
            cells = [figures[size][plan][kind].cell() for size in sizes]
            first, last = figures[sizes[0]][plan][kind].median, figures[sizes[-1]][plan][kind].median
            ratio = f"{last / first:.2f}x" if not math.isnan(first) and not math.isnan(last) and first else "—"
            rows.append([kind, plan, *cells, ratio])
    header = ["request", "plan", *(f"{size:,} rows: median / p99 ms (n)" for size in sizes),
              f"{sizes[-1]:,} ÷ {sizes[0]:,}"]
    return report.Table("One request at a time as cart_items grows", header, rows)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000",
                        type=lambda text: sorted(int(size) for size in text.split(",")))
    parser.add_argument("--requests", type=int, default=40, help="requests of each kind per size and plan")
    parser.add_argument("--kind-seconds", type=float, default=60.0,
                        help="a kind stops early after this long (the guarded plan on FerretDB at size)")
    parser.add_argument("--batches", type=int, default=3, help="batches of 500 partial updates per size and plan")
    parser.add_argument("--plans", default="guarded,point", type=lambda text: text.split(","))
    parser.add_argument("--follower-rows", type=int, default=200_000, help="rows of the follower's one transaction")
    parser.add_argument("--follower-transactions", type=int, default=10_000,
                        help="one-row transactions the follower applies")
    parser.add_argument("--repair-rows", type=int, default=10_000, help="missing rows repair writes")
    parser.add_argument("--spool-entries", type=int, default=5_000, help="mixed entries the spool replays")
    parser.add_argument("--skip-writers", action="store_true", help="only the requests, not the other writers")
    parser.add_argument("--ferretdb-backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--write-markdown", action="store_true", help="write the table into BENCHMARKS.md")
    parser.add_argument("--markdown-file", type=Path, default=Path(__file__).resolve().parent.parent / "BENCHMARKS.md")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    backend, figures, others = run(args)
    table = scale_table(figures, args.plans)
    print()
    print(report.as_text(table))
    if others:
        print()
        print(report.as_text(writers_table(others)))
    print(f"\n{backend}; {time.monotonic() - started:.0f} s in all")
    if args.write_markdown:
        content = "\n".join([f"#### {backend}", "", f"`python -m bench.scale --sizes "
                             f"{','.join(str(size) for size in args.sizes)} --requests {args.requests}` "
                             f"({time.strftime('%Y-%m-%d')}; only 200 answers counted, each request on a row "
                             f"no earlier request touched)", "", report.as_markdown(table),
                             *(["", report.as_markdown(writers_table(others))] if others else [])])
        report.write_section(args.markdown_file, backend.split(",")[0].split()[0].lower() + "-" +
                             args.ferretdb_backend, content, bench="bench.scale")
        print(f"written into {args.markdown_file}")


if __name__ == "__main__":
    main()
