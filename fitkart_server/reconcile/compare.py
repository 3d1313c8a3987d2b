"""Proving the mirror equals Supabase (verify): both sides streamed in key order and merge-joined.

Memory stays flat whatever the table size. Values are normalised before comparing, honestly
and only as far as the two stores really differ: uuid case, timestamps to the millisecond
(BSON's precision) in UTC, numeric(10,2) as decimals whatever FITKART_DECIMAL_MODE stored,
arrays as lists, jsonb as JSON values; a column the mirror lacks equals a Supabase null.
"""

import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import cache

from bson import Decimal128
from pymongo.database import Database

from ..clock import as_utc, to_millisecond
from ..model.documents import PROVENANCE_FIELD
from ..model.entities import Entity
from ..model.schemas import CENT, Money, Timestamp, Uuid
from .sources import PAGE_SIZE, Source


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
    return to_millisecond(as_utc(moment))


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
