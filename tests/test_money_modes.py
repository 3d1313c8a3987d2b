"""FITKART_DECIMAL_MODE=auto (the default), money-free writes under any mode, mixed forms, `convert-money`.

On FerretDB v1 (no Decimal128) `auto` stores double; on MongoDB and the embedded store it stores Decimal128.
"""

import json
import logging

import pytest
from bson import Decimal128
from pymongo.collection import Collection
from pymongo.errors import AutoReconnect

from testbed.data.records import cart_item, order, product, profile, stamp, user_role, wishlist_item
from testbed.data.supabase_rows import seed_shop

SIX = {"profiles": profile, "products": product, "orders": order, "cart_items": cart_item,
       "wishlist_items": wishlist_item, "user_roles": user_role}


def fitkart(runner, *args: str):
    """Run a `flask fitkart ...` command."""
    return runner.invoke(args=["fitkart", *args], catch_exceptions=False)


def chosen(mongo_server) -> str:
    """What `auto` must choose on the test server."""
    return mongo_server.decimal_mode


def money_form(mode: str) -> type:
    """The Python type a stored amount has in a mode."""
    return {"decimal128": Decimal128, "double": float, "string": str}[mode]


def provenance(collection) -> dict:
    """Each document's `_fitkart` (version, written_at, source), by _id."""
    return {doc["_id"]: doc["_fitkart"] for doc in collection.find({}, {"_fitkart": 1})}


def counts(output: str) -> dict[str, list[int]]:
    """convert-money's per-collection numbers: converted, already right, not amounts, changed meanwhile."""
    found = {}
    for line in output.splitlines():
        words = line.split()
        if words and words[0] in ("products", "orders"):
            found[words[0]] = [int(word) for word in words[1:] if word.isdigit()]
    return found


# -- auto, the default ----------------------------------------------------------------------------------------------


def test_with_no_decimal_mode_set_every_table_is_mirrored(make_app, database_uri, mongo, mongo_server):
    """A new user's setup (no FITKART_DECIMAL_MODE): all six tables answer 200, money in the server's best form."""
    app = make_app(FITKART_MONGODB_URI=database_uri)
    assert app.config["FITKART_DECIMAL_MODE"] == "auto"
    client = app.test_client()
    for collection, make in SIX.items():
        response = client.post(f"/api/sync/{collection}", json=make())
        assert response.status_code == 200, (collection, response.json)
        assert response.json["result"] == "created"
    form = money_form(chosen(mongo_server))
    assert isinstance(mongo.orders.find_one()["total_amount"], form)
    assert mongo.products.find_one()["price"] == {Decimal128: Decimal128("1499.50"), float: 1499.5}[form]


def test_the_choice_is_logged_once_and_shown_in_readyz_stats_and_the_status_page(make_app, database_uri,
                                                                                mongo_server, caplog):
    """One log line names the mode and why; /readyz, `flask fitkart stats` and the status page show it."""
    mode = chosen(mongo_server)
    app = make_app(FITKART_MONGODB_URI=database_uri)
    client = app.test_client()
    with caplog.at_level(logging.INFO, logger="fitkart_server.storage.store"):
        ready = client.get("/readyz")
        client.post("/api/sync/cart_items", json=cart_item())
    lines = [record for record in caplog.records if "FITKART_DECIMAL_MODE" in record.getMessage()]
    assert len(lines) == 1, [record.getMessage() for record in lines]
    assert f"stored as {mode}" in lines[0].getMessage() and "Decimal128" in lines[0].getMessage()
    assert lines[0].levelno == (logging.INFO if mode == "decimal128" else logging.WARNING)
    assert ready.status_code == 200 and ready.json["decimal_mode"] == mode
    assert "FITKART_DECIMAL_MODE=auto" in ready.json["decimal_mode_reason"]
    stats = fitkart(app.test_cli_runner(), "stats")
    assert stats.exit_code == 0 and f"money stored as {mode}" in stats.output.splitlines()[0]
    page = client.get("/").get_data(as_text=True)
    assert f'id="decimal-mode">{mode}<' in page and "FITKART_DECIMAL_MODE=auto" in page


