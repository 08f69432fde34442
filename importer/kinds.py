"""The three record kinds as data: endpoint, columns, required fields."""

from __future__ import annotations

import re
import unicodedata
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


# English stems found anywhere in a file or sheet name ("creditor" removed first).
_KIND_STEMS = {"payments": "payment", "creditings": "credit", "cancellations": "cancel"}
# Swedish words, whole words only (a finance team's own sheet names): a stem would also match
# Betalningsvillkor (terms of payment), Återbetalningar (refunds), Kreditavdelningen.
_KIND_WORDS_SV = {
    "payments": {"betalning", "betalningar", "inbetalning", "inbetalningar"},
    "creditings": {"kreditering", "krediteringar", "kreditnota", "kreditnotor",
                   "kreditfaktura", "kreditfakturor"},
    "cancellations": {"återkallelse", "återkallelser", "återkallade", "makulering",
                      "makuleringar"},
}


def kind_from_label(label: str) -> Kind | None:
    """Tell the kind from a file or worksheet name, or None when it cannot be told.

    English by stem (``payments-2025-07.csv``, ``Credits``); the word ``creditor`` is ignored
    (``creditor-payments.csv`` is payments, not creditings). Swedish by whole word
    (``Betalningar``, ``Kreditering``, ``Återkallelser``). A name that matches more than one
    kind is not guessed.
    """
    found = kinds_named(label)
    return KINDS[found.pop()] if len(found) == 1 else None


def kinds_named(label: str) -> set[str]:
    """The kinds a file or worksheet name names (see :func:`kind_from_label`): none, one, or
    several (``Cancelled creditings``)."""
    text = unicodedata.normalize("NFC", label).lower()  # macOS file names come decomposed
    english = text.replace("creditor", " ")
    words = set(re.findall(r"[^\W\d_]+", text))
    found = {kind for kind, stem in _KIND_STEMS.items() if stem in english}
    return found | {kind for kind, names in _KIND_WORDS_SV.items() if words & names}


def without_kind_words(label: str) -> str:
    """``label`` with every word that tells a kind taken out (``creditor`` stays), for a name
    that must tell one kind only once another is put in front of it."""
    text = unicodedata.normalize("NFC", label)
    kept = re.split(r"(creditor)", text, flags=re.IGNORECASE)
    stems = "|".join(map(re.escape, _KIND_STEMS.values()))
    words = "|".join(map(re.escape, set().union(*_KIND_WORDS_SV.values())))
    for i in range(0, len(kept), 2):  # the even parts lie outside "creditor"
        part = re.sub(rf"(?i)\b(?:{words})\b", "", kept[i])
        kept[i] = re.sub(rf"(?i)(?:{stems})[^\W\d_]*", "", part)
    return "".join(kept)

