"""Time as the mirror stores it: UTC, to the millisecond (what a BSON date holds)."""

from datetime import UTC, datetime


def as_utc(moment: datetime) -> datetime:
    """A moment in UTC; a naive one (as stores opened without tz_aware hand back) is taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def to_millisecond(moment: datetime) -> datetime:
    """A moment cut to the millisecond, as BSON stores it, so comparisons with stored values are exact."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def utc_now() -> datetime:
    """The current time as a BSON date holds it."""
    return to_millisecond(datetime.now(UTC))
