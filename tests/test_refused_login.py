"""A database that refuses the server's login: the server stays up, says why, and recovers by itself."""

import time

import pymongo
import pytest

from testbed.data.records import cart_item
from testbed.servers.gunicorn import GunicornServer, request
from testbed.servers.mongo import MongoServer

ADMIN = ("admin", "admin-password")
APP_PASSWORD = "app-password-not-yet-valid"


@pytest.fixture
def guarded_server():
    """A database server that demands a login, with only its administrator known."""
    server = MongoServer(admin=ADMIN).start()
    yield server
    server.remove()


def wait_for(url: str, status: int, timeout: float = 20.0) -> tuple[int, dict]:
    """Poll a GET until it answers `status`; the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        answer = request(url, timeout=5)
        if answer[0] == status or time.monotonic() > deadline:
            return answer
        time.sleep(0.3)


def test_refused_login_is_503_naming_the_cause_then_recovers(guarded_server, decimal_mode, tmp_path):
    """Under gunicorn: workers boot, /readyz and writes say 503 'refused the login' (no secret), then serve."""
    uri = f"mongodb://fitkart:{APP_PASSWORD}@127.0.0.1:{guarded_server.port}/test_login?authSource=admin"
    server = GunicornServer(uri, decimal_mode, log_path=tmp_path / "server.log").start()
    try:
        status, ready = request(f"{server.url}/readyz")
        assert status == 503 and "refused the login" in ready["reason"], ready
        status, answer = request(f"{server.url}/api/sync/cart_items", cart_item())
        assert status == 503 and "refused the login" in answer["message"]
        log = (tmp_path / "server.log").read_text()
        assert "Worker failed to boot" not in log
        assert APP_PASSWORD not in log and APP_PASSWORD not in str(ready) and "fitkart" not in ready["database"]

        admin_uri = f"mongodb://{ADMIN[0]}:{ADMIN[1]}@127.0.0.1:{guarded_server.port}/?authSource=admin"
        with pymongo.MongoClient(admin_uri, serverSelectionTimeoutMS=5000) as admin:
            # FerretDB v1 knows no roles: any user it knows may do everything.
            roles = ["root"] if guarded_server.kind == "mongod" else []
            admin.admin.command("createUser", "fitkart", pwd=APP_PASSWORD, roles=roles)

        assert wait_for(f"{server.url}/readyz", 200)[0] == 200
        item = cart_item()
        status, answer = request(f"{server.url}/api/sync/cart_items", item)
        assert status == 200 and answer["result"] == "created"
        assert server.process.poll() is None
    finally:
        server.stop()
