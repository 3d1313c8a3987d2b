"""The spool: writes the database cannot take now are kept on disk, answered 202, and applied in order later."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pymongo
import pytest
from pymongo import monitoring

from fitkart_server.model.policy import Caller
from fitkart_server.storage import replay as replay_module
from fitkart_server.storage.replay import ReplayFault
from fitkart_server.storage.spool import MAX_PAUSE_SECONDS, Spool, add_column, salvage
from testbed.commands import WriteCommands
from testbed.data.records import cart_item, new_id, order, profile
from testbed.servers.gunicorn import GunicornServer, request
from testbed.waiting import wait_until

from .test_metrics import samples, value
from .tokens import JWT_SECRET, bearer, claims_for, hs256

# The write commands sent to cart_items (registered before any app's client is made).
CART_WRITES = WriteCommands("cart_items")
monitoring.register(CART_WRITES)
# Longest a write may take to be queued while the database is away: the first waits for server selection and
# pymongo's one retry (2 x FITKART_DB_TIMEOUT_MS, 2 s), the rest queue behind it. The bound tells "answered at
# the app's own timeouts" from "waits for the database" (pymongo's default server selection is 30 s); how fast
# writes are queued is a benchmark figure.
QUEUE_BOUND = 20


@pytest.fixture
def database(own_server):
    """The test database on that server, through pymongo (it waits for the server to come back)."""
    with pymongo.MongoClient(own_server.base_uri, tz_aware=True, serverSelectionTimeoutMS=10_000) as client:
        yield client["test_spool"]


@pytest.fixture
def spool_app(make_app, own_server, decimal_mode):
    """An app on the test's own server."""
    return make_app(FITKART_MONGODB_URI=f"{own_server.base_uri}/test_spool", FITKART_DECIMAL_MODE=decimal_mode)


def test_legacy_writes_while_the_database_is_away_are_queued_and_applied_in_order(own_server, spool_app, database):
    """Database stopped: the old client's writes are 202 at once; back: applied in arrival order."""
    client = spool_app.test_client()
    kept, removed = cart_item(quantity=1), cart_item()
    assert client.post("/api/sync/cart", json=removed).status_code == 200
    own_server.stop()
    seconds = []

    def timed(send):
        started = time.monotonic()
        answer = send()
        seconds.append(time.monotonic() - started)
        return answer

    answers = [timed(lambda: client.post("/api/sync/cart", json=kept)),
               timed(lambda: client.post("/api/sync/cart", json={"id": kept["id"], "quantity": 2})),
               timed(lambda: client.post("/api/sync/cart", json={"id": kept["id"], "quantity": 7})),
               timed(lambda: client.delete(f"/api/sync/cart/{removed['id']}")),
               # a late replay of its create: stale, not resurrected
               timed(lambda: client.post("/api/sync/cart", json=removed)),
               timed(lambda: client.post("/api/sync/profile", json=profile())),
               timed(lambda: client.post("/api/sync/order", json=order()))]
    assert [answer.status_code for answer in answers] == [202] * 7
    assert {answer.json["result"] for answer in answers} == {"queued"}
    assert max(seconds) < QUEUE_BOUND, f"a write waited {max(seconds):.1f} s for the database: {seconds}"
    assert client.get("/api/sync/cart_items").status_code == 503  # reads still need the database
    ready = client.get("/readyz").json
    assert ready["status"] == "unavailable" and ready["spool"]["entries"] == 7
    scraped = samples(client.get("/metrics").get_data(as_text=True))
    assert value(scraped, "fitkart_spool_entries") == 7 and value(scraped, "fitkart_spool_bytes") > 0
    assert 'id="spool" class="down">7<' in client.get("/").get_data(as_text=True)

    own_server.start()
    assert wait_until(lambda: client.get("/readyz").json["spool"]["entries"] == 0)
    assert database.cart_items.find_one({"id": kept["id"]})["quantity"] == 7
    assert database.cart_items.count_documents({"id": removed["id"]}) == 0
    assert database.profiles.count_documents({}) == 1 and database.orders.count_documents({}) == 1
    assert client.post("/api/sync/cart", json=cart_item()).status_code == 200  # spool empty: straight through


