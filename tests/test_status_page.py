"""The status page and reject pages as HTML: what they show, and who may see them."""

import re
from datetime import UTC, datetime

from testbed.data.records import cart_item, order, profile

from .tokens import bearer, claims_for, hs256

ADMIN_TOKEN = "operator-token-for-tests"
OUTSIDE = {"REMOTE_ADDR": "203.0.113.9"}


def row_of(html: str, collection: str) -> str:
    """The table row of one collection."""
    match = re.search(rf'<tr data-collection="{collection}">(.*?)</tr>', html, re.S)
    assert match, f"no row for {collection}"
    return match.group(1)


def count_in(row: str) -> int:
    """The document count cell of a collection row."""
    return int(re.search(r'class="num count">([\d,]+)<', row).group(1).replace(",", ""))


def test_status_page_shows_counts_last_write_and_writes_per_hour(client):
    """Counts, last write's source and last hour's writes per collection, from what was written."""
    for _ in range(3):
        assert client.post("/api/sync/cart_items", json=cart_item()).status_code == 200
    assert client.post("/api/sync/orders", json=order()).status_code == 200
    doomed = cart_item()
    client.post("/api/sync/cart_items", json=doomed)
    client.delete(f"/api/sync/cart_items/{doomed['id']}")
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert '<meta http-equiv="refresh" content="5">' in html
    assert 'id="db-state" class="up">up<' in html
    carts, orders, profiles = row_of(html, "cart_items"), row_of(html, "orders"), row_of(html, "profiles")
    assert count_in(carts) == 3 and count_in(orders) == 1 and count_in(profiles) == 0
    assert "<td>client</td>" in carts
    # 3 stored + the deleted one (its delete is the last write of it) = 4 writes in the hour
    assert re.search(r'<td class="num">4</td>', carts)
    assert "<polyline" in carts
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert "script" not in html.lower()  # no scripts at all: the CSP forbids them


def test_status_page_lists_rejects_and_shows_one_payload(client):
    """A refused write appears with its route and reason; its page shows the payload."""
    bad = profile(email=12345)
    assert client.post("/api/sync/profile", json=bad).status_code == 422
    html = client.get("/").get_data(as_text=True)
    rejects = re.search(r'<table id="rejects">(.*?)</table>', html, re.S).group(1)
    assert "/api/sync/profile" in rejects and "profiles" in rejects
    link = re.search(r'href="(/status/rejects/[0-9a-f]{24})"', rejects).group(1)
    detail = client.get(link)
    assert detail.status_code == 200
    text = detail.get_data(as_text=True)
    assert bad["user_id"] in text and "email" in text
    assert client.get("/status/rejects/000000000000000000000000").status_code == 404
    assert client.get("/status/rejects/not-an-id").status_code == 404


def test_status_page_shows_the_latest_verify_run(client, mongo):
    """The newest verify run's status and drift counts per table."""
    tables = {"orders": {"supabase_rows": 10, "mirror_rows": 9, "drift": 2, "missing": 1, "extra": 0,
                         "different": 1}}
    mongo.sync_runs.insert_one({"kind": "verify", "source": "postgres://db:5432/postgres", "status": "drift",
                                "started_at": datetime(2026, 1, 1, tzinfo=UTC),
                                "finished_at": datetime(2026, 1, 1, 0, 1, tzinfo=UTC), "tables": tables})
    html = client.get("/").get_data(as_text=True)
    verify = re.search(r'<table id="verify">(.*?)</table>', html, re.S).group(1)
    assert "<td>orders</td>" in verify and '<td class="num">10</td>' in verify
    assert "drift" in re.search(r'<p id="verify-summary">(.*?)</p>', html, re.S).group(1)


def test_unreachable_database_gives_a_banner_not_an_error(make_app):
    """Nothing listens on the database port: the page still renders, with the banner."""
    app = make_app(FITKART_MONGODB_URI="mongodb://127.0.0.1:9/nothing", FITKART_DB_TIMEOUT_MS=300)
    page = app.test_client().get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="unreachable"' in html and "Database unreachable" in html
    assert 'class="down">down<' in html and 'id="collections"' not in html


def test_outside_loopback_the_pages_need_an_operator_token(make_app, database_uri, decimal_mode):
    """Other addresses get the sign-in form (401); the admin token, by header or cookie, opens them."""
    app = make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode, FITKART_AUTH="off",
                   FITKART_ADMIN_TOKEN=ADMIN_TOKEN)
    client = app.test_client()
    denied = client.get("/", environ_base=OUTSIDE)
    assert denied.status_code == 401 and 'name="token"' in denied.get_data(as_text=True)
    assert 'id="collections"' not in denied.get_data(as_text=True)
    assert client.get("/status/rejects/000000000000000000000000", environ_base=OUTSIDE).status_code == 401
    assert client.get("/metrics", environ_base=OUTSIDE).status_code == 401
    wrong = client.get("/", environ_base=OUTSIDE, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    header = client.get("/", environ_base=OUTSIDE, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert header.status_code == 200 and 'id="collections"' in header.get_data(as_text=True)

    refused = client.post("/status/sign-in", data={"token": "nope"}, environ_base=OUTSIDE)
    assert refused.status_code == 401 and "not FITKART_ADMIN_TOKEN" in refused.get_data(as_text=True)
    signed = client.post("/status/sign-in", data={"token": ADMIN_TOKEN}, environ_base=OUTSIDE)
    assert signed.status_code == 303
    cookie = signed.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert client.get("/", environ_base=OUTSIDE).status_code == 200  # the cookie now proves it


def test_a_service_role_token_also_opens_the_pages(secure_client):
    """With Supabase authentication on, a service-role token is an operator's; a user's is not."""
    service = hs256(claims_for(None, role="service_role", issuer="supabase", audience=None))
    user = hs256(claims_for("8c1f0f5e-4a8b-4a43-9a55-6f0b7c1d2e3f"))
    assert secure_client.get("/", environ_base=OUTSIDE, headers=bearer(service)).status_code == 200
    assert secure_client.get("/", environ_base=OUTSIDE, headers=bearer(user)).status_code == 401
