"""The sync engine: one set of write rules for every table and every source of writes.

Plain Python over pymongo, with no Flask in it: the HTTP routes, the batch endpoint and
the CLI all call it. Rules (each has tests): validate, merge only the fields sent,
refuse stale versions, remember deletes in tombstones, keep every refused write in
`sync_rejects`, and make every request safe to replay.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import bson
from bson import Decimal128
from bson.errors import InvalidDocument
from marshmallow import ValidationError
from pymongo import InsertOne, UpdateOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DocumentTooLarge, DuplicateKeyError, OperationFailure, WriteError

from ..bounds import MAX_ECHO_BYTES, MAX_REASON, MAX_RECORD_BYTES, ErrorBudget, cut
from ..clock import utc_now
from ..model.documents import PROVENANCE_FIELD, Reject, Tombstone
from ..model.entities import BY_COLLECTION, Entity
from ..model.policy import SERVICE, Caller, Forbidden
from ..model.schemas import Money
from .rejects import Allowance, RejectLog

log = logging.getLogger(__name__)
# Optimistic writes retry when another writer got in between; this many is plenty.
MAX_ATTEMPTS = 10
OPERATIONS = ("upsert", "delete")
MISSING = "Missing data for required field."
# Told (collection, result, count) for every record written or refused.
Observer = Callable[[str, str, int], None]
# Clients a tombstone of a delete-of-nothing remembers; more would let one id hold unbounded data.
MAX_TOMBSTONE_CLIENTS = 16
DUPLICATE_KEY = 11000
DUPLICATE = ("Another record already holds a unique value of this one (its id, or its key).", {})


class RecordRejected(Exception):
    """A write the engine refused; already recorded in `sync_rejects`."""

    def __init__(self, message: str, errors: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or {}


@dataclass(frozen=True)
class PlannedWrite:
    """A write an upsert decided on: an insert, or a guarded update; and the record it leaves."""

    doc_id: str
    insert: dict | None
    update: tuple[dict, dict] | None
    result: dict


@dataclass(frozen=True)
class UpsertOutcome:
    """What an upsert did (`created`, `updated`, `unchanged`, `stale`) and the stored record."""

    result: str
    record: dict | None


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
        self.tombstone_lifetime = timedelta(days=tombstone_days)
        self.tombstones = database[Tombstone._get_collection_name()]
        self.rejects = database[Reject._get_collection_name()]
        # Asked before storing a reject or a client's tombstone: the caller's rate limit (None: no limit).
        self.allowance = allowance
        # `spill`: where rejects go instead of the database while it is away (the spool).
        self.reject_log = RejectLog(self.rejects, observer=observer, allowance=allowance, spill=spill)
        # Field errors a batch reports in all; None outside a batch (each refusal gets its own).
        self.error_budget: ErrorBudget | None = None

    # -- upserts -----------------------------------------------------------------

    def upsert_record(self, entity: Entity, payload, *, caller: Caller = SERVICE, source: str = "client",
                      route: str | None = None, authoritative: bool = False) -> UpsertOutcome:
        """Create or merge one record by its key; refuse stale versions and other users' rows.

        `authoritative` (repairs from Supabase, the source of truth) skips the staleness and
        tombstone checks and clears the record's tombstones.
        """
        reject = _Rejecter(self, entity, "upsert", source, route, payload, caller)
        values = self._validated(entity, payload, reject)
        collection = self.database[entity.collection]
        # The key is the document's _id: one primary-key lookup, and uniqueness for free.
        doc_id = entity.key_of(values)
        for _ in range(MAX_ATTEMPTS):
            current = collection.find_one({"_id": doc_id})
            decision = self._decide(entity, values, current, caller, source, reject, authoritative,
                                    lambda tombstone_id: self.tombstones.find_one({"_id": tombstone_id}))
            if isinstance(decision, UpsertOutcome):
                return self._noted(entity.collection, decision)
            outcome = self._write(entity, decision, reject)
            if outcome is not None:
                if authoritative:
                    self._forget_deletes(entity, values)
                return self._noted(entity.collection, outcome)
        raise reject("Too many concurrent writes to this record; try again.")

    def _validated(self, entity: Entity, payload, reject) -> dict:
        """The payload validated (422 naming each bad field), keyed, and in storage form."""
        try:
            values = entity.schema.load(payload, partial=True)
        except ValidationError as error:
            raise reject("Invalid record.", _field_errors(error)) from None
        except (ArithmeticError, ValueError, TypeError) as error:
            # Content no validator foresaw must cost its sender a 422, never the server a 500.
            log.warning("Unforeseen invalid %s record: %s", entity.collection, error.__class__.__name__)
            raise reject("Invalid record: a value could not be read.") from None
        missing_key = [name for name in entity.key if name not in values]
        if missing_key:
            raise reject("The record lacks its key.", {name: [MISSING] for name in missing_key})
        return self._to_storage(entity, values)

    def _decide(self, entity: Entity, values: dict, current: dict | None, caller: Caller, source: str,
                reject, authoritative: bool, find_tombstone) -> "UpsertOutcome | PlannedWrite":
        """What an upsert does to the stored record: a final answer, or the write to make."""
        writer = _writer(caller, source)
        if current is None:
            if not authoritative and self._is_tombstoned(entity, values, find_tombstone, writer):
                return UpsertOutcome("stale", None)
            missing = [name for name in entity.required_on_create if name not in values]
            if missing:
                raise reject("A new record needs every NOT NULL column that has no default.",
                             {name: [MISSING] for name in missing})
        try:  # before any answer about the stored record, so nothing leaks
            entity.rules.check_write(caller, values, current, self.database)
        except Forbidden as error:
            raise reject.forbidden(error) from None
        if current is None:
            document = {"_id": entity.key_of(values), **self._to_storage(entity, entity.insert_defaults),
                        **values, PROVENANCE_FIELD: _provenance(source, 1)}
            _refuse_oversized(document, reject)
            return PlannedWrite(document["_id"], document, None, document)
        if not authoritative and self._is_stale(entity, current, values, find_tombstone, writer):
            return UpsertOutcome("stale", self.show(entity, current))
        changes = {name: value for name, value in values.items()
                   if name not in current or current[name] != value}
        if not changes:
            return UpsertOutcome("unchanged", self.show(entity, current))
        version = (current.get(PROVENANCE_FIELD) or {}).get("version")
        # The version guard makes this a compare-and-set: no lock, a retry on a lost race.
        guard = {"_id": current["_id"], f"{PROVENANCE_FIELD}.version": version}
        written = {**changes, PROVENANCE_FIELD: _provenance(source, (version or 0) + 1)}
        result = {**current, **written}
        _refuse_oversized(result, reject)
        return PlannedWrite(current["_id"], None, (guard, {"$set": written}), result)

    def _write(self, entity: Entity, planned: "PlannedWrite", reject) -> UpsertOutcome | None:
        """Make one planned write; None when another writer got there first (retry)."""
        collection = self.database[entity.collection]
        try:
            if planned.insert is not None:
                collection.insert_one(planned.insert)
            elif collection.update_one(*planned.update).matched_count == 0:
                return None
        except DuplicateKeyError:
            if collection.find_one({"_id": planned.doc_id}, {"_id": 1}) is not None:
                return None  # lost the race to create it: merge into the winner instead
            raise reject(*DUPLICATE) from None
        except (OperationFailure, InvalidDocument, DocumentTooLarge) as error:
            raise reject(*_refusal(error)) from None
        return UpsertOutcome("created" if planned.insert is not None else "updated",
                             self.show(entity, planned.result))

    def _is_stale(self, entity: Entity, current: dict, values: dict, find_tombstone, writer: str | None) -> bool:
        """Whether `values` is older than the stored record, or names a deleted Supabase id."""
        if _is_older(values.get(entity.timestamp_field), current.get(entity.timestamp_field)):
            return True
        return values.get("id") not in (None, current.get("id")) and self._is_tombstoned(
            entity, {"id": values["id"]}, find_tombstone, writer)

    def _forget_deletes(self, entity: Entity, values: dict) -> None:
        """Drop the tombstones of a record Supabase says exists, so it can be updated again."""
        self.tombstones.delete_many({"_id": {"$in": _tombstone_ids(entity, entity.key_of(values), values.get("id"))}})

    def _is_tombstoned(self, entity: Entity, values: dict, find_tombstone, writer: str | None) -> bool:
        """Whether a delete already removed this Supabase id, or this key after `values`' time.

        A tombstone left by a client's delete of a record that was not there (yet) binds only
        that client (`by`): it guards its own create arriving after its delete, but no one
        else's write and no write from Supabase (webhook, repair) can be blocked by it.
        """
        # Expired tombstones are ignored even where the database cannot expire them (FerretDB).
        alive_since = utc_now() - self.tombstone_lifetime

        def binding(found: dict | None) -> bool:
            return (found is not None and _utc(found["deleted_at"]) > alive_since
                    and ("by" not in found or (writer is not None and writer in found["by"])))

        seen: dict[str, dict | None] = {}
        if values.get("id") is not None:  # Supabase never reuses an id
            tombstone_id = _id_tombstone(entity, values["id"])
            found = seen[tombstone_id] = find_tombstone(tombstone_id)
            if binding(found):
                return True
        stamp = values.get(entity.timestamp_field)
        if stamp is None or not all(name in values for name in entity.key):
            return False
        key_tombstone = f"{entity.collection}|key|{entity.key_of(values)}"
        # Where the key is the id, both are one tombstone: it was looked up already.
        found = seen[key_tombstone] if key_tombstone in seen else find_tombstone(key_tombstone)
        return binding(found) and _utc(found["deleted_at"]) >= stamp

    # -- deletes -----------------------------------------------------------------

    def delete_records(self, entity: Entity, selector, *, caller: Caller = SERVICE, source: str = "client",
                       route: str | None = None) -> int:
        """Delete by key, by Supabase id, or every record of a user; leave tombstones."""
        reject = _Rejecter(self, entity, "delete", source, route, selector, caller)
        query, exact = self._delete_query(entity, selector, reject)
        collection = self.database[entity.collection]
        owner = getattr(entity.rules, "owner_field", None)
        fields = {"_id": 1, "id": 1, **{name: 1 for name in (*entity.key, owner) if name}}
        # By the key's fields, not by _id: a document written by something else keeps its own _id.
        found = list(collection.find(query, fields))
        try:
            entity.rules.check_delete(caller, query, found, self.database)
        except Forbidden as error:
            raise reject.forbidden(error) from None
        now = utc_now()
        if not found:
            if exact:
                # Remember the delete anyway: its upsert may still be on its way. A replay changes nothing.
                # A client's such delete binds only that client (see _is_tombstoned); Supabase's binds all.
                # It is stored on the caller's behalf, so it spends the caller's allowance like a reject.
                key = entity.key_of(query) if all(name in query for name in entity.key) else None
                if self.allowance is None or self.allowance():
                    self._write_tombstones(entity, [(key, query.get("id"))], now, overwrite=False,
                                           by=_writer(caller, source))
            return 0
        # Tombstones first: if the delete then fails, a retry finds them and finishes it.
        self._write_tombstones(entity, [(entity.key_of(doc), doc.get("id")) for doc in found], now, overwrite=True)
        ids = [doc["_id"] for doc in found]
        deleted = collection.delete_many({"_id": ids[0]} if len(ids) == 1 else {"_id": {"$in": ids}}).deleted_count
        if self.observer is not None:
            self.observer(entity.collection, "deleted", deleted)
        return deleted

    def _write_tombstones(self, entity: Entity, records: list[tuple[str | None, str | None]],
                          deleted_at: datetime, *, overwrite: bool, by: str | None = None) -> None:
        """Create the tombstones (by key and by Supabase id) of deleted records.

        An existing tombstone gets the new time when `overwrite` (and then binds everyone),
        else stays as it is (a repeated delete of what is already gone changes nothing),
        except that a tombstone binding only some clients also binds `by` from then on.
        Insert first, update on a duplicate: an upsert would make FerretDB v1 scan the whole collection.
        """
        for key, record_id in records:
            for tombstone_id in _tombstone_ids(entity, key, record_id):
                tombstone = {"_id": tombstone_id, "collection": entity.collection, "deleted_at": deleted_at}
                try:
                    self.tombstones.insert_one(tombstone if by is None else {**tombstone, "by": [by]})
                except DuplicateKeyError:
                    if overwrite:
                        self.tombstones.update_one({"_id": tombstone_id},
                                                   {"$set": {"deleted_at": deleted_at}, "$unset": {"by": ""}})
                    elif by is None:  # Supabase confirms a delete some clients made: it now binds all
                        self.tombstones.update_one({"_id": tombstone_id, "by": {"$exists": True}},
                                                   {"$unset": {"by": ""}})
                    else:  # another client's delete of nothing: it binds that client too (a few at most)
                        self.tombstones.update_one(
                            {"_id": tombstone_id, "by": {"$exists": True},
                             f"by.{MAX_TOMBSTONE_CLIENTS - 1}": {"$exists": False}},
                            {"$addToSet": {"by": by}})

    def _delete_query(self, entity: Entity, selector, reject) -> tuple[dict, bool]:
        """Turn a delete selector into a query, and whether it names one record."""
        if not isinstance(selector, dict):
            raise reject("Name the record to delete with a JSON object.")
        wanted = {*entity.key, "id", *([entity.clear_by] if entity.clear_by else [])}
        try:
            values = entity.schema.load({k: v for k, v in selector.items() if k in wanted},
                                        partial=True)
        except ValidationError as error:
            raise reject("Invalid delete.", _field_errors(error)) from None
        if all(name in values for name in entity.key):
            return {name: values[name] for name in entity.key}, True
        if "id" in values:
            return {"id": values["id"]}, True
        if entity.clear_by and entity.clear_by in values:
            return {entity.clear_by: values[entity.clear_by]}, False
        names = " + ".join(entity.key)
        choices = f"its key ({names}) or its id" + (
            f", or {entity.clear_by} to clear them all" if entity.clear_by else "")
        raise reject(f"Name the record to delete: {choices}.",
                     {name: [MISSING] for name in entity.key})

    # -- reads -------------------------------------------------------------------

    def find_record(self, entity: Entity, ref: str, *, caller: Caller = SERVICE) -> dict | None:
        """The stored record whose ref field (key, or id for compound keys) is `ref`."""
        try:
            ref = entity.schema.fields[entity.ref_field].deserialize(ref)
        except ValidationError:
            return None  # not a uuid, so no record has it
        by_key = entity.key == (entity.ref_field,)
        document = self.database[entity.collection].find_one({"_id": ref} if by_key else {entity.ref_field: ref})
        if document is None:
            return None
        entity.rules.check_read(caller, document)
        return self.show(entity, document)

    def list_records(self, entity: Entity, *, caller: Caller = SERVICE, user_id: str | None = None,
                     limit: int = 100, cursor: str | None = None) -> tuple[list[dict], str | None]:
        """One page of the records the caller may read, in key order, and the next cursor."""
        conditions = [entity.rules.read_query(caller)]
        if user_id is not None:
            conditions.append({"user_id": user_id.lower()})
        if cursor is not None:
            conditions.append({"_id": {"$gt": cursor}})
        query = {"$and": conditions}
        # Small batches: records may be up to 1 MiB each, and the page may end after the first.
        found = self.database[entity.collection].find(query).sort("_id", 1).limit(limit + 1).batch_size(16)
        page, size = [], 0
        for document in found:
            size += len(bson.encode(document))
            if len(page) == limit or (page and size > MAX_ECHO_BYTES):
                found.close()
                return [self.show(entity, doc) for doc in page], page[-1]["_id"]
            page.append(document)
        return [self.show(entity, doc) for doc in page], None

    def show(self, entity: Entity, document: dict) -> dict:
        """A stored document as the JSON record clients see."""
        return entity.schema.dump(document)

    # -- batches -----------------------------------------------------------------

    def apply_operation(self, operation, *, caller: Caller = SERVICE, source: str = "client",
                        route: str | None = None) -> dict:
        """Apply one batch operation and describe its outcome as the batch endpoint returns it."""
        kind, entity, record = self.operation_parts(operation, caller=caller, source=source, route=route)
        if kind == "delete":
            return {"deleted": self.delete_records(entity, record, caller=caller, source=source, route=route)}
        outcome = self.upsert_record(entity, record, caller=caller, source=source, route=route)
        return {"result": outcome.result, "record": outcome.record}

    def operation_parts(self, operation, *, caller: Caller, source: str,
                        route: str | None) -> tuple[str, Entity, dict]:
        """A batch operation's kind, table and record; refused (and kept) when it is not a well-formed one."""
        if not isinstance(operation, dict):
            raise _Rejecter(self, None, None, source, route, operation, caller)(
                "An operation is a JSON object.")
        kind, name, record = (operation.get(k) for k in ("op", "collection", "record"))
        errors = {}
        if kind not in OPERATIONS:
            errors["op"] = [f"Must be one of: {', '.join(OPERATIONS)}."]
        if name not in BY_COLLECTION:
            errors["collection"] = [f"Must be one of: {', '.join(BY_COLLECTION)}."]
        if not isinstance(record, dict):
            errors["record"] = ["Must be a JSON object."]
        if errors:
            raise _Rejecter(self, None, kind, source, route, operation, caller)("Invalid operation.", errors)
        return kind, BY_COLLECTION[name], record

    def check(self, kind: str, entity: Entity, payload, *, caller: Caller, source: str,
              route: str | None) -> None:
        """Validate one write as its upsert or delete would, without the database (for the spool)."""
        reject = _Rejecter(self, entity, kind, source, route, payload, caller)
        if kind == "delete":
            self._delete_query(entity, payload, reject)
        else:
            self._validated(entity, payload, reject)

    def apply_batch(self, operations: list, *, caller: Caller = SERVICE, source: str = "client",
                    route: str | None = None) -> list:
        """Apply a batch in order; each item of the answer is a result dict or the refusal exception.

        A batch of upserts of distinct records (the usual outbox flush or ingest) is decided
        from one read per table (records and tombstones by _id) and written with one unordered
        bulk_write per table; the few writes that lose a race are redone one by one. Any other
        batch (deletes, or one record twice) is applied one operation at a time. Its refusals
        share one budget of field errors, so a batch of hostile records answers briefly.
        """
        self.error_budget = ErrorBudget()
        try:
            return self._apply_batch(operations, caller, source, route)
        finally:
            self.error_budget = None

    def _apply_batch(self, operations: list, caller: Caller, source: str, route: str | None) -> list:
        """apply_batch, within the batch's error budget."""
        if not _bulk_eligible(operations):
            return [self._apply_or_refusal(operation, caller, source, route) for operation in operations]
        answers: list = [None] * len(operations)
        planned: dict[str, list[tuple[int, Entity, dict, _Rejecter]]] = {}
        for index, operation in enumerate(operations):
            entity = BY_COLLECTION[operation["collection"]]
            reject = _Rejecter(self, entity, "upsert", source, route, operation["record"], caller)
            try:
                values = self._validated(entity, operation["record"], reject)
            except RecordRejected as refusal:
                answers[index] = refusal
                continue
            planned.setdefault(entity.collection, []).append((index, entity, values, reject))
        for name, items in planned.items():
            self._apply_bulk(name, items, answers, caller, source, route)
        return answers

    def _apply_bulk(self, name: str, items: list, answers: list, caller: Caller, source: str,
                    route: str | None) -> None:
        """Decide the upserts of one table from one read, then write them in one bulk_write."""
        entity = BY_COLLECTION[name]
        collection = self.database[name]
        ids = [entity.key_of(values) for _, _, values, _ in items]
        current = {doc["_id"]: doc for doc in collection.find({"_id": {"$in": ids}})}
        tombstone_ids = [tid for _, _, values, _ in items for tid in _tombstone_ids(entity, None, values.get("id"))]
        tombstone_ids += [f"{name}|key|{doc_id}" for doc_id in ids]
        tombstones = {doc["_id"]: doc for doc in self.tombstones.find({"_id": {"$in": tombstone_ids}})}
        writes: list[tuple[int, dict, PlannedWrite]] = []
        for (index, _, values, reject), doc_id in zip(items, ids, strict=True):
            try:
                decision = self._decide(entity, values, current.get(doc_id), caller, source, reject, False,
                                        tombstones.get)
            except (RecordRejected, Forbidden) as refusal:
                answers[index] = refusal
                continue
            if isinstance(decision, UpsertOutcome):
                self._noted(name, decision)
                answers[index] = {"result": decision.result, "record": decision.record}
            else:
                writes.append((index, reject, decision))
        if not writes:
            return
        operations = [InsertOne(planned.insert) if planned.insert is not None else UpdateOne(*planned.update)
                      for _, _, planned in writes]
        try:
            collection.bulk_write(operations, ordered=False)
            failed = {}
        except BulkWriteError as error:
            failed = {failure["index"]: failure for failure in error.details.get("writeErrors", [])}
        # An update whose guard no longer matched wrote nothing: find those by their version.
        expected = {planned.doc_id: planned.result[PROVENANCE_FIELD]["version"]
                    for _, _, planned in writes if planned.update is not None}
        stored = {}
        if expected:
            stored = {doc["_id"]: (doc.get(PROVENANCE_FIELD) or {}).get("version")
                      for doc in collection.find({"_id": {"$in": list(expected)}}, {PROVENANCE_FIELD: 1})}
        for position, (index, reject, planned) in enumerate(writes):
            missed = planned.update is not None and stored.get(planned.doc_id) != expected[planned.doc_id]
            refused = failed.get(position)
            if refused is not None and not _is_collision(refused):
                # Refused for its content: the same write alone would be refused again, so say so now.
                answers[index] = reject(f"The database refused the record: {refused.get('errmsg', '')}")
            elif refused is not None or missed:
                # Lost a race: redo it alone, with the full rules and error reporting.
                answers[index] = self._apply_or_refusal(
                    {"op": "upsert", "collection": name, "record": reject.payload}, caller, source, route)
            else:
                outcome = UpsertOutcome("created" if planned.insert is not None else "updated",
                                        self.show(entity, planned.result))
                self._noted(name, outcome)
                answers[index] = {"result": outcome.result, "record": outcome.record}

    def _apply_or_refusal(self, operation, caller: Caller, source: str, route: str | None):
        """One operation's result, or the exception that refused it."""
        try:
            return self.apply_operation(operation, caller=caller, source=source, route=route)
        except (RecordRejected, Forbidden) as refusal:
            return refusal

    def _noted(self, collection: str, outcome: UpsertOutcome) -> UpsertOutcome:
        """Tell the observer what an upsert did; the outcome, unchanged."""
        if self.observer is not None:
            self.observer(collection, outcome.result, 1)
        return outcome

    # -- storage -----------------------------------------------------------------

    def _to_storage(self, entity: Entity, values: dict) -> dict:
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

    def record_reject(self, **details) -> None:
        """Keep a refused write in `sync_rejects` (see RejectLog.record), within this request's allowance."""
        self.reject_log.record(**details)


