"""Making the mirror equal Supabase through the sync engine: repair one drift, backfill a table, keep each run."""

import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

from pymongo.database import Database

from ..clock import utc_now
from ..model.documents import CHECKPOINTS, RUNS
from ..model.entities import Entity
from ..sync.engine import SyncEngine
from .compare import Drift, key_reader, shown
from .sources import PAGE_SIZE, Source


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


def repair_drift(engine: SyncEngine, entity: Entity, drift: Drift) -> str:
    """Make one drifting record equal to Supabase through the engine; what was done."""
    if drift.kind == "extra":
        engine.delete_records(entity, drift.key, source="reconcile", route="flask fitkart repair")
        return "deleted"
    engine.upsert_record(entity, as_payload(drift.supabase), source="reconcile", route="flask fitkart repair",
                         authoritative=True)
    return "upserted"


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
