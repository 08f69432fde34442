"""Eve list queries over in-memory documents: ``where``, ``sort``, ``page``, ``max_results``,
``projection``.

``where`` is MongoDB JSON: equality on any field, dot notation into nested objects and lists
(``{"debt.invoice_number": "103118"}``, ``{"transactions.type": "capital"}``), and the operators
``$eq $ne $in $nin $gt $gte $lt $lte $exists $and $or``. Values that are RFC 1123 dates compare
as dates, as MongoDB would compare the stored datetimes. Anything else is a 400, so that a
client never mistakes an unsupported query for an empty answer.
"""

from __future__ import annotations

import ast
import functools
import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from importer.sandbox.validation import parse_date

DEFAULT_MAX_RESULTS = 25
PAGINATION_LIMIT = 100
META_FIELDS = ("_id", "_created", "_updated", "_etag")


class QueryError(ValueError):
    """A query argument the sandbox cannot honour (answered 400)."""


def _values(doc: Any, path: list[str]) -> list[Any]:
    """Every value at a dotted path; lists fan out as in MongoDB."""
    if not path:
        return [doc]
    if isinstance(doc, list):
        found: list[Any] = []
        for item in doc:
            found.extend(_values(item, path))
        return found
    if isinstance(doc, dict) and path[0] in doc:
        return _values(doc[path[0]], path[1:])
    return []


def _comparable(value: Any) -> Any:
    # Only a string with a comma can match the RFC 1123 format ("%a, %d ..."): ids and
    # references skip strptime and its exception, which made every scan slow.
    if isinstance(value, str) and "," in value:
        parsed = parse_date(value)
        if parsed is not None:
            return parsed
    return value


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return bool(_comparable(a) == _comparable(b))


def _order(op: str, a: Any, b: Any) -> bool:
    a, b = _comparable(a), _comparable(b)
    numbers = (int, float)
    same = (isinstance(a, numbers) and isinstance(b, numbers)) or (
        type(a) is type(b) and isinstance(a, str | datetime))
    if not same or isinstance(a, bool) or isinstance(b, bool):
        return False
    return {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op]


class _InSet:
    """A ``$in``/``$nin`` list of plain values, turned into a set once per query.

    A read-back of 100 ids by ``{"_id": {"$in": [...]}}`` then costs one set lookup per
    document instead of 100 comparisons.
    """

    __slots__ = ("items", "keys")

    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self.keys = frozenset(_key(v) for v in items)

    def __contains__(self, values: object) -> bool:
        # Same as "any element equals any value", lists fanning out, as _match_condition does.
        assert isinstance(values, list)
        if not values:  # a missing field is null to MongoDB
            return _key(None) in self.keys
        for value in values:
            for x in value if isinstance(value, list) else (value,):
                if not isinstance(x, dict | list) and _key(x) in self.keys:
                    return True
        return False


def _key(value: Any) -> tuple[bool, Any]:
    """Equal keys exactly when ``_equal`` says the values are equal (bools apart)."""
    return (isinstance(value, bool), _comparable(value))


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float)


def prepare(where: Any) -> Any:
    """The filter with every ``$in``/``$nin`` list of plain values made an :class:`_InSet`.

    Args:
        where: a parsed ``where`` (or a part of it).

    Returns:
        The same filter, ready for :func:`matches`; anything malformed is left as it is, so
        that matching reports it.
    """
    if isinstance(where, list):
        return [prepare(w) for w in where]
    if not isinstance(where, dict):
        return where
    out: dict[str, Any] = {}
    for key, value in where.items():
        if key in ("$in", "$nin") and isinstance(value, list) and all(map(_plain, value)):
            out[key] = _InSet(value)
        else:
            out[key] = prepare(value)
    return out


def _match_condition(values: list[Any], condition: Any) -> bool:
    if condition is None and not values:
        return True  # MongoDB: {"field": null} also matches a document without the field
    if not (isinstance(condition, dict) and condition and all(
            isinstance(k, str) and k.startswith("$") for k in condition)):
        # Plain equality; a list field matches when any element (or the list itself) is equal.
        return any(_equal(v, condition) for v in values) or any(
            isinstance(v, list) and any(_equal(x, condition) for x in v) for v in values)
    for op, arg in condition.items():
        if op == "$eq":
            ok = _match_condition(values, arg)
        elif op == "$ne":
            ok = not _match_condition(values, arg)
        elif op in ("$in", "$nin") and isinstance(arg, _InSet):
            ok = values in arg
            ok = ok if op == "$in" else not ok
        elif op in ("$in", "$nin"):
            if not isinstance(arg, list):
                raise QueryError(f"{op} needs a list")
            ok = any(_match_condition(values, a) for a in arg)
            ok = ok if op == "$in" else not ok
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            ok = any(_order(op, v, arg) for v in values)
        elif op == "$exists":
            ok = bool(values) == bool(arg)
        else:
            raise QueryError(f"operator {op} is not supported by the sandbox")
        if not ok:
            return False
    return True


def matches(doc: dict[str, Any], where: dict[str, Any]) -> bool:
    """Whether a document satisfies a MongoDB-style filter.

    Args:
        doc: the stored document.
        where: the parsed ``where`` argument.

    Returns:
        True when every condition holds.
    """
    for key, condition in where.items():
        if key in ("$and", "$or"):
            if not isinstance(condition, list) or not all(isinstance(c, dict) for c in condition):
                raise QueryError(f"{key} needs a list of objects")
            results = (matches(doc, c) for c in condition)
            if not (all(results) if key == "$and" else any(results)):
                return False
        elif key.startswith("$"):
            raise QueryError(f"operator {key} is not supported by the sandbox")
        elif not _match_condition(_values(doc, key.split(".")), condition):
            return False
    return True


