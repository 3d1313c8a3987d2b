"""verify, repair and backfill against a real PostgreSQL (the Supabase side) and the real mirror."""

import json
import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from testbed.data.supabase_rows import generate_rows, seed_shop
from testbed.servers.postgrest import PostgrestServer

SERVICE_KEY = "test-service-role-key"


def fitkart(runner, *args: str):
    """Run a `flask fitkart ...` command."""
    return runner.invoke(args=["fitkart", *args], catch_exceptions=False)


@pytest.fixture
def shop(supabase_db):
    """The seeded Supabase side: its connection string and rows."""
    return supabase_db, seed_shop(supabase_db)


@pytest.fixture
def postgrest(supabase_db):
    """Supabase's REST API over the same PostgreSQL."""
    server = PostgrestServer(supabase_db, SERVICE_KEY)
    yield server
    server.close()


def verify_json(runner, *source: str) -> tuple[int, dict]:
    """verify --json: exit code and report."""
    result = fitkart(runner, "verify", "--json", *source)
    return result.exit_code, json.loads(result.output)


def test_backfill_then_verify_is_in_sync(runner, shop, mongo):
    """A backfilled mirror verifies with zero drift, and the run is recorded."""
    url, rows = shop
    backfill = fitkart(runner, "backfill", "--database-url", url)
    assert backfill.exit_code == 0, backfill.output
    assert mongo.products.count_documents({}) == 2 and mongo.cart_items.count_documents({}) == 2
    result = fitkart(runner, "verify", "--database-url", url)
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("in sync")
    assert ["cart_items", "2", "2", "0", "0", "0"] in [line.split() for line in result.output.splitlines()]
    run = mongo.sync_runs.find_one({"kind": "verify"})
    assert run["status"] == "in_sync" and run["tables"]["orders"]["supabase_rows"] == 1
    assert mongo.sync_runs.find_one({"kind": "backfill"})["status"] == "complete"
    stored = mongo.products.find_one({"name": "Linen Kurta"})
    assert stored["_fitkart"]["source"] == "reconcile" and stored["id"] == str(rows["products"][0]["id"])


def craft_drift(shop, mongo) -> dict:
    """One drifting record of every kind and every column type; the report verify must give."""
    _, rows = shop
    kurta, jeans = rows["products"]
    customer_profile = rows["profiles"][0]
    first_cart, second_cart = rows["cart_items"]
    order = rows["orders"][0]
    seller_role = rows["user_roles"][1]
    extra_wish = {"id": str(uuid.uuid4()), "user_id": str(uuid.uuid4()), "product_id": str(kurta["id"]),
                  "created_at": datetime(2025, 1, 1, tzinfo=UTC)}
    mongo.cart_items.delete_one({"id": str(second_cart["id"])})                          # missing
    mongo.wishlist_items.insert_one(dict(extra_wish))                                       # extra
    mongo.profiles.update_one({"user_id": str(customer_profile["user_id"])},
                              {"$set": {"full_name": "Asha R", "body_measurements": {"height_cm": 170}}})
    mongo.products.update_one({"id": str(kurta["id"])}, {"$set": {
        "price": 1400.0, "is_active": False, "sizes": ["S", "M"], "seller_id": str(uuid.uuid4()).upper()}})
    mongo.products.update_one({"id": str(jeans["id"])}, {"$set": {"seller_id": str(jeans["seller_id"]).upper()}})
    mongo.cart_items.update_one({"id": str(first_cart["id"])}, {"$set": {"quantity": 7}})
    mongo.orders.update_one({"id": str(order["id"])}, {"$set": {"updated_at": datetime(2024, 1, 1, tzinfo=UTC),
                                                               "shipping_address": None}})
    mongo.user_roles.update_one({"user_id": str(seller_role["user_id"])}, {"$set": {"role": "customer"}})
    tampered_seller = mongo.products.find_one({"id": str(kurta["id"])})["seller_id"]

    def ms(moment: datetime) -> str:
        return moment.astimezone(UTC).replace(microsecond=moment.microsecond // 1000 * 1000).isoformat(
            timespec="milliseconds")

    return {
        "cart_items": {"missing": [{"id": str(second_cart["id"])}], "extra": [], "different": [
            {"key": {"id": str(first_cart["id"])}, "fields": [{"field": "quantity", "supabase": 2, "mirror": 7}]}]},
        "wishlist_items": {"missing": [], "extra": [{"user_id": extra_wish["user_id"],
                                                     "product_id": extra_wish["product_id"]}], "different": []},
        "profiles": {"missing": [], "extra": [], "different": [{"key": {"user_id": str(customer_profile["user_id"])},
                     "fields": [{"field": "full_name", "supabase": "Asha Rao", "mirror": "Asha R"},
                                {"field": "body_measurements", "supabase": {"height_cm": 165, "chest_cm": 86.5},
                                 "mirror": {"height_cm": 170}}]}]},
        "products": {"missing": [], "extra": [], "different": [{"key": {"id": str(kurta["id"])}, "fields": [
            {"field": "price", "supabase": "1499.50", "mirror": "1400.00"},
            {"field": "sizes", "supabase": ["S", "M", "L"], "mirror": ["S", "M"]},
            {"field": "is_active", "supabase": True, "mirror": False},
            {"field": "seller_id", "supabase": str(kurta["seller_id"]), "mirror": tampered_seller.lower()}]}]},
        "orders": {"missing": [], "extra": [], "different": [{"key": {"id": str(order["id"])}, "fields": [
            {"field": "shipping_address", "supabase": {"line1": "12 MG Road", "city": "Bengaluru"}, "mirror": None},
            {"field": "updated_at", "supabase": ms(order["updated_at"]), "mirror": "2024-01-01T00:00:00.000+00:00"}]}]},
        "user_roles": {"missing": [], "extra": [], "different": [{"key": {"user_id": str(seller_role["user_id"])},
                       "fields": [{"field": "role", "supabase": "seller", "mirror": "customer"}]}]},
    }


