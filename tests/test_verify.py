"""verify, repair and backfill against a real PostgreSQL (the Supabase side) and the real mirror."""

import json
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from pymongo import monitoring

from testbed.commands import WriteCommands
from testbed.data.supabase_rows import generate_rows, seed_shop
from testbed.servers.postgrest import PostgrestServer

SERVICE_KEY = "test-service-role-key"


class FindCommands(monitoring.CommandListener):
    """The `find` commands sent by any thread while watching: collection and sort of each."""

    def __init__(self) -> None:
        self.watching = False
        self.finds: list[tuple[str, object]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.watching and event.command_name == "find":
            self.finds.append((event.command["find"], event.command.get("sort")))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


# pymongo's listeners are process-wide and apply to clients made after registering: idle unless watching.
FINDS = FindCommands()
monitoring.register(FINDS)


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
    # extra; under its key as _id, as the engine stores every record (a lost delete leaves one so)
    mongo.wishlist_items.insert_one({**extra_wish, "_id": f"{extra_wish['user_id']}|{extra_wish['product_id']}"})
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


def test_read_together_keeps_each_streams_order_raises_a_readers_error_and_closes_early():
    """Pages come tagged by stream, each stream in its order; an error is passed on; leaving stops every source."""
    from fitkart_server.reconcile.compare import read_together

    pages = list(read_together([iter(range(2500)), iter(range(10_000, 10_250))], page_size=100))
    for index, expected in ((0, list(range(2500))), (1, list(range(10_000, 10_250)))):
        assert [row for stream, page in pages if stream == index for row in page] == expected
    assert max(len(page) for _, page in pages) == 100

    def failing():
        yield 1
        raise RuntimeError("source went away")

    with pytest.raises(RuntimeError, match="source went away"):
        list(read_together([iter(range(5)), failing()], page_size=1))

    closed = []

    def endless(name):
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.append(name)

    together = read_together([endless("a"), endless("b")], pages=2, page_size=10)
    assert len(next(together)[1]) == 10
    together.close()
    assert sorted(closed) == ["a", "b"]


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


def test_a_document_stored_under_its_own_id_still_meets_its_row(runner, shop, mongo):
    """A record another writer stored with an ObjectId _id still meets its row: the join is by the key's fields."""
    url, _ = shop
    assert fitkart(runner, "backfill", "--database-url", url).exit_code == 0
    first = mongo.cart_items.find().sort("id", 1).limit(1)[0]  # the smallest key of two
    mongo.cart_items.delete_one({"_id": first["_id"]})
    mongo.cart_items.insert_one({name: value for name, value in first.items() if name != "_id"})
    result = fitkart(runner, "verify", "--database-url", url)
    assert result.exit_code == 0, result.output


def test_verify_never_asks_the_mirror_to_sort(runner, shop, mongo):
    """Every table's documents are read in the mirror's storage order: no `find` verify sends carries a sort."""
    url, _ = shop
    assert fitkart(runner, "backfill", "--database-url", url).exit_code == 0
    FINDS.finds, FINDS.watching = [], True
    try:
        result = fitkart(runner, "verify", "--database-url", url)
    finally:
        FINDS.watching = False
    assert result.exit_code == 0, result.output
    tables = {"products", "cart_items", "wishlist_items", "profiles", "orders", "user_roles"}
    assert tables <= {collection for collection, _ in FINDS.finds}
    assert [(collection, sort) for collection, sort in FINDS.finds if sort] == []


def test_verify_finds_drift_spread_over_many_pages_in_key_order(runner, supabase_db, mongo, monkeypatch):
    """Pages of a few records and a tiny cache, so most records wait on disk for their counterpart: every planted
    missing, extra and differing record is found, no other, each kind listed in key order; repair mends them all."""
    from fitkart_server.reconcile import compare, unmatched

    monkeypatch.setattr(compare, "READ_PAGE", 7)
    monkeypatch.setattr(compare, "MIRROR_BATCH", 25)
    monkeypatch.setattr(unmatched, "CACHE_KIB", 64)
    generate_rows(supabase_db, products=50, carts=1200, wishlists=800, profiles=0)
    assert fitkart(runner, "backfill", "--database-url", supabase_db).exit_code == 0
    planted = {}
    for name, key in (("cart_items", ("id",)), ("wishlist_items", ("user_id", "product_id"))):
        documents = list(mongo[name].find({}, {"_fitkart": 0}).sort("_id", 1))[::13]  # spread over the table
        missing, different, extra = documents[0::3], documents[1::3], documents[2::3]
        mongo[name].delete_many({"_id": {"$in": [document["_id"] for document in missing]}})
        for document in different:
            mongo[name].update_one({"_id": document["_id"]}, {"$set": {"created_at": datetime(2001, 1, 1, tzinfo=UTC)}})
        added = []
        for document in extra:
            fresh = {**document, "id": str(uuid.uuid4()), "user_id": str(uuid.uuid4())}
            fresh["_id"] = "|".join(fresh[part] for part in key)
            added.append(fresh)
        mongo[name].insert_many(added)
        planted[name] = {kind: sorted(({part: document[part] for part in key} for document in documents),
                                      key=lambda key_of: tuple(key_of.values()))
                         for kind, documents in (("missing", missing), ("different", different), ("extra", added))}
    code, report = verify_json(runner, "--database-url", supabase_db)
    assert code == 1
    for name, expected in planted.items():
        table = report["tables"][name]
        assert table["missing"] == expected["missing"], name  # in key order, as planted is sorted
        assert table["extra"] == expected["extra"], name
        assert [entry["key"] for entry in table["different"]] == expected["different"], name
        assert all([difference["field"] for difference in entry["fields"]] == ["created_at"]
                   for entry in table["different"]), name
    assert report["tables"]["cart_items"]["supabase_rows"] == 1200
    assert report["tables"]["cart_items"]["mirror_rows"] == 1200  # as many extra as missing
    assert report["drift"] == sum(len(kinds) for table in planted.values() for kinds in table.values())
    assert fitkart(runner, "repair", "--database-url", supabase_db).exit_code == 0
    assert fitkart(runner, "verify", "--database-url", supabase_db).exit_code == 0


# The write commands sent to cart_items (registered before any app's client is made, as FINDS is).
CART_WRITES = WriteCommands("cart_items")
monitoring.register(CART_WRITES)


def test_repair_writes_its_missing_records_a_page_at_a_time(runner, supabase_db, mongo):
    """Forty missing cart rows are repaired with one insert, not one write each; verify then says 0."""
    generate_rows(supabase_db, products=3, carts=40, wishlists=0, profiles=0)
    assert fitkart(runner, "verify", "--database-url", supabase_db).exit_code == 1
    answers = []
    writes = CART_WRITES.during(lambda: answers.append(fitkart(runner, "repair", "--database-url", supabase_db)))
    assert answers[0].exit_code == 0 and "repaired 43 record(s)" in answers[0].output
    assert writes == ["insert"]
    assert fitkart(runner, "verify", "--database-url", supabase_db).exit_code == 0


def test_a_row_the_mirror_refuses_does_not_stop_repair(runner, supabase_db, mongo):
    """A Supabase row over the mirror's limits is refused, named and kept in sync_rejects; the rows around it are
    repaired; the exit status (1) says drift remains, and verify then shows that row alone."""
    generate_rows(supabase_db, products=5, carts=0, wishlists=0, profiles=0)
    with psycopg.connect(supabase_db) as connection:  # text allows it; the mirror keeps 10,000 characters at most
        connection.execute("UPDATE public.products SET description = repeat('x', 20000) WHERE name = 'Product 3'")
        refused_id = connection.execute("SELECT id FROM public.products WHERE name = 'Product 3'").fetchone()[0]
    repaired = fitkart(runner, "repair", "--database-url", supabase_db)
    assert repaired.exit_code == 1, repaired.output
    assert f"refused products id={refused_id}: Invalid record." in repaired.output
    assert "repaired 4 record(s); 1 refused by the mirror's rules (kept in sync_rejects)" in repaired.output
    assert mongo.products.count_documents({}) == 4 and mongo.products.count_documents({"name": "Product 3"}) == 0
    assert mongo.sync_rejects.count_documents({"collection": "products", "source": "reconcile"}) == 1
    run = mongo.sync_runs.find_one({"kind": "repair"})
    assert run["status"] == "partial" and run["tables"]["products"] == {"upserted": 4, "deleted": 0, "refused": 1}
    verified = fitkart(runner, "verify", "--database-url", supabase_db)
    assert verified.exit_code == 1 and "drift: 1 record(s)" in verified.output


def test_verify_cuts_long_values_in_its_lines(runner, supabase_db, mongo):
    """A 20,000-character value that differs is shown as its start and end around an ellipsis, not whole (--json
    keeps it all)."""
    generate_rows(supabase_db, products=1, carts=0, wishlists=0, profiles=0)
    assert fitkart(runner, "backfill", "--database-url", supabase_db).exit_code == 0
    with psycopg.connect(supabase_db) as connection:
        connection.execute("UPDATE public.products SET description = repeat('x', 20000)")
    verified = fitkart(runner, "verify", "--database-url", supabase_db)
    line = next(line for line in verified.output.splitlines() if "description differs" in line)
    assert "…" in line and len(line) < 600, len(line)
    _, report = verify_json(runner, "--database-url", supabase_db)
    assert "x" * 20000 in json.dumps(report)


def test_a_column_dropped_in_supabase_is_reported_and_removed_by_repair(runner, supabase_db, mongo):
    """`body_measurements` dropped in Supabase (for privacy, say) after the mirror copied it: verify reports the
    field as no Supabase column (exit 1), repair removes it from every record (and the read API stops serving
    it), and verify is in sync."""
    generate_rows(supabase_db, products=0, carts=0, wishlists=0, profiles=5)
    with psycopg.connect(supabase_db) as connection:
        connection.execute("UPDATE public.profiles SET body_measurements = '{\"chest\": 96}'")
    assert fitkart(runner, "backfill", "--database-url", supabase_db).exit_code == 0
    assert mongo.profiles.count_documents({"body_measurements.chest": 96}) == 5
    with psycopg.connect(supabase_db) as connection:
        connection.execute("ALTER TABLE public.profiles DROP COLUMN body_measurements")
    verified = fitkart(runner, "verify", "--database-url", supabase_db)
    assert verified.exit_code == 1 and "drift: 5 record(s)" in verified.output, verified.output
    assert "body_measurements is no Supabase column" in verified.output
    assert fitkart(runner, "repair", "--database-url", supabase_db).exit_code == 0
    assert mongo.profiles.count_documents({"body_measurements": {"$exists": True}}) == 0
    assert mongo.profiles.count_documents({}) == 5
    assert fitkart(runner, "verify", "--database-url", supabase_db).exit_code == 0


def test_a_column_added_with_a_default_is_caught_by_verify_and_mended_by_repair(runner, supabase_db, mongo):
    """ADD COLUMN … DEFAULT gives every existing row a value without writing one row (no trigger, no WAL row):
    verify reports each record, repair sets the value, verify is in sync."""
    generate_rows(supabase_db, products=0, carts=0, wishlists=0, profiles=4)
    assert fitkart(runner, "backfill", "--database-url", supabase_db).exit_code == 0
    with psycopg.connect(supabase_db) as connection:
        connection.execute("ALTER TABLE public.profiles ADD COLUMN loyalty_tier text NOT NULL DEFAULT 'bronze'")
    verified = fitkart(runner, "verify", "--database-url", supabase_db)
    assert verified.exit_code == 1 and "drift: 4 record(s)" in verified.output, verified.output
    assert fitkart(runner, "repair", "--database-url", supabase_db).exit_code == 0
    assert mongo.profiles.count_documents({"loyalty_tier": "bronze"}) == 4
    assert fitkart(runner, "verify", "--database-url", supabase_db).exit_code == 0
