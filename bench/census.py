"""Database round trips per request kind, counted in-process with pymongo's command monitoring.

The app is built as tests/conftest.py builds it, on the benchmark's own database; the listener is
registered before the app makes its client (pymongo applies listeners to clients made afterwards)
and counts only commands sent from the thread serving the request, as tests/test_round_trips.py does.
"""

import shutil
import statistics
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pymongo import monitoring

from bench.load import BATCH_SIZE
from bench.mix import LABELS, SHARES, CartPool, Mix, cart_row, new_id
from testbed.commands import RequestCommands

BATCH_KINDS = {"batch_new": f"batch of {BATCH_SIZE} new cart rows", "batch_partial": f"batch of {BATCH_SIZE} partial"}


@dataclass
class KindCount:
    """Round trips of the requests of one kind."""

    label: str
    counts: list[int]
    sequences: Counter  # the command names of each request, as one string
    failed: int = 0  # answers that were not 2xx, or queued (not counted in `counts`)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.counts) if self.counts else float("nan")

    @property
    def usual(self) -> str:
        """The most frequent sequence of commands."""
        return self.sequences.most_common(1)[0][0] if self.sequences else ""


@dataclass
class Census:
    """Round trips per request kind, and their average weighted by the mix's shares."""

    kinds: dict[str, KindCount]

    @property
    def weighted(self) -> float:
        return sum(SHARES[kind] * self.kinds[kind].mean for kind in SHARES) / sum(SHARES.values())


def count_round_trips(database_uri: str, decimal_mode: str, requests: int = 300, batches: int = 2,
                      seed: int = 0) -> Census:
    """Send `requests` mix requests and `batches` batches of each kind through the Flask test client; count."""
    listener = RequestCommands()
    monitoring.register(listener)  # before create_app: the app's client is made on its first request
    from fitkart_server import create_app  # imported here: nothing else in the benchmark needs the app

    files = Path(tempfile.mkdtemp(prefix="fitkart-census-"))
    app = create_app({"TESTING": True, "FITKART_MONGODB_URI": database_uri, "FITKART_DECIMAL_MODE": decimal_mode,
                      "FITKART_RATELIMIT_STORAGE": f"sqlite:///{files / 'ratelimit.sqlite3'}",
                      "FITKART_SPOOL_PATH": str(files / "spool.sqlite3")})
    kinds = {kind: KindCount(label, [], Counter()) for kind, label in {**LABELS, **BATCH_KINDS}.items()}
    try:
        client = app.test_client()

        def measure(kind: str, method: str, path: str, body) -> None:
            answers = []
            names = listener.during(lambda: answers.append(client.open(path, method=method, json=body)))
            # A queued write (202, or a batch's "queued" results) waited for no database: its count says nothing.
            results = (answers[0].get_json(silent=True) or {}).get("results") or []
            queued = answers[0].status_code == 202 or any(result.get("result") == "queued" for result in results)
            if 200 <= answers[0].status_code < 300 and not queued:
                kinds[kind].counts.append(len(names))
                kinds[kind].sequences[", ".join(names)] += 1
            else:
                kinds[kind].failed += 1

        if client.get("/readyz").status_code != 200:
            raise RuntimeError("the app is not ready: no database?")
        mix = Mix(seed)
        for _ in range(20):  # warm-up, not counted: the first request prepares the database (indexes)
            request = mix.next()
            client.open(request.path, method=request.method, json=request.body)
        for _ in range(requests):
            request = mix.next()
            measure(request.kind, request.method, request.path, request.body)
        pool = CartPool()
        for _ in range(batches):
            rows = [cart_row(new_id(), 1) for _ in range(BATCH_SIZE)]
            measure("batch_new", "POST", "/api/sync/batch", operations(rows))
            pool.add(rows)
        for _ in range(batches):
            measure("batch_partial", "POST", "/api/sync/batch", operations(pool.take(BATCH_SIZE)))
    finally:
        app.extensions["fitkart_replayer"].stop()
        app.extensions["fitkart_store"].close()
        shutil.rmtree(files, ignore_errors=True)
    return Census(kinds)


def operations(records: list[dict]) -> dict:
    """A batch request body of cart upserts."""
    return {"operations": [{"op": "upsert", "collection": "cart_items", "record": record} for record in records]}
