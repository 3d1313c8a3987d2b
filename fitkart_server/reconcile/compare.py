"""Proving the mirror equals Supabase (verify): both sides streamed, each in its own order, and joined by key.

Memory stays bounded whatever the table size (see compare_table), apart from the drift
reported. Values are normalised before comparing, honestly and only as far as the two stores
really differ: uuid case, timestamps to the millisecond (BSON's precision) in UTC,
numeric(10,2) as decimals whatever FITKART_DECIMAL_MODE stored, arrays as lists, jsonb as
JSON values; a column the mirror lacks equals a Supabase null, and a field no Supabase column
has (dropped or renamed there) is a difference.
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
from .unmatched import Unmatched, stored_key

MIRROR_BATCH = 2000  # documents per reply of the mirror's cursor: fewer round trips, a bounded reply
READ_PAGE = PAGE_SIZE  # records per page a reader thread hands over


@dataclass
class FieldDifference:
    """One column whose values differ (or that only the mirror's record holds: dropped or renamed in Supabase)."""

    field: str
    supabase: object
    mirror: object
    only_in_mirror: bool = False


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
                {"field": d.field, "supabase": shown(d.supabase), "mirror": shown(d.mirror),
                 **({"only_in_mirror": True} if d.only_in_mirror else {})} for d in drift.fields]})
        else:
            getattr(self, drift.kind).append(drift.key)

    def counts(self) -> dict:
        """How many rows and drifting records, per kind (what `sync_runs` keeps)."""
        return {"supabase_rows": self.supabase_rows, "mirror_rows": self.mirror_rows, "drift": self.drift,
                "missing": len(self.missing), "extra": len(self.extra), "different": len(self.different)}

    def in_key_order(self) -> None:
        """List each kind's records in key order (they are found in the order the two sides arrive)."""
        self.missing.sort(key=_key_order)
        self.extra.sort(key=_key_order)
        self.different.sort(key=lambda entry: _key_order(entry["key"]))

    def as_dict(self) -> dict:
        """The full report as JSON-ready data."""
        return {**self.counts(), "missing": self.missing, "extra": self.extra, "different": self.different}


def _key_order(key: dict) -> tuple:
    """A reported key as a sort key: text as it is (uuids), any odd value by its text."""
    return tuple(value if isinstance(value, str) else str(value) for value in key.values())


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
        if (type(value) is type(mirrored) and value == mirrored) or _equal_unnormalised(value, mirrored):
            continue  # the common case: equal values of one type normalise alike
        normalizer = normalizers.get(column, _other)
        ours = None if mirrored is None else normalizer(mirrored)
        theirs = None if value is None else normalizer(value)
        if ours != theirs:
            differences.append(FieldDifference(column, theirs, ours))
    # A field no Supabase column has (the mirror's bookkeeping is not read): a column dropped or renamed there.
    differences.extend(FieldDifference(column, None, _other(value), only_in_mirror=True)
                       for column, value in document.items() if column not in row)
    return differences


def _equal_unnormalised(value, mirrored) -> bool:
    """Equal without normalising, across types: one moment to the millisecond; a uuid and its text."""
    if isinstance(value, datetime):
        # Aware moments compare as instants; a naive mirror value is never equal here and is normalised instead.
        return isinstance(mirrored, datetime) and to_millisecond(value) == mirrored
    return isinstance(value, uuid.UUID) and str(value) == mirrored


def mirror_rows(database: Database, entity: Entity, batch_size: int = MIRROR_BATCH) -> Iterator[dict]:
    """The mirror's documents in its own storage order: one cursor, no sort asked of the server.

    A sort by the key would make a server without an index order (FerretDB v1) sort the
    whole collection in memory before the first batch; the join in compare_table needs no order.
    """
    projection = {"_id": 0, PROVENANCE_FIELD: 0}
    with database[entity.collection].find({}, projection).batch_size(batch_size) as cursor:
        yield from cursor


_END = object()


