"""`/metrics`, read with prometheus-client's own parser: the counters move as the writes happen."""

import json
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

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


def served_by(log_path, route: str) -> Counter:
    """How many requests to `route` each worker (pid) answered 200, from the server's JSON request log."""
    served = Counter()
    for line in log_path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line that is not the app's (gunicorn's own at start)
        if (isinstance(entry, dict) and entry.get("route") == route and entry.get("method") == "POST"
                and entry.get("status") == 200):
            served[entry["pid"]] += 1
    return served


def test_one_scrape_counts_every_gunicorn_worker(own_database, decimal_mode, tmp_path):
    """Two workers under gunicorn (multiprocess mode): each scrape sums both, and sees the database go down."""
    server, _ = own_database
    log_path = tmp_path / "gunicorn.log"
    # JSON request lines name the worker (pid) that answered each request: a count that is not the metrics'.
    app = GunicornServer(f"{server.base_uri}/own", decimal_mode, workers=2, threads=2, log_path=log_path,
                         env={"FITKART_LOG_FORMAT": "json"}).start()
    route = "/api/sync/cart_items"
    try:
        workers = set(app.worker_pids())
        assert len(workers) == 2
        sent = 0
        # Which worker accepts a connection is the kernel's choice: send in concurrent rounds until both
        # have answered some (each round is 8 requests at once; the cap only stops a broken server).
        with ThreadPoolExecutor(max_workers=8) as pool:
            for _ in range(50):
                statuses = list(pool.map(lambda _: request(f"{app.url}{route}", cart_item())[0], range(8)))
                assert statuses == [200] * 8, statuses
                sent += 8
                if sent >= 40 and len(served_by(log_path, route)) >= 2:
                    break
        served = served_by(log_path, route)
        assert set(served) == workers, f"not every worker served: {dict(served)} of {sorted(workers)}"
        assert sum(served.values()) == sent, (dict(served), sent)
        for _ in range(4):  # whichever worker answers the scrape, the totals are those of both
            with urllib.request.urlopen(f"{app.url}/metrics", timeout=10) as response:
                found = samples(response.read().decode())
            assert value(found, "fitkart_http_requests_total", method="POST", route=route, status="200") == sent, \
                f"the scrape does not count every worker: {dict(served)}"
            assert value(found, "fitkart_sync_results_total", collection="cart_items", result="created") == sent
            assert value(found, "fitkart_db_up") == 1
        server.stop()
        with urllib.request.urlopen(f"{app.url}/metrics", timeout=30) as response:
            assert value(samples(response.read().decode()), "fitkart_db_up") == 0
    finally:
        app.stop()
