"""The three record kinds as data: endpoint, columns, required fields."""

from __future__ import annotations

import re
from dataclasses import dataclass

from importer.errors import UsageError

CREDITOR_ORIGIN = "creditor_system"
CURRENCY = "SEK"


@dataclass(frozen=True)
class Kind:
    """One kind of creditor event and how Amili's API takes it.

    Attributes:
        name: the kind's name on the command line and in reports.
        endpoint: the collection path the rows are POSTed to.
        status_field: the kind-specific status in the 201 body.
        fields: every API field a row may send, in the docs' order.
        required: columns that must be present in a file of this kind
            (``creditor`` may instead come from the configured default;
            ``case``/``invoice_number`` are an either-or pair checked apart).
        amount: whether rows carry an amount.
        dates: RFC 1123 date fields.
        reference: the creditor's own reference field, if the kind has one.
    """

    name: str
    endpoint: str
    status_field: str
    fields: tuple[str, ...]
    required: tuple[str, ...]
    amount: bool
    dates: tuple[str, ...]
    reference: str | None

    @property
    def resource(self) -> str:
        """The collection name without the leading slash (``creditor--payments``)."""
        return self.endpoint.lstrip("/")


PAYMENTS = Kind(
    name="payments",
    endpoint="/creditor--payments",
    status_field="_payment_status",
    fields=(
        "creditor",
        "case",
        "invoice_number",
        "currency",
        "amount",
        "bank_transaction_date",
        "client_registration_date",
        "creditor_payment_reference",
        "origin",
    ),
    required=("creditor", "currency", "amount", "bank_transaction_date"),
    amount=True,
    dates=("bank_transaction_date", "client_registration_date"),
    reference="creditor_payment_reference",
)

CREDITINGS = Kind(
    name="creditings",
    endpoint="/creditor--creditings",
    status_field="_payment_status",  # sic: the docs name it so for creditings too
    fields=(
        "creditor",
        "case",
        "invoice_number",
        "currency",
        "amount",
        "credit_invoice",
        "client_registration_date",
        "creditor_reference",
        "origin",
    ),
    required=("creditor", "currency", "amount"),
    amount=True,
    dates=("client_registration_date",),
    reference="creditor_reference",
)

CANCELLATIONS = Kind(
    name="cancellations",
    endpoint="/creditor--cancellations",
    status_field="_cancellation_status",
    fields=("creditor", "case", "invoice_number", "origin"),
    required=("creditor",),
    amount=False,
    dates=(),
    reference=None,
)

KINDS: dict[str, Kind] = {k.name: k for k in (PAYMENTS, CREDITINGS, CANCELLATIONS)}
ALIASES = {"credits": "creditings", "payment": "payments", "crediting": "creditings",
           "credit": "creditings", "cancellation": "cancellations", "cancel": "cancellations"}

# Every API field of any kind, in a stable order for report columns.
ALL_FIELDS: tuple[str, ...] = tuple(dict.fromkeys(f for k in KINDS.values() for f in k.fields))
# Set by Amili, never sent by us (see README, "Read-only fields").
READ_ONLY_FIELDS = ("account", "file_import_report")

NAMING_HINT = (
    "name the file (or the worksheet) after its kind, e.g. 'payments-2025-07.csv', "
    "'creditings.xlsx', 'cancellations.csv', or pass --kind payments|creditings|cancellations"
)


def kind_by_name(name: str) -> Kind:
    """Look a kind up by its name or alias (``credits`` = ``creditings``).

    Raises:
        UsageError: the name is not a kind.
    """
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in KINDS:
        raise UsageError(f"unknown kind {name!r}: use payments, creditings or cancellations")
    return KINDS[key]


# Words in a file or sheet name that tell its kind, English and Swedish (a finance team's own
# sheet names: Betalningar, Kreditering, Återkallelser).
_KIND_WORDS = {"payments": ("payment", "betalning"),
               "creditings": ("credit", "kredit"),
               "cancellations": ("cancel", "återkall", "makuler")}


def kind_from_label(label: str) -> Kind | None:
    """Tell the kind from a file or worksheet name, or None when it cannot be told.

    The word ``creditor`` (Swedish ``kreditor``) is ignored (``creditor-payments.csv`` is
    payments, not creditings); a name that matches more than one kind is not guessed.
    """
    words = re.sub(r"[ck]reditor", " ", label.lower())
    found = {kind for kind, stems in _KIND_WORDS.items() if any(s in words for s in stems)}
    return KINDS[found.pop()] if len(found) == 1 else None
