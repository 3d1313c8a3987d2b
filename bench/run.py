"""Benchmark FitKart Sync as deployed against what the same database does with the same work, in one run.

    .venv/bin/python -m bench.run [--seconds 15] [--rounds 2] [--connections 2,4,8,16] [--write-markdown]

Starts a MongoDB-compatible server (mongod if installed, else FerretDB, as the tests do) and gunicorn
with gunicorn.conf.py. After a warm-up, it alternates timed phases on the same collections: the
server's single writes of the mix (wrk, bench/mix.lua) at a concurrency, then the same writes as raw
update_one (the ceiling) and as the old Express design's find_one_and_update (the yardstick) at that
concurrency, then the next concurrency; concurrencies are shuffled per round and the order of the
phases rotates. Then round trips per request kind (bench/census.py); batch ingest against bulk_write,
alternated the same way; the server's memory; and `flask fitkart verify` at scale (bench/verify_scale.py).
Only 2xx answers and acknowledged writes count as work done; every failure is counted and printed.
"""

import argparse
import datetime
import os
import platform
import random
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pymongo
from pymongo.database import Database
from pymongo.errors import PyMongoError

from bench import report, verify_scale
from bench.ceilings import bulk_new_step, bulk_partial_step, express_step, update_one_step
from bench.census import Census, count_round_trips
from bench.load import BATCH_SIZE, BatchSender, Rate, Tally, drive, wrk
from bench.mix import CartPool
from testbed.servers.gunicorn import GunicornServer, request
from testbed.servers.mongo import MongoServer
from testbed.servers.postgres import PostgresServer


def rss_mb(pids: list[int]) -> float:
    """Resident memory of processes, in MB."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def memory_gib() -> float:
    """This machine's memory, in GiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def rotated(phases: tuple[str, ...], number: int) -> tuple[str, ...]:
    """The phases starting at a different one each round, so none always meets the smallest collections."""
    shift = number % len(phases)
    return phases[shift:] + phases[:shift]


