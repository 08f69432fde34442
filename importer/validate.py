"""Validate rows: normalised values + pandera schemas per kind → the report frame.

A chunk of raw cells goes through three steps:

1. ``normalise`` turns each API column into the values that would be sent; cells it cannot
   read (``1,234.50``, ``04/07/2025``, ``#N/A``…) are errors right away.
2. One pandera ``DataFrameSchema`` per kind (``lazy=True``: every failure of every row at once)
   checks the normalised frame: required values, ids of 24 hex digits, ``SEK``,
   ``creditor_system``, amount ranges, dates not in the future, exactly one of case and
   invoice number. A second schema holds the warnings (rows still posted). Each pandera
   ``Check`` is named after the rule, so a failure case maps to (row, column, reason, message).
3. Rows equal to an earlier row of the same file (across chunks) are errors naming that row.

The result is the *report frame*: :data:`FRAME_COLUMNS`, then one ``input:<header>`` column per
original header. Messages read ``<header as in the file>: '<value as read>' <what is wrong>;
<what to do>``, joined with ``; ``; reason codes (see :data:`REASONS`) are joined with ``,``.

Read-only fields: ``account`` and ``file_import_report`` are set by Amili and never sent; a file
holding them keeps them as ``input:`` columns only. With ``config.send_account`` (the older API
generation required ``account``) payments and creditings need an ``account`` column, checked
as a 24-hex id; :func:`payload` sends it, taken from that ``input:`` column; the frame's columns
stay the same.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow.compute as pc

from importer import normalise
from importer.kinds import CREDITOR_ORIGIN, CURRENCY, KINDS, Kind
from importer.read import HIDDEN, MERGED, ROW, canonical_header

if TYPE_CHECKING:
    from importer.config import Config
    from importer.read import Table

API_COLUMNS: tuple[str, ...] = (
    "creditor", "case", "invoice_number", "currency", "amount", "bank_transaction_date",
    "client_registration_date", "credit_invoice", "creditor_payment_reference",
    "creditor_reference", "origin",
)
RESULT_COLUMNS: tuple[str, ...] = (
    "amili_id", "settled_amount", "case_reference_number", "http_status", "attempts",
)
FRAME_COLUMNS: tuple[str, ...] = (
    "file", "sheet", "row", "kind", "status", "reason", "message", *API_COLUMNS, *RESULT_COLUMNS,
)
INPUT_PREFIX = "input:"
VALID, WARNING, ERROR = "valid", "warning", "error"

# The reason codes, a stable vocabulary (reports and monitoring match on them).
REASONS: dict[str, str] = {
    "missing_value": "a required value is empty",
    "invalid_creditor": "creditor is not a 24-hex-digit id",
    "invalid_case": "case is not a 24-hex-digit id",
    "invalid_account": "account is not a 24-hex-digit id (only checked with send_account)",
    "case_and_invoice": "both case and invoice_number are given; the API takes exactly one",
    "missing_case_or_invoice": "neither case nor invoice_number is given",
    "invalid_currency": "currency is not SEK",
    "invalid_origin": "origin is not creditor_system",
    "invalid_amount": "amount is not a number, not above zero, too large or has >2 decimals",
    "ambiguous_amount": "amount could be read two ways (thousands or decimal separator)",
    "invalid_date": "a date is not in an accepted form",
    "placeholder_date": "a date before 1970-01-02: how systems write 'no date', never a real one",
    "wrong_weekday": "an RFC 1123 date names the wrong weekday",
    "future_date": "a date lies in the future (bank_transaction_date: error; "
                   "client_registration_date: warning)",
    "old_date": "warning: bank_transaction_date is more than a year old",
    "registered_before_transaction": "warning: client_registration_date is before "
                                     "bank_transaction_date",
    "invalid_text": "a text has control or invisible characters, or is a TRUE/FALSE or date "
                    "cell",
    "too_long": f"a text is longer than {normalise.MAX_TEXT} characters "
                f"(any cell: {normalise.MAX_CELL})",
    "formula_without_value": "a formula cell has no saved result",
    "number_format": "a number cell whose number format shows it otherwise than it holds (a "
                     "percentage, in thousands, hidden, rounded, with leading zeros or added "
                     "text where a text is sent, a date without its day)",
    "cell_error": "an Excel error value such as #N/A",
    "duplicate_row": "the same row appears earlier in the file; the later one is not posted",
    "hidden_row": "the row is hidden (or filtered out) in the workbook: not posted",
    "merged_cell": "the row lies in merged cells below (or beside) their first cell, which "
                   "alone holds the value shown",
}

# Characters that make a spreadsheet treat a cell as a formula: no message of ours starts so.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_HEX24 = re.compile(r"[0-9a-f]{24}")
# Control characters, and the invisible format characters (soft hyphen, zero-width spaces
# and joiners, direction marks, BOM) that would make a value differ from what the user sees.
_CONTROL = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
_TEXT_FIELDS = ("invoice_number", "credit_invoice", "creditor_payment_reference",
                "creditor_reference")
_ID_CODES = {"creditor": "invalid_creditor", "case": "invalid_case", "account": "invalid_account"}
_OLD_AFTER = timedelta(days=365)
_ORDER = {name: i for i, name in enumerate((*API_COLUMNS, "account"))}


# Why two rows are one (a duplicate_row message's tail), in each kind's own fields.
_DUPLICATE_WHY = {
    "payments": " (creditor, case or invoice number, amount, dates and payment reference are "
                "all equal); this row is not posted: delete it, or tell the two apart with a "
                "creditor_payment_reference",
    "creditings": " (creditor, case or invoice number, amount, credit invoice, date and "
                  "reference are all equal); this row is not posted: delete it, or tell the "
                  "two apart with a creditor_reference",
    "cancellations": " (creditor and case or invoice number are equal: the case is cancelled "
                     "once); this row is not posted: delete it",
}


@dataclass(frozen=True)
class Rule:
    """What a named check means for the user: reason code, severity and message text."""

    code: str
    severity: str
    text: str  # "<what is wrong>; <what to do>"


_STILL_POSTED = " (the row is still posted)"
_MISSING_TODO = {
    "creditor": "fill in the creditor id (24 hex digits); a configured default creditor "
                "applies only when the file has no creditor column",
    "currency": "write SEK: the API requires the currency",
    "amount": "fill in the amount",
    "bank_transaction_date": "fill in the date the money reached the bank, e.g. 2025-07-04",
    "origin": "write creditor_system or leave the column out",
    "account": "fill in the account id (24 hex digits): send_account is set, for the older "
               "API generation that requires it",
}
_RULES: dict[str, Rule] = {
    "invalid_creditor": Rule("invalid_creditor", ERROR, "is not a creditor id (24 hex digits "
                             "0-9, a-f); copy the id Amili gave you"),
    "invalid_case": Rule("invalid_case", ERROR, "is not a case id (24 hex digits 0-9, a-f); "
                         "copy the case id from Amili, or leave it empty and give the invoice "
                         "number"),
    "invalid_account": Rule("invalid_account", ERROR, "is not an account id (24 hex digits "
                            "0-9, a-f); copy it from Amili (send_account is set: the older "
                            "API generation requires it)"),
    "invalid_currency": Rule("invalid_currency", ERROR, "is not a currency Amili takes; write "
                             "SEK (the only currency the API supports)"),
    "invalid_origin": Rule("invalid_origin", ERROR, "is not an origin the API takes; write "
                           "creditor_system or leave the cell empty"),
    "amount_positive": Rule("invalid_amount", ERROR, "is not greater than zero; write a "
                            "positive amount (money back to the debtor is a crediting)"),
    "amount_max": Rule("invalid_amount", ERROR, "is too large (1 000 000 000 000 or more); "
                       "check the amount"),
    "future_date": Rule("future_date", ERROR, "is in the future; a bank transaction cannot "
                        "have happened yet: check the date"),
    "too_long": Rule("too_long", ERROR, f"is longer than {normalise.MAX_TEXT} characters; "
                     "shorten it"),
    "invalid_text": Rule("invalid_text", ERROR, "contains a control or invisible character (a "
                         "line break, tab, zero-width space or similar, shown as \\x.. or "
                         "\\u....); remove it"),
    "case_and_invoice": Rule("case_and_invoice", ERROR, "both case and invoice number are "
                             "given; the API takes exactly one: clear one of them"),
    "missing_case_or_invoice": Rule("missing_case_or_invoice", ERROR, "neither case nor "
                                    "invoice number is given; fill in exactly one of them"),
    "old_date": Rule("old_date", WARNING, f"is more than a year old; check the date"
                     f"{_STILL_POSTED}"),
    "future_registration": Rule("future_date", WARNING, f"is in the future; check the date"
                                f"{_STILL_POSTED}"),
    "registered_before_transaction": Rule("registered_before_transaction", WARNING, "is before "
                                          "the bank transaction date; check both dates"
                                          f"{_STILL_POSTED}"),
}


# ---------------------------------------------------------------------------------------------
# Vectorised check functions (each gets the non-null values of one column; True = passes)


def _all(s: pd.Series) -> pd.Series:
    return pd.Series(True, index=s.index, dtype=bool)


def _passes(s: pd.Series, found: Any) -> pd.Series:
    """An Arrow kernel's answer per value, as a check's result."""
    return pd.Series(found.to_numpy(zero_copy_only=False), index=s.index, dtype=bool)


def _byte_table(characters: bytes) -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    table[np.frombuffer(characters, dtype=np.uint8)] = True
    return table


_HEX_BYTES = _byte_table(b"0123456789abcdef")
_CONTROL_BYTES = _byte_table(bytes([*range(0x20), 0x7F]))  # _CONTROL's characters in ASCII


def _hex24(s: pd.Series) -> pd.Series:
    text = normalise.arrow_text(s)
    if text is not None:
        scan = normalise.TextBytes(text)
        if bool((scan.lengths == 24).all()) and bool(_HEX_BYTES[scan.u8].all()):
            return _all(s)  # every value 24 bytes, every byte a hex digit
        return _passes(s, pc.match_substring_regex(text, "^[0-9a-f]{24}$"))
    values = s.to_numpy(dtype=object)
    if not len(values):
        return _all(s)
    # Fast path: every value 24 long and the concatenation pure hex (fromhex runs in C; it
    # skips whitespace, which the byte count then catches).
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    right = lengths == 24
    subset = values[right]
    try:
        if len(bytes.fromhex("".join(subset))) == 12 * len(subset):
            return pd.Series(right, index=s.index)
    except ValueError:
        pass
    return pd.Series([_HEX24.fullmatch(v) is not None for v in values], index=s.index,
                     dtype=bool)


def _short(s: pd.Series) -> pd.Series:
    text = normalise.arrow_text(s)
    if text is not None:
        scan = normalise.TextBytes(text)
        if not len(scan.lengths) or int(scan.lengths.max()) <= normalise.MAX_TEXT:
            return _all(s)  # no more bytes than that, so no more characters
        return _passes(s, pc.less_equal(pc.utf8_length(text), normalise.MAX_TEXT))
    values = s.to_numpy(dtype=object)
    if not len(values) or max(map(len, values)) <= normalise.MAX_TEXT:
        return _all(s)
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    return pd.Series(lengths <= normalise.MAX_TEXT, index=s.index)


def _no_control(s: pd.Series) -> pd.Series:
    text = normalise.arrow_text(s)
    if text is not None and (scan := normalise.TextBytes(text)).ascii():
        if not _CONTROL_BYTES[scan.u8].any():
            return _all(s)
        return _passes(s, pc.invert(pc.match_substring_regex(text, r"[\x00-\x1f\x7f]")))
    values = s.to_numpy(dtype=object)
    joined = "".join(values)
    # Every character _CONTROL matches is non-printable: the C loop answers the usual case.
    if joined.isprintable() or not _CONTROL.search(joined):
        return _all(s)
    return pd.Series([_CONTROL.search(v) is None for v in values], index=s.index, dtype=bool)


def _check(fn: Callable[[pd.Series], pd.Series], name: str) -> pa.Check:
    # The function sees only the non-empty values: _failures hands each check a column's
    # non-null values, so pandera's own ignore_na scan (an isna pass per check) is left out.
    return pa.Check(fn, name=name, error=name, ignore_na=False)


def _equals(word: str, name: str) -> pa.Check:
    def equals(s: pd.Series) -> pd.Series:
        text = normalise.arrow_text(s)
        if text is not None:
            return _passes(s, pc.equal(text, word))
        # numpy's object comparison: pandas' own == on an object Series is ~3x slower.
        return pd.Series(s.to_numpy(dtype=object) == word, index=s.index, dtype=bool)

    return _check(equals, name)


LOCAL_ZONE = ZoneInfo("Europe/Stockholm")


def future_limit(now: np.datetime64) -> np.datetime64:
    """The first instant that counts as "in the future": the next midnight in Sweden.

    Dates without a time (ISO dates, Excel date cells) are read as midnight GMT, so a run at
    00:30 Swedish time would otherwise find that day's payments "in the future".

    Args:
        now: the run's time, naive UTC.

    Returns:
        Naive UTC.
    """
    moment = pd.Timestamp(now).tz_localize("UTC").to_pydatetime().astimezone(LOCAL_ZONE)
    midnight = datetime.combine(moment.date() + timedelta(days=1), time(), LOCAL_ZONE)
    return np.datetime64(midnight.astimezone(UTC).replace(tzinfo=None), "us")


@lru_cache(maxsize=16)
def _schemas(kind_name: str, now: np.datetime64, account: bool
             ) -> tuple[pa.DataFrameSchema, pa.DataFrameSchema]:
    """The error schema and the warning schema of a kind (built once per kind and run).

    Args:
        kind_name: the kind.
        now: naive UTC; old dates are relative to it, and a date is "in the future" when it
            is at or after the next local midnight (see :func:`future_limit`).
        account: whether ``account`` is required and checked (send_account, amount kinds).
    """
    future = future_limit(now)
    kind = KINDS[kind_name]
    required = {"creditor", "currency", "origin", *kind.required,
                *(["account"] if account else [])}
    ids = ["creditor", "case"] + (["account"] if account else [])
    columns: dict[str, pa.Column] = {}
    for field in (*kind.fields, *(["account"] if account else [])):
        checks: list[pa.Check] = []
        if field in ids:
            checks.append(_check(_hex24, _ID_CODES[field]))
        elif field in _TEXT_FIELDS:
            checks += [_check(_short, "too_long"), _check(_no_control, "invalid_text")]
        elif field == "currency":
            checks.append(_equals(CURRENCY, "invalid_currency"))
        elif field == "origin":
            checks.append(_equals(CREDITOR_ORIGIN, "invalid_origin"))
        elif field == "amount":
            checks += [_check(lambda s: s > 0, "amount_positive"),
                       _check(lambda s: s < float(normalise.MAX_AMOUNT), "amount_max")]
        elif field == "bank_transaction_date":
            checks.append(_check(lambda s: s < future, "future_date"))
        columns[field] = pa.Column(None, nullable=field not in required, checks=checks)
    # How many of case/invoice_number a row gives (an unreadable cell counts as given).
    columns["_case_or_invoice"] = pa.Column(None, checks=[
        _check(lambda s: s <= 1, "case_and_invoice"),
        _check(lambda s: s >= 1, "missing_case_or_invoice"),
    ])
    errors = pa.DataFrameSchema(columns, coerce=False, name=f"{kind_name} errors")

    warn: dict[str, pa.Column] = {}
    if "bank_transaction_date" in kind.fields:
        warn["bank_transaction_date"] = pa.Column(None, nullable=True, checks=[
            _check(lambda s: s >= now - np.timedelta64(_OLD_AFTER), "old_date")])
        warn["_registration_lag"] = pa.Column(None, nullable=True, checks=[
            _check(lambda s: s >= 0, "registered_before_transaction")])
    if "client_registration_date" in kind.fields:
        warn["client_registration_date"] = pa.Column(None, nullable=True, checks=[
            _check(lambda s: s < future, "future_registration")])
    warnings = pa.DataFrameSchema(warn, coerce=False, name=f"{kind_name} warnings")
    return errors, warnings


Failures = list[tuple[str, str, np.ndarray]]


def _failures(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> Failures:
    """Which rows fail which rule of ``schema``: (column, check name, positions).

    The schema is the rule book: each column's ``nullable`` (failing as pandera's
    ``not_nullable``) and its named ``pa.Check`` objects, run by pandera on the column's
    non-null values only (taken out here, once per column). Only pandera's lazy error report
    is left out: building its failure-case frames cost ~50 ms per chunk and check, more than
    all the checks themselves, for the few rows that fail. Order: the schema's columns, nulls
    first, then the checks as declared.
    """
    found: Failures = []
    for name, column in schema.columns.items():
        values = frame[name]
        null = values.isna().to_numpy()
        if not column.nullable and null.any():
            found.append((name, "not_nullable", np.flatnonzero(null)))
        given = np.flatnonzero(~null)
        if not len(given):
            continue
        present = values.iloc[given] if len(given) < len(values) else values
        for check in column.checks:
            passed = np.asarray(check(present).check_output, dtype=bool)
            if not passed.all():
                found.append((name, str(check.name), given[~passed]))
    return found


def _filled(n: int, value: Any) -> np.ndarray:
    out = np.empty(n, dtype=object)
    out[:] = value  # np.full with a str fill value is far slower
    return out


# ---------------------------------------------------------------------------------------------
# Messages


def shown(value: Any, limit: int = 60) -> str:
    """A cell's value for a message: as read, control characters escaped, long text cut."""
    if normalise.is_formula_without_value(value):
        return "=…"  # the formula's text is not kept: say at least that it is one
    text = normalise.display(value)
    text = _CONTROL.sub(lambda m: _escaped(ord(m.group())), text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _escaped(code: int) -> str:
    # \x0a for the usual ones, \u2028 beyond: "\x2028" would read as "\x20" then "28".
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _safe(message: str) -> str:
    # A header starting with '=' would make the message a formula in a spreadsheet.
    return f"column {message}" if message.startswith(_FORMULA_START) else message


class _Issues:
    """Problems found in one chunk, collected column-wise and turned into per-row text."""

    def __init__(self) -> None:
        self.pos: list[np.ndarray] = []
        self.order: list[np.ndarray] = []
        self.severe: list[np.ndarray] = []
        self.codes: list[str] = []
        self.texts: list[str] = []

    def add(self, positions: Any, order: int, severity: str, codes: list[str],
            texts: list[str]) -> None:
        positions = np.asarray(positions, dtype=np.int64)
        if not len(positions):
            return
        self.pos.append(positions)
        self.order.append(np.full(len(positions), order, dtype=np.int64))
        self.severe.append(np.full(len(positions), severity != ERROR, dtype=np.int64))
        self.codes += codes
        self.texts += texts

    def errors(self, n: int) -> np.ndarray:
        """True for rows with at least one error so far."""
        bad = np.zeros(n, dtype=bool)
        for pos, severe in zip(self.pos, self.severe, strict=True):
            bad[pos[severe == 0]] = True
        return bad

    def per_row(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(status, reason, message) arrays: errors first, then warnings, in column order."""
        status = np.full(n, VALID, dtype=object)
        reason = np.full(n, None, dtype=object)
        message = np.full(n, None, dtype=object)
        if not self.pos:
            return status, reason, message
        pos = np.concatenate(self.pos)
        order = np.concatenate(self.order)
        severe = np.concatenate(self.severe)
        sort = np.lexsort((np.arange(len(pos)), order, severe, pos))
        codes, texts = self.codes, self.texts
        current, worst = -1, 1
        row_codes: list[str] = []
        row_texts: list[str] = []
        for i in [*sort.tolist(), -1]:
            p = int(pos[i]) if i >= 0 else -2
            if p != current:
                if current >= 0:
                    status[current] = ERROR if worst == 0 else WARNING
                    reason[current] = ",".join(dict.fromkeys(row_codes))
                    if worst == 0:  # a row in error is not posted: the warnings must not say so
                        row_texts = [t.replace(_STILL_POSTED, "") for t in row_texts]
                    message[current] = "; ".join(row_texts)
                if i < 0:
                    break
                current, row_codes, row_texts, worst = p, [], [], 1
            row_codes.append(codes[i])
            row_texts.append(texts[i])
            worst = min(worst, int(severe[i]))
        return status, reason, message


# ---------------------------------------------------------------------------------------------
# The checker


class Duplicates:
    """The row keys seen so far in one file and kind, over all its sheets: each key's hash,
    with the row and sheet that had it first.

    Kept as a few runs sorted by hash (for a vectorised lookup), each at least twice as long
    as the next: a chunk's new keys are a run of their own, merged with the run before while
    that one is not longer, so that a key is copied a few times over a file, not once per
    chunk (inserting into one sorted array cost 0.4 s per million rows).
    """

    def __init__(self) -> None:
        # (hashes sorted, first row, first sheet as a position in sheet_names)
        self.runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.sheet_names: list[str | None] = []

    def sheet_number(self, sheet: str | None) -> int:
        if sheet not in self.sheet_names:
            self.sheet_names.append(sheet)
        return self.sheet_names.index(sheet)

    def first(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Which of ``hashes`` (distinct) were seen, and their first row and sheet there."""
        seen = np.zeros(len(hashes), dtype=bool)
        rows = np.zeros(len(hashes), dtype=np.int64)
        sheets = np.zeros(len(hashes), dtype=np.int64)
        for known, known_rows, known_sheets in self.runs:
            at = np.minimum(np.searchsorted(known, hashes), len(known) - 1)
            hit = known[at] == hashes
            rows[hit], sheets[hit] = known_rows[at[hit]], known_sheets[at[hit]]
            seen |= hit
        return seen, rows, sheets

    def add(self, hashes: np.ndarray, rows: np.ndarray, sheets: np.ndarray) -> None:
        """Keep keys not seen before (``hashes`` distinct and sorted)."""
        if not len(hashes):
            return
        self.runs.append((hashes, rows, sheets))
        while len(self.runs) > 1 and len(self.runs[-2][0]) <= len(self.runs[-1][0]):
            newer, older = self.runs.pop(), self.runs.pop()
            # Where each newer key goes among the older ones (no key is in both).
            at = np.searchsorted(older[0], newer[0]) + np.arange(len(newer[0]))
            rest = np.ones(len(older[0]) + len(newer[0]), dtype=bool)
            rest[at] = False
            merged = []
            for o, n in zip(older, newer, strict=True):
                out = np.empty(len(rest), dtype=np.int64)
                out[at], out[rest] = n, o
                merged.append(out)
            self.runs.append((merged[0], merged[1], merged[2]))


class Checker:
    """Validates the chunks of one table, keeping what it needs to find duplicate rows.

    Args:
        table: the table being read (kind, headers, file name, sheet).
        config: ``default_creditor`` and ``send_account`` are read from it.
        now: the run's time; bank transaction dates after it are errors.
        duplicates: shared by the tables of one file and kind (a workbook's sheets), so that
            a row repeated on another sheet is found too; a fresh one when None.
    """

    def __init__(self, table: Table, config: Config, now: datetime,
                 duplicates: Duplicates | None = None) -> None:
        self.table = table
        self.kind: Kind = table.kind
        self.config = config
        self.now = normalise.utc_naive(now)
        self.header: dict[str, str] = {}
        for header, field in table.fields.items():
            self.header.setdefault(field, header)
        # The older API generation that send_account is for required the account on payments
        # and creditings: a row without one would only be refused by it, so it is an error here.
        self.account = bool(config.send_account and self.kind.amount)
        self.errors_schema, self.warnings_schema = _schemas(self.kind.name, self.now,
                                                            self.account)
        self._dups = duplicates if duplicates is not None else Duplicates()
        self._note_read_only()

    def _note_read_only(self) -> None:
        for field in ("account", "file_import_report"):
            if field not in self.header:
                continue
            where = f"column '{self.header[field]}'" + (
                f" (sheet {self.table.sheet})" if self.table.sheet else "")
            if field == "account" and self.account:
                note = f"{where} is checked and sent as account (send_account is set)"
            else:
                note = (f"{where} is read-only in Amili's API (Amili sets it): kept in the "
                        "report, never sent")
            if note not in self.table.file.notes:
                self.table.file.notes.append(note)

    def _name(self, field: str) -> str:
        return self.header.get(field, field)

    def check(self, chunk: pd.DataFrame) -> pd.DataFrame:
        """Validate one chunk of raw cells.

        Args:
            chunk: one column per original header plus ``_row`` (see read.py).

        Returns:
            The report frame for these rows: :data:`FRAME_COLUMNS` then ``input:<header>``.
        """
        chunk = chunk.reset_index(drop=True)
        n = len(chunk)
        rows = chunk[ROW].to_numpy(dtype=np.int64)
        issues = _Issues()
        values: dict[str, pd.Series] = {}
        typed: dict[str, pd.Series] = {}
        unreadable: dict[str, np.ndarray] = {}
        fields = (*self.kind.fields, *(["account"] if self.account else []))
        for field in fields:
            parsed = self._parse(field, chunk, n, issues)
            values[field] = parsed.values
            unreadable[field] = np.zeros(n, dtype=bool)
            unreadable[field][parsed.errors.index.to_numpy(dtype=np.int64)] = True
            if parsed.typed is not None:
                typed[field] = parsed.typed

        if HIDDEN in chunk:
            # What the user does not see on screen is not posted on their behalf: a filter
            # shows 400 kr where every row would send 600.
            hidden = np.flatnonzero(chunk[HIDDEN].to_numpy(dtype=bool))
            issues.add(hidden, -1, ERROR, ["hidden_row"] * len(hidden), [
                f"row {rows[p]} is hidden (or filtered out) in the workbook; hidden rows are "
                "never posted: unhide it to post it, or delete it" for p in hidden])
        if MERGED in chunk:
            # G2:G3 merged shows G2's value on row 3 too; row 3's own cell is empty.
            ranges = chunk[MERGED].to_numpy(dtype=object)
            merged = np.flatnonzero(pd.notna(ranges))
            issues.add(merged, -1, ERROR, ["merged_cell"] * len(merged), [
                f"row {rows[p]} lies in the merged cells {ranges[p]}: the value shown there "
                "belongs to their first cell only, so this row's cell is empty; unmerge the "
                "cells and fill in every row" for p in merged])
        frame = self._checked_frame(values, typed, unreadable, n)
        self._report(_failures(self.errors_schema, frame), chunk, unreadable, issues)
        self._report(_failures(self.warnings_schema, frame), chunk, unreadable, issues)
        self._duplicates(values, rows, issues)
        status, reason, message = issues.per_row(n)
        return self._frame(chunk, rows, values, status, reason, message)

    # -- step 1: normalise ---------------------------------------------------------------------

    def _parse(self, field: str, chunk: pd.DataFrame, n: int,
               issues: _Issues) -> normalise.Parsed:
        header = self.header.get(field)
        if header is None:
            return self._absent(field, n)
        raw = chunk[header]
        if field in _ID_CODES:
            parsed = normalise.hex_ids(raw, _ID_CODES[field])
        elif field in _TEXT_FIELDS:
            parsed = normalise.texts(raw)
        elif field == "currency":
            parsed = normalise.words(raw, "invalid_currency", upper=True)
        elif field == "origin":
            parsed = normalise.words(raw, "invalid_origin", default=CREDITOR_ORIGIN)
        elif field == "amount":
            parsed = normalise.amounts(raw)
        else:
            parsed = normalise.dates(raw)
        self._add_problems(field, raw, parsed.errors, issues)
        return parsed

    def _absent(self, field: str, n: int) -> normalise.Parsed:
        value: str | None = None
        if field == "creditor" and self.config.default_creditor:
            value = self.config.default_creditor.lower()
        elif field == "origin":
            value = CREDITOR_ORIGIN
        empty = pd.Series([], dtype=object)
        parsed = normalise.Parsed(pd.Series(np.full(n, value, dtype=object), dtype=object), empty)
        if field == "amount":
            parsed.typed = pd.Series(np.full(n, np.nan))
        elif field in self.kind.dates:
            parsed.typed = pd.Series(np.full(n, np.datetime64("NaT"), dtype="datetime64[us]"))
        return parsed

    def _add_problems(self, field: str, raw: pd.Series, errors: pd.Series,
                      issues: _Issues) -> None:
        if not len(errors):
            return
        header = self._name(field)
        positions = errors.index.to_numpy(dtype=np.int64)
        cells = raw.iloc[positions].to_numpy(dtype=object)
        problems = errors.tolist()
        issues.add(positions, _ORDER[field], ERROR, [p.code for p in problems],
                   [_safe(f"{header}: '{shown(c)}' {p.text}") for c, p in zip(cells, problems,
                                                                              strict=True)])

    # -- step 2: pandera -----------------------------------------------------------------------

    def _checked_frame(self, values: dict[str, pd.Series], typed: dict[str, pd.Series],
                       unreadable: dict[str, np.ndarray], n: int) -> pd.DataFrame:
        columns: dict[str, Any] = {f: typed.get(f, values[f]) for f in values}

        def given(field: str) -> np.ndarray:
            if field not in values:
                return np.zeros(n, dtype=np.int8)
            return (values[field].notna().to_numpy() | unreadable[field]).astype(np.int8)

        columns["_case_or_invoice"] = given("case") + given("invoice_number")
        if "bank_transaction_date" in typed and "client_registration_date" in typed:
            day = np.timedelta64(1, "D")
            bank = typed["bank_transaction_date"].to_numpy().astype("datetime64[D]")
            registered = typed["client_registration_date"].to_numpy().astype("datetime64[D]")
            columns["_registration_lag"] = (registered - bank) / day
        return pd.DataFrame(columns, copy=False)

    def _report(self, failures: Failures, chunk: pd.DataFrame,
                unreadable: dict[str, np.ndarray], issues: _Issues) -> None:
        for column, check, failed in failures:
            positions = failed
            if column in unreadable:  # the cell's own problem is already reported
                positions = positions[~unreadable[column][positions]]
            if not len(positions):
                continue
            self._report_check(column, check, positions, chunk, issues)

    def _report_check(self, column: str, check: str, positions: np.ndarray,
                      chunk: pd.DataFrame, issues: _Issues) -> None:
        if column == "_case_or_invoice":
            rule = _RULES[check]
            parts = [(self.header[f], chunk[self.header[f]].iloc[positions].to_numpy(dtype=object))
                     for f in ("case", "invoice_number") if f in self.header]
            texts = [_safe(", ".join(f"{h}: '{shown(cells[i])}'" for h, cells in parts)
                           + f": {rule.text}") for i in range(len(positions))]
            issues.add(positions, len(_ORDER), rule.severity, [rule.code] * len(positions),
                       texts)
            return
        if column == "_registration_lag":
            column = "client_registration_date"
        field_header = self.header.get(column)
        cells = (chunk[field_header].iloc[positions].to_numpy(dtype=object) if field_header
                 else np.full(len(positions), None, dtype=object))
        if check == "not_nullable":
            todo = _MISSING_TODO.get(column, "fill it in")
            rule = Rule("missing_value", ERROR, f"is empty; {todo}")
            if field_header is None:
                rule = Rule("missing_value", ERROR, f"is missing: the file has no {column} "
                            "column" + ("; add one or configure a default creditor"
                                        if column == "creditor" else "; add one"))
        else:
            rule = _RULES.get(check) or Rule(check, ERROR, "failed the check "
                                             f"{check}; correct the value")
            if check == "amount_positive" and self.kind.name != "payments":
                rule = Rule(rule.code, ERROR, "is not greater than zero; write a positive "
                            "amount")
        header = self._name(column)
        issues.add(positions, _ORDER.get(column, len(_ORDER)), rule.severity,
                   [rule.code] * len(positions),
                   [_safe(f"{header}: '{shown(c)}' {rule.text}") for c in cells])

    # -- step 3: duplicates --------------------------------------------------------------------

    def _duplicates(self, values: dict[str, pd.Series], rows: np.ndarray,
                    issues: _Issues) -> None:
        ok = np.flatnonzero(~issues.errors(len(rows)))
        if not len(ok):
            return
        # currency and origin are the same on every valid row, so they are left out.
        every = len(ok) == len(rows)
        key = [normalise.objects(values[f]) for f in self.kind.fields
               if f not in ("currency", "origin")]
        if not every:
            key = [k[ok] for k in key]
        # Python's 64-bit tuple hash (process-local, like this state): a false match among
        # a million rows has a chance of about 1 in 10^7.
        hashes = np.fromiter(map(hash, zip(*key, strict=True)), dtype=np.int64, count=len(ok))
        unique, first_index, inverse = np.unique(hashes, return_index=True, return_inverse=True)
        ok_rows = rows if every else rows[ok]
        seen = self._dups
        here = seen.sheet_number(self.table.sheet)
        earlier, earlier_row, earlier_sheet = seen.first(unique)
        first_row = np.where(earlier, earlier_row, ok_rows[first_index])
        first_sheet = np.where(earlier, earlier_sheet, here)
        new = ~earlier
        seen.add(unique[new], first_row[new], first_sheet[new])
        first_of = first_row[inverse.reshape(-1)]
        sheet_of = first_sheet[inverse.reshape(-1)]
        dup = np.flatnonzero((first_of != ok_rows) | (sheet_of != here))
        if not len(dup):
            return
        names = seen.sheet_names
        why = _DUPLICATE_WHY[self.kind.name]
        reference = self.kind.reference
        if reference is not None and reference not in self.header:
            # "Payment Reference" is no creditor_payment_reference: say so, or the message
            # claims equal references the user sees differ.
            why += (f" (this file has no {reference} column, so no reference tells rows "
                    "apart; a column of references under another name is not read as one: "
                    f"rename it {reference})")
        texts = [f"same as row {int(r)}"
                 + ("" if names[int(k)] is None else f" of sheet {names[int(k)]}")
                 + why for r, k in zip(first_of[dup], sheet_of[dup], strict=True)]
        issues.add(ok[dup], len(_ORDER) + 1, ERROR, ["duplicate_row"] * len(dup), texts)

    # -- the report frame ------------------------------------------------------------------------

    def _frame(self, chunk: pd.DataFrame, rows: np.ndarray, values: dict[str, pd.Series],
               status: np.ndarray, reason: np.ndarray, message: np.ndarray) -> pd.DataFrame:
        n = len(rows)
        none = _filled(n, None)
        out: dict[str, Any] = {
            "file": _filled(n, self.table.file.name),
            "sheet": _filled(n, self.table.sheet),
            "row": none,  # replaced below: the frame is built as object columns at once
            "kind": _filled(n, self.kind.name),
            "status": status,
            "reason": reason,
            "message": message,
        }
        # Columns of Arrow text (a CSV's cells, and the values made from them) and the input
        # cells are kept as the Series they are: the report writes Arrow text as it is.
        # Missing values in Arrow text are NaN (read by plan._plain).
        kept: dict[str, pd.Series] = {}
        for field in API_COLUMNS:
            if field not in values:
                out[field] = none
            elif values[field].dtype == normalise.TEXT:
                kept[field] = values[field]
            else:
                out[field] = values[field].to_numpy(dtype=object)
        for field in RESULT_COLUMNS:
            out[field] = none
        frame = pd.DataFrame(out, dtype=object, copy=False)
        frame["row"] = rows
        for header in self.table.columns:
            kept[INPUT_PREFIX + header] = normalise.as_text(chunk[header])
        order = [*FRAME_COLUMNS, *(INPUT_PREFIX + h for h in self.table.columns)]
        return pd.concat([frame, pd.DataFrame(kept, copy=False)], axis=1)[order]


# ---------------------------------------------------------------------------------------------
# The JSON body and the row's identity


def _account(row: Mapping[str, Any]) -> str | None:
    value = row.get("account")
    if not value:
        for key, cell in row.items():
            if (isinstance(key, str) and key.startswith(INPUT_PREFIX)
                    and canonical_header(key[len(INPUT_PREFIX):]) == "account"):
                value = cell
                break
    return str(value).strip().lower() if value else None


def payload(kind: Kind, row: Mapping[str, Any], *, send_account: bool = False) -> dict[str, Any]:
    """The JSON body for one report-frame row.

    Args:
        kind: the row's kind.
        row: one row of the report frame (a dict or a pandas row).
        send_account: also send the file's ``account`` column (``config.send_account``; the
            older API generation required it). Never sent otherwise.

    Returns:
        Only the kind's fields, empty values dropped, ``amount`` as a JSON number (exact:
        the value has at most two decimals). Never ``file_import_report``.
    """
    body: dict[str, Any] = {}
    for field in kind.fields:
        value = row.get(field)
        if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
            continue
        body[field] = float(Decimal(str(value))) if field == "amount" else str(value)
    if send_account and kind.amount:
        account = _account(row)
        if account:
            body["account"] = account
    return body


def fingerprint(kind: Kind, row: Mapping[str, Any]) -> str:
    """The row's identity: sha256 hex of a canonical JSON of the kind and its body.

    Two rows with the same fingerprint are the same event (same kind, creditor, case or
    invoice number, amount, dates, reference…), in whichever file or run they appear.

    Args:
        kind: the row's kind.
        row: one row of the report frame.

    Returns:
        64 lowercase hex digits.
    """
    body = payload(kind, row)
    if "amount" in body:  # the decimal text, so that 100 and 100.0 cannot differ
        body["amount"] = f"{Decimal(str(row.get('amount'))):.2f}"
    text = json.dumps({"kind": kind.name, **body}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
