"""`flask fitkart rejects --replay ID` refuses a reject whose payload was cut at 64 KiB when stored."""

import re

from fitkart_server.sync.rejects import PAYLOAD_LIMIT
from testbed.data.records import cart_item


def fitkart(runner, *args: str):
    """Run a `flask fitkart ...` command."""
    return runner.invoke(args=["fitkart", *args], catch_exceptions=False)


def test_a_payload_cut_at_64_kib_is_not_replayed_and_exits_2(client, runner, mongo):
    """A reject whose cause is fixed but whose stored payload was cut exits 2 and changes nothing."""
    item = cart_item(quantity=1)
    # A partial update before its create (refused: a new record needs its required columns), with an extra
    # column long enough that its JSON is over 64 KiB: the reject keeps only the first 64 KiB of it.
    early = {"id": item["id"], "quantity": 4, "gift_note": "x" * (PAYLOAD_LIMIT + 1024)}
    assert client.post("/api/sync/cart_items", json=early).status_code == 422
    stored = mongo.sync_rejects.find_one({"collection": "cart_items"})
    assert stored["payload_truncated"] is True and len(stored["payload"].encode()) == PAYLOAD_LIMIT
    (reject_id,) = re.findall(r"^([0-9a-f]{24}) ", fitkart(runner, "rejects").output, re.M)
    assert reject_id == str(stored["_id"])

    assert client.post("/api/sync/cart_items", json=item).json["result"] == "created"  # the cause, fixed
    replayed = fitkart(runner, "rejects", "--replay", reject_id)
    assert replayed.exit_code == 2, replayed.output
    assert "cut at 64 KiB" in replayed.output
    record = mongo.cart_items.find_one({"_id": item["id"]})
    assert record["quantity"] == 1 and "gift_note" not in record
    assert record["_fitkart"]["version"] == 1
    after = mongo.sync_rejects.find_one({"_id": stored["_id"]})
    assert "replayed_at" not in after and "replay_result" not in after
    assert mongo.sync_rejects.count_documents({}) == 1  # not refused again as a new reject either
