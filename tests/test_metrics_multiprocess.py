"""PROMETHEUS_MULTIPROC_DIR under gunicorn: emptied of old samples at start, and one scrape adds up every worker."""

import os
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from testbed.data.records import cart_item
from testbed.servers.gunicorn import GunicornServer, request

POSTS = ("fitkart_http_requests_total", (("method", "POST"), ("route", "/api/sync/cart_items"), ("status", "200")))
CREATED = ("fitkart_sync_results_total", (("collection", "cart_items"), ("result", "created")))
# What an earlier master's workers left behind: the same series, with counts this run never made.
EARLIER_RUN = """
from prometheus_client import Counter
Counter("fitkart_http_requests_total", "", ["method", "route", "status"]).labels(
    "POST", "/api/sync/cart_items", "200").inc(1000)
Counter("fitkart_sync_results_total", "", ["collection", "result"]).labels("cart_items", "created").inc(1000)
"""


def samples(metrics) -> dict[tuple, float]:
    """Every sample as {(name, sorted labels): value}."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in metrics for sample in family.samples}


def scrape(url: str) -> dict[tuple, float]:
    """One scrape of /metrics, parsed with prometheus-client's own parser."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=15) as response:
        return samples(text_string_to_metric_families(response.read().decode()))


def counted_by(directory: Path, pid: int) -> dict[tuple, float]:
    """The counters one process wrote to its own file in the directory."""
    path = directory / f"counter_{pid}.db"
    return samples(MultiProcessCollector.merge([str(path)])) if path.exists() else {}


def test_old_samples_are_removed_at_start_and_a_scrape_adds_up_every_worker(tmp_path, database_uri, decimal_mode):
    """A stale counter file is gone once gunicorn starts; every scrape equals the sum of both workers' own counts."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    earlier = subprocess.run([sys.executable, "-c", EARLIER_RUN], env={**os.environ,
                             "PROMETHEUS_MULTIPROC_DIR": str(directory)}, check=True, capture_output=True)
    assert earlier.returncode == 0
    stale = list(directory.glob("*.db"))
    assert [path.name.split("_")[0] for path in stale] == ["counter"]
    assert samples(MultiProcessCollector.merge([str(stale[0])]))[POSTS] == 1000
    (directory / "notes.txt").write_text("not a metric file: left alone")

    server = GunicornServer(database_uri, decimal_mode, workers=2, threads=2,
                            env={"PROMETHEUS_MULTIPROC_DIR": str(directory)}).start()
    try:
        workers = server.worker_pids()
        assert len(workers) == 2
        # Every metric file now is one of this master's workers', and none holds the earlier counts.
        assert {int(path.stem.rsplit("_", 1)[1]) for path in directory.glob("*.db")} <= set(workers)
        assert not any(counted_by(directory, pid).get(POSTS) for pid in workers)
        assert (directory / "notes.txt").exists()
        sent = 0
        deadline = time.monotonic() + 60
        with ThreadPoolExecutor(max_workers=8) as pool:
            # Until each worker has answered some: concurrent posts spread over both.
            while not all(counted_by(directory, pid).get(POSTS) for pid in workers):
                assert time.monotonic() < deadline, "one worker answered every request"
                statuses = list(pool.map(lambda _: request(f"{server.url}/api/sync/cart_items", cart_item())[0],
                                         range(16)))
                assert statuses == [200] * 16
                sent += 16
        per_worker = [counted_by(directory, pid) for pid in workers]
        assert all(counts[POSTS] > 0 for counts in per_worker)
        assert sum(counts[POSTS] for counts in per_worker) == sent
        assert sum(counts[CREATED] for counts in per_worker) == sent
        for _ in range(4):  # whichever worker answers the scrape, it shows the sum of both, and nothing older
            found = scrape(server.url)
            assert found[POSTS] == sent and found[CREATED] == sent
    finally:
        server.stop()