def test_explicit_modes_are_kept(make_app, database_uri, mongo):
    """FITKART_DECIMAL_MODE=string is used as set, and said to be the setting's choice."""
    app = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE="string")
    client = app.test_client()
    assert client.post("/api/sync/products", json=product(price=19.9)).status_code == 200
    assert mongo.products.find_one()["price"] == "19.90"
    ready = client.get("/readyz").json
    assert ready["decimal_mode"] == "string" and ready["decimal_mode_reason"] == "FITKART_DECIMAL_MODE=string"


def test_auto_on_the_embedded_store_is_decimal128(make_app):
    """The embedded store keeps Decimal128, so auto chooses it there."""
    app = make_app(FITKART_MONGODB_URI="embedded")
    client = app.test_client()
    item = product(price=19.99)
    assert client.post("/api/sync/products", json=item).status_code == 200
    stored = app.extensions["fitkart_store"].database().products.find_one({"id": item["id"]})["price"]
    assert stored == Decimal128("19.99")
    assert client.get("/readyz").json["decimal_mode"] == "decimal128"


def test_cli_jobs_store_money_in_the_chosen_mode(make_app, database_uri, supabase_db, mongo, mongo_server):
    """backfill with no FITKART_DECIMAL_MODE works and stores money as auto chose."""
    seed_shop(supabase_db)
    runner = make_app(FITKART_MONGODB_URI=database_uri).test_cli_runner()
    result = fitkart(runner, "backfill", "--database-url", supabase_db)
    assert result.exit_code == 0, result.output
    form = money_form(chosen(mongo_server))
    assert {type(doc["price"]) for doc in mongo.products.find()} == {form}
    assert isinstance(mongo.orders.find_one()["total_amount"], form)


# -- an explicit decimal128 the server cannot store ---------------------------------------------------------------


@pytest.fixture
def decimal128_without_support(make_app, database_uri, mongo_server):
    """An app set to decimal128 on a server that cannot store it (FerretDB v1)."""
    if mongo_server.stores_decimal128:
        pytest.skip(f"{mongo_server.version} stores Decimal128; this is about servers that cannot")
    return make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE="decimal128")


def test_writes_without_money_are_served_when_decimal128_cannot_be_stored(decimal128_without_support, make_app,
                                                                         database_uri, mongo):
    """Carts, profiles, wishlists, roles, order updates without an amount and deletes: 200. Money: 503."""
    client = decimal128_without_support.test_client()
    for collection in ("profiles", "cart_items", "wishlist_items", "user_roles"):
        response = client.post(f"/api/sync/{collection}", json=SIX[collection]())
        assert response.status_code == 200, (collection, response.json)
    batch = client.post("/api/sync/batch", json={"operations": [
        {"op": "upsert", "collection": "cart_items", "record": cart_item()}]})
    assert batch.status_code == 200 and batch.json["results"][0]["result"] == "created"

    placed = order()  # an order stored earlier, in double: changing its status carries no money
    assert make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE="double").test_client().post(
        "/api/sync/orders", json=placed).status_code == 200
    shipped = client.post("/api/sync/orders", json={"id": placed["id"], "status": "shipped", "updated_at": stamp(5)})
    assert shipped.status_code == 200 and shipped.json["result"] == "updated"
    assert mongo.orders.find_one({"id": placed["id"]})["status"] == "shipped"

    for collection in ("products", "orders"):
        refused = client.post(f"/api/sync/{collection}", json=SIX[collection]())
        assert refused.status_code == 503 and "FITKART_DECIMAL_MODE=double" in refused.json["message"]
        assert refused.headers["Retry-After"]
    assert mongo.products.count_documents({}) == 0 and mongo.sync_rejects.count_documents({}) == 0
    assert client.delete(f"/api/sync/products/{product()['id']}").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "FITKART_DECIMAL_MODE" in ready.json["reason"]
    assert ready.json["decimal_mode"] == "decimal128"


# -- mixed forms: verify ------------------------------------------------------------------------------------------


