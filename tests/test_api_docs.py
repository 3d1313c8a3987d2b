"""`/api/docs`: Swagger UI from this server's own files, over an OpenAPI document with working examples."""

from fitkart_server.model.entities import ENTITIES


def test_every_example_in_the_docs_is_accepted(client):
    """Each table's example body is in the OpenAPI document, and the server accepts it as it stands."""
    spec = client.get("/api/openapi.json").json
    for entity in ENTITIES:
        body = spec["paths"][f"/api/sync/{entity.collection}"]["post"]["requestBody"]
        example = body["content"]["application/json"]["example"]
        answer = client.post(f"/api/sync/{entity.collection}", json=example)
        assert answer.status_code == 200 and answer.json["result"] == "created", (entity.collection, answer.json)
    batch = spec["paths"]["/api/sync/batch"]["post"]["requestBody"]["content"]["application/json"]["example"]
    results = client.post("/api/sync/batch", json=batch).json["results"]
    assert [result.get("result", result.get("deleted")) for result in results] == ["unchanged", "updated", 1]


def test_swagger_ui_is_served_from_this_server(client):
    """The page loads its script and stylesheet from /api/docs/assets/, which serves them."""
    page = client.get("/api/docs").get_data(as_text=True)
    assert 'src="/api/docs/assets/swagger-ui-bundle.js"' in page and "/api/openapi.json" in page
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui-standalone-preset.js"):
        with client.get(f"/api/docs/assets/{asset}") as response:  # a file response: closed after use
            assert response.status_code == 200
    assert client.get("/api/docs/assets/../../wsgi.py").status_code == 404
