"""Proving the mirror equals Supabase (verify), making it so (repair), filling it (backfill), converting its money.

Both sides are streamed in key order and merge-joined, so memory stays flat whatever the
table size. Values are normalised before comparing, honestly and only as far as the two
stores really differ: uuid case, timestamps to the millisecond (BSON's precision) in UTC,
numeric(10,2) as decimals whatever FITKART_DECIMAL_MODE stored, arrays as lists, jsonb as
JSON values; a column the mirror lacks equals a Supabase null.
"""

import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache

from bson import Decimal128
from pymongo import UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database

from ..model.documents import PROVENANCE_FIELD
from ..model.entities import ENTITIES, Entity
from ..model.schemas import CENT, Money, Timestamp, Uuid
from ..sync.engine import SyncEngine, utc_now
from .sources import PAGE_SIZE, Source

RUNS_COLLECTION = "sync_runs"
CHECKPOINTS_COLLECTION = "sync_backfill"


@dataclass
class FieldDifference:
    """One column whose values differ."""

    field: str
    supabase: object
    mirror: object


@dataclass
class Drift:
    """One record that is missing from the mirror, extra in it, or different."""

    kind: str  # "missing" | "extra" | "different"
    key: dict
    supabase: dict | None
    mirror: dict | None
    fields: list[FieldDifference] = field(default_factory=list)


@dataclass
class TableReport:
    """What verify found in one table."""

    table: str
    supabase_rows: int = 0
    mirror_rows: int = 0
    missing: list[dict] = field(default_factory=list)
    extra: list[dict] = field(default_factory=list)
    different: list[dict] = field(default_factory=list)

    @property
    def drift(self) -> int:
        """Records that are not the same on both sides."""
        return len(self.missing) + len(self.extra) + len(self.different)

    def add(self, drift: Drift) -> None:
        """Count one drifting record."""
        if drift.kind == "different":
            self.different.append({"key": drift.key, "fields": [
                {"field": d.field, "supabase": shown(d.supabase), "mirror": shown(d.mirror)} for d in drift.fields]})
        else:
            getattr(self, drift.kind).append(drift.key)

    def counts(self) -> dict:
        """How many rows and drifting records, per kind (what `sync_runs` keeps)."""
        return {"supabase_rows": self.supabase_rows, "mirror_rows": self.mirror_rows, "drift": self.drift,
                "missing": len(self.missing), "extra": len(self.extra), "different": len(self.different)}

    def as_dict(self) -> dict:
        """The full report as JSON-ready data."""
        return {**self.counts(), "missing": self.missing, "extra": self.extra, "different": self.different}


def _moment(value) -> datetime:
    """A timestamp in UTC, to the millisecond."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _money(value):
    """numeric(10,2) as a Decimal, whatever FITKART_DECIMAL_MODE stored; a value that is no amount as it is."""
    try:
        amount = value.to_decimal() if isinstance(value, Decimal128) else Decimal(str(value))
        return amount.quantize(CENT)
    except ArithmeticError:  # "n/a", or too large to hold to the cent: a difference to report, not a crash
        return value


def _uuid(value) -> str:
    """A uuid as lower-case text."""
    return str(value) if isinstance(value, uuid.UUID) else value.lower() if isinstance(value, str) else value


def _other(value):
    """Any other column: dates, Decimal128 and uuids of columns the schema does not name; the rest as is."""
    if isinstance(value, datetime):
        return _moment(value)
    if isinstance(value, Decimal128):
        return value.to_decimal()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


@cache
def _normalizers(entity: Entity) -> dict[str, Callable]:
    """Each schema column's normaliser (how a value of either side is put in the one form both are compared in)."""
    chosen = {}
    for column, kind in entity.schema.fields.items():
        chosen[column] = (_moment if isinstance(kind, Timestamp) else _money if isinstance(kind, Money)
                          else _uuid if isinstance(kind, Uuid) else _other)
    return chosen


