"""One order of truth: a change is judged by its own time and identity, whatever path it takes and whenever it
arrives (sync/ordering.py, docs/verify-and-capture.md "What order the mirror keeps")."""

from datetime import UTC, datetime, timedelta

import pymongo
import pytest
from pymongo.errors import ConnectionFailure

from fitkart_server.sync.engine import SyncEngine
from testbed.data.records import cart_item, new_id, profile, user_role, wishlist_item
from testbed.waiting import wait_until

from .test_webhooks import SECRET, deliver, event

# The engine's rules hold under each write plan (sync/plan.py): every test here runs under both.
WRITE_PLANS = ("point", "guarded")


def now_stamp(after: timedelta = timedelta()) -> str:
    """A Supabase timestamp of this moment (as a row made now carries it)."""
    return (datetime.now(UTC) + after).isoformat()


def upsert(collection: str, record: dict, version: dict | None = None) -> dict:
    """A batch upsert operation, with the client's version when given."""
    return {"op": "upsert", "collection": collection, "record": record, **({"version": version} if version else {})}


def delete(collection: str, record: dict, version: dict | None = None) -> dict:
    """A batch delete operation, with the client's version when given."""
    return {"op": "delete", "collection": collection, "record": record, **({"version": version} if version else {})}


# -- 1. A toggle while the database is away ------------------------------------------------------------------

@pytest.fixture
def database(own_server):
    """The test database on the test's own server."""
    with pymongo.MongoClient(own_server.base_uri, tz_aware=True, serverSelectionTimeoutMS=10_000) as client:
        yield client["test_order"]


def test_a_toggle_queued_while_the_database_is_away_keeps_the_record(own_server, make_app, decimal_mode, database,
                                                                       write_plan):
    """A wishlist heart off and on again, a profile deleted and re-created, both while the database is down: the
    replay ends with the new records (the deletes' tombstones carry the time they arrived, not of their replay)."""
    client = make_app(FITKART_MONGODB_URI=f"{own_server.base_uri}/test_order", FITKART_DECIMAL_MODE=decimal_mode,
                      FITKART_WRITE_PLAN=write_plan).test_client()
    heart, person = wishlist_item(created_at=now_stamp()), profile(created_at=now_stamp(), updated_at=now_stamp())
    assert client.post("/api/sync/batch", json={"operations": [upsert("wishlist_items", heart),
                                                               upsert("profiles", person)]}).status_code == 200
    own_server.stop()
    # As the shop sends them: each change its own request, the re-add made (in Supabase) after the delete was sent.
    off = client.post("/api/sync/batch", json={"operations": [
        delete("wishlist_items", {"user_id": heart["user_id"], "product_id": heart["product_id"]}),
        delete("profiles", {"user_id": person["user_id"]})]})
    hearted_again = {**heart, "id": new_id(), "created_at": now_stamp()}
    recreated = {**person, "id": new_id(), "created_at": now_stamp(), "updated_at": now_stamp()}
    on = client.post("/api/sync/batch", json={"operations": [upsert("wishlist_items", hearted_again),
                                                             upsert("profiles", recreated)]})
    assert {result["result"] for result in off.json["results"] + on.json["results"]} == {"queued"}
    own_server.start()
    assert wait_until(lambda: client.get("/readyz").json["spool"]["entries"] == 0)
    assert database.wishlist_items.find_one({"user_id": heart["user_id"]})["id"] == hearted_again["id"]
    assert database.profiles.find_one({"user_id": person["user_id"]})["id"] == recreated["id"]


# -- 2. A late webhook delete ---------------------------------------------------------------------------------

@pytest.fixture
def hooks(make_app, database_uri, decimal_mode, write_plan):
    """A client of the app with webhooks on."""
    return make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode,
                    FITKART_WEBHOOK_SECRET=SECRET, FITKART_WRITE_PLAN=write_plan).test_client()


RECREATED = {"wishlist_items": wishlist_item, "user_roles": user_role, "profiles": profile}


@pytest.mark.parametrize("table", RECREATED)
def test_a_late_delete_of_an_old_row_leaves_the_new_row_of_its_key(hooks, mongo, table):
    """Unlike then like again (a role, a profile removed and re-created): the DELETE webhook of the old row
    arriving after the new row removes nothing, and binds only the old id."""
    old = RECREATED[table]()
    new = {**old, "id": new_id()}
    assert deliver(hooks, event("INSERT", table, old)).status_code == 200
    assert deliver(hooks, event("INSERT", table, new)).status_code == 200  # Supabase's new row, applied first
    late = deliver(hooks, event("DELETE", table, old=old))
    assert late.status_code == 200 and late.json["deleted"] == 0
    assert mongo[table].find_one({"user_id": old["user_id"]})["id"] == new["id"]
    # The old id stays deleted: its late re-delivery is stale, the new row untouched.
    assert deliver(hooks, event("UPDATE", table, old)).json["result"] == "stale"
    assert mongo[table].find_one({"user_id": old["user_id"]})["id"] == new["id"]
    # A delete of the new row removes it.
    assert deliver(hooks, event("DELETE", table, old=new)).json["deleted"] == 1


