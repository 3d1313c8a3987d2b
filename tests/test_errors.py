"""One JSON error shape everywhere: never an HTML page, never a stack trace."""

import pytest

from fitkart_server.sync.engine import SyncEngine
from testbed.data.records import cart_item


@pytest.mark.parametrize(("method", "path", "kwargs", "status"), [
    ("post", "/api/sync/cart", {"data": "{bad json", "content_type": "application/json"}, 400),
    ("get", "/api/sync/nothing-here", {}, 404),
    ("put", "/api/sync/cart_items", {"json": {}}, 405),
    ("post", "/api/sync/cart_items", {"data": "x" * (1024 * 1024 + 1), "content_type": "application/json"},
     413),
    ("post", "/api/sync/cart_items", {"data": "id=1", "content_type": "application/x-www-form-urlencoded"},
     415),
    ("post", "/api/sync/cart_items", {"json": {"id": "1"}}, 422),
    ("get", "/api/sync/cart_items?limit=100000000", {}, 422),
    ("delete", "/api/sync/cart_items?user_id=not-a-uuid", {}, 422),
])
def test_errors_are_json(client, method, path, kwargs, status):
    """400, 404, 405, 413, 415 and 422 (for a body or a query string) all answer {code, status, message}."""
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status
    assert response.is_json
    assert response.json["code"] == status and response.json["status"] and response.json["message"]
    assert "<html" not in response.get_data(as_text=True).lower()
    if "?" in path:
        assert response.json["message"] == "Invalid query string."


def test_unexpected_failure_is_a_json_500_without_a_trace(app, client, monkeypatch):
    """A bug answers 500 with a plain message; the trace goes to the log only."""
    app.config["PROPAGATE_EXCEPTIONS"] = False

    def explode(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(SyncEngine, "upsert_record", explode)
    response = client.post("/api/sync/cart_items", json=cart_item())
    assert response.status_code == 500 and response.json["code"] == 500
    body = response.get_data(as_text=True)
    assert "secret internals" not in body and "Traceback" not in body


def test_health_and_readiness(client):
    """/healthz says the process is up; /readyz that the database answers."""
    assert client.get("/healthz").json["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["status"] == "ready" and ready.json["mode"] == "server"


def test_openapi_document_comes_from_the_schemas(client):
    """/api/openapi.json lists every route, with the entity schemas as request bodies."""
    spec = client.get("/api/openapi.json").json
    for collection in ("profiles", "products", "orders", "cart_items", "wishlist_items", "user_roles"):
        assert f"/api/sync/{collection}" in spec["paths"]
        assert f"/api/sync/{collection}/{{ref}}" in spec["paths"]
    for legacy in ("profile", "cart", "order"):
        assert f"/api/sync/{legacy}" in spec["paths"]
    body = spec["paths"]["/api/sync/cart_items"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/CartItem"}
    cart_schema = spec["components"]["schemas"]["CartItem"]
    assert set(cart_schema["required"]) == {"id", "user_id", "product_id", "size"}
    assert "/api/sync/batch" in spec["paths"]
