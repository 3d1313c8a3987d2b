"""The server as deployed: gunicorn with gunicorn.conf.py, several workers, the real database."""

import json
import re
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from testbed.data.records import cart_item
from testbed.servers.gunicorn import GunicornServer, request
from testbed.waiting import wait_until


@pytest.fixture
def gunicorn(database_uri, decimal_mode):
    """gunicorn serving wsgi:app with the deployment config, on a free port."""
    server = GunicornServer(database_uri, decimal_mode).start()
    yield server
    server.stop()


def test_gunicorn_serves_the_legacy_routes_and_stops_cleanly(gunicorn, mongo):
    """Forty legacy cart posts to two workers all land; SIGTERM exits with status 0."""
    items = [cart_item() for _ in range(40)]
    for item in items:
        status, body = request(f"{gunicorn.url}/api/sync/cart", item)
        assert (status, body["result"]) == (200, "created")
    assert mongo.cart_items.count_documents({}) == 40
    assert len(gunicorn.worker_pids()) == 2
    assert gunicorn.terminate() == 0


def raw_exchange(port: int, sent: bytes) -> tuple[int, str, dict]:
    """Send bytes as they are on a new connection; the answer's status, Content-Type and JSON body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(sent)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer:
                head, _, body = answer.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                if length and len(body) >= int(length.group(1)):
                    break
    head, _, body = answer.partition(b"\r\n\r\n")
    content_type = re.search(rb"(?i)content-type: *([^\r\n;]+)", head)
    return int(head.split()[1]), (content_type.group(1).decode() if content_type else ""), json.loads(body)


@pytest.mark.parametrize(("sent", "status"), [
    (b"NOT A REQUEST\r\n\r\n", 400),
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET /api/sync/cart_items HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"x" * 9000 + b"\r\n\r\n", 431),
    (b"GET //api//sync//cart_items HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404),
], ids=["bad-request-line", "uri-too-long", "header-too-large", "doubled-slashes"])
def test_what_gunicorn_refuses_itself_is_answered_in_the_api_error_shape(gunicorn, sent, status):
    """Refusals gunicorn makes before the app sees a request, and a path with doubled slashes: JSON
    `{code, status, message}`, never an HTML page or a redirect."""
    code, content_type, body = raw_exchange(gunicorn.port, sent)
    assert (code, content_type, body["code"]) == (status, "application/json", status)
    assert body["message"] and body["status"]


def test_one_callers_big_batches_never_take_every_thread(gunicorn, mongo):
    """One caller sends eight valid 1,000-operation batches at once to two workers of four threads: each worker
    applies at most one of them (so the caller holds at most two of the eight threads), the others are answered
    429 at once having applied nothing, and a single write sent meanwhile is served."""
    batches = [{"operations": [{"op": "upsert", "collection": "cart_items", "record": cart_item()}
                               for _ in range(1000)]} for _ in range(8)]
    pool = ThreadPoolExecutor(8)
    try:
        sent = [pool.submit(request, f"{gunicorn.url}/api/sync/batch", batch, 120) for batch in batches]
        assert wait_until(lambda: sum(future.done() for future in sent) >= 8 - gunicorn.workers, 60)
        assert request(f"{gunicorn.url}/api/sync/cart", cart_item(), 60)[0] == 200
        answers = [future.result() for future in sent]
    finally:
        pool.shutdown()
    statuses = [status for status, _ in answers]
    admitted = statuses.count(200)
    assert 1 <= admitted <= gunicorn.workers and statuses.count(429) == 8 - admitted, statuses
    assert all(body["code"] == 429 for status, body in answers if status == 429)
    assert mongo.cart_items.count_documents({}) == admitted * 1000 + 1
