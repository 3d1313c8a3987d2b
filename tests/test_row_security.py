"""Row-level security, mirrored from the shop: every rule, allowed and denied, on the real database."""

import json
import uuid

import pytest

from testbed.data import records

from .tokens import bearer, claims_for, hs256

# The engine's rules hold under each write plan (sync/plan.py): every test here runs under both.
WRITE_PLANS = ("point", "guarded")

OWNED = {"profiles": records.profile, "cart_items": records.cart_item,
         "wishlist_items": records.wishlist_item, "orders": records.order}


class Shop:
    """Callers of the secured server: users by id, the service role, and the database to check."""

    def __init__(self, client, mongo, issuer: str) -> None:
        self.client, self.mongo, self.issuer = client, mongo, issuer
        self.service = bearer(hs256(claims_for(None, role="service_role", issuer="supabase", audience=None)))

    def user(self, user_id: str) -> dict:
        """The Authorization header of a signed-in user."""
        return bearer(hs256(claims_for(user_id, issuer=self.issuer)))

    def post(self, collection: str, record: dict, headers: dict):
        """Upsert one record as the given caller."""
        return self.client.post(f"/api/sync/{collection}", json=record, headers=headers)

    def seed(self, collection: str, record: dict) -> dict:
        """Store a record with the service role."""
        assert self.post(collection, record, self.service).status_code == 200
        return record

    def make_seller(self, user_id: str) -> None:
        """Grant the seller role, as only the service role can."""
        self.seed("user_roles", {"user_id": user_id, "role": "seller"})


@pytest.fixture
def shop(secure_client, mongo, jwks_server) -> Shop:
    """The secured server with its callers."""
    return Shop(secure_client, mongo, f"{jwks_server.url}/auth/v1")


def ref_of(collection: str, record: dict) -> str:
    """The URL ref of a record."""
    return record["user_id"] if collection in ("profiles", "user_roles") else record["id"]


# -- profiles, cart_items, wishlist_items, orders ------------------------------------------

@pytest.mark.parametrize("collection", OWNED)
def test_user_writes_reads_and_deletes_own_rows(shop, collection):
    """Allowed: a user's own rows, all the way through."""
    me = str(uuid.uuid4())
    row = OWNED[collection](user_id=me)
    assert shop.post(collection, row, shop.user(me)).json["result"] == "created"
    ref = ref_of(collection, row)
    assert shop.client.get(f"/api/sync/{collection}/{ref}", headers=shop.user(me)).status_code == 200
    assert [item["user_id"] for item in
            shop.client.get(f"/api/sync/{collection}", headers=shop.user(me)).json["items"]] == [me]
    deleted = shop.client.delete(f"/api/sync/{collection}/{ref}", headers=shop.user(me))
    assert deleted.json == {"deleted": 1}


@pytest.mark.parametrize("collection", OWNED)
def test_user_cannot_create_a_row_for_another_user(shop, collection):
    """Denied: user_id in the payload is someone else's."""
    me, other = str(uuid.uuid4()), str(uuid.uuid4())
    response = shop.post(collection, OWNED[collection](user_id=other), shop.user(me))
    assert response.status_code == 403 and response.is_json
    assert shop.mongo[collection].count_documents({}) == 0
    reject = shop.mongo.sync_rejects.find_one()
    assert reject["status"] == 403 and reject["caller"] == {"role": "authenticated", "user_id": me}


@pytest.mark.parametrize("collection", OWNED)
def test_user_cannot_update_another_users_row(shop, collection):
    """Denied: naming someone else's stored record is not a takeover, even without user_id; it is refused as the
    same write naming a record that does not exist is (403, or the 422 of a new record lacking columns)."""
    me, other = str(uuid.uuid4()), str(uuid.uuid4())
    theirs = shop.seed(collection, OWNED[collection](user_id=other))
    snapshot = list(shop.mongo[collection].find())
    key_fields = {"profiles": ["user_id"], "wishlist_items": ["user_id", "product_id"]}.get(collection, ["id"])
    key = {name: theirs[name] for name in key_fields}

    def answer(payload: dict) -> tuple[int, str]:
        response = shop.post(collection, payload, shop.user(me))
        return response.status_code, response.json["message"]

    for payload in (key, key | {"created_at": "2030-01-01T00:00:00+00:00"}, key | {"id": theirs["id"]}):
        absent = {name: str(uuid.uuid4()) if name in (*key_fields, "id") else value for name, value in payload.items()}
        assert answer(payload) == answer(absent) and answer(payload)[0] in (403, 422)
    assert list(shop.mongo[collection].find()) == snapshot


