"""The server as it is run facing clients: behind nginx with deploy/nginx-fitkart.conf, gunicorn behind it."""

import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from testbed.data.records import cart_item
from testbed.servers.gunicorn import GunicornServer, request
from testbed.servers.nginx import NginxProxy
from testbed.waiting import wait_until

from .test_gunicorn import raw_exchange

# nginx drops a client that has not sent its headers, or a piece of its body, for 10 s (the shipped timeouts);
# the rest is slack for a busy machine.
DROPPED_WITHIN = 30


@pytest.fixture
def proxied(database_uri, decimal_mode):
    """gunicorn (two workers of four threads, as deployed) behind nginx, which it trusts for client addresses."""
    server = GunicornServer(database_uri, decimal_mode, env={"FITKART_TRUSTED_PROXIES": "127.0.0.1/32"}).start()
    proxy = NginxProxy(server.port).start()
    yield server, proxy
    proxy.stop()
    server.stop()


def stalled(port: int, sent: bytes) -> socket.socket:
    """A connection that sent `sent` and then nothing more."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=DROPPED_WITHIN + 10)
    connection.sendall(sent)
    return connection


def closed_after(connection: socket.socket) -> float:
    """Seconds until the other side closes the connection (reading whatever it answers first)."""
    started = time.monotonic()
    try:
        while connection.recv(65536):
            pass
    except OSError:
        pass
    finally:
        connection.close()
    return time.monotonic() - started


def test_slow_senders_are_dropped_by_the_proxy_while_everyone_else_is_served(proxied):
    """Sixteen connections that stop mid-headers or mid-body (more than gunicorn's eight threads): other clients'
    requests are all answered at once, and nginx drops the stalled ones within seconds, not never."""
    _, proxy = proxied
    head = b"POST /api/sync/cart HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\n"
    slow = [stalled(proxy.port, head) for _ in range(8)]
    slow += [stalled(proxy.port, head + b"Content-Length: 500\r\n\r\n{\"id\": ") for _ in range(8)]
    statuses = [request(f"{proxy.url}/healthz", timeout=5)[0] for _ in range(20)]
    assert statuses == [200] * 20
    written = request(f"{proxy.url}/api/sync/cart", cart_item(), timeout=10)
    assert written[0] == 200, written
    waited = [closed_after(connection) for connection in slow]
    assert max(waited) < DROPPED_WITHIN, waited


@pytest.mark.parametrize(("sent", "status"), [
    (b"POST /api/sync/cart HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n",
     413),
    (b"GET /api/sync/cart_items HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"x" * 20000 + b"\r\n\r\n", 431),
    (b"GET /" + b"a" * 6000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 414),
    (b"NOT HTTP AT ALL\r\n\r\n", 400),
], ids=["body-too-large", "header-too-large", "uri-too-long-for-gunicorn", "not-http"])
def test_what_the_proxy_refuses_is_answered_in_the_api_error_shape(proxied, sent, status):
    """nginx's own refusals (and gunicorn's behind it) come as `{code, status, message}` JSON."""
    _, proxy = proxied
    code, content_type, body = raw_exchange(proxy.port, sent)
    assert (code, content_type, body["code"]) == (status, "application/json", status), body


def test_with_the_server_down_the_proxy_answers_502_json_with_retry_after(proxied):
    """gunicorn stopped: nginx answers 502 in the API's shape with Retry-After — not 503, which the server keeps
    for "nothing was kept", where a write sent to a host that died may have been applied."""
    server, proxy = proxied
    server.stop()
    code, content_type, body = raw_exchange(
        proxy.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (code, content_type, body["code"]) == (502, "application/json", 502)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{proxy.url}/api/sync/cart_items", timeout=10)
    assert refused.value.code == 502 and refused.value.headers["Retry-After"] == "2"
    refused.value.close()


def test_a_client_address_claimed_in_x_forwarded_for_is_not_believed(proxied, mongo):
    """A client on this machine claiming to relay 203.0.113.5: nginx passes on the address it saw, so the server
    (trusting nginx) serves it as the local client it is, and the claim changes nothing."""
    _, proxy = proxied
    row = cart_item()
    sent = json.dumps(row).encode()
    code, _, body = raw_exchange(proxy.port, (
        b"POST /api/sync/cart HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
        b"X-Forwarded-For: 203.0.113.5\r\nContent-Length: " + str(len(sent)).encode() + b"\r\n\r\n" + sent))
    assert (code, body["result"]) == (200, "created")
    assert wait_until(lambda: mongo.cart_items.count_documents({"id": row["id"]}) == 1)
