"""The sync engine: one set of write rules for every table and every source of writes.

Plain Python over pymongo, with no Flask in it: the HTTP routes, the batch endpoint, the
spool's replay, webhooks and the CLI all call it. Rules (each has tests): validate, merge
only the fields sent, refuse stale versions, remember deletes in tombstones, keep every
refused write in `sync_rejects`, and make every request safe to replay. The rules live in
sibling modules (upserts, deletes, tombstones, batch, reads), which share `mirror.Mirror`;
this class is that Mirror with the only ways in: each public method records its refusals once, here.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from ..bounds import ErrorBudget
from ..model.entities import Entity
from ..model.policy import SERVICE, Caller, Forbidden
from . import batch, deletes, reads, upserts
from .mirror import Mirror, Observer, Refusal
from .write import RecordRejected, UpsertOutcome, Write

__all__ = ["Observer", "Refusal", "SyncEngine"]


class SyncEngine(Mirror):
    """Applies upserts and deletes to the mirror with the same rules for every table."""

    # -- the ways in ------------------------------------------------------------

    def upsert_record(self, entity: Entity, payload, *, caller: Caller = SERVICE, source: str = "client",
                      route: str | None = None, authoritative: bool = False,
                      changed_at: datetime | None = None) -> UpsertOutcome:
        """Create or merge one record by its key; refuse stale versions and other users' rows (see Write)."""
        write = Write("upsert", entity, payload, caller, source, route, authoritative, changed_at)
        with self._refusals_kept(write):
            return upserts.upsert(self, write)

    def delete_records(self, entity: Entity, selector, *, caller: Caller = SERVICE, source: str = "client",
                       route: str | None = None, changed_at: datetime | None = None) -> int:
        """Delete by key, by Supabase id, or every record of a user; leave tombstones."""
        write = Write("delete", entity, selector, caller, source, route, changed_at=changed_at)
        with self._refusals_kept(write):
            return deletes.delete(self, write)

    def apply_batch(self, operations: list, *, caller: Caller = SERVICE, source: str = "client",
                    route: str | None = None, arrived: datetime | None = None) -> list:
        """Apply a batch in order; each item of the answer is a result dict or the refusal exception.

        Its refusals share one budget of field errors, so a batch of hostile records answers briefly.
        """
        self.error_budget = ErrorBudget()
        try:
            return batch.apply(self, operations, caller, source, route, arrived)
        finally:
            self.error_budget = None

    def apply_writes(self, writes: list[Write]) -> list:
        """Apply writes in order, runs of upserts of distinct records in bulk (repair, the WAL, the spool).

        Each item of the answer is a result dict or the refusal exception (kept in sync_rejects, each
        with its own field errors).
        """
        return batch.apply_writes(self, writes)

    def operation_write(self, operation, *, caller: Caller, source: str, route: str | None,
                        arrived: datetime | None = None) -> Write:
        """A batch operation as the write it asks for; refused (and kept) when it is not a well-formed one."""
        with self._refusals_kept(batch.malformed(operation, caller, source, route)):
            return batch.operation_write(operation, caller, source, route, arrived)

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

    # -- refusals ---------------------------------------------------------------------

    @contextmanager
    def _refusals_kept(self, write: Write) -> Iterator[None]:
        """Keep the refusal of `write` in sync_rejects as it leaves the engine."""
        try:
            yield
        except (RecordRejected, Forbidden) as refusal:
            self.refused(write, refusal)
            raise
