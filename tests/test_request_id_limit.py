"""The caller's X-Request-ID is kept up to 128 characters; a longer one is replaced by a new id."""

import logging
import re

from fitkart_server.ops.requestlog import SANE_REQUEST_ID

NEW_ID = re.compile(r"[0-9a-f]{32}")
LIMIT = 128  # docs/operations.md: "a plain token of at most 128 characters"


def offered(length: int) -> str:
    """A plain token (letters, digits and every allowed separator) of exactly `length` characters."""
    pattern = "edge-7f3a.42:trace@proxy_"
    return (pattern * (length // len(pattern) + 1))[:length]


def test_an_id_at_the_limit_is_kept_and_one_past_it_replaced(client, caplog):
    """128 characters come back and are logged as they are; 129 get a new id, and the offered one is not logged."""
    caplog.set_level(logging.INFO, logger="fitkart_server.requests")
    at_limit, past_limit = offered(LIMIT), offered(LIMIT + 1)
    assert (len(at_limit), len(past_limit)) == (128, 129)
    kept = client.get("/healthz", headers={"X-Request-ID": at_limit})
    assert kept.status_code == 200 and kept.headers["X-Request-ID"] == at_limit
    replaced = client.get("/healthz", headers={"X-Request-ID": past_limit})
    assert replaced.status_code == 200 and NEW_ID.fullmatch(replaced.headers["X-Request-ID"])
    lines = [record for record in caplog.records if record.name == "fitkart_server.requests"]
    assert [line.request_id for line in lines] == [at_limit, replaced.headers["X-Request-ID"]]
    assert past_limit not in caplog.text
    assert SANE_REQUEST_ID.match(at_limit) and not SANE_REQUEST_ID.match(past_limit)