def parse_where(raw: str | None) -> dict[str, Any]:
    """Parse the ``where`` argument (JSON object)."""
    if not raw:
        return {}
    try:
        where = json.loads(raw)
    except ValueError as exc:
        raise QueryError(f"where is not valid JSON: {exc}") from None
    if not isinstance(where, dict):
        raise QueryError("where must be a JSON object")
    return where


def parse_sort(raw: str | None) -> list[tuple[str, int]]:
    """Parse ``sort``: ``-_created,amount`` or Eve's ``[("_created", -1)]``."""
    if not raw:
        return []
    text = raw.strip()
    if text.startswith("["):
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise QueryError(f"sort {raw!r} is not understood") from None
        if not isinstance(parsed, list) or not all(
                isinstance(p, tuple | list) and len(p) == 2 and isinstance(p[0], str)
                and p[1] in (1, -1) for p in parsed):
            raise QueryError(f"sort {raw!r} is not understood")
        return [(str(p[0]), int(p[1])) for p in parsed]
    keys = []
    for part in text.split(","):
        part = part.strip()
        if not part or part == "-":
            raise QueryError(f"sort {raw!r} is not understood")
        keys.append((part[1:], -1) if part.startswith("-") else (part, 1))
    return keys


def _sort_key(doc: dict[str, Any], field: str) -> tuple[int, Any]:
    values = _values(doc, field.split("."))
    if not values or values[0] is None:
        return (0, 0)  # missing and null sort first, as in MongoDB
    value = _comparable(values[0])
    if isinstance(value, bool):
        return (4, value)
    if isinstance(value, int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    if isinstance(value, datetime):
        return (3, value)
    return (5, json.dumps(value, sort_keys=True, default=str))


def sort_docs(docs: list[dict[str, Any]], keys: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """Sort stably by several keys (insertion order breaks ties)."""
    for field, direction in reversed(keys):
        docs = sorted(docs, key=functools.partial(_sort_key, field=field),
                      reverse=direction < 0)
    return docs


def eve_page(raw: str | None) -> int:
    """``page`` as Eve reads it: ``abs(int(page))``, 1 when that is 0 or not a number."""
    try:
        return abs(int(raw or "")) or 1
    except ValueError:
        return 1


def eve_max_results(raw: str | None) -> int:
    """``max_results`` as Eve reads it: ``int(float(x))`` when above 0, else the default;
    capped at the pagination limit."""
    try:
        value = int(float(raw or ""))
    except (ValueError, OverflowError):
        return DEFAULT_MAX_RESULTS
    return min(value, PAGINATION_LIMIT) if value > 0 else DEFAULT_MAX_RESULTS


def projector(raw: str | None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A function applying Eve's ``projection`` (1 include / 0 exclude; dotted paths reach
    into sub-documents, as in MongoDB)."""
    if not raw:
        return lambda doc: doc
    try:
        spec = json.loads(raw)
    except ValueError:
        raise QueryError("projection is not valid JSON") from None
    if not isinstance(spec, dict) or any(v not in (0, 1) for v in spec.values()):
        raise QueryError("projection must be a JSON object of field: 0|1")
    include = [k.split(".") for k, v in spec.items() if v == 1]
    exclude = [k.split(".") for k, v in spec.items() if v == 0]
    if include and exclude:
        raise QueryError("projection cannot mix inclusion and exclusion")
    if include:
        keep = include + [[m] for m in META_FIELDS]
        return lambda doc: _projected(doc, keep, True)
    return lambda doc: _projected(doc, exclude, False)


def _projected(doc: Any, paths: list[list[str]], keep: bool) -> Any:
    """``doc`` with only (``keep``) or without the given dotted paths; lists fan out."""
    if not isinstance(doc, dict):
        return doc
    out: dict[str, Any] = {}
    for key, value in doc.items():
        rests = [p[1:] for p in paths if p[0] == key]
        if any(not r for r in rests) or not rests:  # a path ends here, or none comes here
            if keep == bool(rests):
                out[key] = value
        elif isinstance(value, list | dict):
            out[key] = ([_projected(v, rests, keep) for v in value] if isinstance(value, list)
                        else _projected(value, rests, keep))
        elif not keep:
            out[key] = value
    return out


def list_page(docs: Iterable[dict[str, Any]], args: dict[str, str]) -> dict[str, Any]:
    """Answer one GET of a collection with Eve's ``_items``/``_meta`` envelope.

    Args:
        docs: the collection in insertion order (not copied: the caller passes copies).
        args: the query-string arguments.

    Returns:
        The envelope (HATEOAS off, so no ``_links``).
    """
    where = prepare(parse_where(args.get("where")))
    keys = parse_sort(args.get("sort"))
    page = eve_page(args.get("page"))
    max_results = eve_max_results(args.get("max_results"))
    project = projector(args.get("projection"))
    found = [d for d in docs if matches(d, where)]
    found = sort_docs(found, keys)
    start = (page - 1) * max_results
    items = [project(d) for d in found[start:start + max_results]]
    return {"_items": items, "_meta": {"page": page, "max_results": max_results,
                                       "total": len(found)}}