def assert_report(report: dict, expected: dict) -> None:
    """The report names exactly the expected records and fields (field order aside)."""
    for table, want in expected.items():
        got = report["tables"][table]
        assert got["missing"] == want["missing"], table
        assert got["extra"] == want["extra"], table
        assert len(got["different"]) == len(want["different"]), table
        for got_entry, want_entry in zip(got["different"], want["different"], strict=True):
            assert got_entry["key"] == want_entry["key"], table
            by_field = sorted(got_entry["fields"], key=lambda d: d["field"])
            assert by_field == sorted(want_entry["fields"], key=lambda d: d["field"]), table
    assert report["drift"] == 7


def test_verify_reports_every_kind_of_drift_exactly(runner, shop, mongo):
    """Missing, extra, and each column type differing (text, numeric, int, bool, uuid, timestamptz,
    text[], jsonb, enum): the report names each, with both values; uuid case alone is no drift."""
    url, _ = shop
    fitkart(runner, "backfill", "--database-url", url)
    expected = craft_drift(shop, mongo)
    code, report = verify_json(runner, "--database-url", url)
    assert code == 1
    assert_report(report, expected)
    text = fitkart(runner, "verify", "--database-url", url).output
    assert "only in Supabase" in text and "only in the mirror" in text and "drift: 7 record(s)" in text
    assert "quantity differs: supabase=2 mirror=7" in text


def test_repair_then_verify_is_in_sync(runner, shop, mongo):
    """repair --dry-run changes nothing; repair fixes all drift through the engine; verify then says 0."""
    url, _ = shop
    fitkart(runner, "backfill", "--database-url", url)
    craft_drift(shop, mongo)
    before = list(mongo.products.find({}, {"_id": 0}))
    plan = fitkart(runner, "repair", "--database-url", url, "--dry-run")
    assert "would upsert cart_items" in plan.output and "would delete wishlist_items" in plan.output
    assert list(mongo.products.find({}, {"_id": 0})) == before
    repaired = fitkart(runner, "repair", "--database-url", url)
    assert repaired.exit_code == 0 and "repaired 7 record(s)" in repaired.output
    assert fitkart(runner, "verify", "--database-url", url).exit_code == 0
    assert mongo.sync_runs.find_one({"kind": "repair"})["tables"]["products"]["upserted"] == 1


def test_repair_restores_a_record_the_mirror_was_told_was_deleted(runner, shop, mongo, client):
    """Supabase wins over a tombstone: the record comes back, and can be updated again afterwards."""
    url, rows = shop
    fitkart(runner, "backfill", "--database-url", url)
    item = rows["cart_items"][0]
    client.delete(f"/api/sync/cart_items/{item['id']}")
    assert fitkart(runner, "verify", "--database-url", url).exit_code == 1
    fitkart(runner, "repair", "--database-url", url)
    assert fitkart(runner, "verify", "--database-url", url).exit_code == 0
    assert client.post("/api/sync/cart", json={"id": str(item["id"]), "quantity": 4}).json["result"] == "updated"


