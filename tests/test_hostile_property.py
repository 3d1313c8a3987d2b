"""Generated hostile JSON up to the body limit, at every write route: never a 5xx, small answers and rejects."""

import json
import os

import bson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed.data.hostile import BODY_LIMIT
from testbed.data.records import cart_item, new_id, order, product, profile, wishlist_item

EXAMPLES = int(os.environ.get("FITKART_FUZZ_EXAMPLES", 60))
ANSWER_LIMIT = 64 * 1024
REJECT_LIMIT = 128 * 1024
# A batch answers one entry per operation: its bound grows with the operations sent, not their content.
PER_OPERATION = 200
SECRET = "property-webhook-secret"
VALID = {"profiles": profile, "products": product, "orders": order, "cart_items": cart_item,
         "wishlist_items": wishlist_item, "user_roles": lambda: {"user_id": new_id(), "role": "customer"}}
ROUTES = [*(f"/api/sync/{name}" for name in VALID), "/api/sync/profile", "/api/sync/cart", "/api/sync/order"]

# Keys a record should never carry, and plain ones.
keys = st.one_of(st.sampled_from(["$where", "$gt", "a.b", "\x00", "_id", "_fitkart", "id", "user_id", "price",
                                  "total_amount", "items", "quantity"]),
                 st.text(max_size=20), st.text(min_size=200, max_size=2000).map(lambda text: "$" + text))
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([1e30, -1e30, 1e8, 0.001]),
                    st.text(max_size=50), st.just("x" * 100_001), st.sampled_from([new_id(), "not-a-uuid"]))


@st.composite
def amplifiers(draw) -> dict | list:
    """Cheap to generate, large to send (up to ~400 KB each): many bad keys, chains of long keys, long lists."""
    kind = draw(st.sampled_from(["keys", "chain", "list"]))
    key = draw(keys)
    count = draw(st.integers(min_value=0, max_value=400_000 // (len(key) + 10)))
    if kind == "keys":
        return {f"{key}{index}": index for index in range(count)}
    if kind == "list":
        item = draw(st.one_of(st.none(), st.integers(), st.text(max_size=20), st.sampled_from([1e30, "$x"])))
        return [item] * min(count, 10_000)
    value: dict = {f"${index}": 1 for index in range(count % 3000)}
    for level in range(draw(st.integers(min_value=1, max_value=24))):
        value = {(f"{key}{level}" * 30)[:draw(st.integers(min_value=1, max_value=4000))]: value}
    return value


values = st.recursive(st.one_of(scalars, amplifiers()),
                      lambda children: st.one_of(st.lists(children, max_size=4),
                                                 st.dictionaries(keys, children, max_size=4)),
                      max_leaves=6)


@st.composite
def records(draw, collection: str) -> dict:
    """A valid record of the table with hostile fields merged in, or hostile fields alone."""
    base = VALID[collection]() if draw(st.booleans()) else {}
    return {**base, **draw(st.dictionaries(keys, values, max_size=5))}


@st.composite
def requests(draw) -> tuple[str, str, object]:
    """(method, path, JSON body) for one of the write routes."""
    route = draw(st.sampled_from([*ROUTES, "batch", "webhook"]))
    collection = draw(st.sampled_from(list(VALID)))
    if route == "batch":
        operations = draw(st.lists(st.fixed_dictionaries({
            "op": st.sampled_from(["upsert", "delete", "truncate"]),
            "collection": st.sampled_from([*VALID, "users"]),
            "record": records(collection)}), max_size=8))
        return "POST", "/api/sync/batch", {"operations": operations}
    if route == "webhook":
        return "POST", "/api/webhooks/supabase", {
            "type": draw(st.sampled_from(["INSERT", "UPDATE", "DELETE"])), "table": collection, "schema": "public",
            "record": draw(records(collection)), "old_record": draw(st.one_of(st.none(), records(collection)))}
    return draw(st.sampled_from(["POST", "DELETE"])), route, draw(records(collection))


@pytest.fixture
def open_app(make_app, database_uri, decimal_mode):
    """An app with webhooks on and a refusal rate no example reaches, so every refusal is stored and checked."""
    return make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode,
                    FITKART_WEBHOOK_SECRET=SECRET, FITKART_REJECTS_RATE="1000000 per minute")


# Hostile examples are large by design: their repr in a failure report is long, which hypothesis warns about.
@pytest.mark.filterwarnings("ignore:Generating overly large repr")
def test_hostile_json_costs_little_on_every_write_route(open_app, mongo):
    """No 5xx; an answer under 64 KB (a batch: plus a little per operation); every reject under 128 KB."""
    client = open_app.test_client()

    @given(request=requests())
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def costs_little(request) -> None:
        method, path, body = request
        data = json.dumps(body).encode()
        if len(data) > BODY_LIMIT:
            data = data[:BODY_LIMIT]  # the limit itself, cut mid-JSON: a 400, still cheap
        mongo.sync_rejects.delete_many({})
        response = client.open(path, method=method, data=data,
                               headers={"Content-Type": "application/json", "X-Webhook-Secret": SECRET})
        assert response.status_code < 500, response.get_data(as_text=True)[:300]
        operations = len(body["operations"]) if path.endswith("/batch") else 0
        # An accepted record is echoed as stored: as big as it was sent, not bigger.
        echoed = len(data) if response.status_code == 200 else 0
        assert len(response.data) < ANSWER_LIMIT + PER_OPERATION * operations + echoed
        for reject in mongo.sync_rejects.find():
            assert len(bson.encode(reject)) < REJECT_LIMIT

    costs_little()
