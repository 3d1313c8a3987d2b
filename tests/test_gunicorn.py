"""The server as deployed: gunicorn with gunicorn.conf.py, several workers, the real database."""

import json
import re
import socket

import pytest

from testbed.data.records import cart_item
from testbed.servers.gunicorn import GunicornServer, request


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
