"""backfill against a delete made since its read, `backfill --restart` and `verify --show N`, on real servers."""

import re

import pytest

from fitkart_server.reconcile.sources import PostgresSource
from fitkart_server.sync.engine import SyncEngine
from testbed.data.supabase_rows import generate_rows, seed_shop


def fitkart(runner, *args: str):
    """Run a `flask fitkart ...` command."""
    return runner.invoke(args=["fitkart", *args], catch_exceptions=False)


def engine_answers(monkeypatch) -> dict[str, str]:
    """What the engine answers each backfilled row (`created`, `unchanged`, `stale`...), by the row's id."""
    answers = {}
    apply = SyncEngine.apply_batch

    def noted(self, operations, **options):
        results = apply(self, operations, **options)
        for operation, result in zip(operations, results, strict=True):
            answers[operation["record"]["id"]] = result if isinstance(result, Exception) else result["result"]
        return results

    monkeypatch.setattr(SyncEngine, "apply_batch", noted)
    return answers


def test_backfill_keeps_a_record_deleted_since_its_row_was_read(runner, client, supabase_db, mongo, monkeypatch):
    """A delete that reaches the mirror after backfill read the row leaves a tombstone: the row is stale, not back."""
    rows = seed_shop(supabase_db)
    assert fitkart(runner, "backfill", "--database-url", supabase_db).exit_code == 0
    cart, profile = rows["cart_items"][0], rows["profiles"][0]
    deletes = {("cart_items", str(cart["id"])): f"/api/sync/cart_items/{cart['id']}",
               ("profiles", str(profile["user_id"])): f"/api/sync/profiles/{profile['user_id']}"}
    read = PostgresSource.rows

    def delete_once_read(self, table, key, after=None):
        for row in read(self, table, key, after):
            path = deletes.pop((table, str(row[key[0]])), None)
            if path is not None:  # the row is in hand; the client deletes the record now
                assert client.delete(path).json == {"deleted": 1}
            yield row

    monkeypatch.setattr(PostgresSource, "rows", delete_once_read)
    answers = engine_answers(monkeypatch)
    result = fitkart(runner, "backfill", "--database-url", supabase_db)
    assert result.exit_code == 0, result.output
    assert deletes == {}  # both deletes happened between the read and the write
    assert mongo.cart_items.find_one({"id": str(cart["id"])}) is None
    assert mongo.profiles.find_one({"user_id": str(profile["user_id"])}) is None
    assert answers[str(cart["id"])] == "stale" and answers[str(profile["id"])] == "stale"
    assert answers[str(rows["cart_items"][1]["id"])] == "unchanged"
    run = mongo.sync_runs.find({"kind": "backfill"}).sort("_id", -1).limit(1)[0]
    assert run["status"] == "complete"
    counts = {name: run["tables"]["cart_items"][name] for name in ("rows", "written", "kept", "rejected")}
    assert counts == {"rows": 2, "written": 0, "kept": 2, "rejected": 0}  # one unchanged, one stale
    assert mongo.cart_items.count_documents({}) == 1 and mongo.profiles.count_documents({}) == 1
    assert mongo.sync_rejects.count_documents({}) == 0


def test_backfill_restart_starts_from_the_first_page(runner, supabase_db, mongo):
    """--restart ignores the saved checkpoint: the first page is read and written again, not skipped."""
    generate_rows(supabase_db, products=30, carts=0, wishlists=0, profiles=0)
    paused = fitkart(runner, "backfill", "--database-url", supabase_db, "--table", "products",
                     "--page-size", "10", "--max-pages", "1")
    assert "paused" in paused.output and mongo.sync_backfill.find_one({"_id": "products"}) is not None
    first_page = [doc["_id"] for doc in mongo.products.find({}, {"_id": 1}).sort("_id", 1)]
    assert len(first_page) == 10
    mongo.products.delete_many({"_id": {"$in": first_page}})  # only a run from the first row brings these back

    restarted = fitkart(runner, "backfill", "--database-url", supabase_db, "--table", "products",
                        "--page-size", "10", "--restart")
    assert restarted.exit_code == 0 and "done" in restarted.output, restarted.output
    run = mongo.sync_runs.find_one({"kind": "backfill", "status": "complete"})
    assert run["tables"]["products"]["rows"] == 30 and run["tables"]["products"]["resumed"] is False
    assert run["tables"]["products"]["written"] == 30  # the first page re-created, the other two first written
    assert mongo.products.count_documents({"_id": {"$in": first_page}}) == 10
    assert mongo.products.count_documents({}) == 30 and mongo.sync_backfill.count_documents({}) == 0


@pytest.fixture
def drifting_products(runner, supabase_db, mongo) -> dict[str, int]:
    """Twelve products backfilled, then 5 missing, 3 extra and 4 differing in the mirror: the counts."""
    generate_rows(supabase_db, products=12, carts=0, wishlists=0, profiles=0)
    assert fitkart(runner, "backfill", "--database-url", supabase_db, "--table", "products").exit_code == 0
    documents = list(mongo.products.find().sort("_id", 1))
    mongo.products.delete_many({"_id": {"$in": [doc["_id"] for doc in documents[:5]]}})
    for doc in documents[5:9]:
        mongo.products.update_one({"_id": doc["_id"]}, {"$set": {"stock_quantity": 999, "name": "changed"}})
    for number, doc in enumerate(documents[9:12]):
        extra = {**doc, "_id": f"ffffffff-0000-4000-8000-00000000000{number}"}
        extra["id"] = extra["_id"]
        mongo.products.insert_one(extra)
    return {"missing": 5, "extra": 3, "different": 4}


def listed(output: str) -> dict[str, set[str]]:
    """The products verify lists, by kind: their ids."""
    kinds = {"missing": set(), "extra": set(), "different": set()}
    for line in output.splitlines():
        match = re.match(r"products id=(\S+): (only in Supabase|only in the mirror|\w+ differs)", line)
        if match:
            kind = {"only in Supabase": "missing", "only in the mirror": "extra"}.get(match[2], "different")
            kinds[kind].add(match[1])
    return kinds


def test_verify_show_lists_at_most_n_drifting_records_of_each_kind(runner, supabase_db, drifting_products):
    """--show N names at most N records per table and kind (a record's several fields count once); the rest counted."""
    full = fitkart(runner, "verify", "--database-url", supabase_db, "--table", "products")
    assert full.exit_code == 1
    assert {kind: len(ids) for kind, ids in listed(full.output).items()} == drifting_products  # default 20: all
    assert "more (use --json or --show)" not in full.output

    shown = fitkart(runner, "verify", "--database-url", supabase_db, "--table", "products", "--show", "2")
    assert shown.exit_code == 1
    assert {kind: len(ids) for kind, ids in listed(shown.output).items()} == {"missing": 2, "extra": 2,
                                                                              "different": 2}
    assert "products: 6 more (use --json or --show)" in shown.output  # 3 missing + 1 extra + 2 differing
    assert "drift: 12 record(s)" in shown.output

    none = fitkart(runner, "verify", "--database-url", supabase_db, "--table", "products", "--show", "0")
    assert listed(none.output) == {"missing": set(), "extra": set(), "different": set()}
    assert "products: 12 more (use --json or --show)" in none.output
