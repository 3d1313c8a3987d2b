"""Faults of the spool itself, on gunicorn as deployed: a locked file, a full disk, a lost lease, a long drain,
workers booting together. Each ends with the acknowledged-writes checker (testbed/acknowledged.py): every
write answered 200/201/202 is in the mirror after the drain, nothing resurrected or duplicated."""

import os
import signal
import sqlite3
import time
from contextlib import closing, suppress

import pytest

from fitkart_server.model.policy import Caller
from fitkart_server.storage.spool import LEASE_SECONDS, RESERVE_BYTES, Spool
from fitkart_server.web.writes import DRAIN_WAIT_SECONDS
from testbed.acknowledged import AcknowledgedWrites
from testbed.data.records import cart_item, new_id
from testbed.disk import small_disk as mounted_small_disk
from testbed.servers.gunicorn import GunicornServer, request
from testbed.waiting import wait_until

from .test_faults import wait_for_empty_spool

# Generous: a drain of these tests' backlogs on a busy 2-core machine, with the replayer's back-off.
DRAIN_BOUND = 120


@pytest.fixture
def deployed(own_database, decimal_mode, tmp_path):
    """Start gunicorn (two workers) on the test's own database server with extra settings; stopped afterwards."""
    server, _ = own_database
    started = []

    def start(**env) -> GunicornServer:
        app = GunicornServer(f"{server.base_uri}/own", decimal_mode, env=env,
                             log_path=tmp_path / f"gunicorn-{len(started)}.log")
        started.append(app)
        return app.start(timeout=60)

    yield start
    for app in started:
        app.stop()


@pytest.fixture
def writers():
    """Start acknowledged-writes loads; each is stopped afterwards, whatever the test's end."""
    started: list[AcknowledgedWrites] = []

    def start(url: str, **options) -> AcknowledgedWrites:
        load = AcknowledgedWrites(url, **options).__enter__()
        started.append(load)
        return load

    yield start
    for load in started:
        load.__exit__(None, None, None)


def spool_of(app: GunicornServer) -> dict:
    """The spool as /readyz shows it."""
    status, ready = request(f"{app.url}/readyz", timeout=15)
    assert status in (200, 503), status
    return ready["spool"]


def drained(app: GunicornServer, load: AcknowledgedWrites, mongo) -> None:
    """Stop the load, wait for the spool to drain, and check every acknowledged write."""
    load.__exit__(None, None, None)
    assert wait_for_empty_spool(app.url, DRAIN_BOUND), f"the spool did not drain: {spool_of(app)}"
    assert not any(500 <= status != 503 for status in load.seen()), load.seen()
    load.check(mongo)


def through_an_outage(app: GunicornServer, server, mongo) -> None:
    """Clients write through a database outage (queued, then straight through again); nothing acknowledged lost."""
    with AcknowledgedWrites(app.url) as load:
        assert wait_until(lambda: load.acknowledged() >= 10)
        server.stop()
        down = time.monotonic()
        assert wait_until(lambda: 202 in load.seen(down), 60)
        server.start()
        up = time.monotonic()
        assert wait_until(lambda: 200 in load.seen(up), DRAIN_BOUND)
    drained(app, load, mongo)


def test_a_locked_spool_file_delays_the_replay_under_load_and_loses_nothing(own_database, deployed, writers):
    """The spool file locked past the busy timeout (an operator's sqlite3 shell in a transaction) while the
    database comes back: both workers' replayers fail, say so, keep trying, and drain once the lock goes;
    a write meanwhile is queued, or a 503 saying nothing was kept, never a 500."""
    server, mongo = own_database
    app = deployed()
    load = writers(app.url)
    assert wait_until(lambda: load.acknowledged() >= 20)
    server.stop()
    down = time.monotonic()
    assert wait_until(lambda: 202 in load.seen(down), 60), load.seen(down)
    shell = sqlite3.connect(app.env["FITKART_SPOOL_PATH"], isolation_level=None)
    shell.execute("BEGIN EXCLUSIVE")
    try:
        server.start()
        # Said by the worker whose replayer meets the lock (the other may be waiting for the lease).
        assert wait_until(lambda: "locked" in spool_of(app).get("replay_error", ""), 60)
    finally:
        shell.execute("ROLLBACK")
        shell.close()
    up = time.monotonic()
    assert wait_until(lambda: 200 in load.seen(up), DRAIN_BOUND), \
        f"writes never went straight through again: {spool_of(app)} {load.seen(up)} {len(load.statuses)}"
    drained(app, load, mongo)
    assert spool_of(app)["replay"] == "ok"


