"""Read CSV and Excel files into FileInfo + Tables of raw cells with the user's row numbers.

Nothing here interprets a value (that is normalise.py's job): cells arrive as read, trimmed,
with the row number the user sees in the spreadsheet. Problems that make a whole file unusable
(encoding, kind, header, missing columns) are found in ``open_file`` before any chunk is read.
The CSV half lives in ``read_csv.py``, the workbook half in ``read_xlsx.py``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from importer.errors import FileRejected
from importer.kinds import (
    ALL_FIELDS,
    NAMING_HINT,
    READ_ONLY_FIELDS,
    Kind,
    kind_from_label,
    kinds_named,
)

if TYPE_CHECKING:
    import pandas as pd

CSV_SUFFIXES = (".csv", ".txt", ".tsv")
XLSX_SUFFIXES = (".xlsx", ".xlsm")
HASH_BLOCK = 1 << 20
# The header is looked for among this many non-empty rows at the top of a file or sheet.
HEADER_SEARCH_ROWS = 20
RECOGNISED: frozenset[str] = frozenset(ALL_FIELDS) | frozenset(READ_ONLY_FIELDS)
ROW = "_row"
HIDDEN = "_hidden"  # a workbook row hidden (or filtered out): only in chunks that have one
# The merged cells (``G2:G3``) a workbook row lies in below their first row, over a column
# that is read: only in chunks that have one.
MERGED = "_merged"


class _FormulaWithoutValue(str):
    """A formula cell saved without a cached value (e.g. written by a script, never opened
    in Excel): its value is unknown, so validation must flag the cell instead of reading ""."""

    _instance: _FormulaWithoutValue | None = None

    def __new__(cls) -> _FormulaWithoutValue:
        if cls._instance is None:
            cls._instance = super().__new__(cls, "")
        return cls._instance

    def __repr__(self) -> str:
        return "FORMULA_WITHOUT_VALUE"

    def __reduce__(self) -> tuple[Any, ...]:  # stays the one instance across pickling
        return (_FormulaWithoutValue, ())


# Test with ``value is FORMULA_WITHOUT_VALUE`` (or isinstance(value, _FormulaWithoutValue)).
FORMULA_WITHOUT_VALUE = _FormulaWithoutValue()


@dataclass
class FileInfo:
    """One input file as a whole: identity, what was found in it, and why it was rejected."""

    path: Path
    name: str
    sha256: str
    size: int
    kinds: list[str] = field(default_factory=list)
    rows: int = 0
    rejected: str | None = None
    notes: list[str] = field(default_factory=list)
    delimiter: str | None = None  # a CSV's (detected or given); None for a workbook


@dataclass
class Table:
    """One CSV file or one worksheet: its kind, header and a way to stream its rows.

    ``chunks()`` yields DataFrames with one column per entry of ``columns`` (raw cells) plus
    the int column ``_row``; it may be called again to re-read from the start.
    """

    file: FileInfo
    sheet: str | None
    kind: Kind
    header_row: int
    columns: list[str]
    fields: dict[str, str]
    chunks: Callable[[], Iterator[pd.DataFrame]]


@dataclass(frozen=True)
class ReadOptions:
    """How to read input files; None means detect."""

    kind: Kind | None = None
    encoding: str | None = None
    delimiter: str | None = None
    default_creditor: bool = False
    chunk_rows: int = 30_000  # rows per chunk: bounds the peak memory of any file size


def canonical_header(text: str) -> str:
    """The comparable form of a header: ``"Invoice Number "`` and ``"InvoiceNumber"`` →
    ``"invoice_number"``.

    Args:
        text: a header cell as written.

    Returns:
        lower case, trimmed, with runs of spaces, hyphens, dots and underscores as one ``_``,
        and camelCase words split (``bankTransactionDate``, as API-minded exports write them).
    """
    text = _CAMEL_HUMP.sub("_", text.replace("\ufeff", "").strip()).lower()
    return re.sub(r"[\s\-._]+", "_", text).strip("_")


_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def open_file(path: Path, options: ReadOptions) -> tuple[FileInfo, list[Table]]:
    """Open one input file: identify it, find its kind(s) and header(s), check the columns.

    Args:
        path: the file, as the user gave it.
        options: overrides for kind, encoding and delimiter; chunk size.

    Returns:
        the file's FileInfo and one Table per CSV file or per worksheet holding data.

    Raises:
        FileRejected: not CSV/XLSX, cannot be decoded (with the byte position), kind cannot
            be told, no header, a duplicate or missing required column.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".xls":
        raise FileRejected(path.name, "legacy Excel 97-2003 (.xls) files are not read; "
                                      "open it in Excel and save it as .xlsx (or CSV UTF-8)")
    if suffix not in CSV_SUFFIXES + XLSX_SUFFIXES:
        raise FileRejected(path.name, f"unsupported file type {suffix or '(no extension)'!r}: "
                                      "use .csv (or .txt/.tsv) or .xlsx/.xlsm")
    if not path.is_file():
        raise FileRejected(path.name, "no such file")
    if suffix in CSV_SUFFIXES:
        from importer.read_csv import open_csv

        return open_csv(path, options)
    from importer.read_xlsx import open_xlsx

    return open_xlsx(path, options)


