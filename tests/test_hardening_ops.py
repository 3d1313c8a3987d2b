"""Operations hardening: bounded metric labels, and database URIs shown without credentials."""

import logging
import random
import string
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fitkart_server.storage.uris import redact_uri

# -- B: metric label cardinality ------------------------------------------------------------------

KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}


def scrape(client) -> str:
    """The /metrics text."""
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def request_series(text: str) -> list[dict]:
    """The label sets of every fitkart_http_requests_total sample."""
    return [sample.labels for family in text_string_to_metric_families(text) for sample in family.samples
            if sample.name == "fitkart_http_requests_total"]


def http_lines(text: str) -> list[str]:
    """The samples of the per-request metrics."""
    return [line for line in text.splitlines() if line.startswith("fitkart_http_")]


def made_up_method() -> str:
    """An HTTP method no server knows, like `QWERTYUIOPAS`."""
    return "".join(random.choices(string.ascii_uppercase, k=12))


def test_made_up_methods_and_paths_do_not_add_series(client):
    """Hundreds of random methods and paths: /metrics grows by a constant, not a series per request."""
    def noise() -> None:
        client.open("/api/sync/cart_items", method=made_up_method())
        client.open(f"/{uuid.uuid4().hex}/{uuid.uuid4().hex}", method=made_up_method())
        client.get(f"/api/sync/{uuid.uuid4().hex}/{uuid.uuid4().hex}/x")
        client.get(f"/no/such/{uuid.uuid4().hex}")

    noise()  # the series these requests belong to now exist
    before = scrape(client)
    for _ in range(150):
        noise()
    after = scrape(client)
    assert len(http_lines(after)) == len(http_lines(before))
    # The whole page may gain the histogram of a database command first sent meanwhile (a bounded set).
    assert len(after.splitlines()) - len(before.splitlines()) <= 40
    series = request_series(after)
    assert {labels["method"] for labels in series} <= KNOWN_METHODS
    routes = {labels["route"] for labels in series}
    assert "<unmatched>" in routes and not any(route.startswith("/no/") for route in routes)
    # A made-up method on a real path matches no rule either: 405, counted as unmatched.
    assert {"method": "other", "route": "<unmatched>", "status": "405"} in series


def test_known_methods_keep_their_own_label(client):
    """GET, HEAD, POST, PUT, PATCH, DELETE and OPTIONS are counted as themselves."""
    for method in ("GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"):
        client.open("/api/sync/cart_items", method=method)
    methods = {labels["method"] for labels in request_series(scrape(client))}
    assert {"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"} <= methods


# -- C: database URIs without credentials ----------------------------------------------------------

AWS_URI = ("mongodb://AKIAEXAMPLEUSER:wJalrXUtnFEMIsecretKEY@db.example.com:27017/shop?authMechanism=MONGODB-AWS"
           "&authMechanismProperties=AWS_SESSION_TOKEN:FQoGZXIvYXdzSESSIONtoken")
SECRETS = ("AKIAEXAMPLEUSER", "wJalrXUtnFEMIsecretKEY", "FQoGZXIvYXdzSESSIONtoken", "authMechanism")


@pytest.mark.parametrize(("uri", "shown"), [
    (AWS_URI, "mongodb://db.example.com:27017/shop"),
    ("mongodb://fitkart:s3cret@127.0.0.1:9/database?serverSelectionTimeoutMS=200", "mongodb://127.0.0.1:9/database"),
    ("mongodb+srv://user:pw@cluster0.example.mongodb.net/mirror?retryWrites=true&w=majority",
     "mongodb+srv://cluster0.example.mongodb.net/mirror"),
    ("mongodb://user:pw@h1:1,h2:2/shop?replicaSet=rs0", "mongodb://h1:1,h2:2/shop"),
    ("mongodb://admin:pw@[::1]:27017/database", "mongodb://[::1]:27017/database"),
    ("mongodb://[fe80::1]:27017,[::1]:27018", "mongodb://[fe80::1]:27017,[::1]:27018"),
    ("mongodb://user:pw@localhost:27017", "mongodb://localhost:27017"),
    ("mongodb://user:pw@localhost:27017/?authSource=admin", "mongodb://localhost:27017"),
    ("mongodb://localhost", "mongodb://localhost"),
    ("mongodb://onlyuser@localhost/db", "mongodb://localhost/db"),
    ("mongodb://user:p%40ss%3Aw0rd@host/db", "mongodb://host/db"),
    ("mongodb://user@example.com:pw@host/db", "mongodb://host/db"),  # an unescaped @ in the user name
    ("mongodb://host/shop.orders?tls=true", "mongodb://host/shop"),  # db.collection: the database only
    ("mongodb://%2Ftmp%2Fmongodb-27017.sock/db", "mongodb://%2Ftmp%2Fmongodb-27017.sock/db"),
    ("MongoDB://user:pw@Host:27017/db", "mongodb://Host:27017/db"),
])
def test_a_uri_is_shown_as_scheme_hosts_and_database(uri, shown):
    """No user, no password, no query string: only where the data is."""
    assert redact_uri(uri) == shown


@pytest.mark.parametrize("uri", [
    "mongodb://user:pa/ss@host/db",      # an unescaped / in the password
    "mongodb://user:pa?ss@host/db",      # an unescaped ? in the password
    "mongodb://user:pa ss@host/db",
    "mongodb://user:password",           # no @ at all: the password would pass for a port
    "postgres://user:password@host/db",  # not a MongoDB URI
    "user:password@host",
    "mongodb://user:12345?authSource=admin@host/db",  # credentials before a `?`: user and port-like password
])
def test_a_uri_that_cannot_be_read_shows_nothing_of_its_secrets(uri):
    """A malformed URI is never shown in part: it might split so that a secret passes for a host."""
    shown = redact_uri(uri)
    for secret in ("password", "pa/ss", "pa?ss", "ss@", "pa ss", "user", "12345"):
        assert secret not in shown


def test_readyz_and_the_start_up_log_show_no_credentials(make_app, caplog):
    """/readyz (open to all) and the start-up log show the host and database, never user, password or token."""
    with caplog.at_level(logging.INFO):
        app = make_app(FITKART_MONGODB_URI=AWS_URI.replace("db.example.com:27017", "127.0.0.1:9"),
                       FITKART_DECIMAL_MODE="double", FITKART_DB_TIMEOUT_MS=200)
    assert "Mirroring into mongodb://127.0.0.1:9/shop" in caplog.text
    body = app.test_client().get("/readyz").get_data(as_text=True)
    assert "mongodb://127.0.0.1:9/shop" in body
    status_page = app.test_client().get("/").get_data(as_text=True)
    assert "127.0.0.1:9/shop" in status_page
    for secret in SECRETS:
        assert secret not in caplog.text and secret not in body and secret not in status_page
