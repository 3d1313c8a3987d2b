"""The TypeScript client's outbox in a real Chromium (Debian's), against gunicorn on the real database.

The built package is served from http://localhost:8080 (or another port, then allowed by the
server) with the page clients/typescript/test/browser/outbox.html, and each test drives tabs of one
browser profile: closing and reopening the browser, tabs side by side, a duplicated tab, an
account switch, one bad record in a batch, thousands of changes and a full disk. What reached
the server is read from the database and from the answers the browser received.
"""

import json
import os
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from testbed.data.records import cart_item, new_id, order
from testbed.disk import small_disk as mounted_small_disk
from testbed.servers.chromium import FLAGS, chromium_path
from testbed.servers.gateway import Gateway
from testbed.servers.gunicorn import GunicornServer
from testbed.servers.static import StaticSite
from tests.tokens import JWT_SECRET, claims_for, hs256

CLIENT = Path(__file__).resolve().parent.parent / "clients" / "typescript"
PAGE = "/test/browser/outbox.html"
# Generous: the client probes /healthz at most every 15 s (jittered) while the server is away.
RETURN_SECONDS = 45


@pytest.fixture(scope="module")
def site():
    """The built package and the test page over HTTP (built once per module, as `npm pack` would)."""
    npm = shutil.which("npm")
    assert npm, "npm is needed for the TypeScript client's browser tests"
    build = subprocess.run([npm, "run", "build"], cwd=CLIENT, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    served = StaticSite(CLIENT).start()
    yield served
    served.stop()


@pytest.fixture
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


class Shop:
    """The shop's pages in one browser profile, talking to one sync server that can go away and return."""

    def __init__(self, playwright, site: StaticSite, server: GunicornServer, profile: Path, *,
                 auth: bool = False, options: dict | None = None, page: dict | None = None,
                 base_url: str | None = None) -> None:
        self.playwright, self.site, self.server, self.profile = playwright, site, server, profile
        self.auth, self.options, self.page, self.base_url = auth, options or {}, page or {}, base_url
        self.context = None
        # Every operation the server acknowledged with a 200, in the order the answers arrived.
        self.delivered: list[dict] = []
        self.batches: list[int] = []  # operations per acknowledged batch
        self.answers: list[int] = []  # the status of every batch request

    def launch(self):
        """Open the browser on the profile (closing it first if it is open)."""
        self.close()
        self.context = self.playwright.chromium.launch_persistent_context(
            str(self.profile), executable_path=chromium_path(), headless=True, args=FLAGS)
        self.context.on("response", self._heard)
        return self

    def _heard(self, response) -> None:
        if response.url.endswith("/api/sync/batch") and response.request.method == "POST":
            self.answers.append(response.status)
        if response.url.endswith("/api/sync/batch") and response.status == 200:
            operations = response.request.post_data_json["operations"]
            self.batches.append(len(operations))
            self.delivered.extend(operations)

    @property
    def url(self) -> str:
        query = {"server": self.base_url or self.server.url, "options": json.dumps(self.options), **self.page}
        if self.auth:
            query["auth"] = "1"
        return f"{self.site.origin}{PAGE}?" + "&".join(f"{k}={_quote(v)}" for k, v in query.items())

    def tab(self):
        """A new tab with the shop loaded (its client made, as the app makes it on load)."""
        page = self.context.new_page()
        page.goto(self.url)
        page.wait_for_function("document.title === 'ready'")
        return page

    def wait(self, check, seconds: float = RETURN_SECONDS) -> bool:
        """Poll `check` while the browser runs (Playwright delivers its events only inside its own calls)."""
        page = self.context.pages[0] if self.context.pages else self.context.new_page()
        for _ in range(int(seconds * 5)):
            if check():
                return True
            page.wait_for_timeout(200)
        return check()

    def close(self) -> None:
        if self.context is not None:
            self.context.close()
            self.context = None


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


@pytest.fixture
def server(database_uri, site):
    """gunicorn on the test database with its defaults; created stopped (the test starts it)."""
    app = GunicornServer(database_uri, None, workers=1, env=site.allowed())
    yield app
    app.stop()


@pytest.fixture
def shop(playwright, site, server, tmp_path):
    """The shop in a fresh browser profile with the client's defaults; the server is down until started."""
    opened = Shop(playwright, site, server, tmp_path / "profile").launch()
    yield opened
    opened.close()


def enqueue(page, *records: dict, collection: str = "cart_items") -> None:
    """Queue upserts in one task of the page (a burst, as a click handler makes it) and wait until stored."""
    page.evaluate("""async ([collection, records]) => {
        await Promise.all(records.map((record) => sync.enqueue({op: "upsert", collection, record})));
    }""", [collection, list(records)])


def status(page) -> dict:
    """The client's status after a recount."""
    return page.evaluate("() => sync.refresh()")


def stored(mongo, collection: str = "cart_items") -> dict[str, dict]:
    """The mirrored rows by id."""
    return {doc["id"]: doc for doc in mongo[collection].find({}, {"_id": 0, "_fitkart": 0})}


def sent_twice(shop: Shop) -> list:
    """Operations the server acknowledged more than once."""
    counts = Counter(json.dumps(operation, sort_keys=True) for operation in shop.delivered)
    return [operation for operation, count in counts.items() if count > 1]


def test_a_reopened_browser_sends_what_it_queued_first_without_a_user_action(shop, server, mongo):
    """Case 1 and 2: changes queued before the browser closed go out, oldest first, soon after the server returns."""
    user = new_id()
    row, other = cart_item(user_id=user), cart_item(user_id=user)
    page = shop.tab()
    enqueue(page, row, other)
    assert status(page)["pending"] == 2
    shop.launch()  # the browser closed and opened again: a new tab, no session storage

    page = shop.tab()
    assert status(page)["pending"] == 2
    enqueue(page, {"id": row["id"], "quantity": 10})  # newer than the closed session's create of that row
    server.start()
    # No flush(), no event: the client's probe of /healthz notices the server.
    assert shop.wait(lambda: len(stored(mongo)) == 2 and stored(mongo)[row["id"]]["quantity"] == 10), \
        (status(page), server.log_tail())
    assert mongo["sync_rejects"].count_documents({}) == 0
    # In queue order: the closed session's two rows, then the newer change (not merged: another row between).
    assert [(op["record"]["id"], op["record"].get("quantity")) for op in shop.delivered] == [
        (row["id"], row["quantity"]), (other["id"], other["quantity"]), (row["id"], 10)]
    assert shop.wait(lambda: status(page)["pending"] == 0, 10)


@pytest.mark.parametrize("event", ["focus", "visibilitychange", "online"])
def test_focus_visibility_and_online_send_at_once(playwright, site, server, mongo, tmp_path, event):
    """Case 2: with the back-off far away, a tab coming to the front or back online sends right then."""
    shop = Shop(playwright, site, server, tmp_path / "profile", options={"retryBaseMs": 600_000}).launch()
    try:
        page = shop.tab()
        row = cart_item()
        enqueue(page, row)
        assert shop.wait(lambda: status(page)["lastError"] is not None, 10)  # failed once: retry in minutes
        server.start()
        page.evaluate("(type) => (type === 'visibilitychange' ? document : window).dispatchEvent(new Event(type))",
                      event)
        assert shop.wait(lambda: row["id"] in stored(mongo), 10), status(page)
    finally:
        shop.close()


def test_one_bad_record_delays_only_itself_and_its_rejection_survives_a_reload(shop, server, mongo):
    """Case 3: a batch refused whole (413) is split until the record at fault is alone; the others go in order."""
    server.start()
    page = shop.tab()
    user = new_id()
    rows = [cart_item(user_id=user) for _ in range(4)]
    # Over the server's 1 MiB body limit on its own: the whole batch is refused with 413.
    huge = order(user_id=user, items=[{"id": new_id(), "note": os.urandom(700_000).hex()}])
    page.evaluate("""async ([rows, huge]) => {
        await Promise.all([
            sync.syncCartItem(rows[0]), sync.syncCartItem(rows[1]), sync.syncOrder(huge),
            sync.syncCartItem(rows[2]), sync.syncCartItem(rows[3])]);
    }""", [rows, huge])
    assert shop.wait(lambda: status(page)["rejected"] == 1 and status(page)["pending"] == 0, 30), status(page)
    assert sorted(stored(mongo)) == sorted(row["id"] for row in rows)
    assert [op["record"]["id"] for op in shop.delivered] == [row["id"] for row in rows]
    rejections = page.evaluate("() => sync.rejections()")
    assert [r["operation"]["record"]["id"] for r in rejections] == [huge["id"]]
    assert rejections[0]["error"]["code"] == 413
    assert page.evaluate("() => syncRejections.length") == 1  # onRejected heard it
    assert len(shop.answers) <= 8 and shop.answers.count(413) <= 4, shop.answers  # halving: a few requests

    # The batch size recovers: a later burst goes in one request again (the same page: no reload in between).
    before = len(shop.batches)
    burst = [cart_item(user_id=user) for _ in range(40)]
    enqueue(page, *burst)
    assert shop.wait(lambda: len(stored(mongo)) == 44, 30), status(page)
    assert shop.batches[before:] == [40]

    page.reload()
    page.wait_for_function("document.title === 'ready'")
    assert status(page)["rejected"] == 1  # kept until the app acknowledges it
    assert page.evaluate("() => sync.acknowledgeRejections()") == 1
    assert status(page)["rejected"] == 0

    # A record the server accepts alone is accepted in a batch: 30 levels deep, beside four others.
    deep: dict = {"leaf": 1}
    for _ in range(27):
        deep = {"next": deep}
    nested = order(user_id=user, shipping_address=deep)
    more = [cart_item(user_id=user) for _ in range(4)]
    page.evaluate("""async ([nested, more]) => {
        await Promise.all([sync.syncOrder(nested), ...more.map((row) => sync.syncCartItem(row))]);
    }""", [nested, more])
    assert shop.wait(lambda: len(stored(mongo)) == 48 and nested["id"] in stored(mongo, "orders"), 30), status(page)
    assert status(page)["rejected"] == 0


def test_two_and_four_live_tabs_never_send_twice(shop, server, mongo):
    """Case 4 and 6: one tab sends for all; idle tabs side by side, then four loading at once, send nothing twice."""
    first, second = shop.tab(), shop.tab()
    rows = [cart_item() for _ in range(6)]
    for index, row in enumerate(rows):
        enqueue(first if index % 2 else second, row)
    first.wait_for_timeout(3000)  # idle, offline, both tabs alive
    server.start()
    assert shop.wait(lambda: len(stored(mongo)) == 6), (status(first), status(second))
    assert sent_twice(shop) == []
    assert sum(1 for page in (first, second) if status(page)["sender"]) == 1

    for trial in range(3):
        server.stop()
        leftover = [cart_item() for _ in range(10)]
        enqueue(shop.tab(), *leftover)
        shop.launch()  # closed with a queue
        tabs = [shop.context.new_page() for _ in range(4)]
        for page in tabs:  # four tabs loading at once
            page.goto(shop.url, wait_until="commit")
        for page in tabs:
            page.wait_for_function("document.title === 'ready'")
        server.start()
        expected = 6 + 10 * (trial + 1)
        assert shop.wait(lambda: len(stored(mongo)) == expected), [status(page) for page in tabs]  # noqa: B023
        assert sent_twice(shop) == [], f"trial {trial}"
        assert sum(1 for page in tabs if status(page)["sender"]) == 1


def test_a_closed_tabs_change_stays_before_a_newer_one(shop, server, mongo):
    """Case 5: tab A sets X=2 and closes, tab B sets X=5; when the server returns X is 5."""
    server.start()
    tab_a, tab_b = shop.tab(), shop.tab()
    row = cart_item()
    enqueue(tab_a, row)
    assert shop.wait(lambda: row["id"] in stored(mongo), 20)
    server.stop()
    enqueue(tab_a, {"id": row["id"], "quantity": 2})
    tab_a.close()
    enqueue(tab_b, {"id": row["id"], "quantity": 5})
    server.start()
    assert shop.wait(lambda: status(tab_b)["pending"] == 0), status(tab_b)
    assert stored(mongo)[row["id"]]["quantity"] == 5
    quantities = [op["record"].get("quantity") for op in shop.delivered if op["record"]["id"] == row["id"]]
    assert quantities[-1] == 5, quantities


def test_a_duplicated_tab_loses_nothing(shop, server, mongo):
    """Case 6: window.open(location.href) copies session storage; both tabs' changes all arrive."""
    original = shop.tab()
    with shop.context.expect_page() as opened:
        original.evaluate("() => window.open(location.href)")
    duplicate = opened.value
    duplicate.wait_for_function("document.title === 'ready'")
    rows = [cart_item() for _ in range(16)]
    for index, row in enumerate(rows):
        enqueue(duplicate if index % 2 else original, row)
    assert status(original)["pending"] == 16
    server.start()
    assert shop.wait(lambda: len(stored(mongo)) == 16), status(original)
    assert sent_twice(shop) == []


def test_an_account_switch_parks_the_first_users_changes_and_delivers_them_later(playwright, site, database_uri,
                                                                                   mongo, tmp_path):
    """Case 7: A's changes are never sent with B's token; they wait, listed, until A signs in again."""
    server = GunicornServer(database_uri, None, workers=1,
                            env={**site.allowed(), "SUPABASE_JWT_SECRET": JWT_SECRET})
    shop = Shop(playwright, site, server, tmp_path / "profile", auth=True).launch()
    try:
        user_a, user_b = new_id(), new_id()
        token_a, token_b = hs256(claims_for(user_a)), hs256(claims_for(user_b))
        page = shop.tab()
        page.evaluate("(token) => localStorage.setItem('session-token', token)", token_a)
        rows_a = [cart_item(user_id=user_a) for _ in range(2)]
        enqueue(page, *rows_a)
        enqueue(page, {"id": rows_a[0]["id"], "quantity": 4})  # no user_id: owned by the signed-in user, A
        page.evaluate("(token) => localStorage.setItem('session-token', token)", token_b)
        row_b = cart_item(user_id=user_b)
        enqueue(page, row_b)
        server.start()
        assert shop.wait(lambda: row_b["id"] in stored(mongo)), (status(page), server.log_tail())
        assert shop.wait(lambda: status(page)["parked"] == 3, 10), status(page)
        assert page.evaluate("() => sync.parkedOwners()") == [{"owner": user_a, "count": 3}]
        assert {row["id"] for row in rows_a}.isdisjoint(stored(mongo))
        assert mongo["sync_rejects"].count_documents({}) == 0  # nothing was sent with the wrong token

        page.evaluate("(token) => localStorage.setItem('session-token', token)", token_a)
        later = cart_item(user_id=user_a)
        enqueue(page, later)  # A's next change: no call from the app about the switch
        assert shop.wait(lambda: len(stored(mongo)) == 4), status(page)
        assert stored(mongo)[rows_a[0]["id"]]["quantity"] == 4
        assert status(page)["parked"] == 0
        assert mongo["sync_rejects"].count_documents({}) == 0
    finally:
        shop.close()
        server.stop()


# Counts the page's IndexedDB work: transactions by mode, requests by kind, cursor steps.
COUNT_STORAGE_WORK = """() => {
    const work = window.storageWork = {readwrite: 0, readonly: 0, add: 0, put: 0, get: 0, getAll: 0, count: 0,
                                        delete: 0, openCursor: 0, continue: 0};
    const wrap = (proto, name, key = name) => {
        const original = proto[name];
        proto[name] = function (...args) { work[key] += 1; return original.apply(this, args); };
    };
    const transaction = IDBDatabase.prototype.transaction;
    IDBDatabase.prototype.transaction = function (stores, mode, ...rest) {
        work[mode === "readwrite" ? "readwrite" : "readonly"] += 1;
        return transaction.call(this, stores, mode, ...rest);
    };
    const kinds = ["add", "put", "get", "getAll", "count", "delete", "openCursor"];
    for (const name of kinds) wrap(IDBObjectStore.prototype, name);
    for (const name of ["get", "getAll", "count", "openCursor"]) wrap(IDBIndex.prototype, name);
    wrap(IDBCursor.prototype, "continue");
}"""


def test_five_thousand_enqueues_do_the_same_storage_work_each_and_all_arrive(shop, server, mongo):
    """Case 8: an awaited enqueue does the same IndexedDB work behind 5,200 queued changes as behind none — one
    read-write transaction adding one record, no cursor step — and 5,000 made in one loop are written 1,000 to a
    transaction; nothing crashes the tab, and all arrive. (Times are printed, not compared.)"""
    page = shop.tab()
    user = new_id()
    page.evaluate(COUNT_STORAGE_WORK)
    figures = page.evaluate("""async (user) => {
        const row = (i) => ({id: crypto.randomUUID(), user_id: user, product_id: crypto.randomUUID(), size: "M",
                             quantity: i % 9 + 1});
        const measured = async (work) => {
            const before = {...storageWork};
            const start = performance.now();
            await work();
            const done = {...storageWork};
            return {ms: performance.now() - start,
                    work: Object.fromEntries(Object.keys(done).map((key) => [key, done[key] - before[key]]))};
        };
        const oneByOne = async () => { for (let i = 0; i < 200; i++) await sync.syncCartItem(row(i)); };
        const empty = await measured(oneByOne);
        const loop = await measured(() => Promise.all(Array.from({length: 5000}, (_, i) => sync.syncCartItem(row(i)))));
        const full = await measured(oneByOne);
        return {empty, loop, full, status: await sync.refresh()};
    }""", user)
    print(f"\nenqueue, awaited one by one: {figures['empty']['ms'] / 200:.2f} ms each with an empty queue, "
          f"{figures['full']['ms'] / 200:.2f} ms each behind 5,200; 5,000 in one loop: "
          f"{figures['loop']['ms']:.0f} ms until stored; storage work {figures}")
    for phase in ("empty", "full"):
        work = figures[phase]["work"]
        assert (work["readwrite"], work["add"], work["continue"]) == (200, 200, 0), (phase, work)
    assert figures["loop"]["work"]["readwrite"] <= 5 and figures["loop"]["work"]["add"] == 5000, figures["loop"]
    assert figures["status"]["pending"] == 5400
    assert figures["status"]["storageError"] is None
    server.start()
    assert shop.wait(lambda: mongo["cart_items"].count_documents({}) == 5400, 120), status(page)
    assert shop.wait(lambda: status(page)["pending"] == 0, 20)
    assert sent_twice(shop) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 40 MB file system for the browser profile, so storage fills up for real."""
    with mounted_small_disk(tmp_path / "small-disk", 40) as mount_point:
        yield mount_point


def test_a_full_quota_is_reported_and_nothing_else_breaks(playwright, site, server, mongo, small_disk):
    """Case 8: storage refusing a change is reported to onError and status(); other storage keeps working."""
    shop = Shop(playwright, site, server, small_disk / "profile").launch()
    try:
        page = shop.tab()
        outcome = page.evaluate("""async () => {
            const noise = () => Array.from({length: 8}, () => Array.from(crypto.getRandomValues(new Uint8Array(60000)),
                (b) => b.toString(36)).join("")).join("");
            let written = 0;
            for (let i = 0; i < 200 && syncErrors.length === 0; i++) {
                await sync.syncCartItem({id: crypto.randomUUID(), user_id: crypto.randomUUID(),
                    product_id: crypto.randomUUID(), size: "M", note: noise()});
                if (syncErrors.length === 0) written += 1;
            }
            localStorage.setItem("sb-session", "still writable");  // supabase-js's session lives here
            const status = await sync.refresh();
            return {written, errors: syncErrors.map((e) => ({kind: e.kind, message: e.message,
                operations: e.operations.length})), status, session: localStorage.getItem("sb-session")};
        }""")
        assert outcome["errors"], outcome
        assert outcome["errors"][0]["kind"] == "storage" and outcome["errors"][0]["operations"] == 1
        assert "QuotaExceededError" in outcome["status"]["storageError"], outcome["status"]
        assert outcome["status"]["lastError"] == outcome["status"]["storageError"]
        assert outcome["status"]["pending"] == outcome["written"]  # what was stored is all still queued
        assert outcome["session"] == "still writable"
    finally:
        shop.close()


def test_the_page_uses_no_local_storage_for_the_queue(shop, server):
    """The outbox lives in IndexedDB: localStorage (shared with supabase-js's session) holds nothing of it."""
    page = shop.tab()
    enqueue(page, cart_item(), cart_item())
    assert page.evaluate("() => Object.keys(localStorage)") == []
    assert page.evaluate("() => indexedDB.databases().then((all) => all.map((d) => d.name))") == ["fitkart-sync"]
    assert page.evaluate("() => sessionStorage.length") == 0


@pytest.fixture
def gateway(server, site):
    """The tests' gateway in front of the sync server (passing everything through until told otherwise)."""
    front = Gateway(server.url, site.origin)
    yield front
    front.stop()


@pytest.mark.parametrize("refusal", [(413, {"message": "Request Entity Too Large"}), (400, {"message": "blocked"})],
                         ids=["body-limit-413", "waf-400"])
def test_a_gateways_refusal_sets_nothing_aside_and_is_retried_with_back_off(playwright, site, server, gateway, mongo,
                                                                           tmp_path, refusal):
    """Point 1: a proxy refusing every batch for 5 s (a body limit set too low, a WAF's JSON): nothing is split,
    nothing set aside, no change lost, a few requests in those seconds (it was ~15 a second, and 40 of 60 changes
    gone); all 60 arrive once the gateway lets them through."""
    server.start()
    shop = Shop(playwright, site, server, tmp_path / "profile", base_url=gateway.url,
                options={"maxRejected": 20, "retryMaxMs": 4000}).launch()
    try:
        page = shop.tab()
        rows = [cart_item() for _ in range(60)]
        gateway.set(5, refuse=refusal)
        started = time.monotonic()
        enqueue(page, *rows)
        assert shop.wait(lambda: len(stored(mongo)) == 60, 40), (status(page), gateway.batches)
        assert gateway.requests_between(started, started + 5) <= 6, gateway.batches
        assert page.evaluate("() => sync.rejections()") == [] and status(page)["rejected"] == 0
        assert page.evaluate("() => syncErrors") == []
    finally:
        shop.close()


@pytest.fixture
def signed_in_server(database_uri, site):
    """gunicorn checking Supabase tokens (HS256), started."""
    app = GunicornServer(database_uri, None, workers=1, env={**site.allowed(), "SUPABASE_JWT_SECRET": JWT_SECRET})
    yield app.start()
    app.stop()


def sign_in(page, token: str | None) -> None:
    """The page's session changes, and supabase-js tells its listeners (the client among them)."""
    page.evaluate("(token) => signIn(token)", token)


def test_a_change_belongs_to_the_user_signed_in_when_it_was_made(playwright, site, signed_in_server, mongo, tmp_path):
    """Point 2: A changes her cart and B signs in before the (100 ms) token getter answers: the change is A's, waits
    while B is signed in, and is applied with A's token when she signs in again (it was queued as B's, refused 403
    and never applied)."""
    shop = Shop(playwright, site, signed_in_server, tmp_path / "profile", auth=True,
                page={"events": "1", "tokenDelayMs": "100"}).launch()
    try:
        user_a, user_b = new_id(), new_id()
        token_a, token_b = hs256(claims_for(user_a)), hs256(claims_for(user_b))
        page = shop.tab()
        sign_in(page, token_a)
        row = cart_item(user_id=user_a, quantity=1)
        enqueue(page, row)
        assert shop.wait(lambda: row["id"] in stored(mongo), 20), status(page)
        page.evaluate("""([id, token]) => {
            const stored = sync.syncCartItem({id, quantity: 4});  // A's change: no user_id in it
            signIn(token);  // B, before the getter has answered
            return stored;
        }""", [row["id"], token_b])
        assert shop.wait(lambda: status(page)["parked"] == 1, 10), status(page)
        assert stored(mongo)[row["id"]]["quantity"] == 1 and mongo["sync_rejects"].count_documents({}) == 0
        sign_in(page, token_a)
        assert shop.wait(lambda: stored(mongo)[row["id"]]["quantity"] == 4, 10), status(page)
        assert page.evaluate("() => sync.rejections()") == [] and mongo["sync_rejects"].count_documents({}) == 0
    finally:
        shop.close()


def test_a_parked_users_changes_go_as_soon_as_she_signs_in_again(playwright, site, database_uri, mongo, tmp_path):
    """Point 3: A signs out with 4 changes queued and signs in again: they are sent at once (they waited 30 s for a
    focus event, her next change or a reload)."""
    server = GunicornServer(database_uri, None, workers=1, env={**site.allowed(), "SUPABASE_JWT_SECRET": JWT_SECRET})
    shop = Shop(playwright, site, server, tmp_path / "profile", auth=True, page={"events": "1"},
                options={"retryMaxMs": 2000}).launch()
    try:
        user_a = new_id()
        token_a = hs256(claims_for(user_a))
        page = shop.tab()
        sign_in(page, token_a)
        rows = [cart_item(user_id=user_a) for _ in range(4)]
        enqueue(page, *rows)  # the server is down: they wait
        sign_in(page, None)
        server.start()
        # The client has found the server back and sent what it may (nothing of A's): no retry is pending.
        assert shop.wait(lambda: status(page)["lastSyncedAt"] is not None and status(page)["nextRetryAt"] is None
                         and status(page)["parked"] == 4, 20), status(page)
        sign_in(page, token_a)
        assert shop.wait(lambda: len(stored(mongo)) == 4, 8), status(page)
        assert status(page)["parked"] == 0
    finally:
        shop.close()
        server.stop()


def test_retry_after_is_honoured(playwright, site, server, gateway, mongo, tmp_path):
    """Point 4: a 429 with Retry-After: 8 gets no other request inside those 8 s, however the app nudges (a new
    change, flush()); then everything goes (it got 5-6 requests in a 30 s Retry-After)."""
    server.start()
    shop = Shop(playwright, site, server, tmp_path / "profile", base_url=gateway.url).launch()
    try:
        page = shop.tab()
        gateway.set(8, retry_after=8)
        started = time.monotonic()
        enqueue(page, *[cart_item() for _ in range(5)])
        assert shop.wait(lambda: len(gateway.batches) == 1, 5), gateway.batches
        page.wait_for_timeout(1500)
        enqueue(page, cart_item())
        page.evaluate("() => sync.flush()")
        assert shop.wait(lambda: len(stored(mongo)) == 6, 40), (status(page), gateway.batches)
        assert gateway.requests_between(started, started + 7.5) == 1, gateway.batches
        assert status(page)["pending"] == 0
    finally:
        shop.close()


def test_results_are_matched_to_their_operations_whatever_their_order(playwright, site, server, gateway, mongo,
                                                                      tmp_path):
    """Point 5: a proxy that reverses the results array: the refused change is the one set aside and every applied
    one is acknowledged (by position, an applied change looked refused and the refused one was dropped)."""
    server.start()
    shop = Shop(playwright, site, server, tmp_path / "profile", base_url=gateway.url).launch()
    try:
        page = shop.tab()
        gateway.set(reorder=True)
        good = [cart_item() for _ in range(3)]
        unknown = {"id": new_id(), "quantity": 2}  # a partial update of a row the mirror never had: 422
        enqueue(page, good[0], unknown, good[1], good[2])
        assert shop.wait(lambda: status(page)["pending"] == 0 and status(page)["rejected"] == 1, 20), status(page)
        assert sorted(stored(mongo)) == sorted(row["id"] for row in good)
        assert [r["operation"]["record"]["id"] for r in page.evaluate("() => sync.rejections()")] == [unknown["id"]]
        assert any(status == 200 for _, status in gateway.batches)
    finally:
        shop.close()