class _Rejecter:
    """Builds the exception for one refused write, recording it in `sync_rejects` first."""

    def __init__(self, engine: SyncEngine, entity: Entity | None, operation: str | None,
                 source: str, route: str | None, payload, caller: Caller) -> None:
        self.engine, self.entity, self.operation = engine, entity, operation
        self.source, self.route, self.payload, self.caller = source, route, payload, caller

    def __call__(self, reason: str, errors: dict | None = None) -> RecordRejected:
        reason = cut(reason, MAX_REASON)  # a database's refusal can quote the whole record
        # Within the batch's shared budget, or a budget of this refusal's own.
        errors = (self.engine.error_budget or ErrorBudget()).take(errors) if errors else {}
        self._record(reason, errors, 422)
        return RecordRejected(reason, errors)

    def forbidden(self, error: Forbidden) -> Forbidden:
        """Record a write the caller was not allowed to make."""
        self._record(error.message, {}, 403)
        return error

    def _record(self, reason: str, errors: dict, status: int) -> None:
        self.engine.record_reject(
            reason=reason, errors=errors, payload=self.payload, route=self.route,
            collection=self.entity.collection if self.entity else None, operation=self.operation,
            source=self.source, caller=self.caller, status=status)


def _writer(caller: Caller, source: str) -> str | None:
    """Whom a client's tombstone binds: the signed-in user, else the role; None for Supabase's own writes."""
    if source != "client":
        return None
    return f"user:{caller.user_id}" if caller.user_id else f"role:{caller.role}"