def test_a_delete_naming_an_id_of_a_record_stored_without_one_still_removes_it(client, mongo):
    """A record the old client stored without its Supabase id is the one a delete of its key names."""
    heart = wishlist_item()
    del heart["id"]
    assert client.post("/api/sync/batch", json={"operations": [upsert("wishlist_items", heart)]}).status_code == 200
    gone = client.post("/api/sync/batch", json={"operations": [delete("wishlist_items", {**heart, "id": new_id()})]})
    assert gone.json["results"][0]["deleted"] == 1


# -- 3. A retry that overtakes its original -------------------------------------------------------------------

def test_a_held_request_landing_after_its_retry_is_stale(client, mongo):
    """The client's batch (quantity 2) is held past its timeout; the retry of a later change (quantity 3) lands
    first; then the held one: stale, the mirror keeps 3. Cart rows have no updated_at: only the version tells."""
    row = cart_item(quantity=1)
    made = int(datetime.now(UTC).timestamp() * 1000)
    assert client.post("/api/sync/batch", json={"operations": [upsert("cart_items", row, {"at": made, "seq": 1})]}
                       ).json["results"][0]["result"] == "created"
    newer = client.post("/api/sync/batch", json={"operations": [
        upsert("cart_items", {"id": row["id"], "quantity": 3}, {"at": made + 20, "seq": 3})]})
    assert newer.json["results"][0]["result"] == "updated"
    held = client.post("/api/sync/batch", json={"operations": [
        upsert("cart_items", {"id": row["id"], "quantity": 2}, {"at": made + 10, "seq": 2})]})
    assert held.status_code == 200 and held.json["results"][0]["result"] == "stale"
    assert mongo.cart_items.find_one({"id": row["id"]})["quantity"] == 3
    # The same version again (a retry of what was applied) is no older: it is applied (here, unchanged).
    again = client.post("/api/sync/batch", json={"operations": [
        upsert("cart_items", {"id": row["id"], "quantity": 3}, {"at": made + 20, "seq": 3})]})
    assert again.json["results"][0]["result"] == "unchanged"
    # A change without a version (the old localSync) behaves as ever.
    assert client.post("/api/sync/cart", json={"id": row["id"], "quantity": 5}).json["result"] == "updated"
    held_again = client.post("/api/sync/batch", json={"operations": [
        upsert("cart_items", {"id": row["id"], "quantity": 2}, {"at": made + 10, "seq": 2})]})
    assert held_again.json["results"][0]["result"] == "stale"  # the version kept through the unversioned write


def test_a_held_delete_landing_after_the_record_was_made_again_leaves_it(client, mongo):
    """A wishlist heart off (held), then on again (applied): the held delete, older, removes nothing."""
    heart = wishlist_item(created_at=now_stamp())
    made = int(datetime.now(UTC).timestamp() * 1000)
    key = {"user_id": heart["user_id"], "product_id": heart["product_id"]}
    client.post("/api/sync/batch", json={"operations": [upsert("wishlist_items", heart, {"at": made, "seq": 1})]})
    again = {**heart, "id": new_id(), "created_at": now_stamp(timedelta(milliseconds=30))}
    client.post("/api/sync/batch", json={"operations": [upsert("wishlist_items", again, {"at": made + 30, "seq": 3})]})
    held = client.post("/api/sync/batch", json={"operations": [delete("wishlist_items", key,
                                                                      {"at": made + 10, "seq": 2})]})
    assert held.json["results"][0] == {"deleted": 0}
    assert mongo.wishlist_items.find_one(key)["id"] == again["id"]


@pytest.mark.parametrize("version", [{"at": -1, "seq": 1}, {"at": 1, "seq": 2**53}, {"at": "1", "seq": 1},
                                     {"at": 1}, {"at": 1, "seq": 1, "tab": 2}, [1, 2], None])
def test_a_malformed_version_refuses_that_operation(client, mongo, version):
    """A version is two safe integers: anything else refuses its operation (422 in the batch), nothing else."""
    row = cart_item()
    answer = client.post("/api/sync/batch", json={"operations": [
        {"op": "upsert", "collection": "cart_items", "record": row, "version": version},
        upsert("cart_items", cart_item())]})
    assert answer.status_code == 200
    first, second = answer.json["results"]
    assert first["error"]["code"] == 422 and "version" in first["error"]["errors"]["json"]
    assert second["result"] == "created"
    assert mongo.cart_items.count_documents({"id": row["id"]}) == 0



