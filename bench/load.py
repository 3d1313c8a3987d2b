"""Load generators: threads that count what succeeded and what failed, wrk with bench/mix.lua, batch senders."""

import json
import math
import random
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPException
from pathlib import Path

from bench.mix import MIN_EXISTING, SHARES, CartPool, cart_row, new_id

HERE = Path(__file__).resolve().parent
BATCH_SIZE = 500

# One step of a worker: units (requests, documents) that were done, refused, lost to a broken connection, and
# queued by the server (202: spooled while the database did not answer; not done yet). A failed step is
# counted, never dropped: it must not pass for less work done.
Tally = tuple[int, int, int, int]


@dataclass
class Rate:
    """Units that succeeded per second of one timed phase, with what failed and how long steps took."""

    ok: int
    seconds: float
    refused: int = 0  # non-2xx answers, or writes the database refused
    broken: int = 0  # socket errors, or connections the driver lost
    queued: int = 0  # accepted by the server but spooled, not written (202 or a batch's "queued" results)
    p50_ms: float = math.nan
    p99_ms: float = math.nan

    @property
    def per_second(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.refused + self.broken


def percentile(values: list[float], share: float) -> float:
    """The value below which `share` of `values` lie (nearest rank); NaN for none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def drive(concurrency: int, seconds: float, make_step: Callable[[int], Callable[[], Tally]]) -> Rate:
    """Run `make_step(slot)()` in `concurrency` threads until `seconds` pass; every step counted.

    A step reports its own expected failures in its Tally; any exception escaping a step is a bug in
    the benchmark or a dead server, so it stops every thread and is raised here: the run aborts.
    """
    steps = [make_step(slot) for slot in range(concurrency)]
    totals = [[0, 0, 0, 0] for _ in range(concurrency)]
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    crashed: list[BaseException] = []
    stop = threading.Event()

    def worker(slot: int) -> None:
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                began = time.monotonic()
                tally = steps[slot]()
                latencies[slot].append(time.monotonic() - began)
                for index, units in enumerate(tally):
                    totals[slot][index] += units
        except BaseException as error:
            crashed.append(error)
            stop.set()

    threads = [threading.Thread(target=worker, args=(slot,), daemon=True) for slot in range(concurrency)]
    started = time.monotonic()
    deadline = started + seconds
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    if crashed:
        raise RuntimeError(f"a benchmark thread failed: {crashed[0]!r}") from crashed[0]
    every = [latency for per_thread in latencies for latency in per_thread]
    ok, refused, broken, queued = (sum(column) for column in zip(*totals, strict=True))
    return Rate(ok, elapsed, refused, broken, queued, percentile(every, 0.50) * 1000, percentile(every, 0.99) * 1000)


def wrk(url: str, seconds: float, connections: int, threads: int) -> Rate:
    """Single writes over HTTP with wrk and the mix; only 2xx answers count as done (202, queued, apart)."""
    # The mix's proportions travel as arguments, so wrk draws exactly bench/mix.py's SHARES.
    arguments = [str(random.randrange(1, 2**31)), str(MIN_EXISTING), *(str(share) for share in SHARES.values())]
    completed = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
                                "--timeout", "10s", "-s", str(HERE / "mix.lua"), url, "--", *arguments],
                               capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr[-2000:]}")
    line = next((line for line in completed.stdout.splitlines() if line.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {completed.stdout[-2000:]}{completed.stderr[-2000:]}")
    result = json.loads(line.removeprefix("RESULT "))
    return Rate(result["ok"], result["seconds"], result["non2xx"], result["errors"], result["queued"],
                result["p50_ms"], result["p99_ms"])


class BatchSender:
    """One stream posting batches of 500 cart operations to POST /api/sync/batch, on one kept-alive connection."""

    def __init__(self, url: str, pool: CartPool) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.pool = pool
        self.connection: HTTPConnection | None = None

    def post(self, records: list[dict]) -> tuple[Tally, list[dict]]:
        """Send one batch of upserts; the tally of its operations and the records stored."""
        operations = [{"op": "upsert", "collection": "cart_items", "record": record} for record in records]
        try:
            if self.connection is None:
                self.connection = HTTPConnection(*self.address, timeout=60)
            self.connection.request("POST", "/api/sync/batch", json.dumps({"operations": operations}),
                                    {"Content-Type": "application/json"})
            response = self.connection.getresponse()
            body = response.read()
        except (OSError, HTTPException):
            self.connection = None  # a fresh connection for the next batch
            return (0, 0, len(records), 0), []
        if not 200 <= response.status < 300:
            return (0, len(records), 0, 0), []
        results = json.loads(body)["results"]
        refused = sum("error" in result for result in results)
        queued = sum(result.get("result") == "queued" for result in results)
        stored = [record for record, result in zip(records, results, strict=True)
                  if "error" not in result and result.get("result") != "queued"]
        return (len(stored), refused, 0, queued), stored

    def new_rows(self) -> Tally:
        """A batch of new cart rows; those stored join the pool."""
        tally, stored = self.post([cart_row(new_id(), 1 + n % 5) for n in range(BATCH_SIZE)])
        self.pool.add(stored)
        return tally

    def partial_updates(self) -> Tally:
        """A batch of partial updates {id, quantity} of stored rows."""
        return self.post(self.pool.take(BATCH_SIZE))[0]
