"""`flask fitkart follow`: Supabase's WAL applied to the mirror, on a real PostgreSQL with wal_level=logical.

PostgreSQL is Debian's, with Debian's wal2json, started by the tests (as Supabase runs it); the
mirror is the tests' database server. Each check ends with `flask fitkart verify` finding no drift.
"""

import html
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from pymongo import monitoring

from fitkart_server.model.documents import FOLLOW
from fitkart_server.reconcile import follow as follow_module
from fitkart_server.reconcile import repair as repair_module
from fitkart_server.reconcile.follow import Follower, apply_transaction
from fitkart_server.reconcile.follow_commands import TABLES
from fitkart_server.reconcile.wal import WalSlot
from testbed.commands import WriteCommands
from testbed.data.shop_workload import ShopWorkload
from testbed.data.supabase_rows import generate_rows
from testbed.servers.follower import start_follower
from testbed.waiting import wait_until

from .test_metrics import scrape, value

KURTA = "9c8b7a6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
CART = "0b5d8f1e-6a7c-4e0a-9a51-3f4b2c1d0e9f"
USER = "5b0e6f8a-3c1d-4f2e-9a7b-1c2d3e4f5a6b"


def follow(runner, url: str, *options: str):
    """`flask fitkart follow --once` in this process."""
    return runner.invoke(args=["fitkart", "follow", "--database-url", url, "--once", *options])


def verify(runner, url: str) -> str:
    """`flask fitkart verify`, asserting it finds the mirror in sync."""
    result = runner.invoke(args=["fitkart", "verify", "--database-url", url])
    assert result.exit_code == 0, result.output
    return result.output


def run_workload(url: str, seed: int, transactions: int) -> None:
    """Commit `transactions` random shop transactions (some rolled back) on the Supabase side."""
    workload = ShopWorkload(url, seed)
    try:
        for _ in range(transactions):
            workload.step()
    finally:
        workload.close()


def test_changes_in_one_transaction_keep_their_order(runner, supabase_wal_db, mongo):
    """A delete then a re-insert of one key, and an insert-update-delete, end as PostgreSQL ended them."""
    first = follow(runner, supabase_wal_db)  # creates the slot; nothing to copy yet
    assert first.exit_code == 0, first.output
    with psycopg.connect(supabase_wal_db, autocommit=True) as connection:
        with connection.transaction():
            connection.execute("INSERT INTO products (id, name, price, category, sizes) "
                               "VALUES (%s, 'Kurta', 1499.50, 'ethnic', '{S,M}')", [KURTA])
            connection.execute("INSERT INTO cart_items (id, user_id, product_id, size, quantity) "
                               "VALUES (%s, %s, %s, 'M', 1)", [CART, USER, KURTA])
            connection.execute("DELETE FROM cart_items WHERE id = %s", [CART])
            connection.execute("INSERT INTO cart_items (id, user_id, product_id, size, quantity) "
                               "VALUES (%s, %s, %s, 'L', 7)", [CART, USER, KURTA])
            connection.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, 'seller')", [USER])
            connection.execute("UPDATE user_roles SET role = 'customer' WHERE user_id = %s", [USER])
            connection.execute("DELETE FROM user_roles WHERE user_id = %s", [USER])
        with connection.transaction(force_rollback=True):
            connection.execute("UPDATE cart_items SET quantity = 99 WHERE id = %s", [CART])
    result = follow(runner, supabase_wal_db)
    assert result.exit_code == 0, result.output
    assert "1 transaction(s), 7 change(s) applied" in result.output
    cart = mongo.cart_items.find_one({"id": CART})
    assert cart is not None, [(reject["reason"], reject.get("errors")) for reject in mongo.sync_rejects.find()]
    assert (cart["size"], cart["quantity"]) == ("L", 7)
    assert mongo.user_roles.count_documents({}) == 0
    assert mongo.sync_tombstones.count_documents({"_id": {"$regex": "^user_roles"}}) > 0
    verify(runner, supabase_wal_db)


def test_the_first_run_copies_the_tables_and_the_stream_joins_without_a_gap(runner, supabase_wal_db, mongo):
    """Rows from before the slot are copied, changes after it are streamed; nothing is lost between."""
    workload = ShopWorkload(supabase_wal_db, seed=1)
    for _ in range(60):
        workload.step()
    result = follow(runner, supabase_wal_db)
    assert result.exit_code == 0, result.output
    assert mongo.products.count_documents({}) > 0
    for _ in range(60):
        workload.step()
    workload.close()
    assert follow(runner, supabase_wal_db).exit_code == 0
    verify(runner, supabase_wal_db)
    state = mongo[FOLLOW].find_one({"_id": "fitkart_mirror"})
    assert state["snapshot"] == "done" and state["confirmed_lsn"] and state["lag_bytes"] >= 0


@contextmanager
def written_after_the_slot(app, runner, url: str, commit: Callable[[str], object]) -> Iterator:
    """A first run makes the slot, then `commit(url)` writes; yields the engine and the slot, nothing consumed."""
    assert follow(runner, url).exit_code == 0
    commit(url)
    with app.app_context():
        slot = WalSlot(url, TABLES)
        try:
            yield app.extensions["fitkart_store"].engine(), slot
        finally:
            slot.close()


