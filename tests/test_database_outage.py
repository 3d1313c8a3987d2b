"""The database going away: 503 with Retry-After within ~2 s, and recovery with no restart."""

import time

import pytest

from testbed.data.records import cart_item

# A write while the database is away waits for server selection (FITKART_DB_TIMEOUT_MS, 2 s by default) and
# pymongo's one retry, about 4 s, then is queued. The bound only tells "gives up at the app's own short
# timeouts" from "waits like a client left at pymongo's defaults" (30 s of server selection, twice); how long
# a queued write takes is a benchmark figure.
QUEUE_BOUND = 20


@pytest.fixture
def outage_app(make_app, own_server, decimal_mode):
    """An app on the test's own server."""
    return make_app(FITKART_MONGODB_URI=f"{own_server.base_uri}/test_outage",
                    FITKART_DECIMAL_MODE=decimal_mode)


def wait_for_status(client, path: str, status: int, timeout: float = 30.0):
    """Poll until `path` answers `status`; the response, or None on time-out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(path)
        if response.status_code == status:
            return response
        time.sleep(0.2)
    return None


def test_unreachable_database_queues_writes_then_service_resumes(own_server, outage_app):
    """Stop the server: writes 202 (queued) and reads 503, quickly; start it again: the same app serves again."""
    client = outage_app.test_client()
    before = cart_item()
    assert client.post("/api/sync/cart_items", json=before).status_code == 200

    own_server.stop()
    started = time.monotonic()
    queued = cart_item()
    response = client.post("/api/sync/cart_items", json=queued)
    elapsed = time.monotonic() - started
    assert response.status_code == 202 and response.json["result"] == "queued"
    assert elapsed < QUEUE_BOUND, f"the 202 took {elapsed:.1f} s: longer than the app's own timeouts allow"
    read = client.get(f"/api/sync/cart_items/{before['id']}")
    assert read.status_code == 503 and read.headers["Retry-After"] == "2"
    assert read.json["code"] == 503 and "unreachable" in read.json["message"]
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json["status"] == "unavailable"

    own_server.start()
    assert wait_for_status(client, "/readyz", 200) is not None
    assert wait_for_status(client, f"/api/sync/cart_items/{queued['id']}", 200) is not None
    after = cart_item()
    assert client.post("/api/sync/cart_items", json=after).json["result"] == "created"
    assert client.get(f"/api/sync/cart_items/{before['id']}").status_code == 200


def test_app_started_before_its_database_serves_once_it_answers(own_server, make_app, decimal_mode):
    """A server started while MongoDB is down answers 503, then works when it comes up."""
    own_server.stop()
    app = make_app(FITKART_MONGODB_URI=f"{own_server.base_uri}/test_outage",
                   FITKART_DECIMAL_MODE=decimal_mode)
    client = app.test_client()
    response = client.get("/api/sync/cart_items")
    assert response.status_code == 503 and response.headers["Retry-After"] == "2"
    own_server.start()
    assert wait_for_status(client, "/api/sync/cart_items", 200) is not None