def test_rest_source_gives_the_same_reports(runner, shop, mongo, postgrest):
    """The REST source (PostgREST paging, service-role key) agrees with the Postgres source."""
    url, _ = shop
    rest = ("--supabase-url", postgrest.url, "--service-role-key", SERVICE_KEY)
    assert fitkart(runner, "backfill", *rest).exit_code == 0
    assert fitkart(runner, "verify", *rest).exit_code == 0
    expected = craft_drift(shop, mongo)
    code, report = verify_json(runner, *rest)
    assert code == 1
    assert_report(report, expected)
    fitkart(runner, "repair", *rest)
    assert fitkart(runner, "verify", "--database-url", url).exit_code == 0
    assert any("order=user_id.asc%2Cproduct_id.asc" in path for path in postgrest.requests)


def test_rest_source_pages_with_keyset_filters(runner, supabase_db, mongo, postgrest):
    """Tables larger than a page are read page after page, each after the last key seen."""
    generate_rows(supabase_db, products=30, carts=2500, wishlists=1100, profiles=10)
    rest = ("--supabase-url", postgrest.url, "--service-role-key", SERVICE_KEY)
    assert fitkart(runner, "backfill", *rest).exit_code == 0
    assert mongo.cart_items.count_documents({}) == 2500
    assert fitkart(runner, "verify", *rest).exit_code == 0
    assert any("id=gt." in path for path in postgrest.requests)
    assert any("or=%28user_id.gt." in path for path in postgrest.requests)


def test_wrong_key_or_unreachable_source_exits_2(runner, postgrest):
    """A source that cannot be read is an error (2), not drift."""
    bad_key = fitkart(runner, "verify", "--supabase-url", postgrest.url, "--service-role-key", "nope")
    assert bad_key.exit_code == 2
    unreachable = fitkart(runner, "verify", "--database-url", "postgresql://postgres@127.0.0.1:9/none")
    assert unreachable.exit_code == 2
    assert fitkart(runner, "verify").exit_code == 2  # no source given: usage error


def test_backfill_copies_20000_rows(runner, supabase_db, mongo):
    """20,000 rows over four tables, copied in bulk pages, then verified in sync."""
    total = generate_rows(supabase_db, products=2000, carts=9000, wishlists=5000, profiles=4000)
    assert total == 20_000
    result = fitkart(runner, "backfill", "--database-url", supabase_db)
    assert result.exit_code == 0, result.output
    counts = {name: mongo[name].count_documents({}) for name in ("products", "cart_items", "wishlist_items",
                                                                "profiles")}
    assert counts == {"products": 2000, "cart_items": 9000, "wishlist_items": 5000, "profiles": 4000}
    assert fitkart(runner, "verify", "--database-url", supabase_db).exit_code == 0


def test_backfill_resumes_after_the_last_finished_page(runner, supabase_db, mongo):
    """A run stopped after two pages continues from the third, not from the start."""
    generate_rows(supabase_db, products=1200, carts=0, wishlists=0, profiles=0)
    first = fitkart(runner, "backfill", "--database-url", supabase_db, "--table", "products",
                    "--page-size", "500", "--max-pages", "2")
    assert "paused" in first.output and mongo.products.count_documents({}) == 1000
    checkpoint = mongo.sync_backfill.find_one({"_id": "products"})
    assert checkpoint is not None
    second = fitkart(runner, "backfill", "--database-url", supabase_db, "--table", "products", "--page-size", "500")
    assert "done" in second.output
    run = mongo.sync_runs.find_one({"kind": "backfill", "status": "complete"})
    assert run["tables"]["products"]["rows"] == 200 and run["tables"]["products"]["resumed"] is True
    assert mongo.products.count_documents({}) == 1200
    assert mongo.sync_backfill.count_documents({}) == 0


def test_backfill_keeps_a_newer_mirror_version(runner, shop, mongo, client):
    """A record the client updated after Supabase's copy was read is not overwritten by older data."""
    url, rows = shop
    profile = rows["profiles"][0]
    newer = {"user_id": str(profile["user_id"]), "full_name": "Asha (newest)",
             "updated_at": datetime(2030, 1, 1, tzinfo=UTC).isoformat()}
    assert client.post("/api/sync/profiles", json=newer).json["result"] == "created"
    fitkart(runner, "backfill", "--database-url", url)
    assert mongo.profiles.find_one({"user_id": newer["user_id"]})["full_name"] == "Asha (newest)"
    run = mongo.sync_runs.find_one({"kind": "backfill"})
    assert run["tables"]["profiles"]["kept"] == 1


