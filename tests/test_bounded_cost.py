"""Refusing a hostile record costs little: answer, stored reject and log line stay small on every path."""

import json
import logging
import urllib.error
import urllib.request
from pathlib import Path

import bson
import pytest

from fitkart_server.bounds import MAX_FIELD_ERRORS, MAX_MESSAGE, MAX_PATH, MORE
from fitkart_server.ops.requestlog import TEXT_FORMAT, JsonLines
from testbed.data.hostile import BODY_LIMIT, deep_chain, flat_dollars, size
from testbed.data.records import cart_item, new_id, order, product, profile
from testbed.servers.gunicorn import GunicornServer, request

ANSWER_LIMIT = 64 * 1024
REJECT_LIMIT = 128 * 1024
LOG_LINE_LIMIT = 16 * 1024
SECRET = "webhook-shared-secret"

HOSTILE = {
    "deep-chain": lambda: profile(body_measurements=deep_chain()),
    "flat-80000-dollar-keys": lambda: profile(body_measurements=flat_dollars()),
    "top-level-80000-bad-columns": lambda: {**profile(), **{f"bad col {i}": 1 for i in range(45_000)}},
}


@pytest.fixture
def hooks_client(make_app, database_uri, decimal_mode):
    """A client of the app with webhooks on."""
    return make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode,
                    FITKART_WEBHOOK_SECRET=SECRET).test_client()


def send(client, path: str, record: dict):
    """Post a hostile record through one of the write paths; the response and the error it carries."""
    if path == "batch":
        body = {"operations": [{"op": "upsert", "collection": "profiles", "record": record}]}
        response = client.post("/api/sync/batch", json=body)
        return response, response.json["results"][0]["error"]
    if path == "webhook":
        body = {"type": "INSERT", "table": "profiles", "schema": "public", "record": record, "old_record": None}
        response = client.post("/api/webhooks/supabase", json=body, headers={"X-Webhook-Secret": SECRET})
        return response, response.json
    response = client.post(path, json=record)
    return response, response.json


def assert_bounded_errors(errors: dict) -> None:
    """At most 50 field errors and a `_more`, each key and message cut short."""
    messages = [(key, message) for key, values in errors.items() for message in values]
    assert len(messages) <= MAX_FIELD_ERRORS + 1
    assert MORE in errors
    for key, message in messages:
        assert len(key) <= MAX_PATH and len(message) <= MAX_MESSAGE


@pytest.mark.parametrize("path", ["/api/sync/profiles", "/api/sync/profile", "batch", "webhook"])
@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_record_is_refused_cheaply(hooks_client, mongo, caplog, path, kind):
    """A 422 under 64 KB naming at most 50 fields, one reject under 128 KB, no log line over 16 KB."""
    record = HOSTILE[kind]()
    assert size(record) < BODY_LIMIT
    with caplog.at_level(logging.DEBUG):
        response, error = send(hooks_client, path, record)
    assert response.status_code == (200 if path == "batch" else 422)
    assert error["code"] == 422
    assert len(response.data) < ANSWER_LIMIT
    assert_bounded_errors(error["errors"]["json"])
    rejects = list(mongo.sync_rejects.find())
    assert len(rejects) == 1
    assert len(bson.encode(rejects[0])) < REJECT_LIMIT
    assert rejects[0]["payload_truncated"] is (size(record) > 64 * 1024)
    assert all(len(record.getMessage()) < LOG_LINE_LIMIT for record in caplog.records)


def test_a_batch_of_hostile_records_shares_one_error_budget(client, mongo):
    """Forty hostile operations: fifty field errors in all, not fifty each."""
    operations = [{"op": "upsert", "collection": "profiles", "record": profile(body_measurements=flat_dollars(200))}
                  for _ in range(40)]
    response = client.post("/api/sync/batch", json={"operations": operations})
    assert response.status_code == 200 and len(response.data) < ANSWER_LIMIT
    errors = [result["error"]["errors"].get("json", {}) for result in response.json["results"]]
    shown = sum(len(values) for each in errors for key, values in each.items() if key != MORE)
    assert shown == MAX_FIELD_ERRORS
    assert all(MORE in each for each in errors)


@pytest.mark.parametrize(("collection", "field", "make"), [("products", "price", product),
                                                           ("orders", "total_amount", order)])