def _provenance(source: str, version: int) -> dict:
    """The mirror's own bookkeeping for a write, kept apart from Supabase columns."""
    return {"written_at": utc_now(), "source": source, "version": version}


def _bulk_eligible(operations: list) -> bool:
    """Whether a batch is only upserts of distinct records of known tables (the bulk path's case)."""
    seen = set()
    for operation in operations:
        if not isinstance(operation, dict) or operation.get("op") != "upsert" or \
                operation.get("collection") not in BY_COLLECTION or not isinstance(operation.get("record"), dict):
            return False
        entity = BY_COLLECTION[operation["collection"]]
        identity = (entity.collection, *(str(operation["record"].get(name)).lower() for name in entity.key))
        if identity in seen:
            return False
        seen.add(identity)
    return True


def _id_tombstone(entity: Entity, record_id: str) -> str:
    """The tombstone _id that remembers a deleted Supabase id (the key's own where the key is id)."""
    return f"{entity.collection}|{'key' if entity.key == ('id',) else 'id'}|{record_id}"


def _tombstone_ids(entity: Entity, key: str | None, record_id: str | None) -> list[str]:
    """The tombstones of one deleted record: by its key, and by its Supabase id when that differs."""
    ids = [f"{entity.collection}|key|{key}"] if key is not None else []
    if record_id is not None and _id_tombstone(entity, record_id) not in ids:
        ids.append(_id_tombstone(entity, record_id))
    return ids


