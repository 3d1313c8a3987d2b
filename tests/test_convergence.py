"""The mirror ends equal to Supabase whatever order and mix the paths deliver one set of shop changes in.

A property (hypothesis) over real servers: PostgreSQL with the WAL follower, the test database
server (stopped and started again mid-way, so writes go through the spool), and the app's
client and webhook routes. Each example makes a few ordinary shop changes on the Supabase side
and delivers what each yields (the client's versioned operation, Supabase's webhooks) shuffled,
repeated and late, with follower runs between; then `flask fitkart verify` must find no drift.

The one order the mirror cannot restore: a webhook for a `cart_items` row (no `updated_at`) that
arrives after a newer change of the row was applied (docs/verify-and-capture.md says why). Here
those webhooks arrive in their change's turn, once; every other delivery may be late or repeated.

CI runs a handful of examples; `pytest tests/test_convergence.py --soak N` runs N.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed.convergence import KINDS, Delivery, Shop
from testbed.waiting import wait_until

SECRET = "convergence-webhook-secret"
# Slots a delivery may land after its change, at most (the order of one slot's deliveries is shuffled too).
LATEST = 3
# Weighted towards what meets an earlier version of the same row: a row removed and made again, a new quantity.
KIND = st.sampled_from((*KINDS, "wishlist_on", "wishlist_off", "profile_delete", "role_delete", "cart_quantity"))
CHANGES = st.lists(st.tuples(KIND, st.integers(0, 1), st.integers(0, 1)), min_size=3, max_size=12)


@pytest.fixture
def mirror(own_server, make_app, supabase_wal_db, decimal_mode):
    """The app (webhooks on) on a database server of the test's own, and the follower's first copy done."""
    app = make_app(FITKART_MONGODB_URI=f"{own_server.base_uri}/test_convergence", FITKART_DECIMAL_MODE=decimal_mode,
                   FITKART_WEBHOOK_SECRET=SECRET)
    mirror = Mirror(app, own_server, supabase_wal_db)
    mirror.follow()
    return mirror


class Mirror:
    """The app under test and what the example does to it: deliveries, follower runs, outages."""

    def __init__(self, app, server, url: str) -> None:
        self.client, self.runner, self.server, self.url = app.test_client(), app.test_cli_runner(), server, url
        self.down = False

    def deliver(self, delivery: Delivery) -> None:
        answer = delivery.send(self.client, SECRET)
        assert answer.status_code in (200, 202), (delivery, answer.status_code, answer.get_data(as_text=True))
        results = answer.json.get("results") or [answer.json]
        assert all("error" not in result for result in results), (delivery, answer.json)

    def follow(self) -> None:
        """`flask fitkart follow --once` (the database being up and the spool drained)."""
        self.up()
        result = self.runner.invoke(args=["fitkart", "follow", "--database-url", self.url, "--once"])
        assert result.exit_code == 0, result.output

    def stop(self) -> None:
        if not self.down:
            self.server.stop()
            self.down = True

    def up(self) -> None:
        """The database back, and every queued write replayed."""
        if self.down:
            self.server.start()
            self.down = False
        assert wait_until(lambda: self.client.get("/readyz").json["spool"]["entries"] == 0, seconds=60)

    def verify(self) -> str:
        self.up()
        result = self.runner.invoke(args=["fitkart", "verify", "--database-url", self.url])
        assert result.exit_code == 0, result.output
        return result.output


def in_client_order(shuffled: list[tuple[int, bool, Delivery]]) -> list[tuple[int, bool, Delivery]]:
    """A slot's deliveries as shuffled, but the client's first sends in the order it made them (its outbox
    sends in order; only a held request or a retry lands out of it)."""
    firsts = sorted((item for item in shuffled if item[1] and item[2].path == "client"), key=lambda item: item[0])
    ordered = iter(firsts)
    return [next(ordered) if item[1] and item[2].path == "client" else item for item in shuffled]


def run_example(mirror: Mirror, data) -> None:
    """One example: the changes made, their deliveries in a drawn order, the follower and an outage between."""
    shop = Shop.opened(mirror.url)
    try:
        mirror.follow()  # the products, and the previous example's rows gone
        # Without the follower (webhooks and the client alone), nothing Supabase-side mends what they get wrong.
        steps = ("nothing", "follow", "follow", "outage", "back") if data.draw(st.booleans(), label="follower") \
            else ("nothing", "outage", "back")
        pending: list[tuple[int, int, bool, Delivery]] = []  # (slot due, order made, first send, delivery)
        client_due = 0
        for slot, (kind, user, product) in enumerate(data.draw(CHANGES, label="changes")):
            for delivery in shop.make(kind, user, product, slot):
                made = len(pending)
                if delivery.path == "client":
                    client_due = max(client_due, slot + data.draw(st.integers(0, LATEST - 1)))
                    pending.append((client_due, made, True, delivery))
                    if data.draw(st.booleans()):  # held past its timeout, or retried: it lands again, later
                        pending.append((client_due + data.draw(st.integers(0, LATEST)), made, False, delivery))
                elif delivery.table == "cart_items":
                    pending.append((slot, made, True, delivery))  # the one case the mirror cannot order
                else:
                    for _ in range(data.draw(st.integers(1, 2))):
                        pending.append((slot + data.draw(st.integers(0, LATEST)), made, True, delivery))
            due = [(made, first, delivery) for at, made, first, delivery in pending if at <= slot]
            pending = [item for item in pending if item[0] > slot]
            for _, _, delivery in in_client_order(data.draw(st.permutations(due))):
                mirror.deliver(delivery)
            step = data.draw(st.sampled_from(steps))
            if step == "follow":
                mirror.follow()
            elif step == "outage":
                mirror.stop()
            elif step == "back":
                mirror.up()
        late = [(made, first, delivery) for _, made, first, delivery in sorted(pending, key=lambda item: item[0])]
        for _, _, delivery in in_client_order(late):
            mirror.deliver(delivery)
        if "follow" in steps and data.draw(st.booleans()):
            mirror.follow()
        mirror.verify()
    finally:
        shop.close()


def test_any_order_of_deliveries_ends_equal_to_supabase(mirror, request):
    """Shuffled, repeated and late client operations and webhooks, the follower between and the database away
    for a while: `verify` finds the mirror equal to Supabase."""
    examples = request.config.getoption("soak") or 4

    @settings(max_examples=examples, deadline=None, database=None, derandomize=not request.config.getoption("soak"),
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def converges(data):
        run_example(mirror, data)

    converges()


def test_a_late_webhook_delete_of_an_old_wishlist_row_after_the_follower_applied_the_new_one(mirror):
    """Unlike, like again; the follower applies both; then the old row's DELETE webhook arrives: the new row stays."""
    shop = Shop.opened(mirror.url)
    try:
        mirror.follow()
        on, off, again = (shop.make(kind, 0, 0, number) for number, kind in
                          enumerate(("wishlist_on", "wishlist_off", "wishlist_on")))
        for delivery in (*on, off[0], *again):
            mirror.deliver(delivery)
        mirror.follow()
        mirror.deliver(off[1])  # the DELETE webhook of the first row, late
        mirror.verify()
    finally:
        shop.close()
