"""One log line per request with its request id; JSON lines under gunicorn; no tokens in them."""

import json
import logging
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from fitkart_server.ops.requestlog import configure_logging
from testbed.data.records import cart_item
from testbed.servers.gunicorn import ROOT, GunicornServer, request
from testbed.servers.mongo import free_port

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2VjcmV0LXNpZ25hdHVyZQ"


def request_lines(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "fitkart_server.requests"]


def test_request_id_is_honoured_or_generated_and_logged(client, caplog):
    """A sane X-Request-ID comes back and is logged; a missing or unsafe one is replaced by a new id."""
    caplog.set_level(logging.INFO, logger="fitkart_server.requests")
    kept = client.post("/api/sync/cart_items", json=cart_item(), headers={"X-Request-ID": "edge-7f3a.42"})
    assert kept.headers["X-Request-ID"] == "edge-7f3a.42"
    fresh = client.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", fresh.headers["X-Request-ID"])
    forged = client.get("/healthz", headers={"X-Request-ID": "x\" level=ERROR " + "a" * 200})
    assert re.fullmatch(r"[0-9a-f]{32}", forged.headers["X-Request-ID"])
    secret = client.get("/healthz", headers={"X-Request-ID": TOKEN})  # fits the pattern, but is a token
    assert re.fullmatch(r"[0-9a-f]{32}", secret.headers["X-Request-ID"])
    first, second, third, _ = request_lines(caplog)
    assert (first.request_id, first.method, first.route, first.status) == (
        "edge-7f3a.42", "POST", "/api/sync/cart_items", 200)
    assert first.duration_ms >= 0 and "edge-7f3a.42" in first.getMessage()
    assert (second.route, third.request_id) == ("/healthz", forged.headers["X-Request-ID"])


def test_unknown_log_format_is_refused():
    """FITKART_LOG_FORMAT names one of the formats."""
    with pytest.raises(ValueError, match="FITKART_LOG_FORMAT"):
        configure_logging("xml")


def test_json_lines_under_gunicorn_without_tokens(database_uri, decimal_mode, tmp_path):
    """FITKART_LOG_FORMAT=json: every line is a JSON object; the request's line has its fields; no token."""
    log_path = tmp_path / "server.log"
    app = GunicornServer(database_uri, decimal_mode, workers=1, env={"FITKART_LOG_FORMAT": "json"},
                         log_path=log_path).start()
    try:
        body = json.dumps(cart_item()).encode()
        sent = urllib.request.Request(f"{app.url}/api/sync/cart_items", data=body, headers={
            "Content-Type": "application/json", "X-Request-ID": "trace-123", "Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(sent, timeout=10) as response:
            assert response.headers["X-Request-ID"] == "trace-123"
        with pytest.raises(urllib.error.HTTPError) as missing:  # a token in the path is not logged either
            urllib.request.urlopen(f"{app.url}/api/sync/cart_items/{TOKEN}", timeout=10)
        assert missing.value.code == 404
        missing.value.close()
    finally:
        app.terminate()
    text = log_path.read_text()
    app_lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line, gunicorn's too
    assert any(entry["logger"] == "gunicorn.error" for entry in app_lines)
    line = next(entry for entry in app_lines if entry.get("request_id") == "trace-123")
    assert line["method"] == "POST" and line["route"] == "/api/sync/cart_items" and line["status"] == 200
    assert line["logger"] == "fitkart_server.requests" and line["duration_ms"] >= 0
    assert TOKEN not in text and "Bearer" not in text


def test_flask_run_logs_one_line_per_request(database_uri, tmp_path):
    """Under `flask run` each request is logged once, by the app (werkzeug's own access line would repeat it)."""
    port = free_port()
    env = {**{name: value for name, value in os.environ.items() if not name.startswith("FITKART_")},
           "FITKART_MONGODB_URI": database_uri, "FITKART_SPOOL_PATH": str(tmp_path / "spool.sqlite3"),
           "FITKART_RATELIMIT_STORAGE": f"sqlite:///{tmp_path / 'ratelimit.sqlite3'}"}
    flask = Path(sys.executable).with_name("flask")
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen([str(flask), "run", "--port", str(port)], cwd=ROOT, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while request(f"http://127.0.0.1:{port}/healthz", timeout=1)[0] != 200:
            assert server.poll() is None and time.monotonic() < deadline, "flask run did not start"
            time.sleep(0.1)
        marker = uuid.uuid4().hex  # in the path (werkzeug's line) and the request id (the app's line)
        asked = urllib.request.Request(f"http://127.0.0.1:{port}/readyz?{marker}", headers={"X-Request-ID": marker})
        with urllib.request.urlopen(asked, timeout=10) as answer:
            assert answer.status == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
    lines = (tmp_path / "server.log").read_text().splitlines()
    logged = [line for line in lines if marker in line]
    assert len(logged) == 1 and "fitkart_server.requests" in logged[0] and "GET /readyz 200" in logged[0], lines
