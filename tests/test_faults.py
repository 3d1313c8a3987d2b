"""Faults under load, on loopback and bounded in time: nothing acknowledged is ever lost.

Each test runs gunicorn as deployed against a database server of its own, drives it with
a few client threads posting distinct records, breaks something, and then checks that
every record whose upsert was acknowledged (2xx) is stored with the acknowledged content.
"""

import http.client
import json
import os
import random
import signal
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from testbed.data.records import cart_item, new_id, order
from testbed.servers.gunicorn import GunicornServer, request
from testbed.servers.mongo import free_port
from testbed.waiting import wait_until

REQUEST_TIMEOUT = 15
# Longer than the server may take to answer any write: server selection and pymongo's one retry
# (2 x 2 s), a socket timeout and its retry (2 x 10 s), then a wait for a draining spool (5 s).
ANSWER_BOUND = 60
# How soon after the database returns writes must go straight through again: a deadline to wait under, not a
# pace. The spool's replayer retries every second (about 4-5 s here for this load's backlog); a server that only
# recovered after something else (a client's back-off, a restart, a minute-long retry) would miss it.
RECOVERY_BOUND = 30
def wait_for_empty_spool(url: str, seconds: float = 30) -> bool:
    """Whether the server's spool empties within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, ready = request(f"{url}/readyz", timeout=5)
        if status == 200 and ready["spool"]["entries"] == 0:
            return True
        time.sleep(0.2)
    return False


class Load:
    """Client threads posting distinct cart items until stopped, remembering every answer."""

    def __init__(self, url: str, threads: int = 4, limit_per_thread: int = 5000,
                 timeout: float = REQUEST_TIMEOUT) -> None:
        self.url, self.limit, self.timeout = url, limit_per_thread, timeout
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.acked: list[dict] = []
        self.answers: list[tuple[float, int, float]] = []  # (sent at, status, seconds)
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self) -> None:
        for _ in range(self.limit):
            if self.stopping.is_set():
                return
            item = cart_item(quantity=random.randint(1, 99))
            sent = time.monotonic()
            status, _ = request(f"{self.url}/api/sync/cart_items", item, timeout=self.timeout)
            with self.lock:
                self.answers.append((sent, status, time.monotonic() - sent))
                if 200 <= status < 300:
                    self.acked.append(item)

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=self.timeout * 2)
        stuck = sum(thread.is_alive() for thread in self.threads)
        if exc_type is None:  # else the test's own failure is the news
            assert not stuck, f"{stuck} load threads still waiting {self.timeout * 2} s after the load stopped"

    def statuses(self, since: float = 0.0) -> set[int]:
        """The statuses of requests sent after `since` (a monotonic time)."""
        with self.lock:
            return {status for sent, status, _ in self.answers if sent >= since}

    def count(self, since: float = 0.0) -> int:
        """How many requests sent after `since` have been answered (or given up on)."""
        with self.lock:
            return sum(1 for sent, _, _ in self.answers if sent >= since)


def assert_all_acknowledged_stored(mongo, load: Load) -> None:
    """Every acknowledged record is in the database, with the acknowledged quantity."""
    assert load.acked, "the load got no acknowledgement at all"
    stored = {doc["id"]: doc["quantity"] for doc in mongo.cart_items.find({}, {"id": 1, "quantity": 1})}
    missing = [item["id"] for item in load.acked if stored.get(item["id"]) != item["quantity"]]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"


@pytest.fixture
def deployed(own_database, decimal_mode, tmp_path):
    """gunicorn as deployed (two workers) on the test's own database server; stopped afterwards."""
    server, _ = own_database
    app = GunicornServer(f"{server.base_uri}/own", decimal_mode, workers=2, log_path=tmp_path / "gunicorn.log").start()
    yield app
    app.stop()


