"""The sync engine: one set of write rules for every table and every source of writes.

Plain Python over pymongo, with no Flask in it: the HTTP routes, the batch endpoint, the
spool's replay, webhooks and the CLI all call it. Rules (each has tests): validate, merge
only the fields sent, refuse stale versions, remember deletes in tombstones, keep every
refused write in `sync_rejects`, and make every request safe to replay. The rules live in
sibling modules (upserts, deletes, tombstones, batch, reads); this class holds what they
share and is the only way in: each public method records its refusals once, here.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal

from bson import Decimal128
from pymongo.database import Database

from ..bounds import ErrorBudget
from ..model.documents import REJECTS, TOMBSTONES
from ..model.entities import Entity
from ..model.policy import SERVICE, Caller, Forbidden
from ..model.schemas import Money
from . import batch, deletes, reads, upserts
from .rejects import Allowance, RejectLog
from .tombstones import Tombstones
from .upserts import UpsertOutcome
from .write import RecordRejected, Write

# Told (collection, result, count) for every record written or refused.
Observer = Callable[[str, str, int], None]
Refusal = RecordRejected | Forbidden


class SyncEngine:
    """Applies upserts and deletes to the mirror with the same rules for every table."""

    def __init__(self, database: Database, *, decimal_mode: str = "decimal128",
                 money_refusal: Callable[[], Exception] | None = None,
                 tombstone_days: int = 30, observer: Observer | None = None,
                 allowance: Allowance | None = None, spill: Callable[[dict], None] | None = None) -> None:
        self.database = database
        # Told of every record written or refused, e.g. to count them for /metrics.
        self.observer = observer
        self.decimal_mode = decimal_mode
        # Makes the error that refuses a write carrying money where `decimal_mode` cannot be stored (decimal128
        # on a database without it); None when it can. Only money is refused: other writes go through.
        self.money_refusal = money_refusal
        self.tombstones = Tombstones(database[TOMBSTONES], timedelta(days=tombstone_days))
        # Asked before storing a reject or a client's tombstone: the caller's rate limit (None: no limit).
        self.allowance = allowance
        # `spill`: where rejects go instead of the database while it is away (the spool).
        self.reject_log = RejectLog(database[REJECTS], observer=observer, allowance=allowance, spill=spill)
        # Field errors a batch reports in all; None outside a batch (each refusal gets its own).
        self.error_budget: ErrorBudget | None = None

    # -- the ways in ------------------------------------------------------------

    def upsert_record(self, entity: Entity, payload, *, caller: Caller = SERVICE, source: str = "client",
                      route: str | None = None, authoritative: bool = False) -> UpsertOutcome:
        """Create or merge one record by its key; refuse stale versions and other users' rows (see Write)."""
        write = Write("upsert", entity, payload, caller, source, route, authoritative)
        with self._refusals_kept(write):
            return upserts.upsert(self, write)

    def delete_records(self, entity: Entity, selector, *, caller: Caller = SERVICE, source: str = "client",
                       route: str | None = None) -> int:
        """Delete by key, by Supabase id, or every record of a user; leave tombstones."""
        write = Write("delete", entity, selector, caller, source, route)
        with self._refusals_kept(write):
            return deletes.delete(self, write)

    def apply_batch(self, operations: list, *, caller: Caller = SERVICE, source: str = "client",
                    route: str | None = None) -> list:
        """Apply a batch in order; each item of the answer is a result dict or the refusal exception.

        Its refusals share one budget of field errors, so a batch of hostile records answers briefly.
        """
        self.error_budget = ErrorBudget()
        try:
            return batch.apply(self, operations, caller, source, route)
        finally:
            self.error_budget = None

    def operation_write(self, operation, *, caller: Caller, source: str, route: str | None) -> Write:
        """A batch operation as the write it asks for; refused (and kept) when it is not a well-formed one."""
        with self._refusals_kept(batch.malformed(operation, caller, source, route)):
            return batch.operation_write(operation, caller, source, route)

    def check(self, kind: str, entity: Entity, payload, *, caller: Caller, source: str,
              route: str | None) -> None:
        """Validate one write as its upsert or delete would, without the database (for the spool)."""
        write = Write(kind, entity, payload, caller, source, route)
        with self._refusals_kept(write):
            if kind == "delete":
                deletes.delete_query(entity, payload)
            else:
                upserts.validated(self, write)

    def find_record(self, entity: Entity, ref: str, *, caller: Caller = SERVICE) -> dict | None:
        """The stored record whose ref field (key, or id for compound keys) is `ref`."""
        return reads.find_record(self, entity, ref, caller)

    def list_records(self, entity: Entity, *, caller: Caller = SERVICE, user_id: str | None = None,
                     limit: int = 100, cursor: str | None = None) -> tuple[list[dict], str | None]:
        """One page of the records the caller may read, in key order, and the next cursor."""
        return reads.list_records(self, entity, caller, user_id, limit, cursor)

    def record_reject(self, **details) -> None:
        """Keep a refused write in `sync_rejects` (see RejectLog.record), within this request's allowance."""
        self.reject_log.record(**details)

    # -- what the rules share ------------------------------------------------------

    @contextmanager
    def _refusals_kept(self, write: Write) -> Iterator[None]:
        """Keep the refusal of `write` in sync_rejects as it leaves the engine."""
        try:
            yield
        except (RecordRejected, Forbidden) as refusal:
            self.refused(write, refusal)
            raise

    def refused(self, write: Write, refusal: Refusal) -> Refusal:
        """Keep a refused write in sync_rejects (its field errors within the batch's budget); the refusal."""
        if isinstance(refusal, Forbidden):
            reason, errors, status = refusal.message, {}, 403
        else:
            if refusal.errors:  # within the batch's shared budget, or a budget of this refusal's own
                refusal.errors = (self.error_budget or ErrorBudget()).take(refusal.errors)
            reason, errors, status = refusal.message, refusal.errors, 422
        self.record_reject(reason=reason, errors=errors, payload=write.payload, route=write.route,
                           collection=write.collection, operation=write.kind, source=write.source,
                           caller=write.caller, status=status)
        return refusal

    def noted(self, collection: str, outcome: UpsertOutcome) -> UpsertOutcome:
        """Tell the observer what an upsert did; the outcome, unchanged."""
        if self.observer is not None:
            self.observer(collection, outcome.result, 1)
        return outcome

    def show(self, entity: Entity, document: dict) -> dict:
        """A stored document as the JSON record clients see."""
        return entity.schema.dump(document)

    def to_storage(self, entity: Entity, values: dict) -> dict:
        """Money in the chosen FITKART_DECIMAL_MODE; everything else as validated."""
        stored = dict(values)
        for name, field in entity.schema.fields.items():
            if isinstance(field, Money) and isinstance(stored.get(name), Decimal):
                stored[name] = self.store_money(stored[name])
        return stored

    def store_money(self, amount: Decimal):
        """One amount as the chosen FITKART_DECIMAL_MODE stores it; refused where that form cannot be stored."""
        if self.money_refusal is not None:
            raise self.money_refusal()
        if self.decimal_mode == "double":
            return float(amount)
        if self.decimal_mode == "string":
            return str(amount)
        return Decimal128(amount)
