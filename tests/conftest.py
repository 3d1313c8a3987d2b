"""Fixtures: a real database server per test run, a fresh database per test, app and clients."""

import os
import uuid

import psycopg
import pymongo
import pytest
from flask import current_app, has_request_context, request

from fitkart_server import create_app
from fitkart_server.model.documents import TOMBSTONES
from fitkart_server.model.entities import BY_COLLECTION
from fitkart_server.storage.store import Store
from fitkart_server.sync.plan import POINT_AT_MOST
from testbed.commands import FilterWatch
from testbed.servers import gunicorn
from testbed.servers.mongo import MongoServer, ServerKind


def point_plan_write() -> bool:
    """Whether the current command is sent by a write request (not a read) of an app on the point plan."""
    return (has_request_context() and request.method not in ("GET", "HEAD", "OPTIONS")
            and current_app.extensions["fitkart_store"].chosen_write_plan == "point")


# The point plan's scans, named in docs/operations.md: a user's records found to be cleared by user_id, a
# record of a table keyed by something else named by its Supabase id alone, a WAL delete found by its replica
# identity columns (and, in FilterWatch, a read or delete of more than POINT_AT_MOST documents at once with one
# `$in`).
POINT_PLAN_SCANS = frozenset({
    ("find", "cart_items", ("user_id",)), ("find", "wishlist_items", ("user_id",)),
    *(("find", table, ("id",)) for table in ("profiles", "wishlist_items", "user_roles")),
    # A WAL delete logged under a replica identity index that is neither the primary key nor the mirror's key.
    ("find", "cart_items", ("product_id", "size", "user_id")),
})
# Every command the apps of the tests send to the mirror's tables and tombstones while writing.
WRITE_PATH = FilterWatch({*BY_COLLECTION, TOMBSTONES}, point_plan_write, POINT_PLAN_SCANS, POINT_AT_MOST)
Store.command_listeners = (WRITE_PATH,)


@pytest.fixture(autouse=True)
def point_plan_filters():
    """Under the point plan, every write-path command of every test is an insert or goes by `_id` alone."""
    WRITE_PATH.clear()
    yield
    assert not WRITE_PATH.stray, f"not by _id under the point plan: {WRITE_PATH.stray[:3]}"


def decimal128_override() -> bool | None:
    """FITKART_TEST_DECIMAL128 (1: the server stores Decimal128, anything else: it does not); None when unset.

    Not needed (the server is asked), but honoured when set.
    """
    setting = os.environ.get("FITKART_TEST_DECIMAL128", "").strip()
    return None if not setting else setting == "1"


@pytest.fixture(scope="session")
def mongo_server():
    """The MongoDB-compatible server for the whole run (FITKART_TEST_MONGODB_URI reuses one), as a ServerKind.

    Whether it is FerretDB and whether it stores Decimal128 are asked of the server itself.
    """
    external = os.environ.get("FITKART_TEST_MONGODB_URI")
    if external:
        yield ServerKind.of(external, decimal128_override())
        return
    # No skip: a test that needs the server fails when none can start.
    server = MongoServer().start()
    try:
        yield ServerKind.of(server.base_uri, decimal128_override())
    finally:
        server.remove()


@pytest.fixture
def database_uri(mongo_server):
    """The URI of a fresh database, dropped after the test."""
    base_uri = mongo_server.uri
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield f"{base_uri}/{name}"
    # Guard: only ever drop what this fixture named.
    assert name.startswith("test_")
    with pymongo.MongoClient(base_uri, serverSelectionTimeoutMS=2000) as client:
        client.drop_database(name)


@pytest.fixture
def own_server():
    """A database server of the test's own, so stopping it disturbs no other test."""
    server = MongoServer().start()
    yield server
    server.remove()


@pytest.fixture
def own_database():
    """A database server of the test's own (the test may stop it), and its pymongo database."""
    server = MongoServer().start()
    client = pymongo.MongoClient(server.base_uri, serverSelectionTimeoutMS=5000, tz_aware=True)
    yield server, client["own"]
    client.close()
    server.remove()


@pytest.fixture
def decimal_mode(mongo_server) -> str:
    """decimal128 where the server stores it; FerretDB v1 does not, so it runs in double mode."""
    return mongo_server.decimal_mode


def close(app) -> None:
    """Stop the app's spool replayer and close its database client."""
    app.extensions["fitkart_replayer"].stop()
    app.extensions["fitkart_store"].close()


@pytest.fixture
def local_files(tmp_path) -> dict:
    """The test's own rate-limit counters (tests all come from 127.0.0.1: one caller) and spool."""
    return {"FITKART_RATELIMIT_STORAGE": f"sqlite:///{tmp_path / 'ratelimit.sqlite3'}",
            "FITKART_SPOOL_PATH": str(tmp_path / "spool.sqlite3")}


