"""The one way a moment is written: RFC 3339 in UTC with a `Z`, for every record and output."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(moment: datetime, *, fraction: bool = False) -> str:
    """`moment` in UTC as `2026-11-30T08:45:00Z` (`fraction`: with microseconds).

    A naive datetime is taken as UTC: the certificate library and the clocks here give UTC.
    """
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if fraction:
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def now_rfc3339(*, fraction: bool = False) -> str:
    return rfc3339(datetime.now(UTC), fraction=fraction)
