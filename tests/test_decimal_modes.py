"""FITKART_DECIMAL_MODE: how money is stored, and the check that the database can store it.

FerretDB v1 has no Decimal128, so the real-server tests run in `double` and `string`
modes and `decimal128` is shown on the embedded store; on MongoDB all three run for real.
The default, `auto`, is tested in test_money_modes.py.
"""

from decimal import Decimal

import pytest
from bson import Decimal128

from testbed.data.records import order, product


@pytest.mark.parametrize(("mode", "stored"), [("double", 19.99), ("string", "19.99")])
def test_money_storage_on_the_real_server(make_app, database_uri, mongo, mode, stored):
    """double stores a BSON double, string the exact text; both answer a JSON number."""
    app = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=mode)
    item = product(price=19.99)
    response = app.test_client().post("/api/sync/products", json=item)
    assert response.json["record"]["price"] == 19.99
    assert mongo.products.find_one({"id": item["id"]})["price"] == stored
    total = app.test_client().post("/api/sync/orders", json=order(total_amount=4497)).json
    assert total["record"]["total_amount"] == 4497


def test_decimal128_is_exact_on_the_embedded_store(embedded_app):
    """decimal128 (what `auto` chooses there) keeps 19.99 as the decimal 19.99."""
    item = product(price=19.99)
    client = embedded_app.test_client()
    assert client.post("/api/sync/products", json=item).json["record"]["price"] == 19.99
    store = embedded_app.extensions["fitkart_store"]
    stored = store.database().products.find_one({"id": item["id"]})["price"]
    assert stored == Decimal128("19.99") and stored.to_decimal() == Decimal("19.99")
    assert client.post("/api/sync/products", json={**item, "price": "19.990"}).json["result"] == "unchanged"


def test_decimal128_on_a_database_without_it_is_refused_clearly(make_app, database_uri, mongo_server):
    """On FerretDB v1 an explicit decimal128: /readyz and money writes are 503 naming the setting."""
    if mongo_server.stores_decimal128:
        pytest.skip(f"{mongo_server.version} stores Decimal128; this refusal is for databases that cannot")
    app = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE="decimal128")
    client = app.test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "FITKART_DECIMAL_MODE" in ready.json["reason"]
    response = client.post("/api/sync/products", json=product())
    assert response.status_code == 503 and "FITKART_DECIMAL_MODE=double" in response.json["message"]


def test_unknown_decimal_mode_is_refused_at_start(make_app):
    """A typo in FITKART_DECIMAL_MODE stops the app with the setting named."""
    with pytest.raises(ValueError, match="FITKART_DECIMAL_MODE"):
        make_app(FITKART_MONGODB_URI="embedded", FITKART_DECIMAL_MODE="float")