def test_database_killed_under_load(own_database, deployed):
    """Outage: writes queued (202, never a 5xx, never a hang), straight through again soon after; none lost."""
    server, mongo = own_database
    # Each request may take as long as the server may take to answer a write: a slower one is a hang.
    with Load(deployed.url, timeout=ANSWER_BOUND) as load:
        assert wait_until(lambda: len(load.acked) >= 20), "the load got no acknowledgements before the outage"
        server.stop()
        down_at = time.monotonic()
        # The outage lasts until writes sent in it have been queued, and a little longer so a backlog builds.
        assert wait_until(lambda: 202 in load.statuses(down_at), ANSWER_BOUND), "no write queued in the outage"
        time.sleep(2)
        server.start()
        up_at = time.monotonic()
        wait_until(lambda: 200 in load.statuses(up_at), RECOVERY_BOUND, interval=0.2)
        assert wait_until(lambda: load.count(up_at) >= 20), "the load stalled after recovery"
    assert load.statuses() <= {200, 202}, load.statuses()
    assert 202 in load.statuses(down_at)
    slowest = max(seconds for _, _, seconds in load.answers)
    assert slowest < ANSWER_BOUND, f"a write took {slowest:.1f} s"
    # Writes go straight through again once the backlog has drained, by themselves. How fast a backlog drains
    # (seconds from the database's return to the first write straight through) is a benchmark figure.
    assert 200 in load.statuses(up_at), f"no write went straight through in {RECOVERY_BOUND} s after the database"
    deadline = time.monotonic() + 20  # the queue drains in the background
    while mongo.cart_items.count_documents({}) < len(load.acked) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert_all_acknowledged_stored(mongo, load)


def test_worker_killed_under_load(own_database, deployed):
    """kill -9 of a worker: the master replaces it, others keep serving, nothing acknowledged is lost."""
    _, mongo = own_database
    with Load(deployed.url) as load:
        assert wait_until(lambda: len(load.acked) >= 20), "the load got no acknowledgements before the kill"
        victim = deployed.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        # Gone once the master has reaped it; from then on only live workers can take a request.
        assert wait_until(lambda: victim not in deployed.worker_pids()), "the killed worker was never reaped"
        gone_at = time.monotonic()
        assert wait_until(lambda: len(deployed.worker_pids()) == 2), "the master did not replace the worker"
        assert wait_until(lambda: load.count(gone_at) >= 40), "the load stalled after the kill"
        workers = deployed.worker_pids()
    assert deployed.process.poll() is None and len(workers) == 2 and victim not in workers
    # Requests cut off with the worker get no answer (status 0): never acknowledged, never 5xx.
    assert load.statuses() <= {200, 0}, load.statuses()
    assert load.statuses(gone_at) == {200}
    assert_all_acknowledged_stored(mongo, load)