@pytest.fixture
def write_plan(request) -> str:
    """FITKART_WRITE_PLAN of the test's app: `auto`, as a newcomer gets it, unless its module names plans."""
    return getattr(request, "param", "auto")


def pytest_addoption(parser):
    """`--soak N`: run N examples of the convergence property (tests/test_convergence.py) instead of CI's few."""
    parser.addoption("--soak", type=int, default=0, metavar="N",
                     help="examples of the convergence property to run (default: a few, fixed)")


def pytest_generate_tests(metafunc):
    """A module's tests run once per plan in its WRITE_PLANS (the engine's rules hold under each)."""
    plans = getattr(metafunc.module, "WRITE_PLANS", None)
    if plans and "write_plan" in metafunc.fixturenames:
        metafunc.parametrize("write_plan", plans, indirect=True)


@pytest.fixture
def app(database_uri, decimal_mode, local_files, write_plan):
    """The app on a fresh database of the real server."""
    app = create_app({"TESTING": True, "FITKART_MONGODB_URI": database_uri,
                      "FITKART_DECIMAL_MODE": decimal_mode, "FITKART_WRITE_PLAN": write_plan, **local_files})
    yield app
    close(app)


@pytest.fixture
def client(app):
    """A test client of the app."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """A CLI runner of the app."""
    return app.test_cli_runner()


@pytest.fixture
def mongo(database_uri):
    """The test database through pymongo, to check what the server stored."""
    with pymongo.MongoClient(database_uri, tz_aware=True, serverSelectionTimeoutMS=2000) as client:
        yield client.get_default_database()


@pytest.fixture
def embedded_app(local_files):
    """The app on the embedded (mongomock) store, for what FerretDB cannot show (Decimal128)."""
    app = create_app({"TESTING": True, "FITKART_MONGODB_URI": "embedded",
                      "FITKART_DECIMAL_MODE": "decimal128", **local_files})
    yield app
    close(app)


@pytest.fixture
def make_app(local_files, write_plan):
    """Build apps with given settings (on top of TESTING and the test's write plan); their clients close afterwards."""
    made = []

    def build(**settings):
        app = create_app({"TESTING": True, **local_files, "FITKART_WRITE_PLAN": write_plan, **settings})
        made.append(app)
        return app

    yield build
    for app in made:
        close(app)


@pytest.fixture
def jwks_server():
    """A local stand-in for `<SUPABASE_URL>/auth/v1/.well-known/jwks.json` with one EC key."""
    from .tokens import JwksServer, SigningKey

    server = JwksServer()
    server.keys.append(SigningKey("key-1"))
    yield server
    server.close()


@pytest.fixture
def secure_app(make_app, database_uri, decimal_mode, jwks_server):
    """The app with Supabase authentication on: the test JWT secret and the local JWKS."""
    from .tokens import JWT_SECRET

    return make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode,
                    SUPABASE_JWT_SECRET=JWT_SECRET, SUPABASE_URL=jwks_server.url,
                    FITKART_JWKS_COOLDOWN_SECONDS=1)


@pytest.fixture
def secure_client(secure_app):
    """A test client of the app with authentication on."""
    return secure_app.test_client()


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL for the Supabase side, for the whole run."""
    from testbed.servers.postgres import PostgresServer

    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def supabase_db(postgres_server):
    """A fresh PostgreSQL database holding the FitKart tables; its connection string."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield postgres_server.create_database(name)
    postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def logical_postgres():
    """A real PostgreSQL with wal_level=logical and wal2json (Debian's), as Supabase runs it, for the WAL follower."""
    from testbed.servers.postgres import PostgresServer, ensure_wal2json, postgres_bindir

    ensure_wal2json(postgres_bindir())
    # synchronous_commit on: a change is decodable as soon as its transaction returns.
    server = PostgresServer({"wal_level": "logical", "synchronous_commit": "on"}).start()
    yield server
    server.stop()


@pytest.fixture
def supabase_wal_db(logical_postgres):
    """A fresh database with the FitKart tables on the logical server; its slots are dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    url = logical_postgres.create_database(name)
    yield url
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                           "WHERE database = current_database() AND NOT active")
    logical_postgres.drop_database(name)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Remember how many gunicorn servers were started before this test (see the report hook below)."""
    item.fitkart_servers_before = len(gunicorn.STARTED)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test shows the log of every gunicorn it started: a server's own account of a lost answer."""
    report = (yield).get_result()
    if report.failed:
        for server in gunicorn.STARTED[getattr(item, "fitkart_servers_before", len(gunicorn.STARTED)):]:
            report.sections.append((f"gunicorn on port {server.port}", server.log_tail()))