@pytest.mark.parametrize("collection", ["cart_items", "orders", "wishlist_items"])
def test_user_cannot_move_own_row_to_another_user(shop, collection):
    """Denied: changing user_id of one's own record."""
    me, other = str(uuid.uuid4()), str(uuid.uuid4())
    mine = shop.post(collection, OWNED[collection](user_id=me), shop.user(me)).json["record"]
    moved = {name: mine[name] for name in ("id", "product_id") if name in mine} | {"user_id": other}
    assert shop.post(collection, moved, shop.user(me)).status_code == 403
    assert shop.mongo[collection].find_one({"id": mine["id"]})["user_id"] == me


@pytest.mark.parametrize("collection", OWNED)
def test_another_users_rows_look_absent_to_reads_and_deletes(shop, collection):
    """Hidden, as under row-level security: a read or delete of someone else's record answers as one of a record
    that does not exist; lists show only one's own; their record stays."""
    me, other = str(uuid.uuid4()), str(uuid.uuid4())
    theirs = shop.seed(collection, OWNED[collection](user_id=other))

    def answers(ref: str) -> list:
        read = shop.client.get(f"/api/sync/{collection}/{ref}", headers=shop.user(me))
        deleted = shop.client.delete(f"/api/sync/{collection}/{ref}", headers=shop.user(me))
        return [read.status_code, read.json["message"].replace(ref, "<ref>"), deleted.status_code, deleted.json]

    absent = answers(str(uuid.uuid4()))
    assert answers(ref_of(collection, theirs)) == absent and absent[0::2] == [404, 200]
    assert absent[3] == {"deleted": 0}
    listing = shop.client.get(f"/api/sync/{collection}?user_id={other}", headers=shop.user(me))
    assert listing.json["items"] == []
    assert shop.client.get(f"/api/sync/{collection}", headers=shop.user(me)).json["items"] == []
    assert shop.mongo[collection].count_documents({}) == 1


@pytest.mark.parametrize("collection", ["cart_items", "wishlist_items"])
def test_user_clears_only_own_cart_and_wishlist(shop, collection):
    """Allowed: clearing one's own; clearing someone else's clears nothing, as if they had none."""
    me, other, nobody = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    shop.seed(collection, OWNED[collection](user_id=me))
    shop.seed(collection, OWNED[collection](user_id=other))
    for someone in (other, nobody):
        cleared = shop.client.delete(f"/api/sync/{collection}?user_id={someone}", headers=shop.user(me))
        assert (cleared.status_code, cleared.json) == (200, {"deleted": 0})
    assert shop.client.delete(f"/api/sync/{collection}?user_id={me}", headers=shop.user(me)).json == {"deleted": 1}
    assert shop.mongo[collection].distinct("user_id") == [other]


def test_wishlist_delete_by_key_of_another_user_deletes_and_keeps_nothing(shop):
    """The (user_id, product_id) body naming someone else's row, present or absent: `{"deleted": 0}`, their row
    stays, and no tombstone is kept for a key the caller cannot own."""
    me, other = str(uuid.uuid4()), str(uuid.uuid4())
    theirs = shop.seed("wishlist_items", records.wishlist_item(user_id=other))
    for product_id in (theirs["product_id"], str(uuid.uuid4())):
        response = shop.client.delete("/api/sync/wishlist_items", headers=shop.user(me),
                                      json={"user_id": other, "product_id": product_id})
        assert (response.status_code, response.json) == (200, {"deleted": 0})
    assert shop.mongo.wishlist_items.count_documents({}) == 1
    assert shop.mongo.sync_tombstones.count_documents({}) == 0


