"""sync_rejects has a size cap and a retention: the server trims it itself, oldest first."""

import time
from datetime import timedelta

from fitkart_server.clock import utc_now
from testbed.data.records import cart_item

MEGABYTE = 1024 * 1024


def rejects_size(mongo) -> int:
    """The collection's size as the server measures it."""
    return mongo.command("collStats", "sync_rejects")["size"]


def test_rejects_past_their_age_or_the_cap_are_trimmed_oldest_first(make_app, database_uri, decimal_mode, mongo):
    """Three megabytes of payloads under a one-megabyte cap, and one from last year: the newest stay."""
    now = utc_now()
    mongo.sync_rejects.insert_one({"at": now - timedelta(days=400), "reason": "last year", "payload": "{}"})
    mongo.sync_rejects.insert_many([
        {"at": now - timedelta(minutes=60 - minute), "reason": f"minute {minute}", "payload": "x" * 50_000}
        for minute in range(60)])
    assert rejects_size(mongo) > 2 * MEGABYTE
    client = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode,
                      FITKART_REJECTS_MAX_MB=1, FITKART_REJECTS_DAYS=30).test_client()
    assert client.post("/api/sync/cart_items", json=cart_item()).status_code == 200
    deadline = time.monotonic() + 15
    while rejects_size(mongo) > MEGABYTE and time.monotonic() < deadline:
        time.sleep(0.2)
    assert rejects_size(mongo) <= MEGABYTE
    kept = [doc["reason"] for doc in mongo.sync_rejects.find().sort("at", 1)]
    assert "last year" not in kept
    assert kept and kept[-1] == "minute 59"
    assert kept == [f"minute {minute}" for minute in range(60 - len(kept), 60)]
