"""FITKART_DECIMAL_MODE=auto (the default) on the real server: decimal128 where it stores Decimal128, else double.

Whether the server stores Decimal128 is probed by the test set-up (testbed/servers/mongo.py), not taken from
the app. Only one of the
two tests can run against one server; the other is skipped, saying which server it needs.
"""

import pytest
from bson import Decimal128

from testbed.data.records import product


@pytest.fixture
def server(mongo_server) -> dict:
    """What the test server is (buildInfo) and whether it really stores a Decimal128 (probed, not the app's word)."""
    return {"name": mongo_server.version, "stores_decimal128": mongo_server.stores_decimal128}


def auto_app(make_app, database_uri):
    """The app as a new user runs it: no FITKART_DECIMAL_MODE given."""
    app = make_app(FITKART_MONGODB_URI=database_uri)
    assert app.config["FITKART_DECIMAL_MODE"] == "auto"
    return app


def test_auto_chooses_decimal128_on_a_server_that_stores_it(server, make_app, database_uri, mongo):
    """Where the server stores Decimal128, auto stores money as Decimal128."""
    if not server["stores_decimal128"]:
        pytest.skip(f"needs a server that stores Decimal128 (mongod on PATH, or FITKART_TEST_MONGODB_URI at a "
                    f"MongoDB); the test server is {server['name']}, which cannot")
    app = auto_app(make_app, database_uri)
    client = app.test_client()
    item = product(price=19.99)
    assert client.post("/api/sync/products", json=item).status_code == 200
    assert app.extensions["fitkart_store"].chosen_decimal_mode == "decimal128"
    assert mongo.products.find_one({"id": item["id"]})["price"] == Decimal128("19.99")
    assert client.get("/readyz").json["decimal_mode"] == "decimal128"


def test_auto_chooses_double_on_a_server_that_cannot_store_decimal128(server, make_app, database_uri, mongo):
    """Where the server cannot store Decimal128 (FerretDB v1), auto stores money as double and serves the write."""
    if server["stores_decimal128"]:
        pytest.skip(f"needs a server without Decimal128 (FerretDB v1); the test server is {server['name']}")
    app = auto_app(make_app, database_uri)
    client = app.test_client()
    item = product(price=19.99)
    assert client.post("/api/sync/products", json=item).status_code == 200
    assert app.extensions["fitkart_store"].chosen_decimal_mode == "double"
    stored = mongo.products.find_one({"id": item["id"]})["price"]
    assert isinstance(stored, float) and stored == 19.99
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["decimal_mode"] == "double"
    assert "cannot store Decimal128" in ready.json["decimal_mode_reason"]
