"""What the status page and `flask fitkart stats` show: per-collection activity, rejects, runs."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pymongo.database import Database

from ..clock import as_utc, utc_now
from ..model.documents import PROVENANCE_FIELD, REJECTS, RUNS, TOMBSTONES
from ..model.entities import ENTITIES

WINDOW_MINUTES = 60
# Per collection, at most this many recent writes are bucketed by minute (counts stay exact).
BUCKETED_WRITES = 50_000
WRITTEN_AT = f"{PROVENANCE_FIELD}.written_at"


@dataclass
class CollectionStats:
    """One mirrored collection at a glance."""

    name: str
    documents: int
    last_write_at: datetime | None
    last_write_source: str | None
    # Upserts whose document was last written in the window, plus deletes in it: a record
    # written twice in the hour counts once (the mirror keeps the latest write only).
    writes_last_hour: int
    per_minute: list[int] = field(default_factory=list)  # oldest minute first

    @property
    def peak_per_minute(self) -> int:
        """The busiest minute of the window (for scaling the sparkline)."""
        return max(self.per_minute, default=0)


def _minute_buckets(moments, now: datetime) -> list[int]:
    """How many moments fall in each of the last WINDOW_MINUTES minutes, oldest first."""
    buckets = [0] * WINDOW_MINUTES
    for moment in moments:
        age = int((now - as_utc(moment)).total_seconds() // 60)
        if 0 <= age < WINDOW_MINUTES:
            buckets[WINDOW_MINUTES - 1 - age] += 1
    return buckets


def collection_stats(database: Database, now: datetime | None = None) -> list[CollectionStats]:
    """Counts, last write and last hour's writes of each mirrored collection."""
    now = now or utc_now()
    since = now - timedelta(minutes=WINDOW_MINUTES)
    tombstones = database[TOMBSTONES]
    result = []
    for entity in ENTITIES:
        collection = database[entity.collection]
        latest = next(iter(collection.find({}, {PROVENANCE_FIELD: 1}).sort(WRITTEN_AT, -1).limit(1)), None)
        provenance = (latest or {}).get(PROVENANCE_FIELD) or {}
        recent = {WRITTEN_AT: {"$gte": since}}
        # One key tombstone per deleted record (an id tombstone may remember the same delete).
        deleted = {"_id": {"$regex": f"^{entity.collection}\\|key\\|"}, "deleted_at": {"$gte": since}}
        written, upserts = _recent_moments(collection, recent, WRITTEN_AT)
        removed, deletes = _recent_moments(tombstones, deleted, "deleted_at")
        result.append(CollectionStats(
            name=entity.collection, documents=collection.estimated_document_count(),
            last_write_at=as_utc(provenance["written_at"]) if provenance.get("written_at") else None,
            last_write_source=provenance.get("source"), writes_last_hour=upserts + deletes,
            per_minute=_minute_buckets(written + removed, now)))
    return result


def _recent_moments(collection, query: dict, path: str) -> tuple[list[datetime], int]:
    """The newest BUCKETED_WRITES times at `path` of the matching documents, and how many match in all."""
    moments = []
    for document in collection.find(query, {path: 1}).sort(path, -1).limit(BUCKETED_WRITES):
        for part in path.split("."):
            document = document[part]
        moments.append(document)
    # Counted again only when the cap cut the list short.
    total = len(moments) if len(moments) < BUCKETED_WRITES else collection.count_documents(query)
    return moments, total


def latest_rejects(database: Database, limit: int = 10) -> list[dict]:
    """The newest refused writes, without their payloads."""
    rejects = database[REJECTS]
    return list(rejects.find({}, {"payload": 0}).sort("at", -1).limit(limit))


def latest_run(database: Database, kind: str = "verify") -> dict | None:
    """The newest finished run of a kind (verify, repair, backfill), or None."""
    return next(iter(database[RUNS].find({"kind": kind}).sort("finished_at", -1).limit(1)), None)
