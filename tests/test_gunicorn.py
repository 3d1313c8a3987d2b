"""The server as deployed: gunicorn with gunicorn.conf.py, several workers, the real database."""

import pytest

from testbed.data.records import cart_item
from testbed.servers.gunicorn import GunicornServer, request


@pytest.fixture
def gunicorn(database_uri, decimal_mode):
    """gunicorn serving wsgi:app with the deployment config, on a free port."""
    server = GunicornServer(database_uri, decimal_mode).start()
    yield server
    server.stop()


def test_gunicorn_serves_the_legacy_routes_and_stops_cleanly(gunicorn, mongo):
    """Forty legacy cart posts to two workers all land; SIGTERM exits with status 0."""
    items = [cart_item() for _ in range(40)]
    for item in items:
        status, body = request(f"{gunicorn.url}/api/sync/cart", item)
        assert (status, body["result"]) == (200, "created")
    assert mongo.cart_items.count_documents({}) == 40
    assert len(gunicorn.worker_pids()) == 2
    assert gunicorn.terminate() == 0