def test_verify_reads_one_snapshot_in_a_read_only_transaction(shop):
    """The Postgres source refuses writes: it runs in a read-only transaction."""
    from fitkart_server.reconcile.sources import PostgresSource

    url, _ = shop
    source = PostgresSource(url)
    try:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            source.connection.execute("DELETE FROM public.cart_items")
    finally:
        source.close()


def test_verify_covers_all_six_tables_with_planted_drift(runner, supabase_db, mongo):
    """Rows in all six tables, copied by backfill, then one of each kind of drift per table: all found, no more."""
    from fitkart_server.model.entities import BY_COLLECTION

    generate_rows(supabase_db, products=40, carts=60, wishlists=60, profiles=40, orders=40, roles=40)
    assert fitkart(runner, "backfill", "--database-url", supabase_db).exit_code == 0
    planted = {}
    for name in ("products", "cart_items", "wishlist_items", "profiles", "orders", "user_roles"):
        first, second, third = mongo[name].find().sort("_id", 1).limit(3)
        mongo[name].delete_one({"_id": first["_id"]})
        mongo[name].update_one({"_id": second["_id"]}, {"$set": {"created_at": datetime(2001, 1, 1, tzinfo=UTC)}})
        entity, fresh = BY_COLLECTION[name], str(uuid.uuid4())
        extra = {**third, "id": fresh, entity.key[0]: fresh}  # a record Supabase never had
        extra["_id"] = entity.key_of(extra)
        mongo[name].insert_one(extra)
        planted[name] = (1, 1, 1)
    code, report = verify_json(runner, "--database-url", supabase_db)
    assert code == 1
    found = {name: (len(table["missing"]), len(table["different"]), len(table["extra"]))
             for name, table in report["tables"].items()}
    assert found == planted
    assert all(table["different"][0]["fields"][0]["field"] == "created_at" for table in report["tables"].values())


def test_read_ahead_keeps_order_raises_the_readers_error_and_closes_early():
    """The helper thread hands rows over in order, passes an error on, and stops its source when left."""
    from fitkart_server.reconcile.compare import read_ahead

    assert list(read_ahead(iter(range(2500)), page_size=100)) == list(range(2500))

    def failing():
        yield 1
        raise RuntimeError("source went away")

    with pytest.raises(RuntimeError, match="source went away"):
        list(read_ahead(failing(), page_size=1))

    closed = []

    def endless():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.append(True)

    rows = read_ahead(endless(), pages=2, page_size=10)
    assert [next(rows) for _ in range(5)] == [0, 1, 2, 3, 4]
    rows.close()
    assert closed == [True]


def test_mirror_failing_mid_run_is_an_error_not_drift(make_app, own_database, decimal_mode, shop, monkeypatch):
    """The mirror's server stops once the first Supabase row is read: exit 2 with the reason, never 1 (drift)."""
    from fitkart_server.reconcile.sources import PostgresSource

    url, _ = shop
    server, _ = own_database
    rows = PostgresSource.rows

    def stop_after_first_row(self, *args, **kwargs):
        for index, row in enumerate(rows(self, *args, **kwargs)):
            if index == 0:
                server.stop()
            yield row

    monkeypatch.setattr(PostgresSource, "rows", stop_after_first_row)
    app = make_app(FITKART_MONGODB_URI=f"{server.base_uri}/own", FITKART_DECIMAL_MODE=decimal_mode,
                   FITKART_DB_TIMEOUT_MS=500)
    result = app.test_cli_runner().invoke(args=["fitkart", "verify", "--database-url", url])
    assert result.exit_code == 2, result.output
    assert "error: the mirror's database failed" in result.output


def test_a_document_stored_under_its_own_id_is_compared_in_key_order(runner, shop, mongo):
    """A record another writer stored with an ObjectId _id (which sorts after every key) still meets its row."""
    url, _ = shop
    assert fitkart(runner, "backfill", "--database-url", url).exit_code == 0
    first = mongo.cart_items.find().sort("id", 1).limit(1)[0]  # the smallest key of two
    mongo.cart_items.delete_one({"_id": first["_id"]})
    mongo.cart_items.insert_one({name: value for name, value in first.items() if name != "_id"})
    result = fitkart(runner, "verify", "--database-url", url)
    assert result.exit_code == 0, result.output