def test_a_refused_write_while_away_is_422_and_its_reject_lands_later(own_server, spool_app, database):
    """Validation needs no database: an invalid write is 422 at once, and its reject reaches sync_rejects."""
    client = spool_app.test_client()
    assert client.post("/api/sync/cart_items", json=cart_item()).status_code == 200
    own_server.stop()
    response = client.post("/api/sync/cart_items", json={"id": "not-a-uuid"})
    assert response.status_code == 422 and "id" in response.json["errors"]["json"]
    own_server.start()
    client.get("/readyz")
    assert wait_until(lambda: database.sync_rejects.count_documents({}) == 1)


def test_row_rules_are_checked_at_replay_as_the_original_caller(own_server, make_app, decimal_mode, database):
    """B's queued write to A's cart item is accepted as queued, then refused at replay (403 reject), A's row intact."""
    client = make_app(FITKART_MONGODB_URI=f"{own_server.base_uri}/test_spool", FITKART_DECIMAL_MODE=decimal_mode,
                      SUPABASE_JWT_SECRET=JWT_SECRET).test_client()
    alice, bob = new_id(), new_id()
    item = cart_item(user_id=alice, quantity=1)
    assert client.post("/api/sync/cart_items", json=item, headers=bearer(hs256(claims_for(alice)))).status_code == 200
    own_server.stop()
    response = client.post("/api/sync/cart_items", json={**item, "user_id": bob, "quantity": 99},
                           headers=bearer(hs256(claims_for(bob))))
    assert response.status_code == 202
    own_server.start()
    client.get("/readyz")
    assert wait_until(lambda: database.sync_rejects.count_documents({"status": 403}) == 1)
    assert database.cart_items.find_one({"id": item["id"]})["quantity"] == 1
    (reject,) = database.sync_rejects.find()
    assert reject["caller"] == {"role": "authenticated", "user_id": bob}  # who sent it; never a token


def test_a_full_spool_is_503(own_server, make_app, decimal_mode):
    """Past FITKART_SPOOL_MAX_MB nothing more is kept: 503 with Retry-After, as without a spool."""
    client = make_app(FITKART_MONGODB_URI=f"{own_server.base_uri}/test_spool", FITKART_DECIMAL_MODE=decimal_mode,
                      FITKART_SPOOL_MAX_MB=1).test_client()
    own_server.stop()
    statuses = [client.post("/api/sync/cart_items", json=cart_item(note="x" * 90_000)).status_code
                for _ in range(14)]
    assert statuses[0] == 202 and statuses[-1] == 503
    full = client.post("/api/sync/cart_items", json=cart_item(note="x" * 90_000))
    assert full.headers["Retry-After"] == "2" and "FITKART_SPOOL_MAX_MB" in full.json["message"]


def test_a_batch_that_would_overfill_the_spool_is_kept_whole_or_not_at_all(own_server, make_app, decimal_mode):
    """While away, a batch is queued in one step: past FITKART_SPOOL_MAX_MB it is a 503 and none of it is kept."""
    app = make_app(FITKART_MONGODB_URI=f"{own_server.base_uri}/test_spool", FITKART_DECIMAL_MODE=decimal_mode,
                   FITKART_SPOOL_MAX_MB=1)
    client = app.test_client()
    own_server.stop()
    for _ in range(6):  # about 540 KB queued
        assert client.post("/api/sync/cart_items", json=cart_item(note="x" * 90_000)).status_code == 202
    operations = [{"op": "upsert", "collection": "cart_items", "record": cart_item(note="x" * 90_000)}
                  for _ in range(6)]  # about 540 KB more: the first five would fit, the sixth not
    assert client.post("/api/sync/batch", json={"operations": operations}).status_code == 503
    assert client.get("/readyz").json["spool"]["entries"] == 6
    fits = client.post("/api/sync/batch", json={"operations": operations[:4]}).json["results"]
    assert [result["result"] for result in fits] == ["queued"] * 4
    assert client.get("/readyz").json["spool"]["entries"] == 10