@pytest.fixture
def small_disk(tmp_path):
    """A 32 MB filesystem of the test's own."""
    with mounted_small_disk(tmp_path / "small-disk", 32) as where:
        yield where


def fill(path) -> None:
    """Write to `path` until its disk is full."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for block in (65536, 512):
            with suppress(OSError):
                while os.write(descriptor, b"\0" * block):
                    pass
    finally:
        os.close(descriptor)


def test_a_full_disk_under_the_spool_is_a_503_and_the_spool_still_drains(own_database, deployed, small_disk,
                                                                          writers):
    """The spool's own disk full while writes are queued: further writes are 503 + Retry-After (nothing kept),
    never a 500; once the database is back the applied entries are removed all the same (the disk reserve is
    freed for it), the spool drains, and nothing acknowledged is lost."""
    server, mongo = own_database
    path = small_disk / "spool.sqlite3"
    app = deployed(FITKART_SPOOL_PATH=str(path), FITKART_SPOOL_MAX_MB="1000")
    assert os.path.getsize(f"{path}.reserve") == RESERVE_BYTES
    load = writers(app.url, body_bytes=3000)
    assert wait_until(lambda: load.acknowledged() >= 20)
    server.stop()
    down = time.monotonic()
    assert wait_until(lambda: sum(status == 202 for sent, status, _ in load.statuses if sent >= down) >= 40, 90)
    with closing(sqlite3.connect(path)) as operator:
        operator.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # as a backup does: removals must grow the WAL again
    fill(small_disk / "filler")
    full = time.monotonic()
    assert wait_until(lambda: 503 in load.seen(full), 60), load.seen(full)
    status, answer = request_full(app)
    assert status == 503 and "disk is full" in answer["message"], answer
    server.start()
    drained(app, load, mongo)
    os.remove(small_disk / "filler")
    assert wait_until(lambda: request(f"{app.url}/api/sync/cart", cart_item())[0] == 200)


def request_full(app: GunicornServer) -> tuple[int, dict]:
    """A write the full disk cannot keep."""
    return request(f"{app.url}/api/sync/cart", cart_item(note="x" * 3000))


def queue_backlog(path: str, entries: int, *, callers: int = 1) -> None:
    """`entries` new cart rows queued in the spool file at `path`, as writes while the database was away, from
    `callers` callers in turn (the replay applies one caller's consecutive writes as one run)."""
    spool = Spool(path, 1 << 40)
    who = [Caller("service_role", new_id()) for _ in range(callers)]
    for start in range(0, entries, 1000):
        spool.append_many([("upsert", "cart_items", cart_item(), who[index % callers], "client", "/api/sync/cart",
                            None) for index in range(start, min(entries, start + 1000))])


def test_a_killed_lease_holder_is_replaced_within_a_lease(own_database, deployed, tmp_path):
    """kill -9 of the worker replaying a backlog: another worker takes the lease over once it runs out
    (LEASE_SECONDS), not after a minute, and the backlog is all applied."""
    _, mongo = own_database
    path = str(tmp_path / "backlog.sqlite3")
    queue_backlog(path, 6000)
    app = deployed(FITKART_SPOOL_PATH=path)

    def holder() -> int | None:
        with closing(sqlite3.connect(path)) as reader:
            owner, until = reader.execute("SELECT owner, until FROM lease").fetchone()
        return int(owner.split(":")[1]) if owner and until > time.time() else None

    assert wait_until(lambda: holder() in app.worker_pids(), 60)
    victim = holder()
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    # The lease runs out at most LEASE_SECONDS after its last renewal; the other worker tries every second.
    assert wait_until(lambda: holder() not in (None, victim), LEASE_SECONDS + 5), "nobody took the lease over"
    assert time.monotonic() - killed < LEASE_SECONDS + 5
    assert wait_for_empty_spool(app.url, DRAIN_BOUND)
    assert mongo.cart_items.count_documents({}) == 6000


def test_while_a_long_backlog_drains_writes_are_queued_at_once_not_held(own_database, deployed, tmp_path):
    """A backlog that takes longer than a write may wait to drain: a write meanwhile is queued behind it at once
    (202 in well under DRAIN_WAIT_SECONDS), not held for the whole wait and queued anyway; once the rest will
    drain within the wait, writes go straight through; nothing acknowledged is lost."""
    _, mongo = own_database
    path = str(tmp_path / "backlog.sqlite3")
    queue_backlog(path, 10000, callers=10000)  # a run each: progress every few milliseconds, a drain of many seconds
    app = deployed(FITKART_SPOOL_PATH=path)
    assert wait_until(lambda: spool_of(app)["entries"] < 9900, 60), "the replay never started"
    with AcknowledgedWrites(app.url, threads=2) as load:
        assert wait_until(lambda: len(load.statuses) >= 20, 60)
        early = [(status, seconds) for _, status, seconds in list(load.statuses)[:20]]
    assert {status for status, _ in early} <= {200, 202}, early
    held = [seconds for status, seconds in early if status == 202 and seconds >= DRAIN_WAIT_SECONDS]
    assert not held, f"{len(held)} of 20 writes waited the whole wait and were queued anyway: {early}"
    drained(app, load, mongo)
    assert mongo.cart_items.count_documents({}) >= 10000


def test_workers_booting_on_a_new_spool_file_held_locked_all_start(own_database, deployed, tmp_path):
    """A brand-new spool file locked while the workers boot (another program, or a worker setting it up): no
    worker fails to boot over it; once the lock goes, writes while the database is away are kept and replayed."""
    server, mongo = own_database
    path = tmp_path / "new" / "spool.sqlite3"
    path.parent.mkdir()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("CREATE TABLE other (x)")
    try:
        app = deployed(FITKART_SPOOL_PATH=str(path))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert len(app.worker_pids()) == 2 and "Worker failed to boot" not in app.log_tail(200)
    through_an_outage(app, server, mongo)


def test_a_damaged_spool_file_is_set_aside_and_every_worker_starts(own_database, deployed, tmp_path):
    """Garbage where the spool file should be: gunicorn starts (one worker moves the file aside, the other finds
    the new one), /readyz names the file set aside, and the new spool keeps writes through an outage."""
    server, mongo = own_database
    path = tmp_path / "damaged" / "spool.sqlite3"
    path.parent.mkdir()
    path.write_bytes(b"not a database at all " * 500)
    app = deployed(FITKART_SPOOL_PATH=str(path))
    assert len(app.worker_pids()) == 2 and "Worker failed to boot" not in app.log_tail(200)
    moved = [name for name in os.listdir(path.parent) if ".damaged-" in name and not name.endswith(("-wal", "-shm"))]
    assert len(moved) == 1, os.listdir(path.parent)
    assert all(moved[0] in spool_of(app).get("problem", "") for _ in range(6))  # said by each worker
    through_an_outage(app, server, mongo)


def test_a_full_disk_at_start_leaves_a_healthy_spool_in_place_and_replays_it(own_database, make_app, decimal_mode,
                                                                           small_disk):
    """The spool's disk full when a worker starts after a clean stop (no -wal or -shm left to reuse): the file is
    not taken for damaged, the reserve is freed to open it, the worker starts, and what it holds is replayed."""
    server, mongo = own_database
    path = small_disk / "spool.sqlite3"
    earlier = Spool(str(path), 1 << 30)
    earlier.check()
    earlier.append_many([("upsert", "cart_items", cart_item(), Caller("service_role"), "client", "/api/sync/cart",
                          None) for _ in range(50)])
    earlier._connection().close()  # a clean stop: the last connection removes the -wal and -shm
    assert not os.path.exists(f"{path}-wal")
    fill(small_disk / "filler")
    app = make_app(FITKART_MONGODB_URI=f"{server.base_uri}/own", FITKART_DECIMAL_MODE=decimal_mode,
                   FITKART_SPOOL_PATH=str(path))
    assert not [name for name in os.listdir(small_disk) if ".damaged-" in name]
    assert wait_until(lambda: mongo.cart_items.count_documents({}) == 50, 60), app.extensions["fitkart_replayer"].fault
