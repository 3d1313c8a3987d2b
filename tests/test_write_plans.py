"""The write plan (sync/plan.py): chosen at start-up by what the server is, shown, overridable, and kept to.

Under the point plan every write-path command is an insert or has a filter of exactly `{_id: value}`
(FerretDB v1 decodes the whole collection for any other filter); the autouse check in conftest.py holds
that over every test whose app runs the point plan. Here: that the check catches the guarded plan's
commands (which every write sent before the plans existed), and, on a server that can `explain`
(MongoDB), that the guarded plan's commands use an index.
"""

import json
import logging

import pytest
from flask import has_request_context, request

from fitkart_server import create_app
from fitkart_server.model.documents import TOMBSTONES
from fitkart_server.model.entities import BY_COLLECTION
from fitkart_server.storage.store import Store
from fitkart_server.sync.plan import GUARDED, POINT, POINT_AT_MOST, plan_for
from testbed.commands import FilterWatch
from testbed.data.records import cart_item, profile, wishlist_item

from .conftest import POINT_PLAN_SCANS, WRITE_PATH


def fitkart(runner, *args: str):
    """Run a `flask fitkart ...` command."""
    return runner.invoke(args=["fitkart", *args], catch_exceptions=False)


def test_auto_chooses_by_what_the_server_says_it_is():
    """FerretDB v1 names its version in buildInfo and pushes down only `_id` equality: point; any other, guarded."""
    assert plan_for({"version": "7.0.42", "ferretdbVersion": "v1.24.2"})[0] == POINT
    assert plan_for({"version": "7.0.77", "ferretdbVersion": "v2.1.0"})[0] == GUARDED
    assert plan_for({"version": "8.0.4"}) == (GUARDED, "MongoDB 8.0.4 uses indexes for any filter")


def test_the_plan_is_shown_in_the_log_readyz_status_page_and_stats(make_app, database_uri, mongo_server, caplog):
    """With no setting, the server's own kind decides; one log line, /readyz, the status page and stats say which."""
    expected = POINT if mongo_server.is_ferretdb else GUARDED
    app = create_app({"TESTING": True, "FITKART_MONGODB_URI": database_uri})  # the defaults a newcomer gets
    try:
        client = app.test_client()
        with caplog.at_level(logging.INFO, logger="fitkart_server.storage.store"):
            ready = client.get("/readyz")
        lines = [record.getMessage() for record in caplog.records if "plan" in record.getMessage()]
        assert lines == [f"Writes use the {expected} plan: {ready.json['write_plan_reason']}."]
        assert ready.json["write_plan"] == expected
        assert ready.json["write_plan_reason"].startswith("FITKART_WRITE_PLAN=auto and ")
        page = client.get("/").get_data(as_text=True)
        assert f'id="write-plan">{expected}<' in page
        stats = fitkart(app.test_cli_runner(), "stats")
        assert f"writes use the {expected} plan" in stats.output.splitlines()[0]
    finally:
        app.extensions["fitkart_replayer"].stop()
        app.extensions["fitkart_store"].close()


@pytest.mark.parametrize("setting", ["point", "guarded"])
def test_a_setting_overrides_the_choice(make_app, database_uri, setting):
    """FITKART_WRITE_PLAN=point or guarded is used as set, on any server."""
    app = make_app(FITKART_MONGODB_URI=database_uri, FITKART_WRITE_PLAN=setting)
    ready = app.test_client().get("/readyz").json
    assert (ready["write_plan"], ready["write_plan_reason"]) == (setting, f"FITKART_WRITE_PLAN={setting}")


def test_an_unknown_plan_is_refused_at_start(database_uri):
    """A typo in the setting stops the app with the setting's name, not a first write."""
    with pytest.raises(ValueError, match="FITKART_WRITE_PLAN must be one of auto, guarded, point, not 'fast'"):
        create_app({"TESTING": True, "FITKART_MONGODB_URI": database_uri, "FITKART_WRITE_PLAN": "fast"})


