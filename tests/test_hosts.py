"""Two hosts behind nginx over one database, as docs/operations.md#deployment lays them out: the limits count
across both, each host's spool drains, and a host killed mid-load loses nothing acknowledged."""

import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from fitkart_server.web.ratelimit import OPERATOR_FAILURES as OPERATOR_SIGN_INS
from testbed.acknowledged import AcknowledgedWrites
from testbed.data.records import new_id
from testbed.servers.gunicorn import GunicornServer, host_copy, request
from testbed.servers.nginx import NginxProxy
from testbed.waiting import wait_until

from .test_faults import wait_for_empty_spool
from .test_spool_faults import DRAIN_BOUND, spool_of

# Failed operator sign-ins allowed a minute from one address.
OPERATOR_FAILURES = int(OPERATOR_SIGN_INS.split()[0])
# An hour's window: the test's burst never straddles two windows (they are aligned to the clock).
LIMIT = 8
RATE = f"{LIMIT} per hour"


@pytest.fixture
def hosts(own_database, decimal_mode, tmp_path):
    """Two gunicorn hosts on the test's own database, each run from its own copy of the server (its own instance
    folder and spool, as on a machine of its own), behind the shipped nginx block; the rate limiter as deployed
    (its default storage), trusting the proxy for client addresses."""
    server, _ = own_database
    settings = {"FITKART_TRUSTED_PROXIES": "127.0.0.1/32", "FITKART_RATELIMIT_STORAGE": "",
                "FITKART_REJECTS_RATE": RATE}
    apps = [GunicornServer(f"{server.base_uri}/own", decimal_mode, env=settings, log_path=tmp_path / f"host-{n}.log",
                           root=host_copy(tmp_path / f"host-{n}")) for n in range(2)]
    proxy = None
    try:
        for app in apps:
            app.start(timeout=60)
        proxy = NginxProxy(*(app.port for app in apps)).start()
        yield apps, proxy
    finally:
        if proxy is not None:
            proxy.stop()
        for app in apps:
            app.stop()


def served(app: GunicornServer, line: str) -> int:
    """How many requests the host's request log shows starting with `line` (method, route, status)."""
    return sum(line in logged for logged in app.log_path.read_text(errors="replace").splitlines())


def test_a_callers_limit_holds_across_both_hosts(hosts, own_database):
    """Twenty refused writes from one client, spread over both hosts by the proxy: the limit is one count for the
    deployment, not one per host — `LIMIT` refusals stored and answered 422, the rest 429."""
    _, mongo = own_database
    apps, proxy = hosts
    statuses = [request(f"{proxy.url}/api/sync/cart", {"id": new_id(), "quantity": 1})[0] for _ in range(20)]
    assert all(served(app, "POST /api/sync/cart 4") for app in apps), "the proxy did not use both hosts"
    assert (statuses.count(422), statuses.count(429)) == (LIMIT, 20 - LIMIT), statuses
    assert mongo.sync_rejects.count_documents({}) == LIMIT


def test_a_host_killed_mid_load_through_an_outage_loses_nothing(hosts, own_database):
    """Clients write through the proxy; the database goes away (both hosts queue), one host is killed mid-load and
    the other serves on; the database comes back, the killed host restarts on its own spool file: both spools
    drain, and every acknowledged write is in the mirror (nothing lost, resurrected or duplicated)."""
    server, mongo = own_database
    apps, proxy = hosts
    # At a shop's pace (about 80 writes a second in all), so what queues in the outage drains in seconds.
    with AcknowledgedWrites(proxy.url, pause=0.05) as load:
        assert wait_until(lambda: load.acknowledged() >= 20)
        server.stop()
        down = time.monotonic()
        assert wait_until(lambda: all(spool_of(app)["entries"] for app in apps), 60), [spool_of(a) for a in apps]
        assert 202 in load.seen(down)
        apps[0].stop()  # SIGKILL, master and workers, with writes in flight and a spool full of them
        killed = time.monotonic()
        assert wait_until(lambda: 202 in load.seen(killed + 1), 60), "the other host stopped serving"
        server.start()
        up = time.monotonic()
        assert wait_until(lambda: 200 in load.seen(up), DRAIN_BOUND), spool_of(apps[1])
        apps[0].start(timeout=60)
        restarted = time.monotonic()
        assert wait_until(lambda: load.acknowledged() > 0 and 200 in load.seen(restarted + 2), 60)
    for app in apps:
        assert wait_for_empty_spool(app.url, DRAIN_BOUND), f"a spool did not drain: {spool_of(app)}"
    assert not any(500 <= status < 600 and status not in (502, 503) for status in load.seen()), load.seen()
    load.check(mongo)


def test_while_the_database_is_away_a_host_counts_on_its_own(own_database, decimal_mode, tmp_path):
    """The shared counters live in the database: with it stopped, a host counts in its own file instead, so failed
    operator sign-ins relayed from outside are still answered and still cut past their limit (per host)."""
    server, _ = own_database
    app = GunicornServer(f"{server.base_uri}/own", decimal_mode, root=host_copy(tmp_path / "host"),
                         env={"FITKART_RATELIMIT_STORAGE": "", "FITKART_AUTH": "off",
                              "FITKART_ADMIN_TOKEN": "the-real-admin-token"}).start(timeout=60)
    try:
        server.stop()
        while time.time() % 60 > 50:  # windows are aligned to the clock: keep the burst inside one
            time.sleep(1)
        statuses = [sign_in(app, f"guess-{index}") for index in range(OPERATOR_FAILURES + 1)]
        assert statuses == [401] * OPERATOR_FAILURES + [429], statuses
        assert (tmp_path / "host" / "instance" / "ratelimit.sqlite3").exists()
    finally:
        app.stop()


def sign_in(app: GunicornServer, token: str) -> int:
    """A failed operator sign-in relayed by a proxy on this machine for an outside client; its status."""
    form = urllib.request.Request(f"{app.url}/status/sign-in", data=urllib.parse.urlencode({"token": token}).encode(),
                                  headers={"X-Forwarded-For": "203.0.113.9"}, method="POST")
    try:
        with urllib.request.urlopen(form, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        with error:
            return error.code
