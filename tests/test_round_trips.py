"""What each kind of write costs in database round trips, pinned: a change that adds one fails here.

Counted with pymongo's command monitoring, on the request's own thread (housekeeping and the spool's
replayer run on threads of their own). Not timed: the count is a property of the code, the time is the
benchmark's (BENCHMARKS.md).
"""

import threading

import pytest
from pymongo import monitoring

from testbed.data.records import cart_item, profile


class RequestCommands(monitoring.CommandListener):
    """The database commands one thread sends while it is being watched."""

    def __init__(self) -> None:
        self.thread: int | None = None
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if threading.get_ident() == self.thread:
            self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def during(self, send) -> list[str]:
        """The commands `send()` made on this thread."""
        self.names, self.thread = [], threading.get_ident()
        try:
            send()
        finally:
            self.thread = None
        return self.names


# pymongo's listeners are process-wide and apply to clients made after registering: one, idle unless watching.
COMMANDS = RequestCommands()
monitoring.register(COMMANDS)


@pytest.fixture
def watched(app):
    """A client of an app whose database client was made after the listener, warmed up (indexes made)."""
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    assert client.post("/api/sync/profiles", json=profile()).status_code == 200
    return client


def count(client, method: str, path: str, body=None) -> list[str]:
    """The commands one request sends, after checking it succeeded."""
    answers = []
    sent = COMMANDS.during(lambda: answers.append(getattr(client, method)(path, json=body)))
    assert answers[0].status_code == 200, answers[0].get_json()
    return sent


def test_round_trips_per_kind_of_write(watched):
    """Today's cost per request kind, command by command (the targets of BENCHMARKS.md are lower)."""
    item = cart_item()
    assert count(watched, "post", "/api/sync/cart_items", item) == ["find", "find", "insert"]  # record, tombstone
    assert count(watched, "post", "/api/sync/cart_items", {"id": item["id"], "quantity": 5}) == ["find", "update"]
    assert count(watched, "post", "/api/sync/cart_items", {"id": item["id"], "quantity": 5}) == ["find"]  # unchanged
    assert count(watched, "delete", f"/api/sync/cart_items/{item['id']}") == ["find", "insert", "delete"]
    batch = {"operations": [{"op": "upsert", "collection": "cart_items", "record": cart_item()} for _ in range(10)]}
    assert count(watched, "post", "/api/sync/batch", batch) == ["find", "find", "insert"]  # records, tombstones, bulk
