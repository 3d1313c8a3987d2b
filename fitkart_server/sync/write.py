"""One write as asked (what, by whom, from where), and how a refusal of it is raised."""

from dataclasses import dataclass
from datetime import UTC, datetime

import bson
from bson.errors import InvalidDocument
from marshmallow import ValidationError
from pymongo.errors import DocumentTooLarge, DuplicateKeyError, WriteError

from ..bounds import MAX_REASON, MAX_RECORD_BYTES, cut
from ..clock import as_utc, utc_now
from ..model.entities import Entity
from ..model.policy import SERVICE, Caller

OPERATIONS = ("upsert", "delete")
MISSING = "Missing data for required field."
# Bytes a record's bookkeeping may add after it is measured: `bytes` itself (11) and a longer source name.
BOOKKEEPING_ROOM = 32
DUPLICATE = "Another record already holds a unique value of this one (its id, or its key)."


class RecordRejected(Exception):
    """A write the engine refused (422); the engine's entry point keeps it in `sync_rejects`."""

    def __init__(self, message: str, errors: dict | None = None) -> None:
        message = cut(message, MAX_REASON)  # a database's refusal can quote the whole record
        super().__init__(message)
        self.message = message
        self.errors = errors or {}


@dataclass(frozen=True)
class Write:
    """One upsert or delete as asked; every rule reads its context from here.

    `authoritative` (repairs from Supabase, the source of truth) skips the staleness and
    tombstone checks and clears the record's tombstones. `changed_at` is when the change was
    made, as far as its path knows (a WAL change's commit, a queued write's arrival, a client's
    stamp): a delete's tombstones carry it, never the time the server happens to apply it.
    `version` is the client's order of its own changes to one record (see ClientVersion).
    `whole_row` (repair): the payload is the whole Supabase row, so a column the stored record
    holds and the row lacks is no column of Supabase's (dropped or renamed there) and goes.
    """

    kind: object  # "upsert" or "delete"; whatever a malformed batch operation said
    entity: Entity | None  # None: a batch operation that names no known table
    payload: object
    caller: Caller = SERVICE
    source: str = "client"
    route: str | None = None
    authoritative: bool = False
    changed_at: datetime | None = None  # None: now, as it is applied
    version: "ClientVersion | None" = None
    whole_row: bool = False

    @property
    def collection(self) -> str | None:
        """The table written to, when known."""
        return self.entity.collection if self.entity else None

    @property
    def writer(self) -> str | None:
        """Whom a client's tombstone binds: the signed-in user, else the role; None for Supabase's own writes."""
        if self.source != "client":
            return None
        return f"user:{self.caller.user_id}" if self.caller.user_id else f"role:{self.caller.role}"


@dataclass(frozen=True, order=True)
class ClientVersion:
    """A client's stamp of one change: when it made it (ms since the epoch) and its outbox sequence.

    A record's versions from one client increase; compared as (at, seq), an older one is stale.
    """

    at: int
    seq: int

    @property
    def moment(self) -> datetime:
        """When the client made the change."""
        return datetime.fromtimestamp(self.at / 1000, UTC)

    def stored(self) -> list[int]:
        """As the record's bookkeeping keeps it."""
        return [self.at, self.seq]

    @classmethod
    def capped(cls, sent: dict, arrived: datetime | None) -> "ClientVersion":
        """The version a client sent, its time never later than the change's arrival: a clock set ahead gains
        nothing over another device's changes."""
        latest = int(as_utc(arrived or utc_now()).timestamp() * 1000)
        return cls(min(sent["at"], latest), sent["seq"])

    @classmethod
    def of_stored(cls, value) -> "ClientVersion | None":
        """What the bookkeeping kept (None: no client version)."""
        return cls(*value) if isinstance(value, list) and len(value) == 2 else None


def field_errors(error: ValidationError) -> dict:
    """Marshmallow's messages as a field → reasons mapping."""
    messages = error.messages
    return messages if isinstance(messages, dict) else {"_schema": list(messages)}


def missing(names) -> dict:
    """Each of `names` reported as a missing field."""
    return {name: [MISSING] for name in names}


def provenance(write: Write, version: int, before: dict | None = None) -> dict:
    """The mirror's own bookkeeping for a write, kept apart from Supabase columns: when and how it was written,
    when the change was made (its path's time, else now) and the last client version applied (this write's,
    else the one kept `before`)."""
    now = utc_now()
    kept = {"written_at": now, "source": write.source, "version": version, "changed_at": write.changed_at or now}
    client = write.version.stored() if write.version is not None else (before or {}).get("client")
    if client is not None:
        kept["client"] = client
    return kept


@dataclass(frozen=True)
class UpsertOutcome:
    """What an upsert did (`created`, `updated`, `unchanged`, `stale`) and the stored record."""

    result: str
    record: dict | None


def refuse_oversized(document: dict) -> int:
    """Refuse a write that would leave a record over MAX_RECORD_BYTES (columns merge across writes); its size.

    The size counts BOOKKEEPING_ROOM more than measured: the size bound stored with the record
    (`_fitkart.bytes`) and a longer source name, so the stored record stays within the limit.
    """
    try:
        size = len(bson.encode(document)) + BOOKKEEPING_ROOM
    except InvalidDocument:
        return MAX_RECORD_BYTES  # the database will refuse it, and say why
    if size > MAX_RECORD_BYTES:
        raise RecordRejected(f"The record would be {size:,} bytes stored; at most {MAX_RECORD_BYTES:,} are kept.")
    return size


def database_refusal(error: Exception) -> RecordRejected:
    """The refusal of a write the database refused for its content; re-raises any other failure."""
    if isinstance(error, DuplicateKeyError) or "UNIQUE constraint failed" in str(error):
        # FerretDB v1 reports a unique violation on update as InternalError, not E11000.
        return RecordRejected(DUPLICATE)
    if isinstance(error, WriteError | InvalidDocument | DocumentTooLarge):
        details = getattr(error, "details", None) or {}
        reason = str(details.get("errmsg") or error).split(", full error:")[0]
        return RecordRejected(f"The database refused the record: {reason}")
    raise error
