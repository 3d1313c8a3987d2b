"""What a database outage costs under load: time to a queued answer, recovery time, and how fast the spool drains.

    .venv/bin/python -m bench.outage [--outage 8] [--clients 4]

Starts a MongoDB-compatible server (mongod if installed, else FerretDB) and gunicorn as deployed
(two workers), drives it with client threads posting distinct cart items, stops the database
for `--outage` seconds and starts it again. Prints figures, not pass/fail: the tests
(tests/test_faults.py) check only that every write is acknowledged and kept.
"""

import argparse
import statistics
import threading
import time

from testbed.data.records import cart_item
from testbed.servers.gunicorn import GunicornServer, request
from testbed.servers.mongo import MongoServer

ANSWER_TIMEOUT = 60


class Clients:
    """Threads posting distinct cart items until stopped; every answer with its send time and duration."""

    def __init__(self, url: str, count: int) -> None:
        self.url = url
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.answers: list[tuple[float, int, float]] = []
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(count)]

    def run(self) -> None:
        while not self.stopping.is_set():
            sent = time.monotonic()
            status, _ = request(f"{self.url}/api/sync/cart_items", cart_item(), timeout=ANSWER_TIMEOUT)
            with self.lock:
                self.answers.append((sent, status, time.monotonic() - sent))

    def since(self, moment: float) -> list[tuple[float, int, float]]:
        """Answers to requests sent at or after `moment`."""
        with self.lock:
            return [answer for answer in self.answers if answer[0] >= moment]


def spool_entries(url: str) -> int:
    """How many writes the server's spool holds now."""
    _, ready = request(f"{url}/readyz", timeout=10)
    return ready.get("spool", {}).get("entries", 0)


def wait_for(check, seconds: float = 120) -> float | None:
    """The monotonic time `check` first held, polling every 50 ms; None after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(0.05)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--outage", type=float, default=8.0, help="seconds the database stays down")
    parser.add_argument("--clients", type=int, default=4, help="client threads posting writes")
    args = parser.parse_args()
    database = MongoServer().start()
    server = GunicornServer(f"{database.base_uri}/bench_outage", None, workers=2).start()
    clients = Clients(server.url, args.clients)
    try:
        for thread in clients.threads:
            thread.start()
        time.sleep(2)
        database.stop()
        down_at = time.monotonic()
        first_queued = wait_for(lambda: any(status == 202 for _, status, _ in clients.since(down_at)))
        time.sleep(max(0.0, args.outage - (time.monotonic() - down_at)))
        queued_at_return = spool_entries(server.url)
        database.start()
        up_at = time.monotonic()
        through = wait_for(lambda: any(status == 200 for _, status, _ in clients.since(up_at)))
        drained = wait_for(lambda: spool_entries(server.url) == 0)
        time.sleep(1)
    finally:
        clients.stopping.set()
        for thread in clients.threads:
            thread.join(ANSWER_TIMEOUT)
        server.stop()
        database.remove()

    in_outage = [answer for answer in clients.since(down_at) if answer[0] < up_at]
    queued = [seconds for _, status, seconds in in_outage if status == 202]
    print(f"{database.description}; gunicorn 2 workers; {args.clients} clients; database down {args.outage:.0f} s")
    print(f"statuses during the run: {sorted({status for _, status, _ in clients.answers})}")
    print(f"first 202 after the database went away     {first_queued - down_at:8.2f} s" if first_queued else
          "no write was queued")
    if queued:
        print(f"answer time of a queued write: slowest     {max(queued):8.2f} s, "
              f"median {statistics.median(queued):.3f} s ({len(queued):,} queued)")
    print(f"writes waiting when the database returned  {queued_at_return:8,}")
    print(f"first write straight through again after   {through - up_at:8.2f} s" if through else
          "no write went straight through")
    if drained:
        rate = queued_at_return / (drained - up_at) if drained > up_at else float("inf")
        print(f"spool empty after                          {drained - up_at:8.2f} s "
              f"(about {rate:,.0f} of the waiting writes/s)")


if __name__ == "__main__":
    main()
