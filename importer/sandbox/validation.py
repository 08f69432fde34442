"""Eve/Cerberus-style validation of the three creditor actions, following the seeds' field tables.

Messages are Cerberus' own wording (``unknown field``, ``required field``, ``must be of string
type``, ``unallowed value X``, ``null value not allowed``, ``field is read-only``), so a client
that shows ``_issues`` verbatim shows what Amili's Eve would say. Dates must be RFC 1123 in GMT,
parsed with Eve's own format ``%a, %d %b %Y %H:%M:%S GMT``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

DATE_FORMAT = "%a, %d %b %Y %H:%M:%S GMT"
OBJECT_ID = re.compile(r"^[0-9a-fA-F]{24}$")
INSERTION_FAILURE = "Insertion failure: {n} document(s) contain(s) error(s)"


@dataclass(frozen=True)
class Resource:
    """One creditor-action collection as the seeds describe it."""

    name: str  # URL segment, e.g. "creditor--payments"
    status_field: str  # the 201 body's own status field
    fields: dict[str, str]  # field → type: objectid | string | number | datetime
    required: tuple[str, ...]  # besides the case XOR invoice_number pair
    read_only: tuple[str, ...]
    locale: str  # prefix of our status_reason_locale keys
    amount: bool


PAYMENTS = Resource(
    name="creditor--payments",
    status_field="_payment_status",
    fields={"creditor": "objectid", "case": "objectid", "invoice_number": "string",
            "currency": "string", "amount": "number", "bank_transaction_date": "datetime",
            "client_registration_date": "datetime", "creditor_payment_reference": "string",
            "origin": "string", "account": "objectid"},
    required=("creditor", "currency", "amount", "bank_transaction_date", "origin"),
    read_only=("file_import_report",),
    locale="creditor_payment",
    amount=True,
)
CREDITINGS = Resource(
    name="creditor--creditings",
    status_field="_payment_status",  # sic, as in the seeds
    fields={"creditor": "objectid", "case": "objectid", "invoice_number": "string",
            "currency": "string", "amount": "number", "credit_invoice": "string",
            "client_registration_date": "datetime", "creditor_reference": "string",
            "origin": "string", "account": "objectid"},
    required=("creditor", "currency", "amount", "origin"),
    read_only=("file_import_report",),
    locale="creditor_crediting",
    amount=True,
)
CANCELLATIONS = Resource(
    name="creditor--cancellations",
    status_field="_cancellation_status",
    fields={"creditor": "objectid", "case": "objectid", "invoice_number": "string",
            "origin": "string"},
    required=("creditor", "origin"),
    # The cancellation table lists file_import_report but no account: account is unknown here.
    read_only=("file_import_report",),
    locale="creditor_cancellation",
    amount=False,
)
# `account` on payments and creditings: the seeds' examples send it (and the older doc
# generation required it), the newer one sets it from the case. Both are taken: it may be
# sent, and the stored record carries the case's account either way.
RESOURCES: dict[str, Resource] = {r.name: r for r in (PAYMENTS, CREDITINGS, CANCELLATIONS)}
MAX_AMOUNT = 10**15  # above any real claim; keeps amounts exact to the cent as decimals
ALLOWED = {"currency": ("SEK",), "origin": ("creditor_system",)}


def parse_date(value: str) -> datetime | None:
    """Parse an RFC 1123 GMT date the way Eve does, or None when it does not parse."""
    try:
        return datetime.strptime(value, DATE_FORMAT).replace(tzinfo=UTC)
    except (TypeError, ValueError):
        return None


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "objectid":
        return isinstance(value, str) and bool(OBJECT_ID.match(value))
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "datetime":
        return isinstance(value, str) and parse_date(value) is not None
    raise AssertionError(kind)


def amount_problem(value: Any) -> str | None:
    """Why a JSON value is no amount (or capital) the sandbox keeps exact; None when it is."""
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            isinstance(value, float) and not math.isfinite(value)) or value <= 0:
        return "must be a number greater than 0"
    if value > MAX_AMOUNT:
        return f"max value is {MAX_AMOUNT}"
    return None


def validate(resource: Resource, doc: Any) -> dict[str, Any]:
    """Check one posted document against the resource's schema.

    Args:
        resource: which collection it was posted to.
        doc: the parsed JSON body (or one item of a bulk list).

    Returns:
        Eve ``_issues``: field → message (a list when a field has several); empty when valid.
    """
    if not isinstance(doc, dict):
        return {"_schema": "must be of dict type"}
    issues: dict[str, list[str]] = {}

    def add(field: str, message: str) -> None:
        issues.setdefault(field, []).append(message)

    for field, value in doc.items():
        if field in resource.read_only:
            add(field, "field is read-only")
            continue
        kind = resource.fields.get(field)
        if kind is None:
            add(field, "unknown field")
            continue
        if value is None:
            add(field, "null value not allowed")
            continue
        if not _type_ok(kind, value):
            add(field, f"must be of {kind} type")
            continue
        if field in ALLOWED and value not in ALLOWED[field]:
            add(field, f"unallowed value {value}")
        problem = amount_problem(value) if field == "amount" else None
        if problem:
            add(field, problem)
    for field in resource.required:
        if field not in doc:
            add(field, "required field")
    has_case, has_invoice = "case" in doc, "invoice_number" in doc
    if has_case and has_invoice:
        add("case", "'invoice_number' must not be present with 'case'")
        add("invoice_number", "'case' must not be present with 'invoice_number'")
    elif not has_case and not has_invoice:
        add("case", "required field")
        add("invoice_number", "required field")
    return {k: v[0] if len(v) == 1 else v for k, v in issues.items()}


def unprocessable(issues: dict[str, Any]) -> dict[str, Any]:
    """The Eve 422 body for one document."""
    return {"_status": "ERR", "_issues": issues,
            "_error": {"code": 422, "message": INSERTION_FAILURE.format(n=1)}}
