"""`convert-money`: a mirror's stored amounts moved from one FITKART_DECIMAL_MODE's form to another."""

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from bson import Decimal128
from pymongo import UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database

from ..bounds import UPDATES_PER_COMMAND
from ..model.entities import ENTITIES
from ..model.schemas import CENT, Money
from .sources import PAGE_SIZE


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
    changes (UPDATES_PER_COMMAND at most) sets each amount only while the document still holds the
    value read, so a write made meanwhile wins. An interrupted run keeps what it did: run again, and that
    counts as already right.
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
            if len(pending) == min(batch_size, UPDATES_PER_COMMAND):
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