@pytest.mark.parametrize("amount", [1e30, 1e8, 99999999.999, -1e30])
def test_money_outside_numeric_10_2_is_a_422_naming_the_field(client, mongo, collection, field, make, amount):
    """Huge, too precise or negative money is refused and kept, never a 500."""
    response = client.post(f"/api/sync/{collection}", json=make(**{field: amount}))
    assert response.status_code == 422, response.json
    assert field in response.json["errors"]["json"]
    assert mongo.sync_rejects.count_documents({"collection": collection}) == 1
    assert mongo[collection].count_documents({}) == 0


def test_huge_money_in_a_batch_is_that_operations_error_only(client, mongo):
    """Operations before and after it are applied; the batch answers 200 with one error in place."""
    first, last = cart_item(), cart_item()
    operations = [{"op": "upsert", "collection": "cart_items", "record": first},
                  {"op": "upsert", "collection": "orders", "record": order(total_amount=1e30)},
                  {"op": "upsert", "collection": "cart_items", "record": last}]
    response = client.post("/api/sync/batch", json={"operations": operations})
    assert response.status_code == 200
    results = response.json["results"]
    assert [results[0]["result"], results[1]["error"]["code"], results[2]["result"]] == ["created", 422, "created"]
    assert "total_amount" in results[1]["error"]["errors"]["json"]
    assert mongo.sync_rejects.count_documents({"collection": "orders"}) == 1


def test_huge_money_by_webhook_is_a_422(hooks_client, mongo):
    """Supabase's own webhook carrying an impossible amount is refused as invalid, and kept."""
    body = {"type": "INSERT", "table": "products", "schema": "public", "record": product(price=1e30),
            "old_record": None}
    response = hooks_client.post("/api/webhooks/supabase", json=body, headers={"X-Webhook-Secret": SECRET})
    assert response.status_code == 422 and "price" in response.json["errors"]["json"]
    assert mongo.sync_rejects.count_documents({"source": "webhook"}) == 1


def test_replayed_hostile_reject_is_refused_again_cheaply(runner, client, mongo):
    """`flask fitkart rejects --replay` of a hostile record stores a bounded reject again."""
    record = profile(user_id=new_id(), body_measurements=flat_dollars(5000))
    client.post("/api/sync/profiles", json=record)
    (stored,) = mongo.sync_rejects.find()
    result = runner.invoke(args=["fitkart", "rejects", "--replay", str(stored["_id"])])
    assert result.exit_code == 1 and "refused again" in result.output
    replayed = mongo.sync_rejects.find_one({"route": {"$regex": "^flask fitkart rejects"}})
    assert_bounded_errors(json.loads(replayed["errors"]))
    assert len(bson.encode(replayed)) < REJECT_LIMIT


@pytest.mark.parametrize("huge", ["$" * 1_000_000, "😀" * 300_000, "\x01" * 300_000])
def test_no_log_line_is_long(app, caplog, huge):
    """Whatever a message or a trace holds, a log line is under 16 KB, as text or as JSON."""
    with caplog.at_level(logging.INFO):
        try:
            raise ValueError(huge)
        except ValueError:
            app.logger.exception("refused %s", huge)
    (record,) = [record for record in caplog.records if record.name == app.logger.name]
    assert len(logging.Formatter(TEXT_FORMAT).format(record).encode()) < LOG_LINE_LIMIT
    assert len(JsonLines().format(record).encode()) < LOG_LINE_LIMIT


