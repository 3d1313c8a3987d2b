"""The rules carried by the single guarded write (sync/guarded.py), each held over HTTP by what is answered and stored.

An upsert of a record that may be new, or a change to one's own newer record, is one find_one_and_update
whose filter carries the rules (a new record: an insert after its tombstones are read). The guarded path
must answer and store what the read-decide-write path (the one every miss falls back to) would. Each test
was seen failing with its rule taken out of the command, or, for reordered object keys, 1 sent as true and
the size bound of a new record, on the first version of the guarded path, which differed there.
"""

import json
from datetime import UTC, datetime, timedelta

import bson
import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from fitkart_server.bounds import MAX_RECORD_BYTES
from fitkart_server.model.entities import BY_COLLECTION
from fitkart_server.sync import guarded, upserts
from fitkart_server.sync.engine import SyncEngine
from testbed.data.records import cart_item, new_id, order, product, wishlist_item

from .tokens import bearer, claims_for, hs256

# The guarded command is the guarded plan's (sync/plan.py): these tests hold it on whatever server runs them.
WRITE_PLANS = ("guarded",)


def post(client: FlaskClient, collection: str, record: dict) -> TestResponse:
    """POST one record to a collection (the test client's JSON has its keys sorted)."""
    return client.post(f"/api/sync/{collection}", json=record)


def post_as_written(client: FlaskClient, collection: str, record: dict) -> TestResponse:
    """POST one record with every object's keys in the order given, as a shop's client may send them."""
    return client.post(f"/api/sync/{collection}", data=json.dumps(record), content_type="application/json")


def later(minutes: int) -> str:
    """A timestamp `minutes` from now (after any delete this test makes), as Supabase renders it."""
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


def without_size_bound(document: dict) -> dict:
    """A stored document without `_fitkart.bytes`: the record as the read path measures it."""
    bookkeeping = {name: value for name, value in document["_fitkart"].items() if name != "bytes"}
    return {**document, "_fitkart": bookkeeping}


class Decisions:
    """Counts the read-decide-write path's decisions: none while the guarded command serves a write."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real_decide = upserts.decide

        def decide(*args, **kwargs) -> object:
            self.count += 1
            return real_decide(*args, **kwargs)

        monkeypatch.setattr(upserts, "decide", decide)


# -- the Supabase id ---------------------------------------------------------------------------

def test_an_id_deleted_after_its_insert_collided_is_not_merged_into_its_keys_new_record(client, mongo, monkeypatch,
                                                                                      decimal_mode) -> None:
    """Same Supabase id: a full row whose insert found its key taken, then whose id was deleted and its key
    re-created as another id before the merge, is stale; the guarded command does not merge the deleted id into
    the new record."""
    entity = BY_COLLECTION["wishlist_items"]
    first = wishlist_item()
    assert post(client, "wishlist_items", first).json["result"] == "created"
    again = {**first, "id": new_id(), "created_at": later(1)}
    other = SyncEngine(mongo, decimal_mode=decimal_mode)  # another worker, or a webhook
    pending = [True]
    real_insert_new = guarded.insert_new

    def insert_new(*args, **kwargs):
        inserted = real_insert_new(*args, **kwargs)
        if pending:  # once, right after the request's own insert found the key taken
            pending.clear()
            assert other.delete_records(entity, {"id": first["id"]}) == 1
            assert other.upsert_record(entity, again, source="webhook").result == "created"
        return inserted

    monkeypatch.setattr(guarded, "insert_new", insert_new)
    response = post(client, "wishlist_items", {**first, "created_at": later(2)})
    assert not pending
    assert response.status_code == 200
    assert response.json["result"] == "stale" and response.json["record"]["id"] == again["id"]
    assert [doc["id"] for doc in mongo.wishlist_items.find()] == [again["id"]]


# -- defaults on insert ---------------------------------------------------------------------------

def test_a_row_created_in_one_command_stores_the_defaults_of_the_columns_it_does_not_send(client, mongo) -> None:
    """Defaults: columns a new row does not send are stored with Supabase's defaults; a later full row
    without them keeps the stored values."""
    item = cart_item()
    del item["quantity"]
    goods = product()
    del goods["is_active"], goods["stock_quantity"]
    bought = order()
    del bought["status"]
    role = {"user_id": new_id()}
    for collection, row in (("cart_items", item), ("products", goods), ("orders", bought), ("user_roles", role)):
        assert post(client, collection, row).json["result"] == "created"
    assert mongo.cart_items.find_one({"_id": item["id"]})["quantity"] == 1
    stored = mongo.products.find_one({"_id": goods["id"]})
    assert (stored["is_active"], stored["stock_quantity"]) == (True, 0)
    assert mongo.orders.find_one({"_id": bought["id"]})["status"] == "pending"
    assert mongo.user_roles.find_one({"_id": role["user_id"]})["role"] == "customer"
    assert client.get(f"/api/sync/cart_items/{item['id']}").json["quantity"] == 1
    assert post(client, "cart_items", {"id": item["id"], "quantity": 5}).json["result"] == "updated"
    again = post(client, "cart_items", {**item, "color": "red"})
    assert again.json["result"] == "updated" and again.json["record"]["quantity"] == 5
    assert mongo.cart_items.find_one({"_id": item["id"]})["quantity"] == 5


# -- "something changes" and the answer ---------------------------------------------------------

def test_a_replay_with_an_objects_keys_in_another_order_writes_nothing(client, mongo) -> None:
    """Unchanged writes nothing: keys of an object in another order are the same value, as the read path
    compares them, so the stored document (its version and write time) stays as it was."""
    sent = order()
    assert post_as_written(client, "orders", sent).json["result"] == "created"
    before = mongo.orders.find_one({"_id": sent["id"]})
    reordered = {**sent, "shipping_address": dict(reversed(sent["shipping_address"].items()))}
    assert post_as_written(client, "orders", reordered).json["result"] == "unchanged"
    after = mongo.orders.find_one({"_id": sent["id"]})
    assert after["_fitkart"]["version"] == before["_fitkart"]["version"] == 1
    assert after == before


def test_a_replay_of_an_unknown_column_as_true_instead_of_1_writes_nothing(client, mongo) -> None:
    """Unchanged writes nothing: an unknown column stored as 1 and sent as true is the same value to the
    read path's rule, so the replay is `unchanged` and the stored document stays as it was."""
    item = cart_item(gift_wrap=1)
    assert post(client, "cart_items", item).json["result"] == "created"
    before = mongo.cart_items.find_one({"_id": item["id"]})
    assert post(client, "cart_items", {**item, "gift_wrap": True}).json["result"] == "unchanged"
    assert mongo.cart_items.find_one({"_id": item["id"]}) == before


