"""What a new user gets: gunicorn as deployed with nothing set but the database URI, the old client's requests."""

import time

import pytest

from testbed.data.records import cart_item, order, product, profile, user_role, wishlist_item
from testbed.servers.gunicorn import GunicornServer, host_copy, request


@pytest.fixture
def newcomer_server(database_uri, tmp_path):
    """gunicorn with FITKART_MONGODB_URI alone, run from a copy of the server of its own: its spool and its
    rate-limit counts where a new install keeps them (its instance folder, and the mirror's database)."""
    unset = {"FITKART_SPOOL_PATH": "", "FITKART_RATELIMIT_STORAGE": ""}  # empty is unset (config.py)
    server = GunicornServer(database_uri, None, log_path=tmp_path / "server.log", env=unset,
                            root=host_copy(tmp_path / "host")).start()
    yield server
    server.stop()


def test_defaults_mirror_every_table(newcomer_server, mongo):
    """No FITKART_DECIMAL_MODE: every table is mirrored, money too, through the old and the new routes."""
    url = f"{newcomer_server.url}/api/sync"
    item = cart_item()
    writes = [("cart", item), ("profile", profile()), ("order", order()), ("products", product()),
              ("wishlist_items", wishlist_item()), ("user_roles", user_role())]
    assert [request(f"{url}/{route}", record)[0] for route, record in writes] == [200] * 6
    for collection in ("cart_items", "profiles", "orders", "products", "wishlist_items", "user_roles"):
        assert mongo[collection].count_documents({}) == 1, collection
    price = mongo.products.find_one()["price"]
    assert float(str(price)) == 1499.5
    status, ready = request(f"{newcomer_server.url}/readyz")
    assert status == 200 and ready["spool"]["entries"] == 0
    assert ready["decimal_mode"] in ("decimal128", "double")
    status, read = request(f"{url}/cart/{item['id']}")
    assert status == 200 and read["quantity"] == item["quantity"]


def test_the_default_refusal_limit_holds_with_the_default_counters(newcomer_server, mongo, tmp_path):
    """Sixty refused writes a minute from one caller, counted where a new install counts them: the sixty-first is
    429, a good write is still applied, and the count is in the mirror's database for other hosts to see."""
    while time.time() % 60 > 50:  # the windows are aligned to the clock: keep the burst inside one
        time.sleep(1)
    url = f"{newcomer_server.url}/api/sync/cart"
    statuses = [request(url, {"id": "not-a-uuid"})[0] for _ in range(61)]
    assert statuses == [422] * 60 + [429], statuses
    assert request(url, cart_item())[0] == 200
    assert mongo.sync_rejects.count_documents({}) == 60
    assert sum(sum(doc["hosts"].values()) for doc in mongo.sync_rate_limits.find()) >= 60
    assert (tmp_path / "host" / "instance" / "ratelimit.sqlite3").exists()
    assert (tmp_path / "host" / "instance" / "spool.sqlite3").exists()