def test_applying_the_same_transactions_again_changes_nothing(app, supabase_wal_db, mongo, runner):
    """At least once is harmless: replaying transactions the mirror already holds leaves it exact."""
    with written_after_the_slot(app, runner, supabase_wal_db,
                                lambda url: run_workload(url, seed=2, transactions=80)) as (engine, slot):
        transactions = slot.peek(100_000)  # read, not consumed
        assert sum(len(transaction.changes) for transaction in transactions) > 50
        for _ in range(2):
            for transaction in transactions:
                apply_transaction(engine, transaction)
            snapshot = {name: sorted(map(repr, mongo[name].find({}, {"_fitkart": 0}))) for name in TABLES}
            verify(runner, supabase_wal_db)
        # Once more after the mirror holds them: the documents themselves do not change.
        for transaction in transactions:
            apply_transaction(engine, transaction)
        assert {name: sorted(map(repr, mongo[name].find({}, {"_fitkart": 0}))) for name in TABLES} == snapshot


def test_a_database_without_logical_decoding_is_an_error_naming_the_setting(runner, supabase_db):
    """wal_level=replica: exit 2, saying what to change."""
    result = follow(runner, supabase_db)
    assert result.exit_code == 2, result.output
    assert "wal_level" in result.output and "logical" in result.output


def test_a_role_without_replication_is_an_error_naming_the_grant(runner, supabase_wal_db):
    """A role that may not replicate: exit 2 with the ALTER ROLE to run."""
    with psycopg.connect(supabase_wal_db, autocommit=True) as connection:
        connection.execute("DROP ROLE IF EXISTS shop_reader")
        connection.execute("CREATE ROLE shop_reader LOGIN")
    url = supabase_wal_db.replace("postgres@", "shop_reader@")
    result = follow(runner, url)
    assert result.exit_code == 2, result.output
    assert "REPLICATION" in result.output


def confirmed_position(url: str) -> str:
    """Where the follower's slot stands: how far PostgreSQL was told the mirror holds."""
    with psycopg.connect(url) as connection:
        return connection.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                                  "WHERE slot_name = 'fitkart_mirror'").fetchone()[0]


def test_a_table_logged_without_its_rows_identity_is_refused_and_nothing_confirmed_past_it(runner, supabase_wal_db,
                                                                                          mongo):
    """cart_items switched to REPLICA IDENTITY NOTHING, then rows changed and deleted (the log leaves those
    changes out): the follower refuses with exit 2, names the ALTER TABLE and `repair`, and does not move the slot;
    once the identity is back and `repair` has run, the mirror is in sync."""
    assert follow(runner, supabase_wal_db).exit_code == 0
    run_workload(supabase_wal_db, seed=9, transactions=40)
    assert follow(runner, supabase_wal_db).exit_code == 0
    position = confirmed_position(supabase_wal_db)
    with psycopg.connect(supabase_wal_db, autocommit=True) as connection:
        connection.execute("ALTER TABLE cart_items REPLICA IDENTITY NOTHING")
        connection.execute("UPDATE cart_items SET quantity = quantity + 1")
        connection.execute("DELETE FROM cart_items WHERE id = (SELECT id FROM cart_items ORDER BY id LIMIT 1)")
    refused = follow(runner, supabase_wal_db)
    assert refused.exit_code == 2, refused.output
    assert "ALTER TABLE public.cart_items REPLICA IDENTITY DEFAULT;" in refused.output and "repair" in refused.output
    assert confirmed_position(supabase_wal_db) == position
    with psycopg.connect(supabase_wal_db, autocommit=True) as connection:
        connection.execute("ALTER TABLE cart_items REPLICA IDENTITY DEFAULT")
    assert follow(runner, supabase_wal_db).exit_code == 0
    assert runner.invoke(args=["fitkart", "repair", "--database-url", supabase_wal_db]).exit_code == 0
    verify(runner, supabase_wal_db)


def slots(url: str) -> list[str]:
    """The replication slots PostgreSQL keeps WAL for."""
    with psycopg.connect(url) as connection:
        return [name for (name,) in connection.execute("SELECT slot_name FROM pg_replication_slots")]


def test_a_role_that_may_not_read_the_tables_is_refused_before_any_slot_is_made(runner, supabase_wal_db):
    """A role with REPLICATION but no SELECT on the tables: exit 2 naming the GRANT, and no slot left holding WAL."""
    with psycopg.connect(supabase_wal_db, autocommit=True) as connection:
        connection.execute("DROP ROLE IF EXISTS shop_replicator")
        connection.execute("CREATE ROLE shop_replicator LOGIN REPLICATION")
    result = follow(runner, supabase_wal_db.replace("postgres@", "shop_replicator@"))
    assert result.exit_code == 2, result.output
    assert "GRANT SELECT ON public." in result.output and 'TO "shop_replicator"' in result.output
    assert slots(supabase_wal_db) == []


def test_a_first_run_whose_copy_fails_drops_the_slot_it_made(runner, supabase_wal_db, mongo, monkeypatch):
    """The first copy failing (here: PostgreSQL refusing a read): exit 2, and the slot made for it is dropped, so
    no WAL is kept for a follower that never ran; the next start begins afresh and ends in sync."""
    def refused(*args, **kwargs):
        raise psycopg.errors.InsufficientPrivilege("permission denied for table profiles")

    monkeypatch.setattr(follow_module, "backfill_table", refused)
    result = follow(runner, supabase_wal_db)
    assert result.exit_code == 2, result.output
    assert slots(supabase_wal_db) == [] and mongo[FOLLOW].count_documents({}) == 0
    monkeypatch.undo()
    assert follow(runner, supabase_wal_db).exit_code == 0
    verify(runner, supabase_wal_db)


