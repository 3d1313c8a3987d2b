"""Where the data goes: configured URI, local MongoDB, or (only when neither) the embedded store."""

import logging

import pytest

from fitkart_server.storage import uris
from testbed.data.records import cart_item


@pytest.fixture
def app_with_uri(make_app):
    """Build an app with the given FITKART_MONGODB_URI (None: not configured)."""
    return lambda uri: make_app(FITKART_MONGODB_URI=uri, FITKART_DECIMAL_MODE="double")


def test_no_uri_and_no_local_mongodb_runs_embedded_and_says_so(app_with_uri, monkeypatch, caplog):
    """Embedded mode is announced in the log and in /readyz."""
    monkeypatch.setattr(uris, "local_mongodb_answers", lambda timeout=0.3: False)
    with caplog.at_level(logging.WARNING):
        app = app_with_uri(None)
    assert "EMBEDDED MODE" in caplog.text
    client = app.test_client()
    ready = client.get("/readyz").json
    assert ready["mode"] == "embedded" and "lost" in ready["warning"]
    assert client.post("/api/sync/cart_items", json=cart_item()).json["result"] == "created"


def test_no_uri_with_a_local_mongodb_uses_it(app_with_uri, monkeypatch):
    """When localhost:27017 answers, the default URI is used, not the embedded store."""
    monkeypatch.setattr(uris, "local_mongodb_answers", lambda timeout=0.3: True)
    store = app_with_uri(None).extensions["fitkart_store"]
    assert (store.uri, store.embedded) == ("mongodb://localhost:27017/database", False)


def fake_local_listener(monkeypatch, target: tuple[str, int] | None) -> list[tuple]:
    """Make `localhost:27017`, and only it, reach `target` (None: nothing listens); the addresses asked for.

    Any other address fails the test: the probe must look where the default URI points.
    """
    import socket

    real_connect = socket.create_connection
    asked: list[tuple] = []

    def create_connection(address, timeout=None, *args, **kwargs):
        asked.append(tuple(address))
        if tuple(address) != ("localhost", 27017):
            pytest.fail(f"the local probe asked for {address!r}, not localhost:27017")
        if target is None:
            raise ConnectionRefusedError(111, "Connection refused (nothing listens here in this test)")
        return real_connect(target, timeout=timeout)

    monkeypatch.setattr(socket, "create_connection", create_connection)
    return asked


def test_local_mongodb_probe_sees_a_listener(mongo_server, monkeypatch):
    """The probe asks localhost:27017 and reports what really listens there (the test server, standing in)."""
    host, port = mongo_server.uri.removeprefix("mongodb://").split(":")
    asked = fake_local_listener(monkeypatch, (host, int(port)))
    assert uris.local_mongodb_answers() is True
    assert uris.choose_uri(None) == uris.LOCAL_URI == "mongodb://localhost:27017/database"
    assert asked == [("localhost", 27017)] * 2


def test_local_mongodb_probe_without_a_listener_chooses_embedded(monkeypatch):
    """Nothing on localhost:27017: the probe says so, and only then is the embedded store chosen."""
    asked = fake_local_listener(monkeypatch, None)
    assert uris.local_mongodb_answers() is False
    assert uris.choose_uri(None) == uris.EMBEDDED
    assert uris.choose_uri("mongodb://db.example:27017/shop") == "mongodb://db.example:27017/shop"  # no probe
    assert asked == [("localhost", 27017)] * 2


def test_configured_uri_never_falls_back(app_with_uri, mongo_server):
    """An unreachable configured database is waited for (reads 503, writes queued), never the embedded store."""
    app = app_with_uri("mongodb://127.0.0.1:9/database?serverSelectionTimeoutMS=300")
    client = app.test_client()
    assert client.get("/readyz").json["mode"] == "server"
    assert client.get("/api/sync/cart_items").status_code == 503
    assert client.post("/api/sync/cart_items", json=cart_item()).status_code == 202


@pytest.mark.parametrize(("uri", "name"), [
    ("mongodb://localhost:27017/database", "database"),
    ("mongodb://localhost:27017", "database"),
    ("mongodb://user:pw@a.example:27017,b.example:27017/shop?replicaSet=rs0", "shop"),
    ("mongodb+srv://user:pw@cluster0.example.mongodb.net/mirror?retryWrites=true&w=majority", "mirror"),
])
def test_database_name_comes_from_the_uri(uri, name):
    """Replica-set and SRV URIs name their database like plain ones."""
    assert uris.database_name(uri) == name


def test_passwords_are_hidden_from_readyz(app_with_uri, monkeypatch):
    """/readyz shows where the data is without the user, the password or the options."""
    app = app_with_uri("mongodb://fitkart:s3cret@127.0.0.1:9/database?serverSelectionTimeoutMS=200")
    body = app.test_client().get("/readyz").get_data(as_text=True)
    assert "s3cret" not in body and "fitkart:" not in body and "mongodb://127.0.0.1:9/database" in body


@pytest.mark.parametrize(("setting", "expected"), [("auto", {"w": 1}), ("majority", {"w": "majority"}),
                                                   ("2", {"w": 2})])
def test_write_concern_follows_the_setting(make_app, database_uri, decimal_mode, setting, expected):
    """FITKART_WRITE_CONCERN: auto is 1 on a standalone server (the test server), or as configured."""
    app = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode,
                   FITKART_WRITE_CONCERN=setting)
    assert app.extensions["fitkart_store"].database().write_concern.document == expected
