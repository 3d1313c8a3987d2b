"""Engine rules no other test holds: the version guard (one by one and in bulk) and the deleted-id rule.

Races are made deterministic: `upserts.decide` is wrapped so that, once the engine has read
the stored record and decided its guarded update, another writer's upserts land before the
engine makes it. That other writer is a second SyncEngine on the same database, as another
worker or a webhook would be. Nothing here depends on the server applying an update
atomically, so these tests run on FerretDB v1 as on MongoDB.
"""

from datetime import UTC, datetime, timedelta

import pytest

from fitkart_server.model.entities import BY_COLLECTION
from fitkart_server.sync import batch as batch_module
from fitkart_server.sync import guarded, upserts
from fitkart_server.sync.engine import SyncEngine
from fitkart_server.sync.tombstones import Tombstones
from fitkart_server.sync.upserts import PlannedWrite
from testbed.data.records import cart_item, new_id, profile, stamp, wishlist_item

# The engine's rules hold under each write plan (sync/plan.py): every test here runs under both.
WRITE_PLANS = ("point", "guarded")


def post(client, collection: str, record):
    """POST one record to a collection."""
    return client.post(f"/api/sync/{collection}", json=record)


def batch(client, *operations: tuple[str, dict]) -> list[dict]:
    """POST upserts as one batch; the results."""
    body = {"operations": [{"op": "upsert", "collection": collection, "record": record}
                           for collection, record in operations]}
    response = client.post("/api/sync/batch", json=body)
    assert response.status_code == 200, response.json
    return response.json["results"]


def later(minutes: int) -> str:
    """A timestamp `minutes` from now (after any delete this test makes), as Supabase renders it."""
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


class Interloper:
    """Another writer whose upserts land between the engine's read and its guarded update, once.

    The single guarded command (sync/guarded.py) leaves no gap between a read and a write, so
    it is bypassed here: these races live on the read-decide-write path every miss falls back to.
    """

    def __init__(self, monkeypatch, mongo, decimal_mode: str, collection: str, *versions: dict) -> None:
        self.engine = SyncEngine(mongo, decimal_mode=decimal_mode)
        self.entity = BY_COLLECTION[collection]
        self.pending = list(versions)
        self.results: list[str] = []
        real_decide = upserts.decide

        def decide(engine, write, values, current, find_tombstone):
            decision = real_decide(engine, write, values, current, find_tombstone)
            if self.pending and isinstance(decision, PlannedWrite) and decision.update is not None:
                versions, self.pending = self.pending, []
                for version in versions:  # its own upserts decide with nothing pending: no recursion
                    self.results.append(self.engine.upsert_record(self.entity, version, source="webhook").result)
            return decision

        monkeypatch.setattr(upserts, "decide", decide)
        monkeypatch.setattr(upserts, "guarded_upsert", lambda *args: None)


def test_a_write_that_lost_the_race_to_a_newer_version_ends_stale(client, mongo, monkeypatch, decimal_mode):
    """Version guard: a newer version written between the engine's read and its update survives; the older is stale."""
    person = profile(full_name="v0", updated_at=stamp(0))
    assert post(client, "profiles", person).json["result"] == "created"
    newer = {**person, "full_name": "v2", "updated_at": stamp(20)}
    interloper = Interloper(monkeypatch, mongo, decimal_mode, "profiles", newer)
    response = post(client, "profiles", {**person, "full_name": "v1", "updated_at": stamp(10)})
    assert interloper.results == ["updated"]
    assert response.json["result"] == "stale" and response.json["record"]["full_name"] == "v2"
    stored = mongo.profiles.find_one({"_id": person["user_id"]})
    assert stored["full_name"] == "v2" and stored["_fitkart"]["version"] == 2
    assert stored["_fitkart"]["source"] == "webhook"


def test_a_newer_write_that_lost_the_race_is_merged_into_the_winner(client, mongo, monkeypatch, decimal_mode):
    """Version guard: a write that lost the race re-reads and builds on the winner's version, keeping its fields."""
    person = profile(full_name="v0", avatar_url=None, updated_at=stamp(0))
    post(client, "profiles", person)
    between = {"user_id": person["user_id"], "avatar_url": "https://cdn.example/a.png", "updated_at": stamp(10)}
    interloper = Interloper(monkeypatch, mongo, decimal_mode, "profiles", between)
    response = post(client, "profiles", {"user_id": person["user_id"], "full_name": "v2", "updated_at": stamp(20)})
    assert interloper.results == ["updated"]
    assert response.json["result"] == "updated"
    stored = mongo.profiles.find_one({"_id": person["user_id"]})
    assert (stored["full_name"], stored["avatar_url"]) == ("v2", "https://cdn.example/a.png")
    # Three writes, three versions: the lost attempt's version 2 was not written over the winner's.
    assert stored["_fitkart"]["version"] == 3


