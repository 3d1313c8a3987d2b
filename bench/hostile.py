"""What refusing a hostile body costs a gunicorn worker: time, answer, stored reject, peak memory.

    .venv/bin/python -m bench.hostile [--repeat 5]

Starts a database server (as the tests do) and gunicorn with one worker, then sends each
hostile body of testbed/data/hostile.py through each write path and prints one row per body and
path: the slowest answer, the answer's size, the stored reject's size, and how far the
worker's peak memory (VmHWM) rose. Figures, not pass/fail; the targets are < 1 s,
< 64 KB, < 128 KB and < 50 MB.
"""

import argparse
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import bson
import pymongo

from testbed.data.hostile import deep_chain, flat_dollars
from testbed.data.records import profile
from testbed.servers.gunicorn import GunicornServer
from testbed.servers.mongo import MongoServer

SECRET = "bench-webhook-secret"
BODIES = {
    "deep chain (~100 KB)": lambda: profile(body_measurements=deep_chain()),
    "80,000 $-keys (~800 KB)": lambda: profile(body_measurements=flat_dollars()),
    "45,000 bad columns (~750 KB)": lambda: {**profile(), **{f"bad col {i}": 1 for i in range(45_000)}},
}
PATHS = {
    "route": lambda record: ("/api/sync/profiles", record, {}),
    "batch": lambda record: ("/api/sync/batch", {"operations": [
        {"op": "upsert", "collection": "profiles", "record": record}]}, {}),
    "webhook": lambda record: ("/api/webhooks/supabase", {"type": "INSERT", "table": "profiles", "record": record},
                               {"X-Webhook-Secret": SECRET}),
}


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def post(url: str, body: dict, headers: dict) -> tuple[int, int, float]:
    """POST a JSON body; status, answer bytes, seconds."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **headers})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, answer = response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            status, answer = error.code, error.read()
    return status, len(answer), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="sends of each body on each path")
    args = parser.parse_args()
    database = MongoServer().start()
    uri = f"{database.base_uri}/bench_hostile"
    server = GunicornServer(uri, "double", workers=1, threads=1,
                            env={"FITKART_WEBHOOK_SECRET": SECRET, "FITKART_REJECTS_RATE": "100000 per minute"})
    server.start()
    rejects = pymongo.MongoClient(uri).get_default_database().sync_rejects
    try:
        (worker,) = server.worker_pids()
        post(f"{server.url}/api/sync/profiles", profile(), {})
        baseline = peak_rss_mb(worker)
        print(f"{database.description}, gunicorn 1 worker; peak RSS before: {baseline:.0f} MB")
        print(f"{'body':<30}{'path':<9}{'status':>7}{'slowest s':>11}{'answer KB':>11}{'reject KB':>11}"
              f"{'peak +MB':>10}")
        for name, make in BODIES.items():
            record = make()
            for path, shape in PATHS.items():
                url, body, headers = shape(record)
                rejects.delete_many({})
                answers = [post(f"{server.url}{url}", body, headers) for _ in range(args.repeat)]
                stored = max((len(bson.encode(doc)) for doc in rejects.find()), default=0)
                print(f"{name:<30}{path:<9}{answers[-1][0]:>7}{max(a[2] for a in answers):>11.3f}"
                      f"{max(a[1] for a in answers) / 1024:>11.1f}{stored / 1024:>11.1f}"
                      f"{peak_rss_mb(worker) - baseline:>10.1f}")
    finally:
        server.stop()
        database.remove()


if __name__ == "__main__":
    main()
