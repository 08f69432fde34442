"""Values read out of Amili's answers, in the forms the docs leave open.

- Instants: RFC 1123 (Eve's default) or ISO 8601 (``2025-07-04T16:20:41+00:00``, ``...Z``):
  Eve's date format is a server setting and the docs show only RFC 1123 in examples.
- Record ids: a string, or Mongo's extended JSON ``{"$oid": "..."}``.

What cannot be read is None: the caller must treat "cannot tell" as such, never as "different".
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


def id_text(value: Any) -> str | None:
    """An id as the API wrote it, as text (``{"$oid": …}`` unwrapped); None when it is none."""
    if isinstance(value, dict):
        value = value.get("$oid")
    if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
        return str(value).strip()
    return None


def record_id(record: dict[str, Any]) -> str | None:
    """A record's ``_id`` as text (see :func:`id_text`)."""
    return id_text(record.get("_id"))