def _is_older(stamp: datetime | None, stored: datetime | None) -> bool:
    """Whether a version's timestamp is older than the stored one's (unknown is never older)."""
    return stamp is not None and stored is not None and _utc(stamp) < _utc(stored)


def _utc(moment: datetime) -> datetime:
    """Treat a naive datetime (as some stores return) as UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _field_errors(error: ValidationError) -> dict:
    """Marshmallow's messages as a field → reasons mapping."""
    messages = error.messages
    return messages if isinstance(messages, dict) else {"_schema": list(messages)}


def _refuse_oversized(document: dict, reject) -> None:
    """Refuse a write that would leave a record over MAX_RECORD_BYTES (columns merge across writes)."""
    try:
        size = len(bson.encode(document))
    except InvalidDocument:
        return  # the database will refuse it, and say why
    if size > MAX_RECORD_BYTES:
        raise reject(f"The record would be {size:,} bytes stored; at most {MAX_RECORD_BYTES:,} are kept.")


def _is_collision(write_error: dict) -> bool:
    """Whether a bulk write error is a duplicate key (a race, or another record's unique value)."""
    # FerretDB v1 reports a unique violation on update as an internal error, not E11000.
    return write_error.get("code") == DUPLICATE_KEY or "UNIQUE constraint failed" in str(write_error.get("errmsg"))


def _refusal(error: Exception) -> tuple[str, dict]:
    """Why the database refused a write for its content; re-raises any other failure."""
    if isinstance(error, DuplicateKeyError) or "UNIQUE constraint failed" in str(error):
        # FerretDB v1 reports a unique violation on update as InternalError, not E11000.
        return DUPLICATE
    if isinstance(error, WriteError | InvalidDocument | DocumentTooLarge):
        details = getattr(error, "details", None) or {}
        reason = str(details.get("errmsg") or error).split(", full error:")[0]
        return f"The database refused the record: {reason}", {}
    raise error