def test_a_bulk_update_that_lost_the_race_is_redone_alone(client, mongo, monkeypatch, decimal_mode):
    """Bulk version guard: an update whose guard no longer matched is redone alone, and the newer version stays."""
    person = profile(full_name="v0", updated_at=stamp(0))
    post(client, "profiles", person)
    meanwhile = [{**person, "full_name": "v2", "updated_at": stamp(20)},
                 {**person, "full_name": "v3", "updated_at": stamp(30)}]
    interloper = Interloper(monkeypatch, mongo, decimal_mode, "profiles", *meanwhile)
    fresh = cart_item()
    results = batch(client, ("profiles", {**person, "full_name": "v1", "updated_at": stamp(10)}),
                    ("cart_items", fresh))
    assert interloper.results == ["updated", "updated"]
    assert [r["result"] for r in results] == ["stale", "created"]
    assert results[0]["record"]["full_name"] == "v3"
    stored = mongo.profiles.find_one({"_id": person["user_id"]})
    assert stored["full_name"] == "v3" and stored["_fitkart"]["version"] == 3
    assert mongo.cart_items.count_documents({"_id": fresh["id"]}) == 1


def test_a_bulk_update_that_lost_the_race_to_one_older_write_is_not_lost(client, mongo, monkeypatch,
                                                                         decimal_mode):
    """Bulk version guard: one older write landing in between does not make the batch's newer version vanish."""
    person = profile(full_name="v0", updated_at=stamp(0))
    post(client, "profiles", person)
    interloper = Interloper(monkeypatch, mongo, decimal_mode, "profiles",
                            {**person, "full_name": "v1", "updated_at": stamp(10)})
    results = batch(client, ("profiles", {**person, "full_name": "v2", "updated_at": stamp(20)}))
    assert interloper.results == ["updated"]
    stored = mongo.profiles.find_one({"_id": person["user_id"]})
    assert results[0]["result"] == "updated"
    assert stored["full_name"] == "v2"


@pytest.mark.parametrize("path", ["single", "batch"])
@pytest.mark.parametrize(("collection", "maker", "delete_ref"), [
    ("wishlist_items", wishlist_item, "id"),  # key user_id + product_id; deleted by its id
    ("profiles", profile, "user_id"),  # key user_id; deleted by its key
])
def test_a_deleted_id_is_stale_even_when_its_key_holds_a_newer_record(client, mongo, collection, maker,
                                                                      delete_ref, path):
    """Deleted-id rule: once id A is deleted and its key re-created as id B, an upsert of A, however new, is stale."""
    time_field = BY_COLLECTION[collection].timestamp_field
    first = maker()  # stamped in 2025: before the delete
    assert post(client, collection, first).json["result"] == "created"
    assert client.delete(f"/api/sync/{collection}/{first[delete_ref]}").json == {"deleted": 1}
    again = {**first, "id": new_id(), time_field: later(1)}
    assert post(client, collection, again).json["result"] == "created"
    late = {**first, time_field: later(2)}  # id A, the same key, and newer than B
    answer = post(client, collection, late).json if path == "single" else batch(client, (collection, late))[0]
    assert answer["result"] == "stale"
    assert answer["record"]["id"] == again["id"]
    stored = list(mongo[collection].find())
    assert [doc["id"] for doc in stored] == [again["id"]]


def test_a_create_that_races_a_delete_does_not_bring_the_record_back(client, mongo, monkeypatch, decimal_mode):
    """Tombstones before the delete: a full row whose tombstone check falls while the delete is under way
    (here: just before it writes its tombstones) is merged into the record the delete then removes."""
    item = cart_item()
    assert post(client, "cart_items", item).json["result"] == "created"
    other = SyncEngine(mongo, decimal_mode=decimal_mode)
    real_remember = Tombstones.remember
    raced: list[str] = []

    def remember(self, entity, records, deleted_at, **options):
        if not raced:  # once: another writer's create of the same row lands now
            raced.append(other.upsert_record(BY_COLLECTION["cart_items"], {**item, "quantity": 4}).result)
        return real_remember(self, entity, records, deleted_at, **options)

    monkeypatch.setattr(Tombstones, "remember", remember)
    assert client.delete(f"/api/sync/cart_items/{item['id']}").status_code == 200
    assert raced == ["updated"]
    assert mongo.cart_items.find_one({"_id": item["id"]}) is None
    assert post(client, "cart_items", item).json["result"] == "stale"


@pytest.mark.parametrize("path", ["single", "batch"])
def test_a_create_whose_tombstone_check_came_before_a_delete_does_not_bring_the_record_back(
        client, mongo, monkeypatch, decimal_mode, path):
    """A full row checked against its tombstones, then a delete of its record landing before the row is inserted
    (another worker's): the row must not be created under the delete. It is inserted first and checked after,
    so a delete landing anywhere either finds it or leaves a tombstone it sees."""
    item = cart_item()
    assert post(client, "cart_items", item).json["result"] == "created"
    other = SyncEngine(mongo, decimal_mode=decimal_mode)
    deleted: list[int] = []
    module, name = (guarded, "insert_new") if path == "single" else (batch_module, "_insert_all")
    real = getattr(module, name)

    def insert(*args, **kwargs):
        if not deleted:  # once: the other worker's delete lands just before this insert
            deleted.append(other.delete_records(BY_COLLECTION["cart_items"], {"id": item["id"]}))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, insert)
    again = {**item, "quantity": 4}
    # In a batch with another new row: the bulk path (a batch of one is applied alone).
    answer = post(client, "cart_items", again).json if path == "single" else \
        batch(client, ("cart_items", again), ("cart_items", cart_item()))[0]
    assert deleted == [1]
    assert answer["result"] == "stale"
    assert mongo.cart_items.find_one({"_id": item["id"]}) is None
