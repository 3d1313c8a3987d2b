"""The order of truth between paths: a change is judged by when it was made, not when it arrives.

Each stored record keeps, in its bookkeeping, when the change it last took was made
(`changed_at`: a WAL change's commit, a queued write's arrival, a client's stamp, else the
time it was applied) and the last client version applied to it (`client`). A change older than
either is `stale`, unless the row's own `updated_at` orders it (then that alone decides).
Writes from Supabase itself (the WAL, repair) are applied whatever their order says: they are
the truth, in commit order.
"""

from datetime import datetime

from ..clock import as_utc, utc_now
from ..model.documents import PROVENANCE_FIELD
from ..model.entities import Entity
from .write import ClientVersion, Write


def overtaken(write: Write, stored: dict, values: dict | None = None) -> bool:
    """Whether the stored record took a change made after this write's: a later client version, or a later
    change time, unless the row's own `updated_at` orders the write (`values`; is_stale compares that)."""
    kept = stored.get(PROVENANCE_FIELD) or {}
    stored_version = ClientVersion.of_stored(kept.get("client"))
    if write.version is not None and stored_version is not None and write.version < stored_version:
        return True
    stored_at = kept.get("changed_at")
    return write.changed_at is not None and not ordered_by_row(write.entity, values or {}) and \
        isinstance(stored_at, datetime) and as_utc(write.changed_at) < as_utc(stored_at)


def ordered_by_row(entity: Entity, values: dict) -> bool:
    """Whether a write carries its row's `updated_at`, Supabase's own order of the row's versions: more exact
    than when a request arrived (two requests may arrive in another order than their rows were written)."""
    return entity.timestamp_field == "updated_at" and values.get("updated_at") is not None


def change_time(version: ClientVersion | None, arrived: datetime | None = None) -> datetime | None:
    """When a change was made: the client's stamp (capped at its arrival: ClientVersion.capped); the arrival
    alone when the client sent no version; None when neither is known (now, as it is applied)."""
    if version is None:
        return arrived
    return min(version.moment, as_utc(arrived or utc_now()))