def restyle(database, rows: dict, forms: dict[str, object]) -> None:
    """Store the seeded products' and order's amounts in the given forms (by product name / "order")."""
    for row in rows["products"]:
        if row["name"] in forms:
            database.products.update_one({"id": str(row["id"])}, {"$set": {"price": forms[row["name"]]}})
    if "order" in forms:
        database.orders.update_one({}, {"$set": {"total_amount": forms["order"]}})


def verify(runner, url: str) -> tuple[int, dict]:
    """verify --json: exit status and report."""
    result = fitkart(runner, "verify", "--json", "--database-url", url)
    return result.exit_code, json.loads(result.output)


def test_verify_treats_double_and_string_as_the_same_amounts(runner, supabase_db, mongo):
    """On the real server: the same amounts held as double and as string are in sync; another amount is not."""
    rows = seed_shop(supabase_db)
    assert fitkart(runner, "backfill", "--database-url", supabase_db).exit_code == 0
    restyle(mongo, rows, {"Linen Kurta": 1499.5, "Slim Jeans": "2199.00", "order": "2999"})
    assert verify(runner, supabase_db)[0] == 0

    restyle(mongo, rows, {"Slim Jeans": "2199.01"})
    status, report = verify(runner, supabase_db)
    assert status == 1 and report["tables"]["products"]["different"][0]["fields"] == [
        {"field": "price", "supabase": "2199.00", "mirror": "2199.01"}]


def test_verify_treats_decimal128_double_and_string_as_the_same_amounts(make_app, supabase_db):
    """On the embedded store: Decimal128, double and string amounts side by side are in sync."""
    rows = seed_shop(supabase_db)
    app = make_app(FITKART_MONGODB_URI="embedded")
    runner = app.test_cli_runner()
    assert fitkart(runner, "backfill", "--database-url", supabase_db).exit_code == 0
    database = app.extensions["fitkart_store"].database()
    restyle(database, rows, {"Linen Kurta": 1499.5, "Slim Jeans": "2199.0"})
    assert isinstance(database.orders.find_one()["total_amount"], Decimal128)
    assert verify(runner, supabase_db)[0] == 0


def test_verify_reports_an_unreadable_amount_as_drift(runner, supabase_db, mongo):
    """A stored amount that is no number is a difference to report, not a crash."""
    rows = seed_shop(supabase_db)
    assert fitkart(runner, "backfill", "--database-url", supabase_db).exit_code == 0
    restyle(mongo, rows, {"Slim Jeans": "n/a"})
    status, report = verify(runner, supabase_db)
    assert status == 1 and report["tables"]["products"]["different"][0]["fields"] == [
        {"field": "price", "supabase": "2199.00", "mirror": "n/a"}]


# -- convert-money ------------------------------------------------------------------------------------------------


@pytest.fixture
def stocked(client, mongo):
    """Five products and two orders written through the API (in the app's mode, double on FerretDB)."""
    for price in (19.99, 1499.5, 0, 2, 99999999.99):
        assert client.post("/api/sync/products", json=product(price=price)).status_code == 200
    for total in (2998, 0.1):
        assert client.post("/api/sync/orders", json=order(total_amount=total)).status_code == 200
    return mongo


def test_convert_money_between_double_and_string_is_idempotent(runner, stocked):
    """Every amount changes form, nothing else changes (not versions, not write times); again: nothing to do."""
    before = {name: provenance(stocked[name]) for name in ("products", "orders")}
    result = fitkart(runner, "convert-money", "--to", "string")
    assert result.exit_code == 0, result.output
    assert counts(result.output) == {"products": [5, 0, 0, 0], "orders": [2, 0, 0, 0]}
    assert sorted(doc["price"] for doc in stocked.products.find()) == [
        "0.00", "1499.50", "19.99", "2.00", "99999999.99"]
    assert sorted(doc["total_amount"] for doc in stocked.orders.find()) == ["0.10", "2998.00"]
    assert {name: provenance(stocked[name]) for name in ("products", "orders")} == before

    again = fitkart(runner, "convert-money", "--to", "string")
    assert again.exit_code == 0 and counts(again.output) == {"products": [0, 5, 0, 0], "orders": [0, 2, 0, 0]}
    assert "nothing to convert" in again.output

    back = fitkart(runner, "convert-money", "--to", "double")
    assert back.exit_code == 0 and counts(back.output)["products"] == [5, 0, 0, 0]
    assert sorted(doc["price"] for doc in stocked.products.find()) == [0.0, 2.0, 19.99, 1499.5, 99999999.99]
    assert {name: provenance(stocked[name]) for name in ("products", "orders")} == before