def shown(value):
    """A normalised value as the report prints it."""
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, Decimal):
        return str(value)
    return value


def key_reader(entity: Entity) -> Callable[[dict], tuple]:
    """A function giving a record's key as a comparable tuple (its normalisers looked up once)."""
    parts = [(name, _normalizers(entity).get(name, _other)) for name in entity.key]

    def key_of(record: dict) -> tuple:
        return tuple(None if record.get(name) is None else normal(record[name]) for name, normal in parts)

    return key_of


def differing_fields(entity: Entity, row: dict, document: dict) -> list[FieldDifference]:
    """The Supabase columns whose values differ in the mirror's document."""
    differences = []
    normalizers = _normalizers(entity)
    for column, value in row.items():
        mirrored = document.get(column)
        if value == mirrored and type(value) is type(mirrored) and isinstance(value, str | int | bool):
            continue  # equal text, numbers and flags need no normalising (the common case)
        normalizer = normalizers.get(column, _other)
        ours = None if mirrored is None else normalizer(mirrored)
        theirs = None if value is None else normalizer(value)
        if ours != theirs:
            differences.append(FieldDifference(column, theirs, ours))
    return differences


def mirror_rows(database: Database, entity: Entity, batch_size: int = PAGE_SIZE) -> Iterator[dict]:
    """The mirror's documents in key order, streamed by one cursor sorted by the key's fields.

    One cursor, not a query per page: MongoDB walks the key's unique index once, where a
    keyset page per query would make a server without range pushdown (FerretDB v1) scan
    and sort the collection for every page. Sorted by the key's fields rather than by
    `_id`, so a document some other writer stored under its own `_id` still comes in order.
    """
    order = [(name, 1) for name in entity.key]
    projection = {"_id": 0, PROVENANCE_FIELD: 0}
    with database[entity.collection].find({}, projection).sort(order).batch_size(batch_size) as cursor:
        yield from cursor


_END = object()


def read_ahead(rows: Iterator[dict], pages: int = 4, page_size: int = PAGE_SIZE) -> Iterator[dict]:
    """The same rows in the same order, read by a helper thread up to `pages` pages ahead.

    Memory stays bounded (at most `pages` pages wait); an error while reading is raised
    here, in the reader's thread; stopping early stops the helper and closes `rows`.
    """
    waiting: queue.Queue = queue.Queue(maxsize=pages)
    stopped = threading.Event()

    def hand_over(item) -> bool:
        while not stopped.is_set():
            try:
                waiting.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            page = []
            for row in rows:
                page.append(row)
                if len(page) == page_size:
                    if not hand_over(page):
                        return
                    page = []
            if hand_over(page):
                hand_over(_END)
        except Exception as error:  # handed to the consumer, who raises it
            hand_over(error)
        finally:
            close = getattr(rows, "close", None)
            if close is not None:
                close()

    helper = threading.Thread(target=read, name="fitkart-read-ahead", daemon=True)
    helper.start()
    try:
        while (item := waiting.get()) is not _END:
            if isinstance(item, Exception):
                raise item
            yield from item
    finally:
        stopped.set()
        helper.join()


