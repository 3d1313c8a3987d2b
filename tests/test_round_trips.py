"""What each kind of write costs in database round trips, pinned: a change that adds one fails here.

Counted with pymongo's command monitoring, on the request's own thread (housekeeping and the spool's
replayer run on threads of their own). Not timed: the count is a property of the code, the time is the
benchmark's (BENCHMARKS.md).
"""

import pytest
from pymongo import monitoring

from testbed.commands import RequestCommands
from testbed.data.records import cart_item, order, profile, stamp

# pymongo's listeners are process-wide and apply to clients made after registering: one, idle unless watching.
COMMANDS = RequestCommands()
monitoring.register(COMMANDS)


@pytest.fixture
def watched(app):
    """A client of an app whose database client was made after the listener, warmed up (indexes made)."""
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    assert client.post("/api/sync/profiles", json=profile()).status_code == 200
    return client


def count(client, method: str, path: str, body=None) -> list[str]:
    """The commands one request sends, after checking it succeeded."""
    answers = []
    sent = COMMANDS.during(lambda: answers.append(getattr(client, method)(path, json=body)))
    assert answers[0].status_code == 200, answers[0].get_json()
    return sent


def test_round_trips_per_kind_of_write(watched):
    """Each request kind of the FitKart mix, command by command (one guarded command where the rules allow)."""
    item = cart_item()
    new_row = count(watched, "post", "/api/sync/cart_items", item)
    assert new_row == ["find", "insert"]  # its tombstone, then the insert
    same_row = count(watched, "post", "/api/sync/cart_items", {**item, "quantity": 3, "size": "L"})
    # A full row may be new: its tombstone is read and it is inserted; the duplicate key merges it.
    assert same_row == ["find", "insert", "findAndModify"]
    partial = count(watched, "post", "/api/sync/cart_items", {"id": item["id"], "quantity": 5})
    assert partial == ["findAndModify"]
    as_the_shop_sends_it = {name: value for name, value in profile().items() if name != "id"}
    assert count(watched, "post", "/api/sync/profiles", as_the_shop_sends_it) == ["find", "insert"]
    # A profile row with its Supabase id as well: the id's tombstone and the key's (user_id) are two.
    assert count(watched, "post", "/api/sync/profiles", profile()) == ["find", "find", "insert"]
    assert count(watched, "post", "/api/sync/orders", order()) == ["find", "insert"]
    # A delete: the record read (which tombstone it leaves depends on it), its tombstone, then the delete;
    # tombstone before delete, so no create racing it can bring the record back.
    assert count(watched, "delete", f"/api/sync/cart_items/{item['id']}") == ["find", "insert", "delete"]
    # Over the mix's shares (bench/mix.py): 0.35*2 + 0.15*3 + 0.20*1 + 0.10*3 (deletes) + 0.10*2 + 0.10*2.
    shares = {"new": (0.35, new_row), "same": (0.15, same_row), "partial": (0.20, partial),
              "delete": (0.10, ["find", "insert", "delete"]), "profile": (0.10, new_row), "order": (0.10, new_row)}
    assert sum(share * len(sent) for share, sent in shares.values()) == pytest.approx(2.05)


def test_round_trips_when_the_guard_misses(watched):
    """A write the guard turns away is read once to say why: unchanged, or stale; a delete of nothing."""
    item = cart_item()
    count(watched, "post", "/api/sync/cart_items", item)
    # Unchanged: the guard needs something to change; the read says "unchanged".
    assert count(watched, "post", "/api/sync/cart_items", {"id": item["id"], "quantity": item["quantity"]}) == [
        "findAndModify", "find"]
    person = profile(updated_at=stamp(30))
    count(watched, "post", "/api/sync/profiles", person)
    # Stale: an older version sent in full; its insert collides, the merge's guard misses, the read says "stale".
    stale = count(watched, "post", "/api/sync/profiles", {**person, "full_name": "Old", "updated_at": stamp(10)})
    assert stale == ["find", "find", "insert", "findAndModify", "find"]
    gone = cart_item()
    assert count(watched, "delete", f"/api/sync/cart_items/{gone['id']}") == ["find", "insert"]


def test_round_trips_of_a_batch(watched):
    """A batch of new rows: its tombstones read, then one bulk insert; partial updates: their records read too."""
    rows = [cart_item() for _ in range(10)]
    new = {"operations": [{"op": "upsert", "collection": "cart_items", "record": row} for row in rows]}
    assert count(watched, "post", "/api/sync/batch", new) == ["find", "insert"]
    partial = {"operations": [{"op": "upsert", "collection": "cart_items", "record": {"id": row["id"], "quantity": 9}}
                              for row in rows]}
    assert count(watched, "post", "/api/sync/batch", partial) == ["find", "find", "update"]
    # The same full rows again (an outbox's retry): every insert collides, and only those keys are read, at once.
    replay = count(watched, "post", "/api/sync/batch", {"operations": [
        {"op": "upsert", "collection": "cart_items", "record": {**row, "quantity": 9}} for row in rows]})
    assert replay == ["find", "insert", "find", "find"]  # tombstones, insert, the collided records, their tombstones