def test_convert_money_resumes_after_an_interruption(runner, stocked, monkeypatch):
    """The database lost mid-run: exit 2, the finished part stays; the next run does the rest, then nothing."""
    real_bulk_write = Collection.bulk_write
    calls = []

    def failing_second_time(self, requests, *args, **kwargs):
        calls.append(self.name)
        if len(calls) == 2:
            raise AutoReconnect("connection lost")
        return real_bulk_write(self, requests, *args, **kwargs)

    monkeypatch.setattr(Collection, "bulk_write", failing_second_time)
    stopped = fitkart(runner, "convert-money", "--to", "string", "--batch-size", "2")
    assert stopped.exit_code == 2 and "AutoReconnect" in stopped.output
    assert sum(isinstance(doc["price"], str) for doc in stocked.products.find()) == 2
    monkeypatch.undo()

    resumed = fitkart(runner, "convert-money", "--to", "string", "--batch-size", "2")
    assert resumed.exit_code == 0, resumed.output
    assert counts(resumed.output) == {"products": [3, 2, 0, 0], "orders": [2, 0, 0, 0]}
    assert all(isinstance(doc["price"], str) for doc in stocked.products.find())
    assert "nothing to convert" in fitkart(runner, "convert-money", "--to", "string").output


def test_convert_money_leaves_what_is_not_an_amount(runner, stocked):
    """A stored value that is no amount is counted and left as it was; the run says so (exit 1)."""
    stocked.products.update_one({"price": 2.0}, {"$set": {"price": "two"}})
    result = fitkart(runner, "convert-money", "--to", "string")
    assert result.exit_code == 1 and counts(result.output)["products"] == [4, 0, 1, 0]
    assert stocked.products.count_documents({"price": "two"}) == 1


def test_convert_money_refuses_decimal128_where_it_cannot_be_stored(runner, stocked, mongo_server):
    """On FerretDB v1: exit 2 naming Decimal128, and nothing converted."""
    if mongo_server.stores_decimal128:
        pytest.skip(f"{mongo_server.version} stores Decimal128")
    result = fitkart(runner, "convert-money", "--to", "decimal128")
    assert result.exit_code == 2 and "cannot store Decimal128" in result.output
    assert {type(doc["price"]) for doc in stocked.products.find()} == {float}


def test_convert_money_to_decimal128_on_the_embedded_store(make_app):
    """Decimal128 where the store keeps it: from string to Decimal128 and back to the original value."""
    app = make_app(FITKART_MONGODB_URI="embedded")
    client, runner = app.test_client(), app.test_cli_runner()
    for price in (19.99, 1499.5):
        assert client.post("/api/sync/products", json=product(price=price)).status_code == 200
    assert client.post("/api/sync/orders", json=order(total_amount=7)).status_code == 200
    database = app.extensions["fitkart_store"].database()
    before = provenance(database.products)

    to_string = fitkart(runner, "convert-money", "--to", "string")
    assert to_string.exit_code == 0 and "new writes store decimal128" in to_string.output
    assert sorted(doc["price"] for doc in database.products.find()) == ["1499.50", "19.99"]
    result = fitkart(runner, "convert-money", "--to", "decimal128")
    assert result.exit_code == 0 and counts(result.output) == {"products": [2, 0, 0, 0], "orders": [1, 0, 0, 0]}
    assert sorted((doc["price"] for doc in database.products.find()), key=Decimal128.to_decimal) == [
        Decimal128("19.99"), Decimal128("1499.50")]
    assert provenance(database.products) == before
    assert "nothing to convert" in fitkart(runner, "convert-money", "--to", "decimal128").output
    assert client.get("/api/sync/orders").json["items"][0]["total_amount"] == 7
