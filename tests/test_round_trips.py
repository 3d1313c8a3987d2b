"""What each kind of write costs in database round trips under each write plan, pinned: a change that adds one fails.

Counted with pymongo's command monitoring, on the request's own thread (housekeeping and the spool's
replayer run on threads of their own). Not timed: the count is a property of the code, the time is the
benchmark's (BENCHMARKS.md). The point plan sends more commands than the guarded one, each by `_id`:
on FerretDB v1 each costs the same at any size, where one guarded command decodes the whole collection.
"""

import pytest
from pymongo import monitoring

from fitkart_server.sync.plan import POINT_AT_MOST
from testbed.commands import RequestCommands
from testbed.data.records import cart_item, order, profile, stamp

WRITE_PLANS = ("point", "guarded")
# pymongo's listeners are process-wide and apply to clients made after registering: one, idle unless watching.
COMMANDS = RequestCommands()
monitoring.register(COMMANDS)

# Per plan, what each request kind of the FitKart mix sends. A row that may be new is inserted first and its
# tombstones read after (so that a delete landing in between is seen: Tombstones.take_back_if_deleted).
EXPECTED = {
    "guarded": {
        "new row": ["insert", "find"],  # the insert, then its tombstone
        # The insert collides: the duplicate key merges it with one guarded command.
        "full row of a stored record": ["insert", "findAndModify"],
        "partial": ["findAndModify"],
        "unchanged partial": ["findAndModify", "find"],  # the guard needs something to change; the read says why
        # Stale, sent in full: the insert collides, the merge's guard misses, the read says "stale".
        "stale profile": ["insert", "findAndModify", "find"],
        "mix": 1.9,
    },
    "point": {
        "new row": ["insert", "find"],
        # The insert collides: the record is read by _id, decided, and changed by _id.
        "full row of a stored record": ["insert", "find", "findAndModify"],
        "partial": ["find", "findAndModify"],  # read by _id, decided, changed by _id (returning what it replaced)
        "unchanged partial": ["find"],
        "stale profile": ["insert", "find"],
        "mix": 2.25,
    },
}


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


def test_round_trips_per_kind_of_write(watched, write_plan):
    """Each request kind of the FitKart mix, command by command."""
    expected = EXPECTED[write_plan]
    item = cart_item()
    new_row = count(watched, "post", "/api/sync/cart_items", item)
    assert new_row == expected["new row"]
    same_row = count(watched, "post", "/api/sync/cart_items", {**item, "quantity": 3, "size": "L"})
    assert same_row == expected["full row of a stored record"]
    partial = count(watched, "post", "/api/sync/cart_items", {"id": item["id"], "quantity": 5})
    assert partial == expected["partial"]
    as_the_shop_sends_it = {name: value for name, value in profile().items() if name != "id"}
    assert count(watched, "post", "/api/sync/profiles", as_the_shop_sends_it) == ["insert", "find"]
    # A profile row with its Supabase id as well: the id's tombstone and the key's (user_id) are two.
    assert count(watched, "post", "/api/sync/profiles", profile()) == ["insert", "find", "find"]
    assert count(watched, "post", "/api/sync/orders", order()) == ["insert", "find"]
    # A delete: the record read (which tombstone it leaves depends on it), its tombstone, then the delete;
    # tombstone before delete, so no create racing it can bring the record back.
    assert count(watched, "delete", f"/api/sync/cart_items/{item['id']}") == ["find", "insert", "delete"]
    # Over the mix's shares (bench/mix.py): new 35%, full row of a stored record 15%, partial 20%, delete 10%,
    # new profile 10%, new order 10%.
    shares = {"new": (0.35, new_row), "same": (0.15, same_row), "partial": (0.20, partial),
              "delete": (0.10, ["find", "insert", "delete"]), "profile": (0.10, new_row), "order": (0.10, new_row)}
    assert sum(share * len(sent) for share, sent in shares.values()) == pytest.approx(expected["mix"])