def shop_writes(client) -> None:
    """A partial update, a full row of a stored record, a delete by key and by id, and batches of each kind."""
    item, person, wish = cart_item(), profile(), wishlist_item()
    for collection, record in (("cart_items", item), ("profiles", person), ("wishlist_items", wish)):
        assert client.post(f"/api/sync/{collection}", json=record).status_code == 200
    assert client.post("/api/sync/cart_items", json={"id": item["id"], "quantity": 7}).status_code == 200
    assert client.post("/api/sync/profiles", json={**person, "full_name": "Changed"}).status_code == 200
    rows = [cart_item() for _ in range(3)]
    for records in (rows, [{"id": row["id"], "quantity": 5} for row in rows]):
        body = {"operations": [{"op": "upsert", "collection": "cart_items", "record": record} for record in records]}
        assert client.post("/api/sync/batch", json=body).status_code == 200
    assert client.delete(f"/api/sync/cart_items/{item['id']}").json == {"deleted": 1}
    key = {"user_id": wish["user_id"], "product_id": wish["product_id"]}
    assert client.delete("/api/sync/wishlist_items", json=key).json == {"deleted": 1}


def watching_writes() -> bool:
    """Whether a command is sent by a write request, under either plan."""
    return has_request_context() and request.method != "GET"


@pytest.mark.parametrize("write_plan", [POINT, GUARDED])
def test_the_filter_check_catches_every_command_that_is_not_by_id(make_app, database_uri, monkeypatch, write_plan):
    """The check conftest.py runs under the point plan finds the guarded plan's filters (every write's, before the
    plans): a guarded merge, a version-guarded update, `$in` reads; under the point plan it finds none."""
    watch = FilterWatch({*BY_COLLECTION, TOMBSTONES}, watching_writes, POINT_PLAN_SCANS, POINT_AT_MOST)
    monkeypatch.setattr(Store, "command_listeners", (WRITE_PATH, watch))
    shop_writes(make_app(FITKART_MONGODB_URI=database_uri, FITKART_WRITE_PLAN=write_plan).test_client())
    assert len(watch.seen) > 20
    if write_plan == POINT:
        assert watch.stray == []
    else:
        kinds = {(name, collection) for name, collection, _ in watch.stray}
        assert {("findAndModify", "cart_items"), ("findAndModify", "profiles"), ("find", "cart_items"),
                ("update", "cart_items")} <= kinds, watch.stray


def explain(database, name: str, collection: str, query: dict) -> dict:
    """The query planner's answer for one write-path command's filter."""
    command = {"find": {"find": collection, "filter": query},
               "findAndModify": {"findAndModify": collection, "query": query, "update": {"$set": {"x": 1}}},
               "update": {"update": collection, "updates": [{"q": query, "u": {"$set": {"x": 1}}}]},
               "delete": {"delete": collection, "deletes": [{"q": query, "limit": 0}]}}[name]
    return database.command("explain", command, verbosity="queryPlanner")


def test_the_guarded_plans_commands_use_an_index(make_app, database_uri, monkeypatch, mongo, mongo_server):
    """Where the server can explain a command (MongoDB), no write-path command of the guarded plan scans."""
    if mongo_server.is_ferretdb:
        pytest.skip("FerretDB v1 explains no index use: it pushes down only {_id: value} (the point plan's case)")
    watch = FilterWatch({*BY_COLLECTION, TOMBSTONES}, watching_writes)
    monkeypatch.setattr(Store, "command_listeners", (WRITE_PATH, watch))
    shop_writes(make_app(FITKART_MONGODB_URI=database_uri, FITKART_WRITE_PLAN=GUARDED).test_client())
    scans = []
    for name, collection, filters in watch.seen:
        for query in filters:
            planner = explain(mongo, name, collection, query)["queryPlanner"]
            if "COLLSCAN" in json.dumps(planner["winningPlan"], default=str):
                scans.append((name, collection, query))
    assert watch.seen and scans == []