# -- the size bound ------------------------------------------------------------------------------

def test_merges_are_made_in_one_command_until_the_one_that_would_pass_one_megabyte(client, mongo, monkeypatch) -> None:
    """Size bound: each merge raises the stored bound and is made without a read; the merge that would
    take the record past 1 MiB is a 422 and is not stored."""
    item = cart_item()
    decisions = Decisions(monkeypatch)
    assert post(client, "cart_items", item).json["result"] == "created"
    bound = mongo.cart_items.find_one({"_id": item["id"]})["_fitkart"].get("bytes")
    assert bound is not None  # a record created in one command carries its size bound
    for step in range(10):
        # A declared column changes too: a change to unknown columns alone is made on the read path.
        column = {"id": item["id"], "quantity": 2 + step, f"extra_{step}": "x" * 99_000}
        response = post(client, "cart_items", column)
        assert response.status_code == 200 and response.json["result"] == "updated"
        stored = mongo.cart_items.find_one({"_id": item["id"]})
        assert stored["_fitkart"]["bytes"] >= bound + 99_000
        bound = stored["_fitkart"]["bytes"]
    assert decisions.count == 0  # every merge so far was the guarded command alone
    response = post(client, "cart_items", {"id": item["id"], "quantity": 20, "extra_10": "x" * 99_000})
    assert response.status_code == 422 and "1,048,576" in response.json["message"]
    stored = mongo.cart_items.find_one({"_id": item["id"]})
    assert "extra_10" not in stored and stored["_fitkart"]["version"] == 11
    assert len(bson.encode(stored)) <= MAX_RECORD_BYTES


def padded_cart_item(target: int) -> dict:
    """A cart_items row with unknown columns of x's, `target` bytes as a BSON document with its `_id`."""
    item = cart_item(quantity=1)
    item.pop("created_at")
    for step in range(10):
        item[f"extra_{step}"] = "x" * 100_000
    item["extra_10"] = ""
    item["extra_10"] = "x" * (target - len(bson.encode({"_id": item["id"], **item})))
    assert len(bson.encode({"_id": item["id"], **item})) == target
    return item