def test_a_batch_while_away_is_queued_per_operation(own_server, spool_app, database):
    """Each valid operation is queued, each invalid one refused in its place."""
    client = spool_app.test_client()
    assert client.post("/api/sync/cart_items", json=cart_item()).status_code == 200
    own_server.stop()
    operations = [{"op": "upsert", "collection": "cart_items", "record": cart_item()},
                  {"op": "upsert", "collection": "cart_items", "record": {"id": "bad"}},
                  {"op": "delete", "collection": "cart_items", "record": {"id": new_id()}}]
    results = client.post("/api/sync/batch", json={"operations": operations}).json["results"]
    assert [results[0]["result"], results[1]["error"]["code"], results[2]["result"]] == ["queued", 422, "queued"]
    own_server.start()
    client.get("/readyz")
    assert wait_until(lambda: database.cart_items.count_documents({}) == 2)


def test_queued_writes_survive_restarts_and_kill_9(own_server, decimal_mode, tmp_path, database):
    """Under gunicorn: queued, server restarted while still away (still accepted), workers killed with -9,
    then a new server replays the spool file once the database is back."""
    uri = f"{own_server.base_uri}/test_spool"
    first = GunicornServer(uri, decimal_mode, workers=2).start()
    spool_env = {"FITKART_SPOOL_PATH": first.env["FITKART_SPOOL_PATH"],
                 "FITKART_RATELIMIT_STORAGE": first.env["FITKART_RATELIMIT_STORAGE"]}
    items = [cart_item(quantity=index + 1) for index in range(6)]
    try:
        assert request(f"{first.url}/healthz")[0] == 200
        own_server.stop()
        assert [request(f"{first.url}/api/sync/cart", item)[0] for item in items[:3]] == [202] * 3
    finally:
        first.stop()
    second = GunicornServer(uri, decimal_mode, workers=2, env=spool_env).start()
    try:
        assert request(f"{second.url}/readyz")[1]["spool"]["entries"] == 3
        assert [request(f"{second.url}/api/sync/cart", item)[0] for item in items[3:]] == [202] * 3
        for pid in second.worker_pids():
            os.kill(pid, signal.SIGKILL)
        second.process.kill()
        second.process.wait()
    finally:
        second.stop()
    own_server.start()
    third = GunicornServer(uri, decimal_mode, workers=2, env=spool_env).start()
    try:
        assert wait_until(lambda: database.cart_items.count_documents({}) == 6)
        stored = {doc["id"]: doc["quantity"] for doc in database.cart_items.find()}
        assert stored == {item["id"]: item["quantity"] for item in items}
        assert wait_until(lambda: request(f"{third.url}/readyz")[1]["spool"]["entries"] == 0)
    finally:
        third.stop()


def test_the_spool_command_shows_replays_and_drops(own_server, spool_app):
    """`flask fitkart spool` lists what waits; --replay applies it; --drop asks first."""
    client = spool_app.test_client()
    runner = spool_app.test_cli_runner()
    assert client.post("/api/sync/cart_items", json=cart_item()).status_code == 200
    own_server.stop()
    for _ in range(2):
        client.post("/api/sync/cart_items", json=cart_item())
    shown = runner.invoke(args=["fitkart", "spool"])
    assert shown.exit_code == 0 and "queued writes: 2" in shown.output
    assert runner.invoke(args=["fitkart", "spool", "--replay"]).exit_code == 2
    declined = runner.invoke(args=["fitkart", "spool", "--drop"], input="n\n")
    assert "dropped" not in declined.output
    assert "queued writes: 2" in runner.invoke(args=["fitkart", "spool"]).output
    dropped = runner.invoke(args=["fitkart", "spool", "--drop", "--yes"])
    assert "dropped 2" in dropped.output
    assert "queued writes: 0" in runner.invoke(args=["fitkart", "spool"]).output


def test_an_entry_that_cannot_be_replayed_is_set_aside_not_blocking(spool_app, database):
    """A queued entry the engine cannot apply becomes a reject (status 500); the entries behind it go on."""
    spool = spool_app.extensions["fitkart_spool"]
    later = cart_item()
    spool.append("delete", "no_such_table", {"id": new_id()}, Caller("service_role"), "client", "/api/sync/x")
    spool.append("upsert", "cart_items", later, Caller("service_role"), "client", "/api/sync/cart")
    spool_app.extensions["fitkart_replayer"].kick()
    assert wait_until(lambda: database.cart_items.count_documents({"id": later["id"]}) == 1)
    assert database.sync_rejects.count_documents({"status": 500}) == 1
    assert spool.is_empty()