class Bench:
    """The timed phases, against one server and its database."""

    def __init__(self, url: str, server: MongoServer, database: Database, args: argparse.Namespace) -> None:
        self.url = url
        self.server = server
        self.database = database
        self.args = args
        # FerretDB v1.24.2 was seen to stop answering an `update` command of 100 statements (99 passed, on a
        # 1,000-document collection); the bulk ceiling sends a batch's updates in commands of at most 99 there.
        self.update_chunk = args.update_chunk or (BATCH_SIZE if server.kind == "mongod" else 99)
        self.random = random.Random(args.seed)
        self.pool = CartPool()  # cart rows stored by batches, for the batches of partial updates
        self.notes: list[str] = []  # what made a phase less comparable, for the report
        self.stuck: int | None = None  # the spool's backlog last reported as not draining

    def seeds(self, slot: int) -> int:
        return self.random.randrange(2**31)

    def settle(self, before: str, patience: float = 15) -> None:
        """Wait until the server's spool is empty and the database answers a read, while the spool drains.

        Writes the server queued (202) are replayed after their phase; without waiting, that work and the
        database's unfinished queries would be timed in the next phase, whoever runs it. A spool that has
        not shrunk for `patience` seconds (or after --settle seconds) is left as it is, and the report
        says which phases ran beside it.
        """
        self.revive(before)
        began = progress = time.monotonic()
        last = None
        while time.monotonic() - began < self.args.settle and time.monotonic() - progress < patience:
            status, ready = request(f"{self.url}/readyz", timeout=30)
            entries = ready.get("spool", {}).get("entries", 0)
            if status == 200 and not entries:
                if time.monotonic() - began > 0.5:
                    print(f"  (waited {time.monotonic() - began:.1f} s for the spool to drain)", flush=True)
                return
            if entries != last:
                last, progress = entries, time.monotonic()
            time.sleep(0.5)
        if last != self.stuck:  # one note per backlog, not one per phase that met it
            self.stuck = last
            self.note(f"{last:,} queued writes stayed in the server's spool without draining from {before} on: "
                      "that phase and later ones ran beside them.")

    def revive(self, before: str) -> None:
        """Restart the database (its data kept) if it no longer answers a read of cart_items within --settle s.

        A database that has stopped answering would otherwise hold every later phase until its timeout.
        """
        with pymongo.MongoClient(self.server.base_uri, socketTimeoutMS=self.args.settle * 1000,
                                 serverSelectionTimeoutMS=5000) as probe:
            try:
                probe["bench"]["cart_items"].find_one({"_id": "settle"})  # waits behind what the database runs
                return
            except PyMongoError as error:
                problem = error.__class__.__name__
        self.note(f"The database stopped answering ({problem}) before {before}; restarted, its data kept.")
        self.server.stop()
        self.server.start()

    def note(self, text: str) -> None:
        """Something that makes the figures less comparable: printed now, and kept for the report."""
        self.notes.append(text)
        print(f"  ({text})", flush=True)

    def single(self, phase: str, concurrency: int, seconds: float) -> Rate:
        """One phase of single writes of the mix at `concurrency`."""
        self.settle(f"{phase} at C={concurrency}")
        if phase == "server":
            return wrk(self.url, seconds, concurrency, min(self.args.threads, concurrency))
        step = update_one_step if phase == "update_one" else express_step
        return drive(concurrency, seconds, lambda slot: step(self.database, self.seeds(slot)))

    def batch(self, phase: str, kind: str, seconds: float) -> Rate:
        """One phase of batches of `kind` (new, partial), through the server or as bulk_write."""
        self.settle(f"batches of {kind}, {phase}")
        make: Callable[[int], Callable[[], Tally]]
        if phase == "server":
            def make(slot: int) -> Callable[[], Tally]:
                sender = BatchSender(self.url, self.pool)
                return sender.new_rows if kind == "new" else sender.partial_updates
        else:
            def make(slot: int) -> Callable[[], Tally]:
                if kind == "new":
                    return bulk_new_step(self.database, self.pool)
                return bulk_partial_step(self.database, self.pool, self.update_chunk)
        return drive(self.args.batch_streams, seconds, make)

    def warm_up(self, concurrency: int) -> None:
        """A few seconds of the mix and of each yardstick, not counted: workers loaded, indexes made, pools filled."""
        print(f"warm-up: {self.args.warmup} s of the mix at C={concurrency}, then 1 s of each yardstick", flush=True)
        self.single("server", concurrency, self.args.warmup)
        for phase in ("update_one", "express"):
            self.single(phase, concurrency, 1)

    def warm_up_batches(self) -> None:
        """A batch phase of each kind, not counted; new rows through the server fill the pool the partial ones change.

        Apart from warm_up and just before the batch rounds: the rows it stores would otherwise grow the
        collection the single writes are measured on.
        """
        print("warm-up: 1 s of batches of new rows through the server, then of each bulk ceiling", flush=True)
        for phase, kind in (("server", "new"), ("bulk", "new"), ("bulk", "partial")):
            self.batch(phase, kind, 1)
        if len(self.pool) < BATCH_SIZE * self.args.batch_streams:
            raise RuntimeError(f"the warm-up stored only {len(self.pool)} cart rows for the partial updates")

    def single_rounds(self, concurrencies: list[int]) -> dict[int, dict[str, list[Rate]]]:
        """Single writes: each concurrency's phases `--rounds` times, alternated; Rates by concurrency and phase."""
        single = {c: {phase: [] for phase in report.SINGLE_PHASES} for c in concurrencies}
        for number in range(self.args.rounds):
            order = self.random.sample(concurrencies, len(concurrencies))
            print(f"round {number + 1}: concurrencies in the order {order}", flush=True)
            for c in order:
                for phase in rotated(report.SINGLE_PHASES, number):
                    rate = self.single(phase, c, self.args.seconds)
                    single[c][phase].append(rate)
                    show(f"C={c} {phase}", rate)
        return single

    def batch_rounds(self) -> dict[str, dict[str, list[Rate]]]:
        """Batch ingest: each kind's phases `--rounds` times, alternated; Rates by kind and phase.

        After the single writes, so that a backlog the server queued here cannot reach their phases.
        """
        self.warm_up_batches()
        batches = {kind: {phase: [] for phase in report.BATCH_PHASES} for kind in report.BATCH_LABELS}
        for number in range(self.args.rounds):
            print(f"batch round {number + 1}", flush=True)
            for kind in report.BATCH_LABELS:
                for phase in rotated(report.BATCH_PHASES, number):
                    rate = self.batch(phase, kind, self.args.seconds)
                    batches[kind][phase].append(rate)
                    show(f"batches of {kind}, {phase}", rate)
        return batches