def compare_table(entity: Entity, source: Source, database: Database, report: TableReport,
                  advance: Callable[[int], None] = lambda n: None) -> Iterator[Drift]:
    """Merge-join Supabase rows with mirror documents in key order; yield each drifting record."""
    # Each side is read by a thread of its own, a few pages ahead: waiting for one store
    # overlaps comparing, instead of adding to it.
    theirs = read_ahead(source.rows(entity.collection, entity.key))
    ours = read_ahead(mirror_rows(database, entity))
    key_of = key_reader(entity)
    row, document = next(theirs, None), next(ours, None)
    while row is not None or document is not None:
        row_key = key_of(row) if row is not None else None
        doc_key = key_of(document) if document is not None else None
        if document is None or (row is not None and row_key < doc_key):
            report.supabase_rows += 1
            advance(1)
            yield Drift("missing", dict(zip(entity.key, row_key, strict=True)), row, None)
            row = next(theirs, None)
        elif row is None or doc_key < row_key:
            report.mirror_rows += 1
            yield Drift("extra", dict(zip(entity.key, doc_key, strict=True)), None, document)
            document = next(ours, None)
        else:
            report.supabase_rows += 1
            report.mirror_rows += 1
            advance(1)
            differences = differing_fields(entity, row, document)
            if differences:
                yield Drift("different", dict(zip(entity.key, row_key, strict=True)), row, document, differences)
            row, document = next(theirs, None), next(ours, None)


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
    checkpoints = engine.database[CHECKPOINTS_COLLECTION]
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
    database[RUNS_COLLECTION].insert_one({
        "kind": kind, "source": source.description, "started_at": started_at, "finished_at": utc_now(),
        "status": status, "tables": tables,
    })


@dataclass
class MoneyConversion:
    """What convert-money did to one money column: amounts converted, already right, and left as they were."""

    collection: str
    column: str
    converted: int = 0
    already: int = 0
    not_amounts: int = 0
    changed_meanwhile: int = 0


def money_columns() -> list[tuple[str, str]]:
    """Each (collection, column) holding numeric(10,2) money: products.price, orders.total_amount."""
    return [(entity.collection, name) for entity in ENTITIES
            for name, kind in entity.schema.fields.items() if isinstance(kind, Money)]


def stored_amount(value) -> Decimal | None:
    """A stored amount (Decimal128, double, integer or text) as numeric(10,2); None when it is no such amount."""
    if isinstance(value, bool) or not isinstance(value, Decimal128 | Decimal | int | float | str):
        return None
    try:
        amount = value.to_decimal() if isinstance(value, Decimal128) else Decimal(str(value).strip())
        if not amount.is_finite():
            return None
        exact = amount.quantize(CENT)
    except ArithmeticError:
        return None
    # A value with more decimals than cents would change when rounded: converting must not change amounts.
    return exact if exact == amount else None


def convert_money(database: Database, collection: str, column: str, store_money: Callable[[Decimal], object],
                  batch_size: int = PAGE_SIZE) -> MoneyConversion:
    """Store every amount of one column in the form `store_money` gives: streamed, resumable, idempotent.

    One cursor reads only `_id` and the amount (memory stays flat); a bulk write per `batch_size`
    changes sets each amount only while the document still holds the value read, so a write made
    meanwhile wins. An interrupted run keeps what it did: run again, and that counts as already right.
    """
    report = MoneyConversion(collection, column)
    target = database[collection]
    pending: list[UpdateOne] = []
    with target.find({column: {"$ne": None}}, {column: 1}).batch_size(batch_size) as cursor:
        for document in cursor:
            value = document.get(column)
            amount = stored_amount(value)
            if amount is None:
                report.not_amounts += 1
                continue
            wanted = store_money(amount)
            if type(value) is type(wanted) and value == wanted:
                report.already += 1
                continue
            # Neither `_fitkart.version` nor `written_at` changes: the amount stays the same, only its form does.
            # A concurrent engine write still passes its version guard, and the status page's "last write" and
            # "writes in the last hour" keep counting data changes only.
            pending.append(UpdateOne({"_id": document["_id"], column: value}, {"$set": {column: wanted}}))
            if len(pending) == batch_size:
                _write_conversions(target, pending, report)
                pending = []
    if pending:
        _write_conversions(target, pending, report)
    return report


def _write_conversions(collection: Collection, updates: list[UpdateOne], report: MoneyConversion) -> None:
    """One bulk write of guarded conversions; a guard that no longer matches was a write made meanwhile."""
    result = collection.bulk_write(updates, ordered=False)
    report.converted += result.modified_count
    report.already += result.matched_count - result.modified_count
    report.changed_meanwhile += len(updates) - result.matched_count
