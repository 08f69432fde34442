"""Instants as Amili's API may write them: RFC 1123 (Eve's default) or ISO 8601.

Eve's date format is a server setting and Amili's docs show only RFC 1123 in examples, so an
answer in ISO 8601 (``2025-07-04T16:20:41+00:00``, ``...Z``) is read as well. Anything else is
None: the caller must treat "cannot tell" as such, never as "different".
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any


def parse_instant(value: Any) -> datetime | None:
    """An aware datetime (naive values taken as UTC), or None when it cannot be read.

    Args:
        value: a string from an API answer (anything else gives None).

    Returns:
        The instant, or None.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