def show(name: str, rate: Rate) -> None:
    """One phase's figures, as it ends."""
    print(f"  {name:<28} {rate.per_second:>9,.0f}/s  errors {rate.refused:,} refused / {rate.broken:,} socket"
          f" / {rate.queued:,} queued  p50 {rate.p50_ms:.1f} ms  p99 {rate.p99_ms:.1f} ms", flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15, help="length of each timed phase")
    parser.add_argument("--rounds", type=int, default=2, help="times each phase runs; medians are reported")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of the mix before measuring, not counted")
    parser.add_argument("--connections", default="2,4,8,16",
                        help="concurrencies (C) of single writes, comma-separated; the peak is reported")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--batch-streams", type=int, default=2, help="concurrent batch senders (and bulk writers)")
    parser.add_argument("--settle", type=int, default=120,
                        help="seconds to wait before a phase for the server's spool to drain")
    parser.add_argument("--update-chunk", type=int, default=0,
                        help="updates per bulk_write command of the partial-update ceiling (default: 500 on mongod, "
                             "99 on FerretDB, which hangs on 100 or more)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the shuffled order (default: random)")
    parser.add_argument("--census-requests", type=int, default=300,
                        help="mix requests whose round trips are counted in-process (0: skip)")
    parser.add_argument("--ferretdb-backend", choices=("sqlite", "postgresql"), default="sqlite",
                        help="where FerretDB keeps its data when there is no mongod (sqlite: as the tests)")
    parser.add_argument("--verify-rows", type=int, action="append",
                        help="verify at scale with this many rows (repeatable; default 100000 and 1000000; 0: skip)")
    parser.add_argument("--write-markdown", action="store_true",
                        help="write the tables into --markdown-file between its bench.run markers, one section "
                             "per backend")
    parser.add_argument("--markdown-file", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.randrange(10**6)
    return args


def main() -> None:
    args = parse_args()
    # Stopped with SIGTERM (timeout, kill), still stop the servers it started: exit through `finally`.
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install -y wrk")
    concurrencies = [int(n) for n in args.connections.split(",")]
    command = shlex.join(["python", "-m", "bench.run", *sys.argv[1:]])
    started = datetime.datetime.now(datetime.UTC)

    backend_postgres = PostgresServer().start() if args.ferretdb_backend == "postgresql" else None
    server = MongoServer(backend_postgres.create_database("ferretdb", fitkart_tables=False)
                         if backend_postgres else None).start()
    backend = "mongod" if server.kind == "mongod" else args.ferretdb_backend
    decimal_mode = "decimal128" if server.supports_decimal128 else "double"
    # A database that stops answering becomes counted socket errors after --settle seconds, not a hang (FerretDB
    # v1.24.2 can stop answering over a bulk of updates; a later phase's revive() then restarts it).
    client = pymongo.MongoClient(server.base_uri, socketTimeoutMS=args.settle * 1000)
    database_uri = f"{server.base_uri}/bench"
    app = GunicornServer(database_uri, decimal_mode).start()
    census: Census | None = None
    try:
        machine = (f"{os.cpu_count()} cores ({platform.machine()}), {memory_gib():.0f} GiB, "
                   f"Python {platform.python_version()}")
        serving = f"gunicorn {app.env['WEB_CONCURRENCY']} workers x {app.env['FITKART_THREADS']} threads"
        print(f"machine: {machine}; database: {server.description}; {serving}; seed {args.seed}", flush=True)
        rss_before = rss_mb([app.process.pid, *app.worker_pids()])
        # The ceilings write into the server's own database ("bench"): same collections, same indexes.
        bench = Bench(app.url, server, client["bench"], args)
        if bench.update_chunk < BATCH_SIZE:
            bench.note(f"The partial-update ceiling sends each batch's {BATCH_SIZE} updates in bulk_write commands "
                       f"of at most {bench.update_chunk} (FerretDB v1.24.2 was seen to stop answering an update "
                       "command of 100).")
        bench.warm_up(max(concurrencies))
        single = bench.single_rounds(concurrencies)
        if args.census_requests > 0:  # before the batches grow cart_items: FerretDB scans it for every request
            bench.revive("the round-trip census")
            print(f"round trips: {args.census_requests} mix requests in-process", flush=True)
            census = count_round_trips(database_uri, decimal_mode, args.census_requests, seed=args.seed)
        batches = bench.batch_rounds()
        rss_after = rss_mb([app.process.pid, *app.worker_pids()])
        app.stop()
        sizes = [rows for rows in (args.verify_rows or [100_000, 1_000_000]) if rows > 0]
        if sizes:
            bench.revive("verify")
        at_scale = verify_scale.run_sizes(server, sizes, decimal_mode) if sizes else []
    finally:
        app.stop()
        client.close()
        server.remove()
        if backend_postgres:
            backend_postgres.stop()

    tables = [report.single_table(single), report.batch_table(batches, args.batch_streams)]
    if census is not None:
        tables.append(report.census_table(census))
    if at_scale:
        tables.append(report.verify_table(at_scale))
    tables.append(report.targets_table(single, batches, census, at_scale))
    remarks = [f"Server RSS (master + workers) before / after: {rss_before:.0f} / {rss_after:.0f} MB.", *bench.notes]
    print()
    for table in tables:
        print(report.as_text(table), end="\n\n")
    print("\n".join(remarks))
    if args.write_markdown:
        lines = [f"### {server.description}", "",
                 f"Machine: {machine}; {serving}; {started:%Y-%m-%d %H:%M} UTC. Command: `{command}` "
                 f"(seed {args.seed}). Each figure is the median over {args.rounds} round(s) (each round in "
                 f"parentheses), after a {args.warmup} s warm-up; the server, the update_one ceiling and the "
                 "Express yardstick alternate on the same collections, concurrencies shuffled per round.", ""]
        for table in tables:
            lines += [report.as_markdown(table), ""]
        lines += [f"- {remark}" for remark in remarks]
        report.write_section(args.markdown_file, backend, "\n".join(lines))
        print(f"written into {args.markdown_file} (section {backend})")


if __name__ == "__main__":
    main()
