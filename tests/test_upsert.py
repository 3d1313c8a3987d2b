"""Upserts: validation, merge, required fields, unknown columns, hostile keys, provenance, fidelity."""

import json
from datetime import UTC, datetime

import pytest

from testbed.data.records import cart_item, new_id, order, product, profile

# The engine's rules hold under each write plan (sync/plan.py): every test here runs under both.
WRITE_PLANS = ("point", "guarded")


def post(client, collection: str, record):
    """POST one record to a collection."""
    return client.post(f"/api/sync/{collection}", json=record)


@pytest.mark.parametrize(("collection", "record", "bad_field"), [
    ("cart_items", cart_item(id="not-a-uuid"), "id"),
    ("cart_items", cart_item(user_id=12), "user_id"),
    ("cart_items", cart_item(quantity=-1), "quantity"),
    ("cart_items", cart_item(quantity=1.5), "quantity"),
    ("cart_items", cart_item(quantity=True), "quantity"),
    ("cart_items", cart_item(size=None), "size"),
    ("cart_items", cart_item(size="M" * 51), "size"),
    ("cart_items", cart_item(created_at="yesterday"), "created_at"),
    ("products", product(price=-5), "price"),
    ("products", product(price=19.999), "price"),
    ("products", product(price=100_000_000), "price"),
    ("products", product(price="NaN"), "price"),
    ("products", product(stock_quantity=-3), "stock_quantity"),
    ("products", product(name="x" * 501), "name"),
    ("products", product(sizes="M"), "sizes"),
    ("orders", order(items={"not": "a list"}), "items"),
    ("orders", order(total_amount=None), "total_amount"),
    ("user_roles", {"user_id": new_id(), "role": "admin"}, "role"),
    ("profiles", profile(email="e" * 400), "email"),
    ("profiles", profile(updated_at="0001-01-01T00:00:02+20:01"), "updated_at"),
])
def test_invalid_record_is_422_naming_the_field_and_nothing_is_written(client, mongo, collection,
                                                                        record, bad_field):
    """Each bad field gets a 422 naming it; the collection stays empty; the reject is kept."""
    response = post(client, collection, record)
    assert response.status_code == 422
    assert response.json["code"] == 422
    assert bad_field in response.json["errors"]["json"]
    assert mongo[collection].count_documents({}) == 0
    reject = mongo.sync_rejects.find_one()
    assert reject["route"] == f"/api/sync/{collection}"
    assert reject["collection"] == collection
    assert reject["reason"] == response.json["message"]
    assert bad_field in json.loads(reject["errors"])
    assert json.loads(reject["payload"]) == json.loads(json.dumps(record))


def test_body_that_is_not_an_object_is_rejected(client, mongo):
    """A JSON array or string is not a record."""
    response = post(client, "cart_items", [cart_item()])
    assert response.status_code == 422
    assert mongo.cart_items.count_documents({}) == 0
    assert mongo.sync_rejects.count_documents({}) == 1


def test_null_is_accepted_for_nullable_columns(client, mongo):
    """color, description, avatar_url and the like may be null."""
    item = cart_item(color=None)
    assert post(client, "cart_items", item).json["result"] == "created"
    assert mongo.cart_items.find_one({"id": item["id"]})["color"] is None
    person = profile(full_name=None, avatar_url=None, body_measurements=None)
    assert post(client, "profiles", person).status_code == 200


def test_upsert_merges_only_the_fields_sent(client, mongo):
    """Absent fields keep their stored values."""
    item = cart_item(quantity=1, color="indigo")
    post(client, "cart_items", item)
    response = post(client, "cart_items", {"id": item["id"], "quantity": 4})
    assert response.json["result"] == "updated"
    stored = mongo.cart_items.find_one({"id": item["id"]})
    assert (stored["quantity"], stored["color"], stored["size"]) == (4, "indigo", "M")
    assert response.json["record"]["color"] == "indigo"


