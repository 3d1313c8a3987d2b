"""What every rule of the engine shares: the database, its tombstones and rejects, the storage form, the plan.

The rule modules (upserts, guarded, deletes, batch, reads) take a Mirror and import only from
here and below; `engine.SyncEngine` is a Mirror with the public ways in, built on those modules.
"""

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

from bson import Decimal128
from pymongo.database import Database

from ..bounds import ErrorBudget
from ..model.documents import REJECTS, TOMBSTONES
from ..model.entities import Entity
from ..model.policy import Forbidden
from ..model.schemas import Money
from .plan import GUARDED, Commands
from .rejects import Allowance, RejectLog
from .tombstones import Tombstones
from .write import DUPLICATE, RecordRejected, UpsertOutcome, Write

# Told (collection, result, count) for every record written or refused.
Observer = Callable[[str, str, int], None]
Refusal = RecordRejected | Forbidden


class Mirror:
    """The mirror's database as the write rules see it: how records are stored, shown and refused."""

    def __init__(self, database: Database, *, decimal_mode: str = "decimal128",
                 money_refusal: Callable[[], Exception] | None = None,
                 tombstone_days: int = 30, observer: Observer | None = None,
                 allowance: Allowance | None = None, spill: Callable[[dict], None] | None = None,
                 write_plan: str = GUARDED) -> None:
        self.database = database
        # Which commands reach the database: see plan.py.
        self.commands = Commands(write_plan)
        # Told of every record written or refused, e.g. to count them for /metrics.
        self.observer = observer
        self.decimal_mode = decimal_mode
        # Makes the error that refuses a write carrying money where `decimal_mode` cannot be stored (decimal128
        # on a database without it); None when it can. Only money is refused: other writes go through.
        self.money_refusal = money_refusal
        self.tombstones = Tombstones(database[TOMBSTONES], timedelta(days=tombstone_days), self.commands)
        # Asked before storing a reject or a client's tombstone: the caller's rate limit (None: no limit).
        self.allowance = allowance
        # `spill`: where rejects go instead of the database while it is away (the spool).
        self.reject_log = RejectLog(database[REJECTS], observer=observer, allowance=allowance, spill=spill)
        # Field errors a batch reports in all; None outside a batch (each refusal gets its own).
        self.error_budget: ErrorBudget | None = None

    @property
    def write_plan(self) -> str:
        """The write plan in use: `guarded` or `point` (see plan.py)."""
        return self.commands.plan

    def record_reject(self, **details) -> None:
        """Keep a refused write in `sync_rejects` (see RejectLog.record), within this request's allowance."""
        self.reject_log.record(**details)

    def refused(self, write: Write, refusal: Refusal) -> Refusal:
        """Keep a refused write in sync_rejects (its field errors within the batch's budget); the refusal."""
        if is_moved_key(write, refusal):
            return refusal  # not refused: the WAL follower moves the record (reconcile/follow.py `moved_key`)
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


def is_moved_key(write: Write, refusal: Refusal) -> bool:
    """A WAL row whose Supabase id the mirror holds under another key: an update that changed the mirror's key."""
    return write.source == "wal" and write.kind == "upsert" and isinstance(refusal, RecordRejected) \
        and refusal.message == DUPLICATE and "id" in write.payload
