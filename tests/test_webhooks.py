"""Supabase Database Webhooks: every table and event, the shared secret, unordered and repeated delivery."""

import itertools
import random
from datetime import datetime
from decimal import Decimal

import pytest
from bson.decimal128 import Decimal128

from testbed.data import records
from testbed.data.records import new_id, stamp

# The engine's rules hold under each write plan (sync/plan.py): every test here runs under both.
WRITE_PLANS = ("point", "guarded")

SECRET = "webhook-shared-secret"
HEADERS = {"X-Webhook-Secret": SECRET}
MAKERS = {"profiles": records.profile, "products": records.product, "orders": records.order,
          "cart_items": records.cart_item, "wishlist_items": records.wishlist_item,
          "user_roles": records.user_role}
CHANGE = {"profiles": {"full_name": "Asha R"}, "products": {"price": 1299.99}, "orders": {"status": "shipped"},
          "cart_items": {"quantity": 4}, "wishlist_items": {"note": "gift"}, "user_roles": {"role": "seller"}}
KEYS = {"profiles": "user_id", "user_roles": "user_id"}  # the field a row is found by; the others: id
TIMESTAMPS = ("created_at", "updated_at")
MONEY = ("price", "total_amount")
MONEY_TYPES = {"double": float, "decimal128": Decimal128, "string": str}


@pytest.fixture
def hooks(make_app, database_uri, decimal_mode):
    """A client of the app with FITKART_WEBHOOK_SECRET set."""
    return make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode,
                    FITKART_WEBHOOK_SECRET=SECRET).test_client()


def event(kind: str, table: str, record: dict | None = None, old: dict | None = None) -> dict:
    """A payload as Supabase's webhooks send it."""
    return {"type": kind, "table": table, "schema": "public", "record": record, "old_record": old}


def deliver(client, payload: dict, headers: dict = HEADERS):
    """POST one webhook."""
    return client.post("/api/webhooks/supabase", json=payload, headers=headers)


