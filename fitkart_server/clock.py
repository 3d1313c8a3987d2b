"""Time as the mirror stores it."""

from datetime import UTC, datetime


def utc_now() -> datetime:
    """The current time as a BSON date holds it: UTC, milliseconds."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
