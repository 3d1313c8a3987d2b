"""What a new user gets: gunicorn as deployed with nothing set but the database URI, the old client's requests."""

import pytest

from testbed.data.records import cart_item, order, product, profile, user_role, wishlist_item
from testbed.servers.gunicorn import GunicornServer, request


@pytest.fixture
def newcomer_server(database_uri, tmp_path):
    """gunicorn with FITKART_MONGODB_URI alone (the test's own spool and counters aside)."""
    server = GunicornServer(database_uri, None, log_path=tmp_path / "server.log").start()
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
