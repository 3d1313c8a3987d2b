"""Making the mirror equal Supabase through the sync engine: repair one drift, backfill a table, keep each run."""

import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

from pymongo.database import Database

from ..bounds import cut
from ..clock import utc_now
from ..model.documents import CHECKPOINTS, RUNS
from ..model.entities import Entity
from ..sync.engine import SyncEngine
from ..sync.write import Write
from .compare import Drift, key_reader, shown
from .sources import PAGE_SIZE, Source

ROUTE = "flask fitkart repair"
# Refused records a repair names in its output (the rest are counted; all are kept in sync_rejects).
NAMED_REFUSALS = 20
REASON_CHARACTERS = 200


class Stopped(Exception):
    """SIGTERM during a copy or a repair the follower makes: it resumes (or runs again) at the next start."""


def as_payload(row: dict) -> dict:
    """A Supabase row as the JSON a client would send (what the engine validates)."""
    converted = {}
    for column, value in row.items():
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, uuid.UUID | Decimal):
            value = str(value)
        converted[column] = value
    return converted


class RepairPages:
    """Makes drifting records equal to Supabase through the engine, a page of drifts at a time.

    Within a page the extra records go first (a row whose key moved in Supabase keeps its id: the
    record under its old key must make room), then the missing and differing ones as one run of
    authoritative upserts, decided and written in bulk. What the engine refuses is kept in
    sync_rejects and counted, and the rest of the page is still made.
    """

    def __init__(self, engine: SyncEngine, page_size: int = PAGE_SIZE) -> None:
        self.engine = engine
        self.page_size = page_size
        self.pending: list[tuple[Entity, Drift]] = []
        self.done: dict[str, dict[str, int]] = {}
        # The first refused records, named for the operator (all of them are counted, and kept in sync_rejects).
        self.refused: list[tuple[str, dict, str]] = []

    def add(self, entity: Entity, drift: Drift) -> None:
        """Repair this drift, with the page it falls in."""
        self.pending.append((entity, drift))
        if len(self.pending) >= self.page_size:
            self.flush()

    def flush(self) -> None:
        """Repair what is pending."""
        page = sorted(self.pending, key=lambda pending: pending[1].kind != "extra")
        self.pending = []
        writes = [Write("delete", entity, drift.key, source="reconcile", route=ROUTE) if drift.kind == "extra"
                  else Write("upsert", entity, as_payload(drift.supabase), source="reconcile", route=ROUTE,
                             authoritative=True, whole_row=True) for entity, drift in page]
        for (entity, drift), result in zip(page, self.engine.apply_writes(writes), strict=True):
            counts = self.done.setdefault(entity.collection, {"upserted": 0, "deleted": 0, "refused": 0})
            outcome = "refused" if isinstance(result, Exception) else "deleted" if drift.kind == "extra" else "upserted"
            counts[outcome] += 1
            if outcome == "refused" and len(self.refused) < NAMED_REFUSALS:
                self.refused.append((entity.collection, drift.key, cut(getattr(result, "message", str(result)),
                                                                        REASON_CHARACTERS)))

    @property
    def refused_count(self) -> int:
        """How many records the mirror's rules refused in all."""
        return sum(counts["refused"] for counts in self.done.values())


def backfill_table(engine: SyncEngine, entity: Entity, source: Source, *, page_size: int = PAGE_SIZE,
                   max_pages: int | None = None, restart: bool = False,
                   advance: Callable[[int], None] = lambda n: None) -> dict:
    """Copy a table into the mirror in bulk pages, resuming after the last page a previous run finished."""
    checkpoints = engine.database[CHECKPOINTS]
    if restart:
        checkpoints.delete_one({"_id": entity.collection})
    saved = checkpoints.find_one({"_id": entity.collection})
    after = tuple(saved["after"]) if saved else None
    totals = {"rows": 0, "written": 0, "kept": 0, "rejected": 0, "pages": 0, "complete": False,
              "resumed": saved is not None}
    page: list[dict] = []

    def write(rows: list[dict]) -> None:
        # The batch path: one read and one bulk_write per page, with every rule of the engine.
        operations = [{"op": "upsert", "collection": entity.collection, "record": as_payload(row)} for row in rows]
        for answer in engine.apply_batch(operations, source="reconcile", route="flask fitkart backfill"):
            if isinstance(answer, Exception):
                totals["rejected"] += 1
            elif answer["result"] in ("created", "updated"):
                totals["written"] += 1
            else:  # unchanged, or stale: the mirror already holds this version or a newer one
                totals["kept"] += 1
        totals["rows"] += len(rows)
        totals["pages"] += 1
        last = [shown(value) for value in key_reader(entity)(rows[-1])]
        checkpoints.replace_one({"_id": entity.collection}, {"_id": entity.collection, "after": last,
                                                             "at": utc_now()}, upsert=True)
        advance(len(rows))

    for row in source.rows(entity.collection, entity.key, after):
        page.append(row)
        if len(page) == page_size:
            write(page)
            page = []
            if max_pages is not None and totals["pages"] >= max_pages:
                return totals
    if page:
        write(page)
    checkpoints.delete_one({"_id": entity.collection})
    totals["complete"] = True
    return totals


def record_run(database: Database, kind: str, source: Source, started_at: datetime, tables: dict,
               status: str) -> None:
    """Keep one run's outcome in `sync_runs`, for the status page and for operators."""
    database[RUNS].insert_one({
        "kind": kind, "source": source.description, "started_at": started_at, "finished_at": utc_now(),
        "status": status, "tables": tables,
    })
