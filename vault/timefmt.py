"""Timestamps as the API writes them: RFC 3339, UTC, whole seconds."""

from __future__ import annotations

from datetime import datetime, timezone


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(text: str, end_of_day: bool = False) -> float:
    """Unix time of an RFC 3339 time (``2026-11-23T04:48:03Z``; no offset: UTC) or of a
    day (``2026-11-23``: its start, or with ``end_of_day`` its last second). ValueError if neither."""
    if len(text) > 40:
        raise ValueError(text)
    if len(text) == 10:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc)
        return day.timestamp() + (86400 - 1 if end_of_day else 0)
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