def slot_dropped_then_deleted(runner, url: str, *tables: str) -> None:
    """A workload followed, then the follower's slot dropped behind its back and `tables` emptied in the gap."""
    assert follow(runner, url).exit_code == 0
    run_workload(url, seed=12, transactions=40)
    assert follow(runner, url).exit_code == 0
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SELECT pg_drop_replication_slot('fitkart_mirror')")
        for table in tables:
            connection.execute(f"DELETE FROM {table}")


def test_a_slot_that_disappeared_is_refused_and_mended_by_resync(runner, supabase_wal_db, mongo):
    """The follower's slot dropped behind its back while rows were deleted: the next start refuses (exit 2) naming
    `--resync` instead of quietly making a new slot and copying (which kept the deleted rows in the mirror);
    `follow --resync` makes a new slot, copies and repairs, and verify finds no drift."""
    slot_dropped_then_deleted(runner, supabase_wal_db, "wishlist_items")
    refused = follow(runner, supabase_wal_db)
    assert refused.exit_code == 2 and "is gone" in refused.output and "--resync" in refused.output, refused.output
    assert slots(supabase_wal_db) == []
    resynced = follow(runner, supabase_wal_db, "--resync")
    assert resynced.exit_code == 0, resynced.output
    assert mongo.wishlist_items.count_documents({}) == 0
    verify(runner, supabase_wal_db)


def test_a_sigterm_during_the_resyncs_repair_stops_it_and_the_next_start_repairs(runner, supabase_wal_db, mongo,
                                                                                  monkeypatch):
    """SIGTERM while `--resync` repairs (at its first drifting record): the follower stops there (it used to finish
    the whole repair first), the repair stays due, and the next start does it."""
    slot_dropped_then_deleted(runner, supabase_wal_db, "wishlist_items", "cart_items")
    deleted = mongo.wishlist_items.count_documents({}) + mongo.cart_items.count_documents({})
    assert deleted >= 2
    decided = []
    original = repair_module.RepairPages.add

    def add_then_sigterm(pages, entity, drift):
        decided.append(drift)
        if len(decided) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # the follower's handler sets its stop
        return original(pages, entity, drift)

    monkeypatch.setattr(repair_module.RepairPages, "add", add_then_sigterm)
    stopped = follow(runner, supabase_wal_db, "--resync")
    assert stopped.exit_code == 0 and "stopped during the repair" in stopped.output, stopped.output
    assert len(decided) == 1
    assert mongo[FOLLOW].find_one({"_id": "fitkart_mirror"})["resync"] == "pending"
    assert mongo.wishlist_items.count_documents({}) + mongo.cart_items.count_documents({}) >= deleted - 1
    monkeypatch.undo()
    again = follow(runner, supabase_wal_db)
    assert again.exit_code == 0 and "resync: repaired" in again.output, again.output
    assert "resync" not in mongo[FOLLOW].find_one({"_id": "fitkart_mirror"})
    verify(runner, supabase_wal_db)