# --- shared by read_csv and read_xlsx ------------------------------------------------------


def file_info(path: Path, digest: str, size: int) -> FileInfo:
    """A FileInfo for ``path`` with its hash and size."""
    return FileInfo(path=path, name=path.name, sha256=digest, size=size)


def hash_file(path: Path) -> tuple[str, int]:
    """sha256 hex digest and size of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def kind_for(name: str, label: str, options: ReadOptions, fallback: str | None = None) -> Kind:
    """The kind of a CSV (label = file name) or sheet (label = sheet name, fallback = file name).

    Raises:
        FileRejected: the kind cannot be told from the name(s).
    """
    if options.kind is not None:
        return options.kind
    kind = kind_from_label(label)
    named = sorted(kinds_named(label))
    if kind is None and fallback is not None and len(named) > 1:
        # "Cancelled creditings": the sheet says something of its rows that the file name
        # (creditings-2026-11.xlsx) must not overrule.
        raise FileRejected(name, f"worksheet {label!r} names more than one kind "
                                 f"({', '.join(named)}): rename it after the one kind of its "
                                 "rows ('Payments', 'Creditings', 'Cancellations'), or move "
                                 "rows that must not be posted out of the workbook")
    if kind is None and fallback is not None:
        kind = kind_from_label(fallback)
    if kind is None and fallback is not None:
        raise FileRejected(name, f"cannot tell the kind from worksheet {label!r}: rename each "
                                 "data sheet after its kind ('Payments', 'Creditings', "
                                 "'Cancellations'), or name the file after it; --kind reads "
                                 "every sheet of the workbook as that one kind")
    if kind is None:
        raise FileRejected(name, f"cannot tell the kind from the file name: {NAMING_HINT}")
    return kind


def cell_text(value: Any) -> str:
    """A header cell as trimmed text (workbook headers may be numbers or dates)."""
    if value is None:
        return ""
    return str(value).replace("\ufeff", "").strip()


# Columns of money events: in a file read as cancellations they mark rows of another kind.
_MONEY_MARKS = ("amount", "credit_invoice", "creditor_reference")


def find_header(rows: Iterable[tuple[int, Sequence[Any]]]) -> tuple[int, list[str]] | None:
    """Find the header among the first non-empty rows (title rows above it are skipped).

    The header is the first row with at least two recognised column names; failing that, the
    first with one (a one-column file); failing that, the first non-empty row, so that the
    missing-column message can show what the file has.

    Args:
        rows: (row number as the user sees it, cells) from the top of the file or sheet.

    Returns:
        (row number, header texts) or None when there is no non-empty row at all.
    """
    first: tuple[int, list[str]] | None = None
    one: tuple[int, list[str]] | None = None
    seen = 0
    for number, cells in rows:
        texts = [cell_text(c) for c in cells]
        if not any(texts):
            continue
        seen += 1
        found = sum(canonical_header(t) in RECOGNISED for t in texts)
        if found >= 2:
            return number, texts
        if found == 1 and one is None:
            one = (number, texts)
        if first is None:
            first = (number, texts)
        if seen >= HEADER_SEARCH_ROWS:
            break
    return one or first


def header_score(rows: Iterable[tuple[int, Sequence[Any]]]) -> int:
    """How many recognised column names the header found in ``rows`` has (0: none)."""
    header = find_header(rows)
    return 0 if header is None else sum(canonical_header(t) in RECOGNISED for t in header[1])


def build_columns(name: str, where: str, header: list[str], keep: Callable[[int], bool],
                  label: Callable[[int], str], kind: Kind, options: ReadOptions,
                  header_row: int, notes: list[str]) -> tuple[list[int], list[str], dict[str, str]]:
    """Turn a header row into the table's columns and check them against the kind.

    Args:
        name: the file name (for errors).
        where: ``""`` for CSV, ``"sheet 'X': "`` for a worksheet (prefix of messages).
        header: the header texts by position ("" where the cell is empty), padded to the
            width of the data.
        keep: whether a position without a header holds values somewhere (it is then kept).
        label: how the user names a position (``"E"`` in a workbook, ``"5"`` in a CSV).
        kind, options: what the table must contain.
        header_row: the header's row number (for messages).
        notes: FileInfo.notes, extended with what was found.

    Returns:
        (positions read, column names, original header -> API field).

    Raises:
        FileRejected: no column name is recognised (no header found), a recognised column
            appears twice, or a required one is missing.
    """
    if not any(canonical_header(t) in RECOGNISED for t in header):
        found = ", ".join(repr(t) for t in header if t)
        raise FileRejected(name, f"{where}no header row found: none of the first "
                                 f"{HEADER_SEARCH_ROWS} non-empty rows names a column of "
                                 f"{kind.name} ({', '.join(kind.fields)}); the first of them, "
                                 f"row {header_row}, has {found}. Put the column names in one "
                                 f"row above the data, within the first {HEADER_SEARCH_ROWS} "
                                 "rows")
    positions: list[int] = []
    columns: list[str] = []
    fields: dict[str, str] = {}
    by_field: dict[str, str] = {}
    unknown: list[str] = []
    unnamed: list[str] = []
    used: set[str] = {ROW}
    for index in range(len(header)):
        text = header[index]
        if not text:
            if not keep(index):
                continue
            column = f"column_{label(index)}"
            unnamed.append(column)
        else:
            column = text
            canon = canonical_header(text)
            if canon in RECOGNISED:
                if canon in by_field:
                    raise FileRejected(name, f"{where}columns {by_field[canon]!r} and {text!r} "
                                             f"(header row {header_row}) are both {canon!r}; "
                                             "keep one of them")
                by_field[canon] = text
                fields[text] = canon
            else:
                unknown.append(text)
        if column in used:  # two unknown columns with the same header text
            column = f"{column} (column {label(index)})"
        used.add(column)
        positions.append(index)
        columns.append(column)
    if "bank_transaction_date" in by_field and "bank_transaction_date" not in kind.fields:
        # The mark of a payment: posted as a crediting or cancellation, the money would be
        # booked the wrong way.
        raise FileRejected(name, f"{where}column {by_field['bank_transaction_date']!r} is a "
                                 f"payments column, but the rows are read as {kind.name}; if "
                                 "these are payments, pass --kind payments or name the file "
                                 "(or sheet) after its kind")
    money = [by_field[f] for f in _MONEY_MARKS if f in by_field and not kind.amount]
    if money:
        # The marks of a crediting (or payment) read as cancellations: each row would cancel
        # its whole case.
        raise FileRejected(name, f"{where}column(s) {', '.join(repr(m) for m in money)} belong "
                                 f"to credit notes or payments, but the rows are read as "
                                 f"{kind.name}: each would cancel its whole case. If these are "
                                 "credit notes, pass --kind creditings or name the file (or "
                                 "sheet) after its kind; if they really are cancellations, "
                                 "delete the column(s)")
    foreign = [text for text, canon in fields.items()
               if canon not in kind.fields and canon not in READ_ONLY_FIELDS]
    if foreign:
        notes.append(f"{where}column(s) of other kinds, not of {kind.name}: kept in the report, "
                     "never sent: " + ", ".join(repr(t) for t in foreign))
    missing = [f for f in kind.required if f not in by_field
               and not (f == "creditor" and options.default_creditor)]
    if "case" not in by_field and "invoice_number" not in by_field:
        missing.append("case or invoice_number")
    if missing:
        found = ", ".join(repr(t) for t in header if t) or "nothing"
        raise FileRejected(name, f"{where}missing required column(s) for {kind.name}: "
                                 f"{', '.join(missing)} (header row {header_row} has {found})")
    if unknown:
        notes.append(f"{where}unknown column(s) kept in the report, never sent: "
                     + ", ".join(repr(t) for t in unknown))
    if unnamed:
        notes.append(f"{where}column(s) without a header but with values kept as "
                     + ", ".join(unnamed) + " (never sent)")
    return positions, columns, fields