def test_new_record_must_carry_not_null_columns_without_default(client, mongo):
    """{id, quantity} for an unknown cart item names each missing field."""
    response = post(client, "cart_items", {"id": new_id(), "quantity": 2})
    assert response.status_code == 422
    assert set(response.json["errors"]["json"]) == {"user_id", "product_id", "size"}
    assert mongo.cart_items.count_documents({}) == 0
    assert mongo.sync_rejects.count_documents({"collection": "cart_items"}) == 1


def test_record_without_its_key_is_rejected(client, mongo):
    """A profile without user_id cannot be placed."""
    response = post(client, "profiles", {"email": "a@example.com"})
    assert response.status_code == 422
    assert "user_id" in response.json["errors"]["json"]
    assert mongo.profiles.count_documents({}) == 0


def test_defaults_apply_on_insert_only(client, mongo):
    """Column defaults fill a new record; they never overwrite a stored value."""
    item = cart_item()
    del item["quantity"]
    assert post(client, "cart_items", item).json["record"]["quantity"] == 1
    post(client, "cart_items", {"id": item["id"], "quantity": 5})
    post(client, "cart_items", {"id": item["id"], "color": "red"})
    assert mongo.cart_items.find_one({"id": item["id"]})["quantity"] == 5
    role = post(client, "user_roles", {"user_id": new_id()}).json["record"]
    assert role["role"] == "customer"
    new_product = product()
    del new_product["is_active"], new_product["stock_quantity"]
    stored = post(client, "products", new_product).json["record"]
    assert (stored["is_active"], stored["stock_quantity"]) == (True, 0)


def test_unknown_columns_are_kept(client, mongo):
    """A column Supabase gained after this release is stored and shown, not dropped."""
    item = cart_item(gift_wrap=True, notes={"for": "Asha"})
    record = post(client, "cart_items", item).json["record"]
    assert record["gift_wrap"] is True and record["notes"] == {"for": "Asha"}
    stored = mongo.cart_items.find_one({"id": item["id"]})
    assert stored["gift_wrap"] is True and stored["notes"] == {"for": "Asha"}


@pytest.mark.parametrize(("fields", "bad_path"), [
    ({"$where": "sleep(1000)"}, "$where"),
    ({"body_measurements": {"$gt": ""}}, "body_measurements.$gt"),
    ({"body_measurements": {"waist.cm": 70}}, "body_measurements.waist.cm"),
    ({"body_measurements": {"nested": [{"$set": 1}]}}, "body_measurements.nested[0].$set"),
    ({"style\x00": ["x"]}, "style\x00"),
    ({"_id": "000000000000000000000000"}, "_id"),
    ({"_fitkart": {"source": "webhook"}}, "_fitkart"),
])
def test_operator_injection_keys_are_rejected_anywhere(client, mongo, fields, bad_path):
    """Keys starting with $, containing . or NUL, and the mirror's own keys are refused."""
    response = post(client, "profiles", profile(**fields))
    assert response.status_code == 422
    assert bad_path in response.json["errors"]["json"]
    assert mongo.profiles.count_documents({}) == 0
    assert mongo.sync_rejects.count_documents({}) == 1


def test_provenance_is_recorded_apart_from_supabase_columns(client, mongo):
    """_fitkart holds when and through which path the server wrote, and a version."""
    before = datetime.now(UTC).replace(microsecond=0)
    item = cart_item()
    record = post(client, "cart_items", item).json["record"]
    assert "_fitkart" not in record and "_id" not in record
    first = mongo.cart_items.find_one({"id": item["id"]})["_fitkart"]
    assert first["source"] == "client" and first["version"] == 1
    assert before <= first["written_at"] <= datetime.now(UTC)
    post(client, "cart_items", {"id": item["id"], "quantity": 2})
    assert mongo.cart_items.find_one({"id": item["id"]})["_fitkart"]["version"] == 2