def test_round_trips_when_the_rules_turn_a_write_away(watched, write_plan):
    """A write the rules turn away: unchanged, or stale; a delete of nothing."""
    expected = EXPECTED[write_plan]
    item = cart_item()
    count(watched, "post", "/api/sync/cart_items", item)
    unchanged = count(watched, "post", "/api/sync/cart_items", {"id": item["id"], "quantity": item["quantity"]})
    assert unchanged == expected["unchanged partial"]
    person = profile(updated_at=stamp(30))
    count(watched, "post", "/api/sync/profiles", person)
    stale = count(watched, "post", "/api/sync/profiles", {**person, "full_name": "Old", "updated_at": stamp(10)})
    assert stale == expected["stale profile"]
    gone = cart_item()
    assert count(watched, "delete", f"/api/sync/cart_items/{gone['id']}") == ["find", "insert"]


def test_round_trips_of_a_batch(watched, write_plan):
    """A batch of new rows, of partial updates, and the same full rows again (an outbox's retry)."""
    rows = [cart_item() for _ in range(10)]
    new = {"operations": [{"op": "upsert", "collection": "cart_items", "record": row} for row in rows]}
    partial = {"operations": [{"op": "upsert", "collection": "cart_items", "record": {"id": row["id"], "quantity": 9}}
                              for row in rows]}
    replay = {"operations": [{"op": "upsert", "collection": "cart_items", "record": {**row, "quantity": 9}}
                             for row in rows]}
    sent = [count(watched, "post", "/api/sync/batch", body) for body in (new, partial, replay)]
    if write_plan == "guarded":
        assert sent == [
            ["insert", "find"],  # one bulk insert, then the tombstones in one read
            ["find", "find", "update"],  # the records, the tombstones, one bulk update
            ["insert", "find", "find"],  # insert (every key collides), only the collided records, their tombstones
        ]
    else:  # each by _id: a tombstone per new row; a record and its change per partial; nothing written unchanged
        assert sent == [
            ["insert"] + ["find"] * 10,
            ["find"] * 10 + ["findAndModify"] * 10,
            ["insert"] + ["find"] * 10,
        ]


def test_a_batch_with_deletes_is_written_in_runs(watched, write_plan):
    """A delete in a batch is applied alone, and the distinct upserts around it in bulk: one insert per run."""
    first, second = [cart_item() for _ in range(5)], [cart_item() for _ in range(5)]
    gone = cart_item()
    count(watched, "post", "/api/sync/cart_items", gone)
    operations = ([{"op": "upsert", "collection": "cart_items", "record": row} for row in first]
                  + [{"op": "delete", "collection": "cart_items", "record": {"id": gone["id"]}}]
                  + [{"op": "upsert", "collection": "cart_items", "record": row} for row in second])
    sent = count(watched, "post", "/api/sync/batch", {"operations": operations})
    tombstone_reads = ["find"] if write_plan == "guarded" else ["find"] * 5
    # A run's insert, its tombstones; the delete's read, tombstone and delete; the next run.
    assert sent == ["insert", *tombstone_reads, "find", "insert", "delete", "insert", *tombstone_reads]


def test_a_large_batch_reads_its_records_at_once_under_either_plan(watched, write_plan):
    """Past POINT_AT_MOST records a point read each costs more than one `$in` (on FerretDB v1 each is a scan in
    SQL, the `$in` one decoding in Go): the records and tombstones are read at once; the changes still go by _id."""
    rows = [cart_item() for _ in range(POINT_AT_MOST + 4)]
    count(watched, "post", "/api/sync/batch", {"operations": [
        {"op": "upsert", "collection": "cart_items", "record": row} for row in rows]})
    partial = count(watched, "post", "/api/sync/batch", {"operations": [
        {"op": "upsert", "collection": "cart_items", "record": {"id": row["id"], "quantity": 9}} for row in rows]})
    changes = ["update"] if write_plan == "guarded" else ["findAndModify"] * len(rows)
    assert partial == ["find", "find", *changes]
