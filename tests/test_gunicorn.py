"""The server as deployed: gunicorn with gunicorn.conf.py, several workers, the real database."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .mongo_server import free_port
from .records import cart_item

ROOT = Path(__file__).resolve().parent.parent


def request(url: str, body: dict | None = None) -> tuple[int, dict]:
    """One HTTP request as the legacy client makes it; status and JSON body."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


@pytest.fixture
def gunicorn_url(database_uri, decimal_mode):
    """gunicorn serving wsgi:app with the deployment config, on a free port."""
    port = free_port()
    env = {**os.environ, "FITKART_MONGODB_URI": database_uri, "FITKART_DECIMAL_MODE": decimal_mode,
           "WEB_CONCURRENCY": "2"}
    gunicorn = Path(sys.executable).with_name("gunicorn")
    process = subprocess.Popen([str(gunicorn), "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
                                "wsgi:app"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if request(f"{url}/readyz")[0] == 200:
                break
        except OSError:
            pass
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "gunicorn did not become ready"
        time.sleep(0.2)
    yield url, process
    if process.poll() is None:
        process.kill()
        process.wait()
    process.stderr.close()


def test_gunicorn_serves_the_legacy_routes_and_stops_cleanly(gunicorn_url, mongo):
    """Forty legacy cart posts to two workers all land; SIGTERM exits with status 0."""
    url, process = gunicorn_url
    items = [cart_item() for _ in range(40)]
    for item in items:
        status, body = request(f"{url}/api/sync/cart", item)
        assert (status, body["result"]) == (200, "created")
    assert mongo.cart_items.count_documents({}) == 40
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