def test_a_backlog_of_one_callers_mixed_writes_is_replayed_in_runs(spool_app, database):
    """One caller's queued creates through both cart routes, a partial update and deletes between them are
    replayed in order, the distinct creates around each delete written together: one insert per run."""
    spool = spool_app.extensions["fitkart_spool"]
    shop = Caller("service_role")
    doomed, kept = cart_item(), cart_item(quantity=1)
    rows = [cart_item() for _ in range(12)]
    queued = [("upsert", doomed, "/api/sync/cart"), ("upsert", kept, "/api/sync/cart_items")]
    queued += [("upsert", row, "/api/sync/cart" if number % 2 else "/api/sync/cart_items")
               for number, row in enumerate(rows[:6])]
    queued += [("delete", {"id": doomed["id"]}, f"/api/sync/cart/{doomed['id']}"),
               ("upsert", {"id": kept["id"], "quantity": 5}, "/api/sync/cart")]
    queued += [("upsert", row, "/api/sync/cart") for row in rows[6:]]
    queued += [("upsert", doomed, "/api/sync/cart")]  # a late replay of the deleted row's create: stale
    for kind, body, route in queued:
        spool.append(kind, "cart_items", body, shop, "client", route)
    writes = CART_WRITES.during(spool_app.extensions["fitkart_replayer"].replay)
    assert spool.is_empty()
    assert database.cart_items.count_documents({}) == 13
    assert database.cart_items.find_one({"_id": kept["id"]})["quantity"] == 5
    assert database.cart_items.count_documents({"_id": doomed["id"]}) == 0
    # The eight creates; the delete alone; the six creates after it with the partial update (a run of distinct
    # records: inserted, then changed); the stale create writes nothing.
    point = spool_app.extensions["fitkart_store"].chosen_write_plan == "point"
    assert writes == ["insert", "delete", "insert", "findAndModify" if point else "update"]


def test_a_spool_written_by_an_earlier_release_is_upgraded_and_replayed(make_app, database_uri, decimal_mode,
                                                                          local_files, mongo):
    """A spool file without the client-version column (written before clients sent versions): the server adds
    the column and replays what the file held."""
    row = cart_item()
    with sqlite3.connect(local_files["FITKART_SPOOL_PATH"]) as old:
        old.execute("CREATE TABLE entries (seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, "
                    "kind TEXT NOT NULL, collection TEXT, body TEXT NOT NULL, role TEXT NOT NULL, user_id TEXT, "
                    "source TEXT NOT NULL, route TEXT, size INTEGER NOT NULL)")
        old.execute("INSERT INTO entries (at, kind, collection, body, role, source, route, size) "
                    "VALUES (?, 'upsert', 'cart_items', ?, 'service_role', 'client', '/api/sync/cart', 10)",
                    (time.time(), json.dumps(row)))
    client = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode).test_client()
    client.get("/readyz")
    assert wait_until(lambda: mongo.cart_items.count_documents({"id": row["id"]}) == 1)
    with sqlite3.connect(local_files["FITKART_SPOOL_PATH"]) as upgraded:
        add_column(upgraded, "entries", "version TEXT")  # a second worker's attempt: already there, no error
        assert "version" in {column[1] for column in upgraded.execute("PRAGMA table_info(entries)")}