def test_a_slot_lost_to_max_slot_wal_keep_size_is_refused_and_mended_by_resync(runner, supabase_wal_db, mongo):
    """PostgreSQL removes WAL the slot still needs (max_slot_wal_keep_size passed while the follower was away): the
    next start refuses (exit 2) naming `--resync`, not a raw PostgreSQL error; `--resync` mends it."""
    assert follow(runner, supabase_wal_db).exit_code == 0
    with psycopg.connect(supabase_wal_db, autocommit=True) as connection:
        connection.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        connection.execute("SELECT pg_reload_conf()")
        try:
            connection.execute("DELETE FROM wishlist_items")
            connection.execute("CREATE TABLE filler (x text)")
            for _ in range(6):  # WAL segments past the allowance, then checkpoints that remove them
                connection.execute("INSERT INTO filler SELECT repeat(md5(i::text), 32) FROM generate_series(1, 8000) i")
                connection.execute("SELECT pg_switch_wal()")
                connection.execute("CHECKPOINT")
            assert wait_until(lambda: connection.execute(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'fitkart_mirror'").fetchone()[0]
                == "lost", 30)
        finally:
            connection.execute("ALTER SYSTEM RESET max_slot_wal_keep_size")
            connection.execute("SELECT pg_reload_conf()")
    refused = follow(runner, supabase_wal_db)
    assert refused.exit_code == 2 and "is lost" in refused.output and "--resync" in refused.output, refused.output
    resynced = follow(runner, supabase_wal_db, "--resync")
    assert resynced.exit_code == 0, resynced.output
    verify(runner, supabase_wal_db)


def test_drop_slot_frees_the_wal_and_forgets_the_position(runner, supabase_wal_db, mongo):
    """`drop-slot` removes the slot from PostgreSQL and the position from the mirror."""
    assert follow(runner, supabase_wal_db).exit_code == 0
    result = runner.invoke(args=["fitkart", "drop-slot", "--database-url", supabase_wal_db, "--yes"])
    assert result.exit_code == 0, result.output
    assert "dropped slot fitkart_mirror" in result.output
    with psycopg.connect(supabase_wal_db) as connection:
        assert connection.execute("SELECT count(*) FROM pg_replication_slots").fetchone()[0] == 0
    assert mongo[FOLLOW].count_documents({}) == 0


def test_lag_is_shown_by_stats_metrics_and_the_status_page(app, runner, supabase_wal_db, mongo):
    """The follower's position and lag reach `flask fitkart stats`, /metrics and the status page."""
    with written_after_the_slot(app, runner, supabase_wal_db,
                                lambda url: run_workload(url, seed=3, transactions=20)) as (engine, slot):
        Follower(engine, slot, max_changes=5).apply(slot.read(5), threading.Event())  # the rest is behind
    state = mongo[FOLLOW].find_one({"_id": "fitkart_mirror"})
    assert state["lag_bytes"] > 0
    stats = runner.invoke(args=["fitkart", "stats"])
    assert "WAL follower fitkart_mirror" in stats.output and f"{state['lag_bytes']:,} bytes" in stats.output
    client = app.test_client()
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f'fitkart_follow_lag_bytes{{slot="fitkart_mirror"}} {float(state["lag_bytes"])}' in metrics
    page = client.get("/").get_data(as_text=True)
    assert 'data-slot="fitkart_mirror"' in page and f"{state['lag_bytes']:,}" in page


@contextmanager
def wal_held_back(url: str) -> Iterator[None]:
    """A session idle in a transaction (with an id) while 3 MB of WAL are written: PostgreSQL keeps that WAL for every
    slot until the transaction ends (when the block does)."""
    idle = psycopg.connect(url)
    try:
        idle.execute("SELECT txid_current()")
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("CREATE TABLE filler (x text)")
            connection.execute("INSERT INTO filler SELECT repeat(md5(i::text), 32) FROM generate_series(1, 3000) i")
        yield
    finally:
        idle.close()


def test_wal_kept_for_the_slot_by_an_open_transaction_is_reported_and_warned(app, runner, supabase_wal_db, mongo,
                                                                            caplog):
    """A session idle in a transaction while 3 MB of WAL are written: the follower is caught up (lag near 0), but
    PostgreSQL keeps that WAL for its slot; the follower measures what is kept, warns past --lag-warning-mb, and
    stats, /metrics and the status page show it."""
    assert follow(runner, supabase_wal_db).exit_code == 0
    with wal_held_back(supabase_wal_db):
        assert follow(runner, supabase_wal_db, "--lag-warning-mb", "1").exit_code == 0
    state = mongo[FOLLOW].find_one({"_id": "fitkart_mirror"})
    assert state["retained_bytes"] > 2 * 1024 * 1024 > state["lag_bytes"], state
    assert any("keeps" in record.getMessage() and "WAL" in record.getMessage() for record in caplog.records)
    assert f"WAL kept {state['retained_bytes']:,} bytes" in runner.invoke(args=["fitkart", "stats"]).output
    live = runner.invoke(args=["fitkart", "stats", "--database-url", supabase_wal_db]).output
    assert "slot fitkart_mirror now: at " in live and "WAL kept" in live, live
    client = app.test_client()
    kept = value(scrape(client), "fitkart_follow_retained_bytes", slot="fitkart_mirror")
    assert kept == pytest.approx(state["retained_bytes"], rel=1e-5)  # the text form keeps six digits
    assert f"{state['retained_bytes']:,}" in client.get("/").get_data(as_text=True)


def test_a_stopped_followers_slot_is_read_and_warned_of_by_stats_and_the_status_page(app, runner, supabase_wal_db,
                                                                                    caplog):
    """The follower stopped, changes committed since, and a session idle in a transaction holding WAL back: stats and
    the status page (SUPABASE_DB_URL set) read the slot from PostgreSQL now — the WAL kept and how old the oldest
    change not yet applied is — and warn past FITKART_LAG_WARNING_MB and _SECONDS; the follower itself warns of
    changes that old when it applies them, and once it has, nothing is pending."""
    assert follow(runner, supabase_wal_db).exit_code == 0
    app.config.update(SUPABASE_DB_URL=supabase_wal_db, FITKART_LAG_WARNING_MB=1, FITKART_LAG_WARNING_SECONDS=1)
    with wal_held_back(supabase_wal_db):
        committed = time.time()
        run_workload(supabase_wal_db, seed=5, transactions=3)
        time.sleep(max(0.0, committed + 2.5 - time.time()))
        stats = runner.invoke(args=["fitkart", "stats"]).output  # SUPABASE_DB_URL, as the environment gives it
        page = app.test_client().get("/").get_data(as_text=True)
    now = re.search(r"slot fitkart_mirror now: at \S+, [\d,]+ bytes behind, WAL kept ([\d,]+) bytes, oldest "
                    r"unconfirmed change ([\d,]+) s old", stats)
    assert now and int(now[1].replace(",", "")) > 2 * 1024 * 1024 and int(now[2]) >= 2, stats
    assert "warning: slot 'fitkart_mirror' is" in stats and "PostgreSQL keeps" in stats, stats
    assert "warning: slot 'fitkart_mirror': changes committed" in stats, stats
    assert "oldest unconfirmed change" in page and 'id="follow-warnings"' in page, page
    assert "changes committed" in html.unescape(page) and "PostgreSQL keeps" in page

    assert follow(runner, supabase_wal_db, "--lag-warning-seconds", "2").exit_code == 0
    assert any("changes committed" in record.getMessage() for record in caplog.records)
    caught_up = runner.invoke(args=["fitkart", "stats"]).output
    assert "no unconfirmed change" in caught_up and "changes committed" not in caught_up, caught_up


def test_a_running_followers_slot_is_not_peeked_and_its_own_lag_is_warned_of(app, runner, supabase_wal_db, mongo):
    """While a follower runs on a slot (it holds the slot's lock; between its reads the slot is not `active`), stats
    and the status page do not peek at it — that would hold up its reads — and warn from the lag it measured; the
    status page reads at most one slot per request."""
    assert follow(runner, supabase_wal_db).exit_code == 0
    assert follow(runner, supabase_wal_db, "--slot", "second").exit_code == 0
    app.config.update(SUPABASE_DB_URL=supabase_wal_db, FITKART_LAG_WARNING_SECONDS=300)
    run_workload(supabase_wal_db, seed=6, transactions=2)  # a pending change: a peek would find its age
    mongo[FOLLOW].update_one({"_id": "fitkart_mirror"}, {"$set": {"lag_seconds": 1800.0}})
    with psycopg.connect(supabase_wal_db, autocommit=True) as running:
        running.execute("SELECT pg_advisory_lock(hashtext('fitkart follow fitkart_mirror'))")  # as `hold` takes it
        stats = runner.invoke(args=["fitkart", "stats"]).output
        client = app.test_client()
        first, second = (client.get("/").get_data(as_text=True) for _ in range(2))
    assert "slot fitkart_mirror now: at " in stats and "a follower is running on the slot" in stats, stats
    assert "warning: slot 'fitkart_mirror': changes committed 1,800 s ago" in stats, stats
    assert "slot second now: at " in stats and "oldest unconfirmed change" in stats
    assert first.count("not read yet") == 1 and second.count("not read yet") == 0  # one slot read per request
    assert "a follower is running on the slot" in html.unescape(second)


def follower_process(database_uri: str, url: str, log: Path) -> subprocess.Popen:
    """The follower as its own process, polling often, its output appended to `log`."""
    with open(log, "ab") as output:
        return start_follower(database_uri, url, "--poll-seconds", "0.2", "--max-changes", "50", log=output)


def changes_applied(mongo) -> int:
    """How many changes the follower has confirmed so far."""
    return (mongo[FOLLOW].find_one({"_id": "fitkart_mirror"}) or {}).get("total_changes", 0)


def test_a_follower_killed_twice_mid_stream_ends_with_no_drift(runner, supabase_wal_db, database_uri, mongo,
                                                                 tmp_path):
    """A random workload while the follower copies and streams; SIGKILL twice mid-stream; SIGTERM; verify: 0 drift."""
    log = tmp_path / "follow.log"
    workload = ShopWorkload(supabase_wal_db, seed=4)
    for _ in range(30):
        workload.step()  # rows from before the slot: the first start copies them
    process = follower_process(database_uri, supabase_wal_db, log)
    writing = threading.Event()
    writing.set()

    def write() -> None:
        # A steady rate the follower keeps up with on FerretDB (the benchmark measures how fast it applies).
        for _ in range(400):
            if not writing.is_set():
                return
            workload.step()
            time.sleep(0.02)

    writer = threading.Thread(target=write)
    writer.start()  # while the first start creates the slot and copies the tables: the copy must leave no gap
    try:
        assert wait_until(lambda: (mongo[FOLLOW].find_one({"_id": "fitkart_mirror"}) or {}).get("state")
                          == "following", 60), log.read_text()[-3000:]
        for _ in range(2):
            # Killed while it is applying: once it has moved on since it (re)started.
            before = changes_applied(mongo)
            assert wait_until(lambda before=before: changes_applied(mongo) > before + 20, 60), log.read_text()[-3000:]
            process.send_signal(signal.SIGKILL)
            assert process.wait(timeout=30) == -signal.SIGKILL
            process = follower_process(database_uri, supabase_wal_db, log)
        before = changes_applied(mongo)
        assert wait_until(lambda: changes_applied(mongo) > before + 20, 60), log.read_text()[-3000:]
        writing.clear()
        writer.join()
        assert workload.committed > 100 and workload.rolled_back > 0
        # The last commit: once the mirror holds it, it holds everything before it (commit order).
        with psycopg.connect(supabase_wal_db, autocommit=True) as connection:
            connection.execute("INSERT INTO user_roles (user_id, role) VALUES (%s, 'seller')", [USER])
        assert wait_until(lambda: mongo.user_roles.find_one({"user_id": USER}) is not None, 120), \
            log.read_text()[-3000:]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()[-3000:]
        assert mongo[FOLLOW].find_one({"_id": "fitkart_mirror"})["state"] == "stopped"
    finally:
        writing.clear()
        if writer.is_alive():
            writer.join()
        if process.poll() is None:
            process.kill()
            process.wait()
        workload.close()
    output = verify(runner, supabase_wal_db)
    assert "in sync" in output
    assert mongo.sync_rejects.count_documents({}) == 0, list(mongo.sync_rejects.find({}, {"payload": 0}))


def test_a_follower_stops_cleanly_on_sigterm_while_idle(supabase_wal_db, database_uri, mongo, tmp_path):
    """SIGTERM: exit 0 within a poll, the slot kept, the state recorded as stopped."""
    log = tmp_path / "follow.log"
    process = follower_process(database_uri, supabase_wal_db, log)
    assert wait_until(lambda: (mongo[FOLLOW].find_one({"_id": "fitkart_mirror"}) or {}).get("state") == "following",
                      30), log.read_text()
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, log.read_text()
    assert "0 transaction(s)" in log.read_text()
    assert mongo[FOLLOW].find_one({"_id": "fitkart_mirror"})["state"] == "stopped"


def test_with_retry_the_follower_waits_out_the_mirror_going_away(make_app, supabase_wal_db, own_database, tmp_path,
                                                                  decimal_mode):
    """`follow --retry`: the mirror's database stopped while the follower runs and the shop keeps writing; the
    follower says it will start again instead of exiting, and once the database is back it applies what was
    written meanwhile: verify finds no drift. Without --retry the same failure is exit 2."""
    server, mongo = own_database
    mirror_uri = f"{server.base_uri}/own"
    log = tmp_path / "follow.log"
    with open(log, "ab") as output:
        process = start_follower(mirror_uri, supabase_wal_db, "--retry", "--poll-seconds", "0.2", log=output)
    try:
        assert wait_until(lambda: (mongo[FOLLOW].find_one({"_id": "fitkart_mirror"}) or {}).get("state")
                          == "following", 30), log.read_text()
        server.stop()
        run_workload(supabase_wal_db, seed=10, transactions=30)
        assert wait_until(lambda: "starting again" in log.read_text(), 60), log.read_text()
        assert process.poll() is None, log.read_text()
        server.start()
        assert wait_until(lambda: changes_applied(mongo) > 0, 90), log.read_text()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
    runner = make_app(FITKART_MONGODB_URI=mirror_uri, FITKART_DECIMAL_MODE=decimal_mode).test_cli_runner()
    result = runner.invoke(args=["fitkart", "verify", "--database-url", supabase_wal_db])
    server.stop()
    with open(log, "ab") as output:
        assert start_follower(mirror_uri, supabase_wal_db, log=output).wait(timeout=60) == 2
    assert result.exit_code == 0, result.output


def test_the_shipped_systemd_unit_runs_the_follower_with_retry(app):
    """deploy/fitkart-follow.service starts `flask fitkart follow --retry` with options the command accepts, restarts
    it whatever ends it, and stops it with SIGTERM (which the follower honours)."""
    from fitkart_server.reconcile.follow_commands import follow_command

    unit = (Path(__file__).resolve().parent.parent / "deploy" / "fitkart-follow.service").read_text()
    settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    command = settings["ExecStart"].split()
    assert command[1:5] == ["--app", "fitkart_server", "fitkart", "follow"] and "--retry" in command
    with app.app_context():
        context = follow_command.make_context("follow", [*command[5:], "--database-url", "postgresql://x"])
    assert context.params["retry"] is True
    assert settings["Restart"] == "always" and settings["KillSignal"] == "SIGTERM"


def test_truncate_empties_the_mirrored_tables(runner, supabase_wal_db, mongo):
    """TRUNCATE (and its CASCADE to carts and wishlists) empties the mirror's tables the engine's way."""
    assert follow(runner, supabase_wal_db).exit_code == 0
    run_workload(supabase_wal_db, seed=5, transactions=60)
    assert follow(runner, supabase_wal_db).exit_code == 0
    assert mongo.products.count_documents({}) > 0 and mongo.user_roles.count_documents({}) > 0
    with psycopg.connect(supabase_wal_db, autocommit=True) as connection:
        connection.execute("TRUNCATE user_roles")
        connection.execute("TRUNCATE products CASCADE")
    assert follow(runner, supabase_wal_db).exit_code == 0
    assert mongo.products.count_documents({}) == 0 and mongo.user_roles.count_documents({}) == 0
    verify(runner, supabase_wal_db)


def test_an_update_of_a_records_key_moves_it(runner, supabase_wal_db, mongo):
    """A profile's new user_id, a wishlist row's new product, a cart row's new primary key: nothing left behind."""
    assert follow(runner, supabase_wal_db).exit_code == 0
    run_workload(supabase_wal_db, seed=6, transactions=80)
    with psycopg.connect(supabase_wal_db, autocommit=True) as connection:
        connection.execute("UPDATE profiles SET user_id = gen_random_uuid() "
                           "WHERE id = (SELECT id FROM profiles ORDER BY id LIMIT 1)")
        connection.execute("UPDATE wishlist_items SET product_id = (SELECT id FROM products ORDER BY id DESC LIMIT 1) "
                           "WHERE id = (SELECT id FROM wishlist_items ORDER BY id LIMIT 1)")
        connection.execute("UPDATE cart_items SET id = gen_random_uuid() "
                           "WHERE id = (SELECT id FROM cart_items ORDER BY id LIMIT 1)")
    result = follow(runner, supabase_wal_db)
    assert result.exit_code == 0 and " 0 refused" in result.output, result.output
    verify(runner, supabase_wal_db)
    assert mongo.sync_rejects.count_documents({}) == 0  # a move that was applied is no refusal


def test_an_update_that_leaves_a_large_value_out_of_the_log_still_writes_the_whole_row(runner, supabase_wal_db,
                                                                                        mongo):
    """An unchanged TOASTed column is not in the update's log entry: it is read back, so the record is whole."""
    assert follow(runner, supabase_wal_db).exit_code == 0
    items = [{"product_id": str(uuid.uuid4()), "note": os.urandom(6000).hex()}]  # stored out of line
    with psycopg.connect(supabase_wal_db, autocommit=True) as connection:
        order_id = connection.execute(
            "INSERT INTO orders (user_id, total_amount, items) VALUES (%s, 10.50, %s) RETURNING id",
            [USER, json.dumps(items)]).fetchone()[0]
    assert follow(runner, supabase_wal_db).exit_code == 0
    mongo.orders.delete_one({"id": str(order_id)})  # the mirror lost it (say, a client delete that Supabase refused)
    with psycopg.connect(supabase_wal_db, autocommit=True) as connection:
        connection.execute("UPDATE orders SET status = 'shipped' WHERE id = %s", [order_id])
    result = follow(runner, supabase_wal_db)
    assert result.exit_code == 0 and " 0 refused" in result.output, result.output
    assert mongo.orders.find_one({"id": str(order_id)})["items"] == items
    verify(runner, supabase_wal_db)


def test_a_new_slots_copy_starts_from_the_first_row_whatever_backfill_left(runner, supabase_wal_db, mongo):
    """A checkpoint of an earlier, interrupted backfill is not where a new slot's copy starts."""
    run_workload(supabase_wal_db, seed=7, transactions=40)
    with psycopg.connect(supabase_wal_db) as connection:
        last = connection.execute("SELECT id::text FROM products ORDER BY id DESC LIMIT 1").fetchone()[0]
    mongo.sync_backfill.insert_one({"_id": "products", "after": [last]})
    assert follow(runner, supabase_wal_db).exit_code == 0
    verify(runner, supabase_wal_db)


def test_deletes_under_a_replica_identity_index_use_the_key(runner, supabase_wal_db, mongo):
    """A table logged by its unique user_id index (not its primary key): its deletes still find the record."""
    assert follow(runner, supabase_wal_db).exit_code == 0
    run_workload(supabase_wal_db, seed=8, transactions=40)
    with psycopg.connect(supabase_wal_db, autocommit=True) as connection:
        connection.execute("ALTER TABLE profiles REPLICA IDENTITY USING INDEX profiles_user_id_key")
        connection.execute("DELETE FROM profiles WHERE id = (SELECT id FROM profiles ORDER BY id LIMIT 1)")
    result = follow(runner, supabase_wal_db)
    assert result.exit_code == 0, result.output
    verify(runner, supabase_wal_db)


def test_a_delete_logged_under_an_index_that_is_not_the_mirrors_key_is_applied(runner, supabase_wal_db, mongo):
    """cart_items logged by a unique (user_id, product_id, size) index, neither its primary key nor the mirror's
    key: its deletes carry only those columns. The follower finds the record by them and deletes it (it stalled
    for ever, exit 2 at every start), and verify finds no drift."""
    assert follow(runner, supabase_wal_db).exit_code == 0
    run_workload(supabase_wal_db, seed=11, transactions=40)
    with psycopg.connect(supabase_wal_db, autocommit=True) as connection:
        connection.execute("DELETE FROM cart_items a USING cart_items b WHERE a.id < b.id AND a.user_id = b.user_id "
                           "AND a.product_id = b.product_id AND a.size = b.size")
        connection.execute("CREATE UNIQUE INDEX cart_items_line ON cart_items (user_id, product_id, size)")
        connection.execute("ALTER TABLE cart_items REPLICA IDENTITY USING INDEX cart_items_line")
        gone = connection.execute("DELETE FROM cart_items WHERE id = (SELECT id FROM cart_items ORDER BY id LIMIT 1) "
                                  "RETURNING id::text").fetchone()
    assert gone is not None
    result = follow(runner, supabase_wal_db)
    assert result.exit_code == 0, result.output
    assert mongo.cart_items.count_documents({"id": gone[0]}) == 0
    verify(runner, supabase_wal_db)


def test_a_second_follower_on_the_same_slot_is_refused(runner, supabase_wal_db):
    """Two followers would apply the same transactions out of step: the second exits 2, naming the first."""
    assert follow(runner, supabase_wal_db).exit_code == 0
    with psycopg.connect(supabase_wal_db, autocommit=True) as first:
        first.execute("SELECT pg_advisory_lock(hashtext('fitkart follow fitkart_mirror'))")
        result = follow(runner, supabase_wal_db)
    assert result.exit_code == 2, result.output
    assert "another follower is running" in result.output


# The write commands the follower sends to cart_items (registered before any app's client is made).
CART_WRITES = WriteCommands("cart_items")
monitoring.register(CART_WRITES)


def one_transaction_of(rows: int) -> Callable[[str], object]:
    """What commits one transaction inserting `rows` cart rows (and three products)."""
    return lambda url: generate_rows(url, products=3, carts=rows, wishlists=0, profiles=0)


def test_a_large_transaction_is_applied_a_page_at_a_time_in_bulk(app, runner, supabase_wal_db, monkeypatch):
    """300 rows in one transaction: read as a stream and applied in pages of PAGE_CHANGES, each page's new rows
    with one insert (one engine call per row before: 300 inserts); verify finds no drift."""
    monkeypatch.setattr(follow_module, "PAGE_CHANGES", 50)
    pages: list[int] = []
    real_apply_changes = follow_module.apply_changes
    monkeypatch.setattr(follow_module, "apply_changes",
                        lambda engine, changes: pages.append(len(changes)) or real_apply_changes(engine, changes))
    with written_after_the_slot(app, runner, supabase_wal_db, one_transaction_of(300)) as (engine, slot):
        writes = CART_WRITES.during(lambda: Follower(engine, slot).apply(slot.read(10_000), threading.Event()))
    assert pages == [50] * 6 + [3]  # the three products and 300 cart rows, in pages
    assert writes == ["insert"] * 7  # every page holds cart rows
    verify(runner, supabase_wal_db)


def test_a_stop_in_the_middle_of_a_transaction_leaves_it_unconfirmed_and_applied_whole_later(
        app, runner, supabase_wal_db, mongo, monkeypatch):
    """SIGTERM is heard between pages: the follower stops inside the transaction without confirming it (its lag,
    measured while inside it, is that commit's age); the next run applies the transaction again, whole, and verify
    finds no drift."""
    monkeypatch.setattr(follow_module, "PAGE_CHANGES", 50)
    monkeypatch.setattr(follow_module, "MEASURE_EVERY_SECONDS", 0)
    stop = threading.Event()
    real_apply_changes = follow_module.apply_changes

    def apply_changes(engine, changes):
        refused = real_apply_changes(engine, changes)
        stop.set()  # as the SIGTERM handler does, once the first page is in
        return refused

    monkeypatch.setattr(follow_module, "apply_changes", apply_changes)
    with written_after_the_slot(app, runner, supabase_wal_db, one_transaction_of(200)) as (engine, slot):
        before = slot.position()[0]
        assert Follower(engine, slot).apply(slot.read(10_000), stop) is True
        assert slot.position()[0] == before  # not confirmed
        assert mongo.cart_items.count_documents({}) < 200
        state = mongo[FOLLOW].find_one({"_id": "fitkart_mirror"})
        assert state.get("confirmed_lsn") is None
        # Measured while inside the transaction: its commit's age, not a lag of 0 until it is all applied.
        assert state["lag_seconds"] > 0 and state["lag_bytes"] > 0, state
        monkeypatch.setattr(follow_module, "apply_changes", real_apply_changes)
        Follower(engine, slot).apply(slot.read(10_000), threading.Event())
        assert slot.position()[0] != before
    assert mongo.cart_items.count_documents({}) == 200
    verify(runner, supabase_wal_db)


def test_a_stop_cancels_a_read_that_postgresql_is_still_working_on(supabase_wal_db):
    """PostgreSQL decodes a large transaction whole before the first row comes: a stop (SIGTERM) set meanwhile
    cancels the query on the slot's reader connection (a minute-long query stands in for the decoding here)."""
    slot = WalSlot(supabase_wal_db, TABLES)
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    try:
        with slot._cancelled_on(stop), pytest.raises(psycopg.errors.QueryCanceled):
            slot._reader().execute("SELECT pg_sleep(60)")
    finally:
        slot.close()


def test_a_read_cancelled_by_anything_but_a_stop_is_an_error_and_confirms_nothing(app, runner, supabase_wal_db):
    """A statement_timeout (or an operator's cancel) cuts the read while PostgreSQL decodes: that is an error, not
    an empty read, so the follower never confirms past the transactions it did not read."""
    with written_after_the_slot(app, runner, supabase_wal_db, one_transaction_of(3000)) as (engine, slot):
        before = slot.position()[0]
        slot._reader().execute("SET statement_timeout = 1")
        with pytest.raises(psycopg.errors.QueryCanceled):
            Follower(engine, slot).run(threading.Event(), once=True)
        assert slot.position()[0] == before


def test_a_first_copy_cut_by_the_mirror_going_away_resumes_at_the_next_start(runner, supabase_wal_db, mongo,
                                                                              monkeypatch):
    """The mirror's database failing during the first copy: exit 2, the slot and the copy's place kept (not
    dropped, not taken for a lost slot), and the next start finishes the copy and ends in sync."""
    from pymongo.errors import ServerSelectionTimeoutError

    def away(*args, **kwargs):
        raise ServerSelectionTimeoutError("the mirror is away")

    run_workload(supabase_wal_db, seed=13, transactions=20)
    monkeypatch.setattr(follow_module, "backfill_table", away)
    failed = follow(runner, supabase_wal_db)
    assert failed.exit_code == 2 and "the mirror's database failed" in failed.output, failed.output
    assert slots(supabase_wal_db) == ["fitkart_mirror"]
    monkeypatch.undo()
    resumed = follow(runner, supabase_wal_db)
    assert resumed.exit_code == 0, resumed.output
    verify(runner, supabase_wal_db)


def one_row_transactions(count: int) -> Callable[[str], object]:
    """What commits `count` transactions of one cart row each (after one of a product)."""
    def commit(url: str) -> None:
        generate_rows(url, products=1, carts=0, wishlists=0, profiles=0)
        with psycopg.connect(url, autocommit=True) as connection:
            for _ in range(count):
                connection.execute("INSERT INTO public.cart_items (user_id, product_id, size, quantity) "
                                   "SELECT gen_random_uuid(), id, 'M', 1 FROM public.products")
    return commit


def test_small_transactions_are_applied_together(app, runner, supabase_wal_db):
    """Thirty one-row transactions fit one page: their rows are written with one insert (thirty before)."""
    with written_after_the_slot(app, runner, supabase_wal_db, one_row_transactions(30)) as (engine, slot):
        writes = CART_WRITES.during(lambda: Follower(engine, slot).apply(slot.read(10_000), threading.Event()))
    assert writes == ["insert"]
    verify(runner, supabase_wal_db)