def test_a_new_record_over_one_megabyte_with_its_bookkeeping_is_refused(client, mongo) -> None:
    """Size bound on create: a row that is 1 MiB before the mirror's bookkeeping is added would be stored
    larger, so it is a 422 (as the read path answers it), and nothing is stored."""
    item = padded_cart_item(MAX_RECORD_BYTES)
    response = post(client, "cart_items", item)
    assert response.status_code == 422, response.json["result"]
    assert "1,048,576" in response.json["message"]
    assert mongo.cart_items.count_documents({}) == 0


def test_the_size_bound_of_a_new_record_covers_what_is_stored(client, mongo) -> None:
    """Size bound: a record created in one command stores a bound no smaller than the record it stores,
    the bound itself included, and after a merge made on the read path (with a longer source name) too."""
    item = cart_item()
    assert post(client, "cart_items", item).json["result"] == "created"
    stored = mongo.cart_items.find_one({"_id": item["id"]})
    assert stored["_fitkart"]["bytes"] >= len(bson.encode(stored))
    mongo.cart_items.update_one({"_id": item["id"]}, {"$unset": {"_fitkart.bytes": ""}})  # merged on a read
    engine = SyncEngine(mongo, decimal_mode="double")
    assert engine.upsert_record(BY_COLLECTION["cart_items"], {"id": item["id"], "quantity": 4},
                                source="reconcile").result == "updated"
    stored = mongo.cart_items.find_one({"_id": item["id"]})
    assert stored["_fitkart"]["bytes"] >= len(bson.encode(stored))


def test_a_flag_stored_as_1_and_sent_as_true_is_unchanged_and_not_written(client, mongo) -> None:
    """Unchanged writes nothing: a product's is_active stored as 1 by another writer, sent as true, is the
    same value to the read path's rule, so it is answered `unchanged` and the stored document stays."""
    goods = product()
    assert post(client, "products", goods).json["result"] == "created"
    mongo.products.update_one({"_id": goods["id"]}, {"$set": {"is_active": 1}})
    before = mongo.products.find_one({"_id": goods["id"]})
    assert post(client, "products", {"id": goods["id"], "is_active": True}).json["result"] == "unchanged"
    assert mongo.products.find_one({"_id": goods["id"]}) == before


def test_a_record_created_in_one_command_cannot_be_merged_past_one_megabyte(client, mongo) -> None:
    """Size bound: a merge up to the size bound a new record stores never leaves it over 1 MiB (its bookkeeping
    included): it fits, or it is a 422 and the record stays as it was."""
    item = cart_item()
    assert post(client, "cart_items", item).json["result"] == "created"
    before = mongo.cart_items.find_one({"_id": item["id"]})
    room = MAX_RECORD_BYTES - before["_fitkart"]["bytes"]  # what the record may still grow by, as it says
    merge = {"id": item["id"], **{f"extra_{step}": "x" * 100_000 for step in range(10)}, "extra_10": ""}
    merge["extra_10"] = "x" * (room - len(bson.encode(merge)))
    assert len(bson.encode(merge)) == room
    response = post(client, "cart_items", merge)
    stored = mongo.cart_items.find_one({"_id": item["id"]})
    assert len(bson.encode(without_size_bound(stored))) <= MAX_RECORD_BYTES
    if response.status_code == 200:  # it fits: the bound counted more than the merge adds
        assert response.json["result"] == "updated" and "extra_10" in stored
    else:
        assert response.status_code == 422 and "1,048,576" in response.json["message"]
        assert stored == before


def test_the_guarded_command_never_merges_into_another_users_row(secure_client, jwks_server, mongo):
    """Bob sends Alice's cart row with his own user_id (what the guarded command may take, so ownership is only in
    its filter): 403, and Alice's row keeps its owner and quantity."""
    issuer = f"{jwks_server.url}/auth/v1"
    alice, bob = new_id(), new_id()
    row = cart_item(user_id=alice, quantity=1)
    signed_in = {user: bearer(hs256(claims_for(user, issuer=issuer))) for user in (alice, bob)}
    assert secure_client.post("/api/sync/cart_items", json=row, headers=signed_in[alice]).status_code == 200
    taken = secure_client.post("/api/sync/cart_items", json={**row, "user_id": bob, "quantity": 9},
                               headers=signed_in[bob])
    assert taken.status_code == 403, taken.json
    stored = mongo.cart_items.find_one({"_id": row["id"]})
    assert (stored["user_id"], stored["quantity"]) == (alice, 1)