def test_a_locked_spool_file_delays_the_replay_and_never_ends_it(own_server, spool_app, database, local_files):
    """The spool's file held locked (an operator's sqlite3 shell in a transaction) past the busy timeout while the
    database comes back: the replayer fails, says so in /readyz, tries again, and drains once the lock goes."""
    client = spool_app.test_client()
    rows = [cart_item() for _ in range(5)]
    own_server.stop()
    assert {client.post("/api/sync/cart", json=row).json["result"] for row in rows} == {"queued"}
    shell = sqlite3.connect(local_files["FITKART_SPOOL_PATH"], isolation_level=None)
    shell.execute("BEGIN EXCLUSIVE")
    try:
        own_server.start()
        replayer = spool_app.extensions["fitkart_replayer"]
        # Twice: the second attempt meets the lock outside a run (taking the lease), where a thread used to die.
        assert wait_until(lambda: replayer.fault is not None and replayer.fault.attempts >= 2, seconds=60)
        spool = client.get("/readyz").json["spool"]  # read beside the lock (the file is in WAL mode)
        assert spool["replay"] == "failing" and "locked" in spool["replay_error"]
    finally:
        shell.execute("ROLLBACK")
        shell.close()
    assert wait_until(lambda: database.cart_items.count_documents({}) == len(rows), seconds=60)
    assert wait_until(lambda: client.get("/readyz").json["spool"]["replay"] == "ok")


def test_a_failing_replayer_is_shown_on_the_status_page_and_in_metrics(spool_app):
    """What a failing replayer says where an operator looks (its fault as the replayer keeps it)."""
    client = spool_app.test_client()
    spool_app.extensions["fitkart_replayer"].fault = ReplayFault("OperationalError: disk I/O error", time.time(), 3)
    page = client.get("/").get_data(as_text=True)
    assert 'id="spool-replay"' in page and "disk I/O error" in page and "3 tries" in page
    assert value(samples(client.get("/metrics").get_data(as_text=True)), "fitkart_spool_replay_failing") == 1
    assert client.get("/readyz").json["spool"]["replay_attempts"] == 3


def test_a_replayer_that_lost_its_lease_stops(spool_app, database, monkeypatch, local_files):
    """Another replayer took the lease in the middle of a drain (this one stalled past it): this one stops after
    the run it was applying, and the rest is left to the new holder."""
    spool = spool_app.extensions["fitkart_spool"]
    for _ in range(20):  # twenty callers: twenty runs
        spool.append("upsert", "cart_items", cart_item(), Caller("service_role", new_id()), "client", "/api/sync/cart")
    applied = []
    real = replay_module.apply_run

    def then_taken(engine, run):
        real(engine, run)
        applied.append(run)
        if len(applied) == 5:
            with sqlite3.connect(local_files["FITKART_SPOOL_PATH"]) as other:
                other.execute("UPDATE lease SET owner = 'another-host:1:1', until = ? WHERE id = 1",
                              (time.time() + 60,))

    monkeypatch.setattr(replay_module, "apply_run", then_taken)
    assert spool.take_lease()
    assert spool_app.extensions["fitkart_replayer"].replay() == 5
    assert database.cart_items.count_documents({}) == 5 and spool.depth().entries == 15


def test_a_stopped_replayer_lets_go_of_the_lease(spool_app):
    """A process that stops (its app closing, the interpreter exiting) releases the lease at once."""
    spool = spool_app.extensions["fitkart_spool"]
    assert spool.take_lease()
    spool_app.extensions["fitkart_replayer"].stop()
    other = Spool(spool.path, spool.max_bytes)
    assert other.take_lease()


def hold_lease(path: str, seconds: float = 60) -> None:
    """Another process's replayer holds the spool's lease for `seconds`."""
    with sqlite3.connect(path) as other:
        other.execute("UPDATE lease SET owner = 'another-host:1:1', until = ? WHERE id = 1", (time.time() + seconds,))


def test_while_another_process_holds_the_lease_nothing_is_replayed_here(spool_app, database, local_files):
    """One replayer at a time: with the lease held elsewhere, this process's replayer waits, and
    `flask fitkart spool --replay` says so with its own exit status (3)."""
    spool = spool_app.extensions["fitkart_spool"]
    spool.append("upsert", "cart_items", cart_item(), Caller("service_role"), "client", "/api/sync/cart")
    hold_lease(local_files["FITKART_SPOOL_PATH"])
    spool_app.extensions["fitkart_replayer"].kick()
    time.sleep(3)  # three of its attempts to take the lease
    assert database.cart_items.count_documents({}) == 0 and spool.depth().entries == 1
    busy = spool_app.test_cli_runner().invoke(args=["fitkart", "spool", "--replay"])
    assert busy.exit_code == 3 and "replaying" in busy.output


