"""`sync_rejects`: every refused write kept for an operator, each small, never without limit.

A reject holds at most 64 KiB of payload, 50 field errors and a 500-character reason
(about 100 KB in all). Each one is first asked of the caller's allowance (the refused-write
rate limit, see `ratelimit.py`); refusals past it are answered as usual and counted in
/metrics, not stored. The collection itself is trimmed by `housekeeping.py`.
"""

import json
from collections.abc import Callable

from pymongo.collection import Collection

from ..bounds import MAX_REASON, ErrorBudget, cut
from ..clock import utc_now
from ..model.policy import SERVICE, Caller

PAYLOAD_LIMIT = 64 * 1024  # bytes of a refused payload kept
ERRORS_LIMIT = 32 * 1024  # bytes of error text kept (50 cut errors fit well within)
MAX_LABEL = 64  # characters kept of an operation's `op` as sent
# Told (collection, result, count): `rejected`/`forbidden` for each refusal, `not_stored` past the allowance.
Observer = Callable[[str, str, int], None]
# Asked before anything is stored on a caller's behalf; False: the caller is past its limit, store nothing.
Allowance = Callable[[], bool]


class RejectLog:
    """Stores refused writes while the caller's allowance lasts."""

    def __init__(self, collection: Collection, *, observer: Observer | None = None,
                 allowance: Allowance | None = None, spill: Callable[[dict], None] | None = None) -> None:
        self.collection = collection
        self.observer = observer
        # None: no limit (CLI jobs, whose refusals an operator asked for).
        self.allowance = allowance
        self.spill = spill  # set while the database is away: the reject is queued, not inserted

    def record(self, *, reason: str, errors: dict, payload, route: str | None, collection: str | None,
               operation: str | None, source: str, caller: Caller = SERVICE, status: int = 422) -> None:
        """Keep a refused write, who sent it, its reason and (up to 64 KiB of) its payload."""
        self._tell(collection, "forbidden" if status == 403 else "rejected")
        if self.allowance is not None and not self.allowance():
            self._tell(collection, "not_stored")
            return
        encoded = json_bytes(payload)
        error_text = json_bytes(ErrorBudget().take(errors or {})).decode()
        document = {
            "at": utc_now(), "route": cut(route, MAX_REASON) if route else route, "collection": collection,
            "op": label(operation), "source": source, "status": status, "reason": cut(reason, MAX_REASON),
            "errors": error_text[:ERRORS_LIMIT],
            "caller": {"role": caller.role, "user_id": caller.user_id},
            "payload": encoded[:PAYLOAD_LIMIT].decode(errors="ignore"),
            "payload_truncated": len(encoded) > PAYLOAD_LIMIT,
        }
        if self.spill is not None:
            self.spill(document)
        else:
            self.insert(document)

    def insert(self, document: dict) -> None:
        """Store a reject document (also one queued while the database was away)."""
        self.collection.insert_one(document)

    def _tell(self, collection: str | None, result: str) -> None:
        if self.observer is not None:
            self.observer(collection or "-", result, 1)


def label(value) -> str | None:
    """What a reject keeps of an operation's `op` as the caller sent it: a short text, storable whatever it held
    (any other JSON — an object with `$` keys, a huge list, a number past 64 bits — is only in the payload)."""
    if not isinstance(value, str):
        return None
    return cut(value.encode("utf-8", "replace").decode("utf-8"), MAX_LABEL)


def json_bytes(value) -> bytes:
    """JSON text as UTF-8, storable whatever the value held (lone surrogates become '?')."""
    return json.dumps(value, default=str, ensure_ascii=False).encode("utf-8", "replace")
