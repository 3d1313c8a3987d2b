"""`/metrics`, read with prometheus-client's own parser: the counters move as the writes happen."""

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from testbed.data.records import cart_item
from testbed.servers.gunicorn import GunicornServer, request


def samples(text: str) -> dict[tuple, float]:
    """Every sample as {(name, sorted labels): value}."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels) -> float:
    """One sample's value (0 when it does not exist yet)."""
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    return samples(response.get_data(as_text=True))


def test_counters_move_with_sync_results_and_requests(client):
    """created, updated, unchanged, deleted and rejected are each counted once per record."""
    before = scrape(client)
    item = cart_item()
    client.post("/api/sync/cart_items", json=item)                       # created
    client.post("/api/sync/cart_items", json={**item, "quantity": 5})    # updated
    client.post("/api/sync/cart_items", json={**item, "quantity": 5})    # unchanged
    client.post("/api/sync/cart_items", json={"id": item["id"], "quantity": "many"})  # rejected
    client.delete(f"/api/sync/cart_items/{item['id']}")                  # deleted
    client.post("/api/sync/batch", json={"operations": [
        {"op": "upsert", "collection": "orders", "record": {"id": "x"}},
        {"op": "upsert", "collection": "cart_items", "record": cart_item()}]})  # rejected + created (bulk path)
    after = scrape(client)

    def moved(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    results = "fitkart_sync_results_total"
    assert moved(results, collection="cart_items", result="created") == 2
    assert moved(results, collection="cart_items", result="updated") == 1
    assert moved(results, collection="cart_items", result="unchanged") == 1
    assert moved(results, collection="cart_items", result="rejected") == 1
    assert moved(results, collection="cart_items", result="deleted") == 1
    assert moved(results, collection="orders", result="rejected") == 1
    requests = "fitkart_http_requests_total"
    assert moved(requests, method="POST", route="/api/sync/cart_items", status="200") == 3
    assert moved(requests, method="POST", route="/api/sync/cart_items", status="422") == 1
    assert moved(requests, method="DELETE", route="/api/sync/cart_items/<ref>", status="200") == 1
    assert moved("fitkart_http_request_duration_seconds_count", route="/api/sync/cart_items") == 4
    assert moved("fitkart_db_command_duration_seconds_count", command="find") >= 4
    assert moved("fitkart_db_command_duration_seconds_count", command="insert") >= 2
    assert value(after, "fitkart_db_up") == 1


def test_database_down_shows_in_the_gauge(make_app):
    """Nothing answers on the database port: fitkart_db_up is 0."""
    app = make_app(FITKART_MONGODB_URI="mongodb://127.0.0.1:9/nothing", FITKART_DB_TIMEOUT_MS=300)
    assert value(scrape(app.test_client()), "fitkart_db_up") == 0


def test_one_scrape_counts_every_gunicorn_worker(own_database, decimal_mode):
    """Two workers under gunicorn (multiprocess mode): each scrape sums both, and sees the database go down."""
    server, _ = own_database
    app = GunicornServer(f"{server.base_uri}/own", decimal_mode, workers=2, threads=2).start()
    try:
        for _ in range(40):
            assert request(f"{app.url}/api/sync/cart_items", cart_item())[0] == 200
        for _ in range(4):  # whichever worker answers the scrape, the totals are the same
            with urllib.request.urlopen(f"{app.url}/metrics", timeout=10) as response:
                found = samples(response.read().decode())
            assert value(found, "fitkart_http_requests_total", method="POST", route="/api/sync/cart_items",
                         status="200") == 40
            assert value(found, "fitkart_sync_results_total", collection="cart_items", result="created") == 40
            assert value(found, "fitkart_db_up") == 1
        server.stop()
        with urllib.request.urlopen(f"{app.url}/metrics", timeout=30) as response:
            assert value(samples(response.read().decode()), "fitkart_db_up") == 0
    finally:
        app.stop()