def test_one_requests_queued_changes_are_replayed_in_the_order_they_came(own_server, spool_app, database):
    """Two changes of one cart row in one request (one arrival time, no updated_at, no version): the replay's
    order alone decides, and it is the order they came in."""
    client = spool_app.test_client()
    row = cart_item(quantity=1)
    assert client.post("/api/sync/cart", json=row).status_code == 200
    own_server.stop()
    answer = client.post("/api/sync/batch", json={"operations": [
        {"op": "upsert", "collection": "cart_items", "record": {"id": row["id"], "quantity": quantity}}
        for quantity in (2, 3, 4)]})
    assert {result["result"] for result in answer.json["results"]} == {"queued"}
    own_server.start()
    assert wait_until(lambda: client.get("/readyz").json["spool"]["entries"] == 0)
    assert database.cart_items.find_one({"_id": row["id"]})["quantity"] == 4


def test_a_delete_between_queued_upserts_is_replayed_between_them(own_server, spool_app, database):
    """A profile written, deleted and made again (a new id) in one queued request: replayed in that order, the new
    profile stays (upserts on either side of the delete are not applied together)."""
    client = spool_app.test_client()
    made = datetime.now(UTC)
    person = profile(created_at=made.isoformat(), updated_at=made.isoformat())
    again_at = made + timedelta(milliseconds=20)
    again = {**person, "id": new_id(), "full_name": "Asha again", "created_at": again_at.isoformat(),
             "updated_at": again_at.isoformat()}
    at = int(made.timestamp() * 1000)
    own_server.stop()
    # As the TypeScript client sends them: each change with its version (when it was made, its outbox place).
    answer = client.post("/api/sync/batch", json={"operations": [
        {"op": "upsert", "collection": "profiles", "record": person, "version": {"at": at, "seq": 1}},
        {"op": "delete", "collection": "profiles", "record": {"user_id": person["user_id"]},
         "version": {"at": at + 10, "seq": 2}},
        {"op": "upsert", "collection": "profiles", "record": again, "version": {"at": at + 20, "seq": 3}}]})
    assert {result["result"] for result in answer.json["results"]} == {"queued"}
    own_server.start()
    assert wait_until(lambda: client.get("/readyz").json["spool"]["entries"] == 0)
    assert database.profiles.find_one({"user_id": person["user_id"]})["id"] == again["id"]


def damaged_app(make_app, database_uri, decimal_mode, path: str):
    """An app whose spool file is at `path` (the database up)."""
    return make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode, FITKART_SPOOL_PATH=path)


def test_a_spool_file_of_garbage_is_moved_aside_and_the_server_starts(make_app, database_uri, decimal_mode,
                                                                       tmp_path):
    """Garbage where the spool file should be: the server starts, serves writes, names the file it moved aside
    (log, /readyz, status page), and `spool --file` says what it could read of it."""
    path = tmp_path / "spool" / "spool.sqlite3"
    path.parent.mkdir()
    path.write_bytes(b"not a database at all " * 500)
    app = damaged_app(make_app, database_uri, decimal_mode, str(path))
    client = app.test_client()
    assert client.post("/api/sync/cart", json=cart_item()).json["result"] == "created"
    problem = client.get("/readyz").json["spool"]["problem"]
    moved = problem.split("moved to ")[1].split(" ")[0]
    assert "damaged" in problem and os.path.exists(moved) and "flask fitkart spool --file" in problem
    assert 'id="spool-problem"' in client.get("/").get_data(as_text=True)
    read = app.test_cli_runner().invoke(args=["fitkart", "spool", "--file", moved])
    assert read.exit_code == 2 and "read 0 entries" in read.output and "not a database" in read.output