def test_every_refused_write_gets_one_answer_whoever_holds_the_row(shop):
    """A user's write onto another user's row, a row made out to another user, and a row whose unique id another
    user's row holds are refused alike; a partial write naming another user's row is answered as one naming an
    absent row: the answer never says whether that row exists."""
    me, other = str(uuid.uuid4()), str(uuid.uuid4())
    their_item = shop.seed("wishlist_items", records.wishlist_item(user_id=other))
    their_cart = shop.seed("cart_items", records.cart_item(user_id=other))
    attempts = [
        ("cart_items", {**records.cart_item(user_id=me), "id": their_cart["id"]}),  # their row, by its key
        ("cart_items", records.cart_item(user_id=other)),  # a new row made out to them
        ("wishlist_items", {**records.wishlist_item(user_id=me), "id": their_item["id"]}),  # their unique id
    ]
    answers = set()
    for collection, record in attempts:
        response = shop.post(collection, record, shop.user(me))
        answers.add((response.status_code, response.json["message"]))
    assert len(answers) == 1 and answers.pop()[0] == 403
    for partial in ({"id": their_cart["id"]}, {"id": their_cart["id"], "user_id": me, "quantity": 3}):
        absent = {**partial, "id": str(uuid.uuid4())}
        answered = [shop.post("cart_items", record, shop.user(me)) for record in (partial, absent)]
        assert answered[0].status_code == answered[1].status_code != 200, [a.json for a in answered]
        assert answered[0].json["message"] == answered[1].json["message"]
    batch = shop.client.post("/api/sync/batch", headers=shop.user(me), json={"operations": [
        {"op": "upsert", "collection": collection, "record": record} for collection, record in attempts]})
    assert len({json.dumps(result, sort_keys=True) for result in batch.json["results"]}) == 1, batch.json
    assert shop.mongo.wishlist_items.count_documents({"user_id": me}) == 0
    assert shop.mongo.cart_items.count_documents({"user_id": me}) == 0


def test_the_anon_key_is_refused_alike_whether_the_row_exists(shop):
    """The anon key writing a user's existing cart row or an id no row has: the same 403, the same words."""
    anon = bearer(hs256(claims_for(None, role="anon", issuer="supabase", audience=None)))
    theirs = shop.seed("cart_items", records.cart_item())
    answers = [shop.post("cart_items", {"id": ref, "quantity": 2}, anon) for ref in (theirs["id"], str(uuid.uuid4()))]
    assert [answer.status_code for answer in answers] == [403, 403]
    assert answers[0].json["message"] == answers[1].json["message"]


@pytest.mark.parametrize("collection", OWNED)
def test_service_role_may_do_everything(shop, collection):
    """The service role writes, reads and deletes anyone's rows."""
    row = shop.seed(collection, OWNED[collection]())
    ref = ref_of(collection, row)
    assert shop.client.get(f"/api/sync/{collection}/{ref}", headers=shop.service).status_code == 200
    assert len(shop.client.get(f"/api/sync/{collection}", headers=shop.service).json["items"]) == 1
    assert shop.client.delete(f"/api/sync/{collection}/{ref}", headers=shop.service).json == {"deleted": 1}


# -- user_roles --------------------------------------------------------------------------------

def test_user_creates_and_reads_own_customer_role(shop):
    """Allowed: one's own role as customer (explicit or by default), and reading it."""
    me, you = str(uuid.uuid4()), str(uuid.uuid4())
    assert shop.post("user_roles", {"user_id": me}, shop.user(me)).json["record"]["role"] == "customer"
    assert shop.post("user_roles", {"user_id": you, "role": "customer"}, shop.user(you)).status_code == 200
    assert shop.client.get(f"/api/sync/user_roles/{me}", headers=shop.user(me)).json["role"] == "customer"


def test_user_cannot_make_itself_a_seller(shop):
    """Denied: role seller for oneself, on create or on update."""
    me, other = str(uuid.uuid4()), str(uuid.uuid4())
    assert shop.post("user_roles", {"user_id": me, "role": "seller"}, shop.user(me)).status_code == 403
    shop.post("user_roles", {"user_id": other}, shop.user(other))
    assert shop.post("user_roles", {"user_id": other, "role": "seller"}, shop.user(other)).status_code == 403
    assert shop.mongo.user_roles.count_documents({"role": "seller"}) == 0


def test_user_cannot_touch_another_users_role_or_delete_roles(shop):
    """Denied: reading, creating or deleting another's role; deleting one's own."""
    me, other = str(uuid.uuid4()), str(uuid.uuid4())
    shop.seed("user_roles", {"user_id": other})
    assert shop.client.get(f"/api/sync/user_roles/{other}", headers=shop.user(me)).status_code == 404
    assert shop.post("user_roles", {"user_id": str(uuid.uuid4())}, shop.user(me)).status_code == 403
    shop.post("user_roles", {"user_id": me}, shop.user(me))
    assert shop.client.delete(f"/api/sync/user_roles/{me}", headers=shop.user(me)).status_code == 403
    assert shop.mongo.user_roles.count_documents({}) == 2


def test_service_role_grants_and_removes_seller(shop):
    """The service role sets seller and deletes roles."""
    user = str(uuid.uuid4())
    shop.make_seller(user)
    assert shop.mongo.user_roles.find_one({"user_id": user})["role"] == "seller"
    assert shop.client.delete(f"/api/sync/user_roles/{user}", headers=shop.service).json == {"deleted": 1}


# -- products ----------------------------------------------------------------------------------

