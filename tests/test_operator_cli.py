"""`flask fitkart stats` and `flask fitkart rejects [--replay ID]` against the real database."""

import re

from bson import ObjectId

from testbed.data.records import cart_item, order, profile

from .tokens import bearer, claims_for, hs256


def fitkart(runner, *args: str):
    """Run a `flask fitkart ...` command."""
    return runner.invoke(args=["fitkart", *args], catch_exceptions=False)


def test_stats_prints_each_collection(client, runner):
    """Counts, last write source and last hour's writes, one line per collection."""
    for _ in range(2):
        client.post("/api/sync/cart_items", json=cart_item())
    client.post("/api/sync/orders", json=order())
    result = fitkart(runner, "stats")
    assert result.exit_code == 0
    lines = {line.split()[0]: line.split() for line in result.output.splitlines()[2:]}
    assert set(lines) == {"profiles", "products", "orders", "cart_items", "wishlist_items", "user_roles"}
    assert lines["cart_items"][1] == "2" and lines["cart_items"][4] == "client" and lines["cart_items"][5] == "2"
    assert lines["orders"][1] == "1" and lines["profiles"][1:3] == ["0", "-"]


def reject_ids(output: str) -> list[str]:
    return re.findall(r"^([0-9a-f]{24}) ", output, re.M)


def test_rejects_lists_and_replays_one_once_its_cause_is_fixed(client, runner, mongo):
    """A partial update that came before its create is refused; after the create, its replay applies it."""
    item = cart_item(quantity=1)
    early = client.post("/api/sync/cart_items", json={"id": item["id"], "quantity": 4})
    assert early.status_code == 422  # a new record needs its required columns
    listed = fitkart(runner, "rejects")
    assert listed.exit_code == 0 and "cart_items" in listed.output
    (reject_id,) = reject_ids(listed.output)

    assert client.post("/api/sync/cart_items", json=item).json["result"] == "created"  # the cause, fixed
    replayed = fitkart(runner, "rejects", "--replay", reject_id)
    assert replayed.exit_code == 0, replayed.output
    assert "cart_items updated" in replayed.output
    assert mongo.cart_items.find_one({"_id": item["id"]})["quantity"] == 4
    assert mongo.sync_rejects.find_one()["replay_result"] == "updated"
    assert "[replayed]" in fitkart(runner, "rejects").output


def test_a_replay_refused_again_exits_1_and_is_kept(client, runner, mongo):
    """Nothing fixed: the replay is refused as before, and that refusal is a new reject."""
    client.post("/api/sync/profile", json=profile(email=42))
    (reject_id,) = reject_ids(fitkart(runner, "rejects").output)
    result = fitkart(runner, "rejects", "--replay", reject_id)
    assert result.exit_code == 1 and "refused again" in result.output
    assert mongo.sync_rejects.count_documents({}) == 2
    assert "replayed_at" not in mongo.sync_rejects.find_one({"_id": ObjectId(reject_id)})


def test_what_cannot_be_replayed_exits_2(client, runner, secure_app, secure_client, jwks_server):
    """An unknown id, a malformed batch, and another user's row (403) are not replayed."""
    assert fitkart(runner, "rejects", "--replay", "000000000000000000000000").exit_code == 2
    assert fitkart(runner, "rejects", "--replay", "nonsense").exit_code == 2
    client.post("/api/sync/batch", json={"operations": "not a list"})
    (batch_reject,) = reject_ids(fitkart(runner, "rejects").output)
    malformed = fitkart(runner, "rejects", "--replay", batch_reject)
    assert malformed.exit_code == 2 and "not one record's upsert or delete" in malformed.output

    someone, intruder = "8c1f0f5e-4a8b-4a43-9a55-6f0b7c1d2e3f", "1d2e3f4a-5b6c-4d7e-8f90-a1b2c3d4e5f6"
    forbidden = secure_client.post("/api/sync/cart_items", json=cart_item(user_id=someone),
                                   headers=bearer(hs256(claims_for(intruder, issuer=f"{jwks_server.url}/auth/v1"))))
    assert forbidden.status_code == 403
    newest = reject_ids(fitkart(secure_app.test_cli_runner(), "rejects", "--limit", "1").output)[0]
    refused = fitkart(secure_app.test_cli_runner(), "rejects", "--replay", newest)
    assert refused.exit_code == 2 and "another user's row" in refused.output