class HalfSentPost:
    """A cart item POSTed on a connection the server has already answered on, stopped halfway through its body.

    The server cannot answer before the rest arrives, so the request is in flight for as long as the test likes.
    """

    def __init__(self, url: str) -> None:
        self.item = cart_item(quantity=random.randint(1, 99))
        self.body = json.dumps(self.item).encode()
        port = int(url.rsplit(":", 1)[1])
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=ANSWER_BOUND)
        # A first request on the same connection: its answer proves a worker accepted the connection (kept alive).
        self.connection.request("GET", "/healthz")
        first = self.connection.getresponse()
        first.read()
        assert first.status == 200 and not first.will_close, "the server did not keep the connection"
        self.connection.putrequest("POST", "/api/sync/cart_items")
        self.connection.putheader("Content-Type", "application/json")
        self.connection.putheader("Content-Length", str(len(self.body)))
        self.connection.endheaders()
        self.connection.send(self.body[: len(self.body) // 2])

    def finish(self) -> tuple[int, dict]:
        """Send the rest of the body; the status and JSON answer (status 0: no answer at all)."""
        try:
            self.connection.send(self.body[len(self.body) // 2:])
            response = self.connection.getresponse()
            return response.status, json.loads(response.read())
        except (OSError, ValueError, http.client.HTTPException):
            return 0, {}
        finally:
            self.connection.close()


def test_graceful_stop_under_load(own_database, deployed):
    """SIGTERM: in-flight requests finish, later ones are refused (no answer), exit status 0."""
    _, mongo = own_database
    log_path = deployed.log_path
    with Load(deployed.url) as load:
        assert wait_until(lambda: len(load.acked) >= 20), "the load got no acknowledgements before the stop"
        in_flight = [HalfSentPost(deployed.url) for _ in range(3)]
        deployed.process.send_signal(signal.SIGTERM)
        signalled_at = time.monotonic()
        # The master has the signal and passes it on to the workers; a moment more for them to act on it (the
        # longer, the more of the stop the requests live through: the test only gets stricter).
        assert wait_until(lambda: "Handling signal: term" in log_path.read_text()), "the master never saw SIGTERM"
        time.sleep(1)
        answers = [post.finish() for post in in_flight]
        exit_status = deployed.process.wait(timeout=ANSWER_BOUND)
        stopped_at = time.monotonic()
        assert wait_until(lambda: load.count(stopped_at) >= 4), "the load stopped sending"
    # Requests in flight when the signal came were answered, and what they acknowledged is stored.
    assert [(status, answer.get("result")) for status, answer in answers] == [(200, "created")] * 3, answers
    assert exit_status == 0
    load.acked.extend(post.item for post in in_flight)
    # Only requests that had not ended before the signal may go without an answer, never with a 5xx.
    assert load.statuses() <= {200, 0}, load.statuses()
    assert {status for sent, status, seconds in load.answers if sent + seconds < signalled_at} == {200}
    assert load.statuses(stopped_at) == {0}
    assert_all_acknowledged_stored(mongo, load)


@dataclass
class Contention:
    """What the contention run sent (kind, key, updated_at, status, seconds) and what ended up stored, by id."""

    keys: list[str]
    plans: list[tuple[int, str, str, datetime]]
    sent: list[tuple[str, str, datetime, int, float]]
    stored: dict[str, dict]
    duplicates: list[str]

    @property
    def deleted(self) -> set[str]:
        """The keys a delete was sent for."""
        return {key for kind, key, *_ in self.sent if kind == "delete"}


def contend(database_uri: str, decimal_mode: str, mongo) -> Contention:
    """16 clients, 10 orders, upserts and deletes with timestamps, against gunicorn with two workers.

    Every write must be acknowledged: applied (200), or queued (202) when the database took too long,
    in which case the spool must drain before anything is read back.
    """
    app = GunicornServer(database_uri, decimal_mode, workers=2).start()
    keys = [new_id() for _ in range(10)]
    base = datetime(2025, 12, 19, tzinfo=UTC)
    deleted = set(random.Random(7).sample(keys, 3))
    plans = []
    for client_index in range(16):
        chooser = random.Random(client_index)
        for step in range(12):
            key = chooser.choice(keys)
            at = base + timedelta(milliseconds=client_index * 1000 + step)
            kind = "delete" if key in deleted and step == 6 else "upsert"
            plans.append((client_index, kind, key, at))
    sent: list[tuple[str, str, datetime, int, float]] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        for _, kind, key, at in [plan for plan in plans if plan[0] == index]:
            began = time.monotonic()
            if kind == "delete":
                status, _ = request(f"{app.url}/api/sync/batch",
                                    {"operations": [{"op": "delete", "collection": "orders", "record": {"id": key}}]},
                                    timeout=ANSWER_BOUND)
            else:
                status, _ = request(f"{app.url}/api/sync/orders",
                                    order(id=key, status=f"v{at.timestamp():.3f}", updated_at=at.isoformat()),
                                    timeout=ANSWER_BOUND)
            with lock:
                sent.append((kind, key, at, status, time.monotonic() - began))

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=ANSWER_BOUND * 12)
        assert not any(thread.is_alive() for thread in threads), "a client never finished"
        statuses = {status for *_, status, _ in sent}
        # Every write acknowledged: applied (200), or queued (202) when the database took too long.
        assert statuses <= {200, 202}, (statuses, f"slowest answer {max(s for *_, s in sent):.1f} s")
        if 202 in statuses:
            assert wait_for_empty_spool(app.url), "the queued writes were never applied"
    finally:
        app.stop()
    assert len(sent) == len(plans)
    stored: dict[str, dict] = {}
    duplicates = []
    for doc in mongo.orders.find():
        if doc["id"] in stored:
            duplicates.append(doc["id"])
        stored[doc["id"]] = doc
    return Contention(keys, plans, sent, stored, duplicates)


def test_contention_on_ten_keys_acknowledges_every_write_once(database_uri, decimal_mode, mongo):
    """16 clients, 10 orders, upserts and deletes: every write acknowledged, no duplicates, deletes stick."""
    run = contend(database_uri, decimal_mode, mongo)
    assert not run.duplicates, f"duplicate documents for {run.duplicates[:3]}"
    assert run.deleted, "the plan sent no delete"
    came_back = run.deleted & set(run.stored)
    assert not came_back, f"deleted orders came back: {sorted(came_back)}"
    assert set(run.stored) == set(run.keys) - run.deleted, "an order that was never deleted is missing"


def test_contention_on_ten_keys_latest_wins(database_uri, decimal_mode, mongo, mongo_server):
    """The same contention: each order that was not deleted holds the version with the latest updated_at."""
    if mongo_server.is_ferretdb:
        # The engine's version-guarded update is a compare-and-set on MongoDB, where a single-document update
        # checks its filter and writes atomically. FerretDB v1 runs an update as a query and then a write, so two
        # concurrent guarded writers can both pass and an older version can land last (see docs/testing.md).
        pytest.skip(f"latest-wins among concurrent updates needs an atomic compare-and-set, which "
                    f"{mongo_server.version} lacks")
    run = contend(database_uri, decimal_mode, mongo)
    assert not run.duplicates, f"duplicate documents for {run.duplicates[:3]}"
    wrong = {}
    for key in set(run.keys) - run.deleted:
        latest = max(at for kind, k, at, *_ in run.sent if k == key and kind == "upsert")
        if run.stored[key]["status"] != f"v{latest.timestamp():.3f}":
            wrong[key] = (run.stored[key]["status"], f"v{latest.timestamp():.3f}")
    assert not wrong, f"an older version won: {wrong}"


class SlowProxy:
    """A TCP proxy on loopback that holds every chunk for `delay` seconds before passing it on."""

    def __init__(self, target_port: int) -> None:
        self.delay = 0.0
        self.port = free_port()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.target_port = target_port
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:  # the database refused: so does the proxy, as a real network would
                client.close()
                continue
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pump, args=(source, sink), daemon=True).start()

    def pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                time.sleep(self.delay)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                end.close()

    def close(self) -> None:
        self.listener.close()


def test_slow_database_queues_writes_instead_of_piling_up(make_app, mongo_server, decimal_mode):
    """A database that answers too slowly: writes end queued (202) after the socket timeout, then recover."""
    base_uri = mongo_server.uri
    proxy = SlowProxy(int(base_uri.rsplit(":", 1)[1]))
    timeout_ms = 1000  # the app's server-selection and socket timeouts
    # Each leg through the proxy takes this long, so a write that waited for the database would take at least
    # twice as long; one that gives up at its timeouts (a few seconds: a socket timeout, pymongo's one retry,
    # the spool) answers well inside one leg, even on a busy machine.
    delay = 10.0
    try:
        app = make_app(FITKART_MONGODB_URI=f"mongodb://127.0.0.1:{proxy.port}/test_slow",
                       FITKART_DECIMAL_MODE=decimal_mode, FITKART_DB_TIMEOUT_MS=timeout_ms,
                       FITKART_DB_SOCKET_TIMEOUT_MS=timeout_ms)
        assert app.test_client().post("/api/sync/cart_items", json=cart_item()).status_code == 200
        proxy.delay = delay
        answers: list[tuple[int, float]] = []

        def slow_request() -> None:
            started = time.monotonic()
            status = app.test_client().post("/api/sync/cart_items", json=cart_item()).status_code
            answers.append((status, time.monotonic() - started))

        threads = [threading.Thread(target=slow_request) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=ANSWER_BOUND)
        assert not any(thread.is_alive() for thread in threads), f"a write waited over {ANSWER_BOUND} s"
        assert len(answers) == 8 and {status for status, _ in answers} == {202}, answers
        slowest = max(seconds for _, seconds in answers)
        assert slowest < delay, f"a write took {slowest:.1f} s: it waited for the slow database"
        proxy.delay = 0.0
        assert wait_until(lambda: app.test_client().get("/readyz").status_code == 200, interval=0.2), \
            "no recovery after the database sped up"
    finally:
        proxy.close()