def worker_peak_rss(pid: int) -> int:
    """A process's peak resident memory in bytes (VmHWM)."""
    (line,) = [line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmHWM:")]
    return int(line.split()[1]) * 1024


def test_a_gunicorn_worker_refuses_hostile_bodies_in_little_memory(database_uri, decimal_mode, tmp_path):
    """One worker, every hostile body on every path: peak memory grows < 50 MB, answers and log lines stay small."""
    log_path = tmp_path / "server.log"
    server = GunicornServer(database_uri, decimal_mode, workers=1, threads=1, log_path=log_path,
                            env={"FITKART_WEBHOOK_SECRET": SECRET}).start()
    try:
        (worker,) = server.worker_pids()
        assert request(f"{server.url}/api/sync/profiles", profile())[0] == 200
        baseline = worker_peak_rss(worker)
        for make in HOSTILE.values():
            record = make()
            for url, body, headers in [
                    ("/api/sync/profiles", record, {}),
                    ("/api/sync/batch", {"operations": [{"op": "upsert", "collection": "profiles",
                                                         "record": record}]}, {}),
                    ("/api/webhooks/supabase", {"type": "INSERT", "table": "profiles", "record": record},
                     {"X-Webhook-Secret": SECRET})]:
                status, size_of_answer = raw_request(f"{server.url}{url}", body, headers)
                assert status in (200, 422) and size_of_answer < ANSWER_LIMIT
        growth = worker_peak_rss(worker) - baseline
    finally:
        server.stop()
    assert growth < 50 * 1024 * 1024, f"worker peak memory grew {growth / 1e6:.0f} MB"
    assert all(len(line) < LOG_LINE_LIMIT for line in log_path.read_text().splitlines())


def raw_request(url: str, body: dict, headers: dict) -> tuple[int, int]:
    """POST a JSON body; the status and the answer's size in bytes."""
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, len(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, len(error.read())


def is_ferretdb(mongo) -> bool:
    """Whether the test database server is FerretDB (it says so in buildInfo)."""
    return "ferretdbVersion" in mongo.client.admin.command("buildInfo")


def test_a_database_refusal_is_quoted_briefly_and_not_retried(client, mongo):
    """FerretDB refuses nested arrays quoting the record: the answer quotes 500 characters at most, at once."""
    if not is_ferretdb(mongo):
        pytest.skip("MongoDB stores nested arrays; this refusal is FerretDB v1's")
    record = cart_item(note=[["a" * 99_000] * 5])
    response = client.post("/api/sync/cart_items", json=record)
    assert response.status_code == 422 and len(response.json["message"]) <= 500
    operations = [{"op": "upsert", "collection": "cart_items", "record": cart_item(note=[["a" * 9_000]])}
                  for _ in range(50)]
    response = client.post("/api/sync/batch", json={"operations": operations})
    assert len(response.data) < ANSWER_LIMIT + 200 * len(operations)
    assert {len(result["error"]["message"]) <= 500 for result in response.json["results"]} == {True}


def test_webhook_payload_errors_are_budgeted(hooks_client, mongo):
    """A webhook body of 60,000 unknown keys: one short 422, not 60,000 errors."""
    body = {"type": "INSERT", "table": "orders", **{f"k{index:05d}": 1 for index in range(60_000)}}
    response = hooks_client.post("/api/webhooks/supabase", json=body, headers={"X-Webhook-Secret": SECRET})
    assert response.status_code == 422 and len(response.data) < ANSWER_LIMIT
    assert_bounded_errors(response.json["errors"]["json"])


def test_a_record_cannot_grow_past_one_megabyte_by_merging(client, mongo):
    """Unknown columns merge across writes; the write that would pass 1 MiB is a 422, and reads stay small."""
    item = cart_item()
    assert client.post("/api/sync/cart_items", json=item).status_code == 200
    statuses = [client.post("/api/sync/cart_items", json={"id": item["id"], f"extra_{step}": "x" * 99_000}).status_code
                for step in range(12)]
    assert statuses[:10] == [200] * 10 and statuses[-1] == 422
    assert len(client.get(f"/api/sync/cart_items/{item['id']}").data) < 1024 * 1024 + 4096
    operations = [{"op": "upsert", "collection": "cart_items", "record": {"id": item["id"]}}] * 20
    response = client.post("/api/sync/batch", json={"operations": operations})
    results = response.json["results"]
    assert [result["result"] for result in results] == ["unchanged"] * 20
    assert "record" in results[0] and "record" not in results[-1]
    assert len(response.data) < 2 * 1024 * 1024


def test_a_list_page_ends_early_when_its_records_are_large(client, mongo):
    """Five records of ~900 KB: a page of 100 holds one, and the cursor leads to the rest."""
    user = new_id()
    columns = {f"note_{index}": "x" * 90_000 for index in range(10)}  # strings are at most 100,000 characters
    for _ in range(5):
        assert client.post("/api/sync/cart_items", json=cart_item(user_id=user, **columns)).status_code == 200
    seen, cursor = 0, None
    while True:
        page = client.get("/api/sync/cart_items", query_string={"user_id": user, **({"cursor": cursor} if cursor
                                                                                     else {})})
        assert len(page.data) < 2 * 1024 * 1024
        seen += len(page.json["items"])
        cursor = page.json["next_cursor"]
        if cursor is None:
            break
    assert seen == 5