def assert_mirrors(document: dict | None, row: dict, decimal_mode: str) -> None:
    """The stored document holds the row's columns and no others, each with the value Supabase sent.

    Timestamps are UTC dates equal to the sent ones at BSON's millisecond precision; money is a number of the
    decimal mode's type equal to the sent amount; arrays, jsonb and every other column are stored as sent.
    """
    assert document is not None, row
    stored = {field: value for field, value in document.items() if field not in ("_id", "_fitkart")}
    assert set(stored) == set(row)
    for field, sent in row.items():
        value = stored[field]
        if field in TIMESTAMPS:
            expected = datetime.fromisoformat(sent)
            assert value == expected.replace(microsecond=expected.microsecond // 1000 * 1000), (field, value, sent)
        elif field in MONEY:
            assert isinstance(value, MONEY_TYPES[decimal_mode]), (field, value)
            amount = value.to_decimal() if isinstance(value, Decimal128) else Decimal(str(value))
            assert amount == Decimal(str(sent)), (field, value, sent)
        else:
            assert value == sent and isinstance(value, type(sent)), (field, value, sent)


@pytest.mark.parametrize("table", MAKERS)
def test_insert_update_delete_for_every_table(hooks, mongo, decimal_mode, table):
    """INSERT creates, UPDATE changes, DELETE removes (by old_record), each with provenance `webhook`."""
    row = MAKERS[table]()
    assert deliver(hooks, event("INSERT", table, row)).json["result"] == "created"
    assert mongo[table].find_one()["_fitkart"]["source"] == "webhook"
    assert_mirrors(mongo[table].find_one(), row, decimal_mode)
    changed = {**row, **CHANGE[table]}
    if "updated_at" in row:
        changed["updated_at"] = stamp(30)
    assert deliver(hooks, event("UPDATE", table, changed, row)).json["result"] == "updated"
    assert mongo[table].count_documents({}) == 1
    assert_mirrors(mongo[table].find_one(), changed, decimal_mode)
    assert deliver(hooks, event("DELETE", table, None, changed)).json == {"deleted": 1}
    assert mongo[table].count_documents({}) == 0


def test_other_tables_and_schemas_are_ignored(hooks, mongo):
    """A change to a table the mirror does not keep is 202, and writes nothing."""
    ignored = deliver(hooks, event("INSERT", "product_reviews", {"id": new_id(), "rating": 5}))
    assert ignored.status_code == 202 and ignored.json["ignored"] is True
    other_schema = {**event("INSERT", "profiles", records.profile()), "schema": "auth"}
    assert deliver(hooks, other_schema).status_code == 202
    assert mongo.profiles.count_documents({}) == 0


def test_a_table_name_no_postgresql_table_can_have_is_refused_and_never_echoed(hooks, mongo):
    """A `table` of 900,000 characters: 422 with a short answer, not a 202 echoing it (PostgreSQL names are at most
    63 bytes)."""
    response = hooks.post("/api/webhooks/supabase", json=event("INSERT", "t" * 900_000, records.cart_item()),
                          headers=HEADERS)
    assert response.status_code == 422 and len(response.get_data()) < 4096
    assert "table" in response.json["errors"]["json"]


@pytest.mark.parametrize("headers", [{}, {"X-Webhook-Secret": "wrong"}, {"X-Webhook-Secret": SECRET + "x"}])
def test_wrong_or_missing_secret_is_401(hooks, mongo, headers):
    """Only the shared secret opens the door."""
    response = deliver(hooks, event("INSERT", "profiles", records.profile()), headers)
    assert response.status_code == 401
    assert mongo.profiles.count_documents({}) == 0


def test_webhooks_are_off_without_a_secret(client):
    """No FITKART_WEBHOOK_SECRET: the receiver says it is off."""
    response = deliver(client, event("INSERT", "profiles", records.profile()))
    assert response.status_code == 403 and "FITKART_WEBHOOK_SECRET" in response.json["message"]


def test_webhooks_come_from_supabase_not_loopback(hooks, mongo):
    """The secret, not the address, admits webhooks: they pass where other routes are loopback-only."""
    response = hooks.post("/api/webhooks/supabase", json=event("INSERT", "profiles", records.profile()),
                          headers=HEADERS, environ_base={"REMOTE_ADDR": "203.0.113.50"})
    assert response.status_code == 200
    assert hooks.get("/api/sync/profiles", environ_base={"REMOTE_ADDR": "203.0.113.50"}).status_code == 403


@pytest.mark.parametrize("payload", [{"type": "TRUNCATE", "table": "profiles"}, {"table": "profiles"}, ["x"],
                                     event("INSERT", "profiles", {"user_id": "nope"})])
def test_invalid_payloads_are_422_and_kept(hooks, mongo, payload):
    """A malformed webhook or record is refused and kept in sync_rejects."""
    assert deliver(hooks, payload).status_code == 422
    assert mongo.sync_rejects.count_documents({"source": "webhook"}) == 1


def history() -> tuple[list[dict], dict[str, dict[str, dict]]]:
    """Events for a set of records, and the final state they should leave.

    Tables with updated_at get an INSERT and two UPDATEs; some records are then deleted.
    cart_items and wishlist_items have no updated_at, so events with nothing to order them
    (two versions of one row) cannot be resolved by anyone: they get INSERT and DELETE only.
    """
    events, final = [], {table: {} for table in MAKERS}
    for index in range(4):
        for table in ("profiles", "products", "orders", "user_roles"):
            row = MAKERS[table](created_at=stamp(0), updated_at=stamp(1))
            versions = [row, {**row, "updated_at": stamp(2)}, {**row, **CHANGE[table], "updated_at": stamp(3)}]
            events.append(event("INSERT", table, versions[0]))
            events += [event("UPDATE", table, new, old) for old, new in itertools.pairwise(versions)]
            key = row[KEYS.get(table, "id")]
            if index % 2:
                events.append(event("DELETE", table, None, versions[-1]))
            else:
                final[table][key] = versions[-1]
        for table in ("cart_items", "wishlist_items"):
            row = MAKERS[table]()
            events.append(event("INSERT", table, row))
            if index % 2:
                events.append(event("DELETE", table, None, row))
            else:
                final[table][row["id"]] = row
    return events, final


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_shuffled_and_repeated_deliveries_converge(hooks, mongo, decimal_mode, seed):
    """Whatever the order, and with repeats, the mirror ends in the state Supabase is in."""
    events, final = history()
    shuffler = random.Random(seed)
    stream = events + shuffler.sample(events, len(events) // 2)  # half of them delivered twice
    shuffler.shuffle(stream)
    for payload in stream:
        assert deliver(hooks, payload).status_code == 200
    for table, expected in final.items():
        stored = {doc[KEYS.get(table, "id")]: doc for doc in mongo[table].find()}
        assert set(stored) == set(expected), table
        for key, row in expected.items():  # every column of the last version, with its value
            assert_mirrors(stored[key], row, decimal_mode)
    assert mongo.sync_rejects.count_documents({}) == 0