def test_a_spool_file_cut_in_half_is_moved_aside_and_what_it_holds_can_be_read(make_app, database_uri,
                                                                                decimal_mode, tmp_path):
    """A spool file cut short (a disk that failed mid-write): set aside, a new one started, and the entries it
    still yields are listed one JSON line each."""
    path = tmp_path / "spool.sqlite3"
    with closing(sqlite3.connect(path)) as old:
        old.execute("CREATE TABLE entries (seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, "
                    "kind TEXT NOT NULL, collection TEXT, body TEXT NOT NULL, role TEXT NOT NULL, user_id TEXT, "
                    "source TEXT NOT NULL, route TEXT, size INTEGER NOT NULL)")
        old.executemany("INSERT INTO entries (at, kind, collection, body, role, source, route, size) "
                        "VALUES (?, 'upsert', 'cart_items', ?, 'service_role', 'client', '/api/sync/cart', 2000)",
                        [(time.time(), json.dumps({**cart_item(), "color": "x" * 2000})) for _ in range(300)])
        old.commit()
    with open(path, "r+b") as cut:
        cut.truncate(path.stat().st_size // 2)
    app = damaged_app(make_app, database_uri, decimal_mode, str(path))
    client = app.test_client()
    assert client.post("/api/sync/cart", json=cart_item()).json["result"] == "created"
    problem = client.get("/readyz").json["spool"]["problem"]
    moved = problem.split("moved to ")[1].split(" ")[0]
    read = app.test_cli_runner().invoke(args=["fitkart", "spool", "--file", moved])
    assert read.exit_code in (0, 2) and "entries of" in read.output
    assert read.output.count('"op": "upsert"') > 0


def test_an_unwritable_spool_leaves_the_spool_off_and_the_server_up(own_server, make_app, decimal_mode):
    """A spool file that cannot be created (here under /proc, which refuses even root): the server starts and
    serves direct writes; while the database is away a write is a 503 saying nothing was kept."""
    app = make_app(FITKART_MONGODB_URI=f"{own_server.base_uri}/test_spool", FITKART_DECIMAL_MODE=decimal_mode,
                   FITKART_SPOOL_PATH="/proc/fitkart-spool/spool.sqlite3")
    client = app.test_client()
    assert client.post("/api/sync/cart", json=cart_item()).json["result"] == "created"
    assert "cannot be written" in client.get("/readyz").json["spool"]["problem"]
    own_server.stop()
    refused = client.post("/api/sync/cart", json=cart_item())
    assert refused.status_code == 503 and "cannot be written" in refused.json["message"]
    assert refused.headers["Retry-After"]


def test_a_full_disk_under_the_spool_is_a_503_that_keeps_nothing(own_server, spool_app, database):
    """The spool's disk full (shown with SQLite's own limit, PRAGMA max_page_count, which fails a write with the
    same "database or disk is full" a full disk does): a write is a 503 with Retry-After, never a 500, and what was
    kept before is replayed."""
    client = spool_app.test_client()
    own_server.stop()
    assert client.post("/api/sync/cart", json=cart_item()).status_code == 202
    connection = spool_app.extensions["fitkart_spool"]._connection()  # this thread's, as the test client's requests
    (pages,) = connection.execute("PRAGMA page_count").fetchone()
    connection.execute(f"PRAGMA max_page_count = {pages + 2}")
    statuses = [client.post("/api/sync/cart", json=cart_item(note="x" * 6000)).status_code for _ in range(6)]
    assert 503 in statuses and 500 not in statuses, statuses
    full = client.post("/api/sync/cart", json=cart_item(note="x" * 6000))
    assert full.status_code == 503 and "disk is full" in full.json["message"] and full.headers["Retry-After"]
    own_server.start()
    assert wait_until(lambda: database.cart_items.count_documents({}) == 1 + statuses.count(202))


def queue_for_callers(spool: Spool, count: int) -> None:
    """`count` new cart rows queued, each by a caller of its own (so each is a run of its own at replay)."""
    spool.append_many([("upsert", "cart_items", cart_item(), Caller("service_role", new_id()), "client",
                        "/api/sync/cart", None) for _ in range(count)])


def test_writes_queued_while_the_spool_drains_come_in_at_half_its_rate(spool_app):
    """A replayer draining 10 entries a second: each write queued meanwhile is let in 0.2 s after the one before
    (its answer waits for it), never more than MAX_PAUSE_SECONDS ahead; with no drain going on, none waits."""
    spool = spool_app.extensions["fitkart_spool"]
    with closing(sqlite3.connect(spool.path)) as other, other:
        other.execute("UPDATE lease SET progress_at = ?, rate = 10, until = ? WHERE id = 1",
                      (time.time(), time.time() + 60))
    one = [("upsert", "cart_items", cart_item(), Caller("service_role"), "client", "/api/sync/cart", None)]
    pauses = [spool.append_many(one).pause for _ in range(4)]
    assert pauses[0] < 0.05 and all(0.15 < later - earlier <= 0.2 for earlier, later in pairwise(pauses)), pauses
    assert spool.append_many(one * 200).pause <= MAX_PAUSE_SECONDS
    assert MAX_PAUSE_SECONDS - 0.5 < spool.append_many(one).pause <= MAX_PAUSE_SECONDS
    now = time.time()
    # A drain that stopped, a clock set back, a replayer whose lease ran out (it died).
    for progress_at, until in ((now - 60, now + 60), (now + 3600, now + 60), (now, now - 1)):
        with closing(sqlite3.connect(spool.path)) as other, other:
            other.execute("UPDATE lease SET progress_at = ?, until = ?, admit_at = 0 WHERE id = 1",
                          (progress_at, until))
        assert spool.append_many(one).pause == 0 and spool.drain_seconds() is None


def test_the_spool_command_replays_alone_while_the_servers_own_replayer_winds_down(spool_app, monkeypatch):
    """`spool --replay` in a process whose own replayer is mid-drain: that replayer stops after its run, then the
    command drains the rest; no entry is applied twice."""
    spool = spool_app.extensions["fitkart_spool"]
    queue_for_callers(spool, 200)
    applied: list[int] = []
    real = replay_module.apply_run

    def slowly(engine, run):
        if threading.current_thread().name == "fitkart-spool":
            time.sleep(0.1)  # the server's own replayer on a slow database: 20 s for the queue, past stop's wait
        real(engine, run)
        applied.extend(entry.seq for entry in run)

    monkeypatch.setattr(replay_module, "apply_run", slowly)
    spool_app.extensions["fitkart_replayer"].kick()
    assert wait_until(lambda: len(applied) >= 5)
    result = spool_app.test_cli_runner().invoke(args=["fitkart", "spool", "--replay"])
    assert result.exit_code == 0, result.output
    assert sorted(applied) == sorted(set(applied)) and len(applied) == 200


def test_a_crashed_writers_set_aside_file_yields_what_its_wal_holds(tmp_path):
    """A spool whose last writes are only in its -wal (the process died before a checkpoint), set aside as a
    damaged file is: `salvage` reads them too."""
    path = tmp_path / "spool.sqlite3"
    subprocess.run([sys.executable, "-c", (
        "import os, sys; from fitkart_server.storage.spool import Spool; from fitkart_server.model.policy import "
        f"Caller; spool = Spool({str(path)!r}, 1 << 30); spool.check(); "
        "[spool.append('upsert', 'cart_items', {'n': n}, Caller('service_role'), 'client', None) for n in range(200)];"
        " os._exit(0)")], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert os.path.getsize(f"{path}-wal") > 0
    moved = tmp_path / "spool.sqlite3.damaged-1"
    for suffix in ("", "-wal", "-shm"):
        os.rename(f"{path}{suffix}", f"{moved}{suffix}")
    rows, stopped = salvage(str(moved))
    assert stopped is None and len(rows) == 200


def test_a_worker_starting_while_the_spool_file_is_write_locked_serves_writes(make_app, database_uri, decimal_mode,
                                                                              local_files):
    """An operator's sqlite3 shell holds the spool file in a write transaction while a worker starts: the worker
    starts and, with the database up, its writes are applied (the file's set-up only reads a ready file)."""
    Spool(local_files["FITKART_SPOOL_PATH"], 1 << 20).check()
    shell = sqlite3.connect(local_files["FITKART_SPOOL_PATH"], isolation_level=None)
    shell.execute("BEGIN IMMEDIATE")
    try:
        client = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode).test_client()
        answer = client.post("/api/sync/cart", json=cart_item())
        assert answer.status_code == 200, answer.json
    finally:
        shell.execute("ROLLBACK")
        shell.close()