def read_together(streams: list[Iterator[dict]], pages: int = 4,
                  page_size: int = PAGE_SIZE) -> Iterator[tuple[int, list[dict]]]:
    """Pages of several streams as they arrive, each with its stream's index; one thread reads each stream.

    Each stream's rows stay in their order. Memory stays bounded: at most `pages` pages of
    each stream wait, so a fast stream neither fills memory nor holds a slow one back. An
    error while reading is raised here, in the reader's thread; stopping early stops the
    helpers and closes the streams.
    """
    arrived: queue.Queue = queue.Queue()
    room = [threading.Semaphore(pages) for _ in streams]
    stopped = threading.Event()

    def hand_over(index: int, page: list[dict]) -> bool:
        while not stopped.is_set():
            if room[index].acquire(timeout=0.1):
                arrived.put((index, page))
                return True
        return False

    def read(index: int, rows: Iterator[dict]) -> None:
        try:
            page = []
            for row in rows:
                page.append(row)
                if len(page) == page_size:
                    if not hand_over(index, page):
                        return
                    page = []
            if not page or hand_over(index, page):
                arrived.put((index, _END))
        except Exception as error:  # handed to the consumer, who raises it
            arrived.put((index, error))
        finally:
            close = getattr(rows, "close", None)
            if close is not None:
                close()

    helpers = [threading.Thread(target=read, args=(index, rows), name=f"fitkart-read-{index}", daemon=True)
               for index, rows in enumerate(streams)]
    for helper in helpers:
        helper.start()
    try:
        reading = len(streams)
        while reading:
            index, item = arrived.get()
            if item is _END:
                reading -= 1
                continue
            if isinstance(item, Exception):
                raise item
            room[index].release()
            yield index, item
    finally:
        stopped.set()
        for helper in helpers:
            helper.join()


SUPABASE, MIRROR = 0, 1  # the sides, as read_together numbers them


def compare_table(entity: Entity, source: Source, database: Database, report: TableReport,
                  advance: Callable[[int], None] = lambda n: None) -> Iterator[Drift]:
    """Join Supabase rows with mirror documents by key, each side in its own order; yield each drifting record.

    A record waits (on disk, in `Unmatched`) until the other side's record with its key
    arrives; the pair is compared then and forgotten. What still waits once both sides are
    read is missing (Supabase's) or extra (the mirror's). Memory is bounded whatever the
    table size (apart from the drift reported): `read_together`'s pages (at most 4 of READ_PAGE
    rows per side, one in hand), one mirror batch (MIRROR_BATCH documents) and Unmatched's page cache (CACHE_KIB). The
    report's lists are then put in key order, so a run lists the same records as the last.
    """
    key_of = key_reader(entity)
    waiting = Unmatched()
    try:
        # Each side is read by a thread of its own: the mirror's scan, the slower, never waits for Supabase.
        streams = [source.rows(entity.collection, entity.key), mirror_rows(database, entity, MIRROR_BATCH)]
        for side, page in read_together(streams, page_size=READ_PAGE):
            if side == SUPABASE:
                report.supabase_rows += len(page)
            else:
                report.mirror_rows += len(page)
            yield from _pair_up(entity, side, page, key_of, waiting, advance)
        yield from unpaired(entity, waiting, key_of, advance)
    finally:
        waiting.close()
    report.in_key_order()


def _pair_up(entity: Entity, side: int, page: list[dict], key_of: Callable[[dict], tuple], waiting: Unmatched,
             advance: Callable[[int], None]) -> Iterator[Drift]:
    """Compare each record of a page with the other side's record of its key if that waits; else let it wait."""
    keys = [key_of(record) for record in page]
    stored = [stored_key(key) for key in keys]
    lonely = []
    for record, key, at, partner in zip(page, keys, stored, waiting.take(1 - side, stored), strict=True):
        if partner is None:
            lonely.append((at, _uuids_as_text(entity, record)))
            continue
        advance(1)
        row, document = (record, partner) if side == SUPABASE else (partner, record)
        differences = differing_fields(entity, row, document)
        if differences:
            yield Drift("different", dict(zip(entity.key, key, strict=True)), row, document, differences)
    waiting.keep(side, lonely)


@cache
def _uuid_columns(entity: Entity) -> tuple[str, ...]:
    """The schema's uuid columns."""
    return tuple(column for column, normalizer in _normalizers(entity).items() if normalizer is _uuid)


def _uuids_as_text(entity: Entity, record: dict) -> dict:
    """The record with its uuid columns as text, in place: compared as text anyway, and pickled ten times faster."""
    for column in _uuid_columns(entity):
        if isinstance(record.get(column), uuid.UUID):
            record[column] = str(record[column])
    return record


def unpaired(entity: Entity, waiting: Unmatched, key_of: Callable[[dict], tuple],
             advance: Callable[[int], None]) -> Iterator[Drift]:
    """The records left waiting once both sides are read: Supabase's are missing, the mirror's extra."""
    for row in waiting.left(SUPABASE):
        advance(1)
        yield Drift("missing", dict(zip(entity.key, key_of(row), strict=True)), row, None)
    for document in waiting.left(MIRROR):
        yield Drift("extra", dict(zip(entity.key, key_of(document), strict=True)), None, document)