def test_everyone_signed_in_reads_all_products(shop):
    """Allowed: any user reads the whole catalogue."""
    shop.seed("products", records.product())
    item = shop.seed("products", records.product())
    reader = shop.user(str(uuid.uuid4()))
    assert len(shop.client.get("/api/sync/products", headers=reader).json["items"]) == 2
    assert shop.client.get(f"/api/sync/products/{item['id']}", headers=reader).status_code == 200


def test_seller_writes_and_deletes_own_products(shop):
    """Allowed: a seller (per the mirror's user_roles) creates, updates and deletes its products."""
    seller = str(uuid.uuid4())
    shop.make_seller(seller)
    item = records.product(seller_id=seller)
    assert shop.post("products", item, shop.user(seller)).json["result"] == "created"
    assert shop.post("products", {"id": item["id"], "price": 999}, shop.user(seller)).json["result"] == "updated"
    assert shop.client.delete(f"/api/sync/products/{item['id']}", headers=shop.user(seller)).json == {"deleted": 1}


def test_non_seller_cannot_write_products(shop):
    """Denied: a customer creating a product, even one naming itself as seller."""
    customer = str(uuid.uuid4())
    shop.seed("user_roles", {"user_id": customer})
    assert shop.post("products", records.product(seller_id=customer), shop.user(customer)).status_code == 403
    assert shop.mongo.products.count_documents({}) == 0


def test_seller_cannot_touch_other_sellers_products(shop):
    """Denied: updating, deleting or creating products of another seller, or of nobody."""
    seller, rival = str(uuid.uuid4()), str(uuid.uuid4())
    shop.make_seller(seller)
    theirs = shop.seed("products", records.product(seller_id=rival))
    headers = shop.user(seller)
    assert shop.post("products", {"id": theirs["id"], "price": 1}, headers).status_code == 403
    assert shop.post("products", {"id": theirs["id"], "seller_id": seller}, headers).status_code == 403
    assert shop.client.delete(f"/api/sync/products/{theirs['id']}", headers=headers).status_code == 403
    assert shop.post("products", records.product(seller_id=rival), headers).status_code == 403
    assert shop.post("products", records.product(seller_id=None), headers).status_code == 403
    assert shop.mongo.products.find_one({"id": theirs["id"]})["price"] == pytest.approx(1499.5)


def test_service_role_writes_any_product(shop):
    """The service role manages the whole catalogue."""
    item = shop.seed("products", records.product())
    assert shop.post("products", {"id": item["id"], "is_active": False}, shop.service).status_code == 200
    assert shop.client.delete(f"/api/sync/products/{item['id']}", headers=shop.service).json == {"deleted": 1}


# -- batches and unauthenticated callers -------------------------------------------------------

def test_batch_operations_are_authorized_one_by_one(shop):
    """Own rows pass, a change to another's is refused in place as one to an absent row (a new record lacking its
    columns), its delete deletes nothing, the rest applies."""
    me, other = str(uuid.uuid4()), str(uuid.uuid4())
    theirs = shop.seed("cart_items", records.cart_item(user_id=other))
    operations = [
        {"op": "upsert", "collection": "cart_items", "record": records.cart_item(user_id=me)},
        {"op": "upsert", "collection": "cart_items", "record": {"id": theirs["id"], "quantity": 9}},
        {"op": "delete", "collection": "cart_items", "record": {"id": theirs["id"]}},
        {"op": "upsert", "collection": "wishlist_items", "record": records.wishlist_item(user_id=me)},
    ]
    results = shop.client.post("/api/sync/batch", json={"operations": operations},
                               headers=shop.user(me)).json["results"]
    assert results[0]["result"] == "created" and results[3]["result"] == "created"
    assert results[1]["error"]["code"] == 422 and results[2] == {"deleted": 0}  # as for a row that does not exist
    assert shop.mongo.cart_items.find_one({"id": theirs["id"]})["quantity"] == theirs["quantity"]
    assert [json.loads(r["payload"])["id"] for r in shop.mongo.sync_rejects.find()] == [theirs["id"]]


@pytest.mark.parametrize(("method", "path"), [("get", "/api/sync/products"), ("get", "/api/sync/cart_items"),
                                              ("post", "/api/sync/cart"), ("delete", "/api/sync/cart/x"),
                                              ("post", "/api/sync/batch")])
def test_no_token_no_access(shop, method, path):
    """With authentication on, every sync route needs a token (401 before anything else)."""
    response = getattr(shop.client, method)(path, json={})
    assert response.status_code == 401
    assert shop.mongo.sync_rejects.count_documents({}) == 0