# -- Between the paths ------------------------------------------------------------------------------------------

def ms(moment: datetime | None = None) -> int:
    """A client's version time: ms since the epoch."""
    return int((moment or datetime.now(UTC)).timestamp() * 1000)


def test_a_version_stamped_ahead_of_the_clock_gains_nothing(client, mongo):
    """A phone whose clock is a day ahead, then a laptop's later change: the later one is applied (a version's
    time is capped at its arrival), and a version far past the year 9999 is no error."""
    row = cart_item(quantity=1)
    phone = client.post("/api/sync/batch", json={"operations": [
        upsert("cart_items", row, {"at": ms() + 86_400_000, "seq": 7})]})
    assert phone.json["results"][0]["result"] == "created"
    laptop = client.post("/api/sync/batch", json={"operations": [
        upsert("cart_items", {"id": row["id"], "quantity": 4}, {"at": ms() + 50, "seq": 1})]})
    assert laptop.json["results"][0]["result"] == "updated"
    far = client.post("/api/sync/batch", json={"operations": [
        upsert("cart_items", {"id": row["id"], "quantity": 5}, {"at": 2**53 - 1, "seq": 2})]})
    assert far.status_code == 200 and far.json["results"][0]["result"] == "updated"
    assert mongo.cart_items.find_one({"id": row["id"]})["quantity"] == 5


def test_a_webhook_delete_binds_older_versions_of_its_key_not_a_new_row(hooks, mongo):
    """The DELETE webhook of a profile: a held write of that profile without its id (the old client sends none),
    no newer than the deleted row, is stale; a profile made again after it is not."""
    row = profile(created_at=now_stamp(timedelta(seconds=-60)), updated_at=now_stamp(timedelta(seconds=-60)))
    assert deliver(hooks, event("INSERT", "profiles", row)).status_code == 200
    assert deliver(hooks, event("DELETE", "profiles", old=row)).json["deleted"] == 1
    held = {name: value for name, value in row.items() if name != "id"} | {"full_name": "held edit"}
    assert hooks.post("/api/sync/profile", json=held).json["result"] == "stale"
    assert mongo.profiles.count_documents({"user_id": row["user_id"]}) == 0
    again = {**row, "id": new_id(), "created_at": now_stamp(), "updated_at": now_stamp()}
    assert deliver(hooks, event("INSERT", "profiles", again)).json["result"] == "created"


def test_a_client_delete_made_after_the_row_but_before_its_webhook_arrived_applies(hooks, mongo):
    """A heart given, then taken back; the INSERT webhook arrives after both were made: the client's delete is
    newer than the row (a webhook's change is as old as its row's timestamp, not its arrival)."""
    heart = wishlist_item(created_at=now_stamp(timedelta(seconds=-1)))
    assert deliver(hooks, event("INSERT", "wishlist_items", heart)).json["result"] == "created"
    gone = hooks.post("/api/sync/batch", json={"operations": [
        delete("wishlist_items", {"user_id": heart["user_id"], "product_id": heart["product_id"]},
               {"at": ms() - 200, "seq": 2})]})
    assert gone.json["results"][0] == {"deleted": 1}


def test_a_batch_half_applied_when_the_database_went_away_ends_at_its_last_change(client, mongo, monkeypatch):
    """An unversioned batch changes a cart row twice; the database goes away after the first, so the whole batch
    is queued and replayed: both are judged by the request's arrival, the same for the one applied, and the row
    ends at the second."""
    row = cart_item(quantity=1)
    assert client.post("/api/sync/batch", json={"operations": [upsert("cart_items", row)]}).status_code == 200
    real = SyncEngine.apply_batch
    failed = []

    def away_after_the_first(self, operations, **options):
        if failed:
            return real(self, operations, **options)
        failed.append(True)
        real(self, operations[:1], **options)
        raise ConnectionFailure("the database went away")

    monkeypatch.setattr(SyncEngine, "apply_batch", away_after_the_first)
    answer = client.post("/api/sync/batch", json={"operations": [
        upsert("cart_items", {"id": row["id"], "quantity": 2}),
        upsert("cart_items", {"id": row["id"], "quantity": 3})]})
    assert [result["result"] for result in answer.json["results"]] == ["queued", "queued"]
    assert wait_until(lambda: client.get("/readyz").json["spool"]["entries"] == 0)
    assert mongo.cart_items.find_one({"id": row["id"]})["quantity"] == 3
