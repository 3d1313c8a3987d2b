"""Schemathesis fuzzes every operation of /api/openapi.json on the real database: no 5xx, ever."""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from .tokens import JWT_SECRET, bearer, claims_for, hs256

# Bounded so CI stays fast; FITKART_FUZZ_EXAMPLES=500 digs deeper locally.
EXAMPLES_PER_OPERATION = int(os.environ.get("FITKART_FUZZ_EXAMPLES", 25))
# The service role reaches every code path that row-level rules would otherwise cut short.
# The webhook secret lets the fuzzer past the receiver's door too.
HEADERS = {**bearer(hs256(claims_for(None, role="service_role", issuer="supabase", audience=None))),
           "X-Webhook-Secret": "fuzz-webhook-secret"}


@pytest.fixture
def fuzzed_app(make_app, database_uri, decimal_mode):
    """The app on a fresh database, with authentication on."""
    return make_app(FITKART_MONGODB_URI=database_uri, FITKART_DECIMAL_MODE=decimal_mode,
                    SUPABASE_JWT_SECRET=JWT_SECRET, FITKART_WEBHOOK_SECRET="fuzz-webhook-secret")


def test_no_operation_answers_5xx(fuzzed_app):
    """Whatever the schema lets a client send, to any operation, the server answers below 500."""
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", fuzzed_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20  # six tables: list, upsert, delete, read, delete one; and more
    failures = []

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def no_server_error(case) -> None:
            response = case.call(headers=HEADERS)
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:300]}"

        try:
            no_server_error()
        except AssertionError as error:
            failures.append(str(error))
    assert not failures, "\n".join(failures)