def test_fidelity_of_uuids_timestamps_and_jsonb(client, mongo):
    """UUIDs lowercase strings, timestamps UTC dates, jsonb stored as given with numbers as numbers."""
    user_id = new_id()
    person = profile(user_id=user_id.upper(), updated_at="2025-12-19T19:54:22.123456+05:30",
                     body_measurements={"height_cm": 165, "waist_in": 28.5, "notes": None,
                                        "history": [{"at": "2025-01-01", "chest_cm": 86}]})
    record = post(client, "profiles", person).json["record"]
    stored = mongo.profiles.find_one({"user_id": user_id})
    assert stored is not None and record["user_id"] == user_id
    assert stored["updated_at"] == datetime(2025, 12, 19, 14, 24, 22, 123000, tzinfo=UTC)
    assert record["updated_at"] == "2025-12-19T14:24:22.123+00:00"
    assert stored["body_measurements"] == person["body_measurements"]
    assert isinstance(stored["body_measurements"]["height_cm"], int)
    assert isinstance(stored["body_measurements"]["waist_in"], float)
    assert stored["style_preferences"] == ["minimal", "ethnic"]


def test_replaying_a_request_leaves_the_same_database_state(client, mongo):
    """Idempotent: the same upsert five times stores one document, unchanged after the first."""
    item = cart_item()
    results = [post(client, "cart_items", item).json["result"] for _ in range(5)]
    assert results == ["created"] + ["unchanged"] * 4
    snapshot = list(mongo.cart_items.find())
    post(client, "cart_items", item)
    assert list(mongo.cart_items.find()) == snapshot


def test_oversized_rejected_payload_is_capped_at_64_kib(client, mongo):
    """The reject keeps the first 64 KiB of the payload and says it was cut."""
    huge = product(description="d" * 200_000)
    assert post(client, "products", huge).status_code == 422
    reject = mongo.sync_rejects.find_one()
    assert reject["payload_truncated"] is True
    assert len(reject["payload"].encode()) <= 64 * 1024


def test_write_the_database_refuses_is_422_with_its_reason(client, mongo, mongo_server):
    """FerretDB v1 refuses nested arrays: that is the client's 422 and a reject, never a 500."""
    if not mongo_server.is_ferretdb:
        pytest.skip(f"{mongo_server.version} stores nested arrays; this refusal is FerretDB v1's")
    person = profile(body_measurements={"grid": [[1, 2], [3, 4]]})
    response = post(client, "profiles", person)
    assert response.status_code == 422
    assert "nested arrays" in response.json["message"]
    assert mongo.profiles.count_documents({}) == 0
    assert mongo.sync_rejects.count_documents({"collection": "profiles"}) == 1


@pytest.mark.parametrize("collection", ["profiles", "products", "orders", "cart_items",
                                        "wishlist_items", "user_roles"])
def test_every_collection_accepts_its_rows(client, mongo, collection):
    """Each of the six tables takes a full Supabase row and shows it back."""
    from testbed.data import records

    maker = {"profiles": records.profile, "products": records.product, "orders": records.order,
             "cart_items": records.cart_item, "wishlist_items": records.wishlist_item,
             "user_roles": records.user_role}[collection]
    row = maker()
    response = post(client, collection, row)
    assert response.status_code == 200 and response.json["result"] == "created"
    shown = response.json["record"]
    for name, value in row.items():
        if name.endswith("_at"):
            assert shown[name] == value[:23] + "+00:00"
        else:
            assert shown[name] == value, name
    assert mongo[collection].count_documents({}) == 1


def test_unique_id_clash_is_422_on_insert_and_on_update(client, mongo):
    """A second record claiming a stored record's id is refused, whether new or updated."""
    first, second = profile(), profile()
    post(client, "profiles", first)
    post(client, "profiles", second)
    for clash in ({**profile(), "id": first["id"]}, {"user_id": second["user_id"], "id": first["id"]}):
        response = post(client, "profiles", clash)
        assert response.status_code == 422 and "unique" in response.json["message"]
    assert mongo.profiles.find_one({"user_id": second["user_id"]})["id"] == second["id"]
    assert mongo.sync_rejects.count_documents({"collection": "profiles"}) == 2
