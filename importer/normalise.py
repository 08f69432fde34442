"""Raw cells → normalised API values: amounts, dates, ids, texts, fixed words.

Every function here takes one raw column (a pandas Series of cells as read: ``str`` for CSV,
``str``/``int``/``float``/``bool``/``datetime``/``date``/``None`` for XLSX) and returns a
:class:`Parsed`: the normalised values (``str`` or ``None``, aligned with the input) and the
cells that could not be read, each as a :class:`Problem` (reason code + "what is wrong; what to
do"). validate.py adds the column header and the value as read to make the user's message, and
runs the remaining rules (required, ranges, either-or) as pandera checks on the values.

Speed matters (a 1M-row file should validate in a few seconds), so the common case is handled
on whole columns: a column whose cells are all in the canonical form is checked with one regular
expression over the joined column and never touched cell by cell. Anything else is parsed once
per *distinct* value (``pandas.factorize``) and mapped back: a file has few distinct dates,
currencies and creditors, and only the odd cell falls off the fast path.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import cached_property
from typing import Any, NamedTuple, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from importer.number_formats import NUMBER_TRAITS, SHOWN, TEXT_TRAITS

MAX_CELL = 1000  # longer cells are pasted text, not values: an error on any API column
# The longest text field we send: 140 is the longest free-text reference a bank payment can
# carry (ISO 20022 unstructured remittance information); the API documents no limit.
MAX_TEXT = 140
MAX_AMOUNT = Decimal("1000000000000")  # 1e12 SEK: anything at or above is a typing mistake
RFC1123 = "%a, %d %b %Y %H:%M:%S GMT"  # for documentation; formatting uses the tables below

# Excel's error values, as a cell (or a CSV exported from one) shows them.
EXCEL_ERRORS = frozenset({
    "#N/A", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#NULL!", "#SPILL!", "#CALC!",
    "#GETTING_DATA", "#FIELD!", "#BLOCKED!", "#CONNECT!", "#BUSY!", "#UNKNOWN!", "#EXTERNAL!",
    "#PYTHON!",
})
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {m: f"{i:02d}" for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_SPACES = " \u00a0\u202f\u2009"  # space, no-break space, narrow no-break space, thin space


class Problem(NamedTuple):
    """Why one cell cannot be used: a reason code and ``what is wrong; what to do``."""

    code: str
    text: str


@dataclass
class Parsed:
    """The result of normalising one column.

    Attributes:
        values: normalised API values (``str``) or None (empty or unreadable), same index
            as the input: an object Series, or for a CSV's column read by the fast paths,
            pandas' Arrow-backed ``str`` Series (NaN, not None, where empty or unreadable:
            read it with :func:`objects`).
        errors: only the cells that could not be read: index = their index labels,
            values = :class:`Problem`. Empty when every cell was fine.
        typed: for amounts a float64 Series, for dates a ``datetime64[us]`` Series in UTC
            (NaN/NaT where ``values`` is None), so range rules are plain comparisons.
    """

    values: pd.Series
    errors: pd.Series
    typed: pd.Series | None = None


# ---------------------------------------------------------------------------------------------
# Helpers shared by the column functions


def _objects(raw: pd.Series) -> np.ndarray:
    """The cells as an object array (a view where pandas allows it)."""
    return raw.to_numpy(dtype=object)


TEXT = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' own "str", backed by Arrow


def objects(values: pd.Series) -> np.ndarray:
    """:attr:`Parsed.values` as Python objects: None where missing, whichever kind of Series."""
    if _is_arrow_text(values):  # Arrow's own conversion: twice as fast as pandas' here
        return _arrow_array(values).to_numpy(zero_copy_only=False)
    return values.to_numpy(dtype=object, na_value=None)  # type: ignore[call-overload]


def _is_arrow_text(series: pd.Series) -> bool:
    return isinstance(series.dtype, pd.StringDtype) and series.dtype.storage == "pyarrow"


def _arrow_array(series: pd.Series) -> pa.Array:
    found = pa.array(series.array)
    if isinstance(found, pa.ChunkedArray):
        found = found.chunk(0) if found.num_chunks == 1 else found.combine_chunks()
    return found


def arrow_text(series: pd.Series) -> pa.Array | None:
    """A column of Arrow-backed text without missing values (a CSV's cells) as one Arrow
    array, or None for any other column."""
    if not _is_arrow_text(series):
        return None
    found = _arrow_array(series)
    return None if found.null_count else found


def _text_values(text: pa.Array, missing: np.ndarray, index: pd.Index) -> pd.Series:
    """Arrow text as a values Series: NaN where ``missing``."""
    if missing.any():
        text = pc.if_else(pa.array(missing), pa.scalar(None, text.type), text)
    return pd.Series(text, index=index, dtype=TEXT)


class TextBytes:
    """The UTF-8 bytes of an Arrow text column, and each value's length in bytes: one numpy
    pass over them answers "does any value hold X?", so that the usual column skips the
    per-value kernels."""

    def __init__(self, text: pa.Array) -> None:
        n = len(text)
        wide = pa.types.is_large_string(text.type) or pa.types.is_large_binary(text.type)
        offsets = np.frombuffer(text.buffers()[1], dtype=np.int64 if wide else np.int32)[
            text.offset:text.offset + n + 1] if n else np.zeros(1, dtype=np.int32)
        data = text.buffers()[2] if n else None
        self.lengths = np.diff(offsets)
        self.u8 = (np.frombuffer(data, dtype=np.uint8)[int(offsets[0]):int(offsets[-1])]
                   if data is not None else np.empty(0, dtype=np.uint8))

    def has(self, *characters: str) -> bool:
        """Whether any value holds one of these ASCII characters."""
        return any(bool((self.u8 == ord(c)).any()) for c in characters)

    def ascii(self) -> bool:
        return not len(self.u8) or int(self.u8.max()) < 0x80


def _mask(found: pa.Array) -> np.ndarray:
    return found.to_numpy(zero_copy_only=False)


class _Cells:
    """One column, looked at once: which cells are text and which are empty.

    A CSV's column comes as Arrow text (``text``): every cell a plain str, and the fast paths
    use Arrow's kernels on it. The cells as Python objects (``arr``) are made only when a
    path needs them.
    """

    def __init__(self, raw: pd.Series) -> None:
        self._raw = raw
        self.text = arrow_text(raw)
        if self.text is not None:
            self.scan = TextBytes(self.text)
            self.plain = True  # every cell is a plain str (CSV): the fast paths apply
            self.empty = self.scan.lengths == 0  # None, NaN or ""
            # plain str cells (not the formula sentinel, a str subclass)
            self.is_str = np.ones(len(raw), dtype=bool)
            return
        arr = self.arr
        if pd.api.types.infer_dtype(arr, skipna=False) == "string":
            empty = arr == ""
            # The formula sentinel equals "": only the empty-looking cells can hide it.
            if not empty.any() or set(map(type, arr[empty])) == {str}:
                self.plain, self.is_str, self.empty = True, np.ones(len(arr), dtype=bool), empty
                return
        # Exact type: the formula sentinel is a str subclass and must not pass as text.
        types = np.fromiter(map(type, arr), dtype=object, count=len(arr))
        self.is_str = types == str  # noqa: E721
        self.empty = pd.isna(arr) | (self.is_str & (arr == ""))
        self.plain = False

    @cached_property
    def arr(self) -> np.ndarray:
        return _objects(self._raw)

    @property
    def others(self) -> np.ndarray:
        """Positions of cells that are neither text nor empty (numbers, dates, sentinels)."""
        return np.flatnonzero(~self.is_str & ~self.empty)


def _cells(raw: pd.Series) -> _Cells:
    return _Cells(raw)


def _shown_problem(value: Any, traits: frozenset[str]) -> Problem | None:
    """The problem of a cell whose number format shows it otherwise than it holds, where
    ``traits`` (see importer/number_formats.py) matter, or None."""
    if not isinstance(value, SHOWN):
        return None
    found: frozenset[str] = value.traits & traits
    if not found:
        return None
    how = {"percent": "as a percentage", "scaled": "divided by a thousand or more",
           "hidden": "not at all (the cell looks empty)", "scientific": "in scientific notation",
           "rounded": "with fewer decimals", "padded": "with leading zeros",
           "literal": "with text or characters around its digits",
           "no_day": "without its day"}
    shown = " and ".join(how[t] for t in sorted(found))
    return Problem("number_format", f"is what the cell holds, but its number format "
                   f"('{value.code}') shows it {shown}: which of the two is meant cannot be "
                   "told; format the cell so that it shows what it holds (Text, typed as "
                   "shown, for an invoice number or a reference; a plain number or date "
                   "otherwise) and save again")


def _special(value: Any) -> Problem | None:
    """The problem of a cell that is not a value at all (or that shows another number than
    it holds), or None."""
    shown = _shown_problem(value, NUMBER_TRAITS)
    if shown is not None:
        return shown
    if is_formula_without_value(value):
        return Problem("formula_without_value", "is a formula without a saved result; open "
                       "the file in Excel, let it calculate, save it and try again")
    if isinstance(value, str):
        if len(value) > MAX_CELL:
            return Problem("too_long", f"is {len(value)} characters long; a cell may hold at "
                           f"most {MAX_CELL}: check that the column holds the right data")
        if value in EXCEL_ERRORS:
            return Problem("cell_error", "is an Excel error value; fix the formula or the data "
                           "it refers to, then save the file again")
        return None
    # Some readers hand Excel error cells over as error objects rather than text.
    if not isinstance(value, int | float | date | datetime) and "error" in \
            type(value).__name__.lower():
        return Problem("cell_error", "is an Excel error value; fix the formula or the data it "
                       "refers to, then save the file again")
    return None


def _no_errors(index: pd.Index) -> pd.Series:
    return pd.Series([], index=index[:0], dtype=object)


def _errors(index: pd.Index, positions: Any, problems: list[Problem]) -> pd.Series:
    positions = np.asarray(positions, dtype=np.int64)
    if not len(positions):
        return _no_errors(index)
    return pd.Series(problems, index=index[positions], dtype=object)


def _obj_series(values: Any, index: pd.Index) -> pd.Series:
    # dtype=object on purpose: pandas 3 would infer its "str" dtype and turn None into NaN.
    return pd.Series(values, index=index, dtype=object)


def _filled(n: int, value: Any) -> np.ndarray:
    out = np.empty(n, dtype=object)
    out[:] = value  # np.full with a str fill value is ~30x slower
    return out


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``pd.factorize``, except that a cell marked with its number format (it equals, and
    hashes as, its plain number or date) is a value of its own: its verdict is its own.

    Returns:
        (codes, distinct values as an object array).
    """
    marked = np.fromiter((isinstance(v, SHOWN) for v in values), dtype=bool, count=len(values))
    codes, found = pd.factorize(values[~marked] if marked.any() else values,
                                use_na_sentinel=False)
    uniques = np.empty(len(found) + int(marked.sum()), dtype=object)
    uniques[:len(found)] = list(found)
    if not marked.any():
        return codes, uniques
    every = np.empty(len(values), dtype=np.int64)
    every[~marked] = codes
    every[marked] = np.arange(len(found), len(uniques))
    uniques[len(found):] = values[marked]
    return every, uniques


def _per_unique(
    arr: np.ndarray, positions: np.ndarray, parse: Callable[[Any], tuple[Any, Problem | None]]
) -> tuple[np.ndarray, np.ndarray, list[Problem]]:
    """Parse ``arr[positions]`` once per distinct value.

    Returns:
        (parsed values aligned with ``positions``, positions that failed, their problems).
    """
    codes, uniques = _distinct(arr[positions])
    results = [parse(u) for u in uniques]
    parsed = np.empty(len(results), dtype=object)
    parsed[:] = [r[0] for r in results]
    failed_u = np.fromiter((r[1] is not None for r in results), dtype=bool, count=len(results))
    failed = failed_u[codes]
    bad_codes = codes[failed]
    return parsed[codes], positions[failed], [results[c][1] for c in bad_codes]


def number_text(value: float | int) -> str:
    """An Excel number as the text a person typed: ``103118.0`` → ``103118``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def display(value: Any) -> str:
    """A cell as text, the way the user sees it in the file (for messages and reports).

    Args:
        value: a raw cell (str, number, bool, date/datetime, None).

    Returns:
        The text; ``""`` for an empty cell.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return number_text(value)
    if isinstance(value, datetime):
        # An Excel date cell has no time zone and is read as GMT: shown so, the text (in the
        # failed-rows file, say) imports again as the same instant; midnight as the date alone.
        if value.tzinfo is None and not (value.hour or value.minute or value.second
                                         or value.microsecond):
            return value.date().isoformat()
        return value.isoformat(sep=" ") + ("Z" if value.tzinfo is None else "")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def as_text(raw: pd.Series) -> pd.Series:
    """A raw column as text for the report's ``input:`` columns (``""`` for empty cells).

    Args:
        raw: the column as read.

    Returns:
        A Series of str, same index (``raw`` itself when it is all text already).
    """
    if _is_arrow_text(raw) and not raw.hasnans:
        return raw  # a CSV's cells, as Arrow text
    arr = _objects(raw)
    if pd.api.types.infer_dtype(arr, skipna=False) == "string":
        return raw if raw.dtype == object else _obj_series(arr, raw.index)
    # The formula sentinel stays itself (it reads as ""): the failed-rows file marks it.
    return _obj_series([x if type(x) is str or is_formula_without_value(x) else display(x)
                        for x in arr], raw.index)


def is_formula_without_value(value: Any) -> bool:
    """Whether a cell is read.py's sentinel for a formula that has no cached value."""
    return isinstance(value, str) and type(value).__name__ == "_FormulaWithoutValue"


def _not_a_cell_type(value: Any, expected: str, todo: str, code: str) -> Problem:
    if isinstance(value, bool):
        return Problem(code, f"is a TRUE/FALSE cell, not {expected}; {todo}")
    if isinstance(value, datetime | date):
        return Problem(code, f"is a date cell, not {expected}; {todo}")
    if isinstance(value, time | timedelta):
        # Excel shows a date-formatted 0 (or less) as a time of day, a [h]:mm cell as a
        # duration: no calendar date in either.
        return Problem(code, f"is a time or duration cell (no calendar date in it: a date "
                             f"cell holding 0 or less, or a [h]:mm format), not {expected}; "
                             "write the real value")
    if isinstance(value, int | float):
        return Problem(code, f"is a number cell, not {expected}; {todo}")
    return Problem(code, f"is not {expected}; {todo}")


# ---------------------------------------------------------------------------------------------
# Cell-level screening, ids, texts and fixed words (their rules are pandera checks in validate.py)


def _screen(cells: _Cells) -> tuple[np.ndarray, list[Problem]]:
    """Cells that are not values at all: formulas without a cached value, Excel error values
    (``#N/A``…) and cells longer than :data:`MAX_CELL` characters."""
    if cells.text is not None:
        text, scan = cells.text, cells.scan
        suspects = np.empty(0, dtype=np.int64)
        if len(scan.lengths) and int(scan.lengths.max()) > MAX_CELL:  # bytes >= characters
            suspects = np.flatnonzero(_mask(pc.greater(pc.utf8_length(text), MAX_CELL)))
        if scan.has("#"):
            suspects = np.union1d(suspects, np.flatnonzero(_mask(pc.is_in(
                text, value_set=pa.array(sorted(EXCEL_ERRORS))))))
        found = [(p, _special(text[int(p)].as_py())) for p in suspects]
        bad = [(p, problem) for p, problem in found if problem is not None]
        return np.array([p for p, _ in bad], dtype=np.int64), [problem for _, problem in bad]
    arr = cells.arr
    if cells.plain:
        # One pass over the joined column answers "any '#' at all?" (nearly always no).
        lengths = np.fromiter(map(len, arr), dtype=np.int64, count=len(arr))
        suspects = np.flatnonzero(lengths > MAX_CELL)
        if "#" in "".join(arr):
            suspects = np.union1d(suspects, np.flatnonzero(
                pd.Series(arr, dtype=object).isin(EXCEL_ERRORS).to_numpy()))
    else:
        suspects = np.flatnonzero(~cells.empty)
    found = [(p, _special(arr[p])) for p in suspects]
    bad = [(p, problem) for p, problem in found if problem is not None]
    return np.array([p for p, _ in bad], dtype=np.int64), [problem for _, problem in bad]


def screen(raw: pd.Series) -> pd.Series:
    """The cells of a column that are not values at all.

    Formulas without a cached value, Excel error values (``#N/A``…) and cells longer than
    :data:`MAX_CELL` characters. Every column function below reports these itself; this is
    for columns that are not otherwise parsed.

    Args:
        raw: the column as read.

    Returns:
        The problems, indexed like ``raw`` (empty when every cell is a value).
    """
    positions, problems = _screen(_cells(raw))
    return _errors(raw.index, positions, problems)


def _type_problem(value: Any, code: str, expected: str, todo: str) -> Problem:
    return _special(value) or _not_a_cell_type(value, expected, todo, code)


def hex_ids(raw: pd.Series, code: str) -> Parsed:
    """Ids (creditor, case, account): text cells lowercased; number/date cells refused.

    Whether each value really is 24 hex digits is a check in validate.py.

    Args:
        raw: the column as read.
        code: the reason code for a cell of the wrong type (``invalid_case``…).

    Returns:
        Lowercased ids, None for empty cells.
    """
    cells = _cells(raw)
    special, problems = _screen(cells)
    if cells.text is not None and not len(special) and cells.scan.ascii() and \
            not _UPPER_BYTES[cells.scan.u8].any():  # ASCII and lower case already
        return Parsed(_text_values(cells.text, cells.empty, raw.index), _no_errors(raw.index))
    arr, n = cells.arr, len(cells.arr)
    if cells.plain and not cells.empty.any() and not len(special):
        joined = "".join(arr)
        if joined.isascii() and joined.lower() == joined:  # ASCII lower() is a fast C loop
            return Parsed(_obj_series(arr, raw.index), _no_errors(raw.index))
    out = _filled(n, None)
    text = cells.is_str & ~cells.empty
    strs = arr[text]
    joined = "\n".join(strs)
    if joined.isascii() and joined.lower() == joined:
        out[text] = strs
    else:
        lowered = joined.lower().split("\n")
        out[text] = lowered if len(lowered) == len(strs) else [v.lower() for v in strs]
    others = np.setdiff1d(cells.others, special)
    problems = problems + [
        Problem(code, "is a number cell: Excel keeps only 15 digits of a long number; format "
                      "the column as Text and type the 24-character id again")
        if isinstance(arr[p], int | float) and not isinstance(arr[p], bool)
        else _type_problem(arr[p], code, "an id", "type the 24-character id as text")
        for p in others
    ]
    failed = np.concatenate([special, others])
    out[failed] = None
    return Parsed(_obj_series(out, raw.index), _errors(raw.index, failed, problems))


_UPPER_BYTES = np.zeros(256, dtype=bool)
_UPPER_BYTES[ord("A"):ord("Z") + 1] = True


def _nfc(values: np.ndarray) -> np.ndarray:
    """Texts in Unicode's composed form (NFC): ``ä`` typed on a Mac, or pasted from a PDF, may
    come as ``a`` plus a combining mark, the same text to a reader but not to Amili's lookup of
    an invoice number, nor to the duplicate check."""
    if "".join(values).isascii():
        return values
    return np.array([unicodedata.normalize("NFC", v) for v in values], dtype=object)


def texts(raw: pd.Series, code: str = "invalid_text") -> Parsed:
    """Free texts (invoice numbers, references): Excel numbers become the digits typed.

    An invoice number read from Excel as ``103118.0`` becomes ``"103118"``. TRUE/FALSE and
    date cells are refused (a date in an invoice-number column is a formatting accident).
    Length and control characters are checks in validate.py.

    Args:
        raw: the column as read.
        code: the reason code for a cell of the wrong type.

    Returns:
        The texts, None for empty cells.
    """
    cells = _cells(raw)
    special, problems = _screen(cells)
    if cells.text is not None and not len(special) and cells.scan.ascii():  # NFC already
        return Parsed(_text_values(cells.text, cells.empty, raw.index), _no_errors(raw.index))
    arr = cells.arr
    if cells.plain and not cells.empty.any() and not len(special):
        return Parsed(_obj_series(_nfc(arr), raw.index), _no_errors(raw.index))
    out = _filled(len(arr), None)
    text = cells.is_str & ~cells.empty
    out[text] = _nfc(arr[text])
    bad: list[Any] = list(special)
    for p in np.setdiff1d(cells.others, special):
        value = arr[p]
        number = isinstance(value, int | float) and not isinstance(value, bool) and \
            math.isfinite(value)
        if number and abs(value) >= 1e15:
            # An OCR or invoice number typed into a number cell: Excel kept 15 digits only.
            bad.append(p)
            problems.append(Problem(code, "is a number cell of 16 digits or more: Excel keeps "
                                          "only 15 digits of a number, so the last ones may be "
                                          "lost; format the column as Text and type it again"))
        elif number and (typed := _shown_problem(value, TEXT_TRAITS)) is not None:
            bad.append(p)  # 1234 shown as 001234 or INV-1234: what was typed is not known
            problems.append(typed)
        elif number:
            out[p] = number_text(value)
        else:
            bad.append(p)
            problems.append(_type_problem(value, code, "text", "format the column as Text"))
    out[np.asarray(bad, dtype=np.int64)] = None
    return Parsed(_obj_series(out, raw.index), _errors(raw.index, bad, problems))


def words(raw: pd.Series, code: str, *, upper: bool = False, default: str | None = None) -> Parsed:
    """Fixed words (currency, origin): case folded; empty cells get ``default``.

    Args:
        raw: the column as read.
        code: the reason code for a cell of the wrong type.
        upper: upper-case (``sek`` → ``SEK``) rather than lower-case.
        default: the value for an empty cell (None: stays empty, so a required check fails).

    Returns:
        The words, case-folded.
    """
    cells = _cells(raw)

    def fold(value: Any) -> tuple[Any, Problem | None]:
        problem = _special(value)  # first: the formula sentinel equals ""
        if problem is None and (value is None or value == ""
                                or (isinstance(value, float) and math.isnan(value))):
            return default, None
        if problem is None and type(value) is str:
            return (value.upper() if upper else value.lower()), None
        return None, problem or _not_a_cell_type(value, "text", "type the word as text", code)

    if cells.text is not None:  # a handful of distinct words: each folded once
        found = pc.dictionary_encode(cells.text)
        codes = found.indices.to_numpy(zero_copy_only=False)
        results = [fold(word) for word in found.dictionary.to_pylist()]
        folded = pa.array([r[0] for r in results], type=pa.string()).take(found.indices)
        failed_u = np.array([r[1] is not None for r in results], dtype=bool)
        failed = np.flatnonzero(failed_u[codes]) if failed_u.any() else np.empty(0, np.int64)
        return Parsed(pd.Series(folded, index=raw.index, dtype=TEXT),
                      _errors(raw.index, failed, [results[c][1] for c in codes[failed]]))
    arr, n = cells.arr, len(cells.arr)
    if cells.plain and n:
        first = arr[0]
        if first and first == (first.upper() if upper else first.lower()) and \
                bool((arr == first).all()) and _special(first) is None:
            return Parsed(_obj_series(arr, raw.index), _no_errors(raw.index))
        if not first and cells.empty.all():
            return Parsed(_obj_series(_filled(n, default), raw.index), _no_errors(raw.index))
    folded, failed, problems = _per_unique(arr, np.arange(n), fold)
    return Parsed(_obj_series(folded, raw.index), _errors(raw.index, failed, problems))


# ---------------------------------------------------------------------------------------------
# Amounts

_CANONICAL_AMOUNTS = re.compile(
    r"(?:(?:[1-9][0-9]{0,11}|0)\.[0-9]{2}\n)*+(?:[1-9][0-9]{0,11}|0)\.[0-9]{2}")
_CANONICAL_AMOUNT = re.compile(r"(?:[1-9][0-9]{0,11}|0)[.,][0-9]{2}")
_CANONICAL_AMOUNT_RE2 = r"^(?:[1-9][0-9]{0,11}|0)[.,][0-9]{2}$"  # the same, for Arrow
_ODD_AMOUNT_LINE = re.compile(r"^(?!(?:[1-9][0-9]{0,11}|0)\.[0-9]{2}$)", re.MULTILINE)
# re.ASCII: \d is 0-9 only (Python's \d, float() and Decimal() also take ١٢٣ or １２３).
_GROUPED = re.compile(r"(\d{1,3})((?:[ \u00a0\u202f\u2009]\d{3})+)([.,]\d+)?", re.ASCII)
_PLAIN = re.compile(r"(\d+)(?:[.,](\d+))?", re.ASCII)
_CURRENCY_MARK = re.compile(r"(?i)\b(?:kr|sek|eur|usd|nok|dkk)\b\.?|:-|[€$£]")
_WRITE = "write the amount with digits and at most two decimals, e.g. 1234,50 or 1234.50"


def _amount_text(text: str) -> tuple[str | None, Problem | None]:
    t = text.strip(_SPACES)
    if not t:
        return None, None
    sign = ""
    if t[0] in "-\u2212":  # minus or the typographic minus: parsed, then refused by a check
        sign, t = "-", t[1:].lstrip(_SPACES)
    elif t[0] == "+":
        t = t[1:].lstrip(_SPACES)
    unit = _CURRENCY_MARK.search(t)
    if unit:  # "1 234,50 kr", as Excel exports a currency-formatted cell to CSV
        return None, Problem("invalid_amount", f"has a currency in it ({unit.group()!r}); write "
                             "the amount alone, e.g. 1234,50 (the currency column says SEK)")
    grouped = _GROUPED.fullmatch(t)
    if grouped:
        head, groups, tail = grouped.groups()
        t = head + "".join(c for c in groups if c.isdigit()) + (tail or "")
    elif any(c in t for c in _SPACES):
        return None, Problem("invalid_amount", "has a space that does not separate thousands; "
                             "write 1234,50 or 1 234,50")
    if "," in t and "." in t:
        digits = "".join(c for c in t if c.isdigit())
        return None, Problem("ambiguous_amount", "mixes comma and point, so it is not clear "
                             "which one is the decimal separator; write it without a thousands "
                             f"separator, e.g. {digits[:-2] or '0'}.{digits[-2:]} or "
                             f"{digits[:-2] or '0'},{digits[-2:]}")
    if t.count(",") + t.count(".") > 1:
        return None, Problem("ambiguous_amount", "has more than one separator (thousands "
                             "separators?); write it without them, e.g. 1234567 or 1234567,50")
    plain = _PLAIN.fullmatch(t)
    if not plain:
        return None, Problem("invalid_amount", f"is not an amount; {_WRITE}")
    whole, decimals = plain.groups()
    decimals = decimals or ""
    if (not grouped and len(decimals) == 3 and len(whole) <= 3 and whole[0] != "0"):
        sep = "," if "," in t else "."
        return None, Problem("ambiguous_amount", f"is ambiguous: '{sep}' may separate "
                             f"thousands or decimals; write {whole}{decimals} for thousands, or "
                             "use at most two decimals")
    if len(decimals) > 2:
        return None, Problem("invalid_amount", "has more than two decimals; round it to whole "
                             "öre (two decimals)")
    return f"{sign}{whole.lstrip('0') or '0'}.{decimals.ljust(2, '0')}", None


T = TypeVar("T")


def _cell(value: Any, text: Callable[[str], tuple[T | None, Problem | None]],
          typed: Callable[[Any], tuple[T | None, Problem | None]]
          ) -> tuple[T | None, Problem | None]:
    """Parse one cell: an empty cell is nothing, a cell that is no value (formula without a
    result, Excel error, oversized text) is its problem, text goes to ``text``, typed cells
    (numbers, dates) to ``typed``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, None
    special = _special(value)
    if special is not None:
        return None, special
    return text(value) if type(value) is str else typed(value)


def _amount_cell(value: Any) -> tuple[str | None, Problem | None]:
    return _cell(value, _amount_text, _amount_typed)


def _amount_typed(value: Any) -> tuple[str | None, Problem | None]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, _not_a_cell_type(value, "an amount", _WRITE, "invalid_amount")
    if isinstance(value, int):
        return f"{value}.00", None
    if not math.isfinite(value):
        return None, Problem("invalid_amount", f"is not a finite number; {_WRITE}")
    if abs(value) >= MAX_AMOUNT:  # (and past Decimal's 28 digits: 1e26 cannot be rounded)
        return None, Problem("invalid_amount", "is too large (1 000 000 000 000 or more); "
                             "check the amount")
    # As Excel shows a number: 15 significant digits. Its arithmetic leaves artefacts past
    # them (0.30000000000000004; 9017490.38 + 5115.55 = 9022605.930000002, an artefact larger
    # than 1e-9 above 2**23): those are rounded away, while 1.005 is still refused.
    exact = Decimal(f"{value:.15g}")
    cents = exact.quantize(Decimal("0.01"))
    if exact != cents:
        return None, Problem("invalid_amount", "has more than two decimals; round it to whole "
                             "öre (two decimals), e.g. with =ROUND(…;2)")
    return f"{cents:f}", None


def amounts(raw: pd.Series) -> Parsed:
    """Amounts as a plain decimal string with two decimals (``"1234.50"``).

    Accepted: ``1234.50``, ``1234,50``, ``1 234,50`` (space, no-break or narrow no-break space
    between thousands), ``1234``, Excel number cells (read to 15 significant digits, as Excel
    shows them: that absorbs binary artefacts but refuses ``1.005``).
    Refused with a message saying what to write: ``1,234.50``, ``1.234,50``, ``1.234``,
    ``1,234`` (a single separator followed by exactly three digits could be either), more than
    two decimals (of the number as Excel shows it, to 15 significant digits), text. Signs are
    parsed so that the "greater than zero" check can name them.

    Args:
        raw: the column as read.

    Returns:
        Values, problems, and ``typed``: the amounts as float64 for range checks.
    """
    cells = _cells(raw)
    if cells.text is not None:
        return _amounts_text(cells, raw.index)
    arr, n = cells.arr, len(cells.arr)
    out = _filled(n, None)
    typed = np.full(n, np.nan)
    rest = np.flatnonzero(~cells.empty)
    if cells.plain and n:
        joined = "\n".join(arr).replace(",", ".")
        if _CANONICAL_AMOUNTS.fullmatch(joined):
            parts = joined.split("\n")
            if len(parts) == n:  # a cell with a line break inside would shift the split
                out[:] = parts
                return Parsed(_obj_series(out, raw.index), _no_errors(raw.index),
                              pd.Series(out.astype(np.float64), index=raw.index))
        # Some cells are not canonical: find them in the joined text, keep the fast path for
        # the others (a cell with a line break inside would shift the lines: check first).
        if joined.count("\n") == n - 1:
            starts = np.cumsum(np.fromiter(map(len, arr), dtype=np.int64, count=n) + 1) - 1
            odd = np.searchsorted(starts, [m.start() for m in _ODD_AMOUNT_LINE.finditer(joined)])
            canonical = np.ones(n, dtype=bool)
            canonical[odd] = False
            lines = np.empty(n, dtype=object)
            lines[:] = joined.split("\n")
            out[canonical] = lines[canonical]
        else:
            canonical = np.fromiter((_CANONICAL_AMOUNT.fullmatch(v) is not None for v in arr),
                                    dtype=bool, count=n)
            out[canonical] = [v.replace(",", ".") for v in arr[canonical]]
        typed[canonical] = out[canonical].astype(np.float64)
        rest = np.flatnonzero(~canonical & ~cells.empty)
    parsed, failed, problems = _per_unique(arr, rest, _amount_cell)
    out[rest] = parsed
    given = rest[np.fromiter((v is not None for v in parsed), dtype=bool, count=len(rest))]
    typed[given] = out[given].astype(np.float64)
    return Parsed(_obj_series(out, raw.index), _errors(raw.index, failed, problems),
                  pd.Series(typed, index=raw.index))


def _amounts_text(cells: _Cells, index: pd.Index) -> Parsed:
    """:func:`amounts` for a CSV's column: canonical cells (``1234.50``, ``1234,50``) with
    Arrow kernels, kept as Arrow text; the others are read once per distinct value."""
    assert cells.text is not None
    text = cells.text
    canonical = _mask(pc.match_substring_regex(text, _CANONICAL_AMOUNT_RE2))
    if cells.scan.has(","):
        text = pc.replace_substring(text, ",", ".")
    rest = np.flatnonzero(~canonical & ~cells.empty)
    found, failed = np.empty(0, dtype=object), np.empty(0, dtype=np.int64)
    problems: list[Problem] = []
    if len(rest):
        found, failed, problems = _per_unique(_objects_at(cells.text, rest),
                                              np.arange(len(rest)), _amount_cell)
    values = _replaced(text, ~canonical, rest, found, index)
    typed = pc.cast(pa.array(values.array), pa.float64())
    return Parsed(values, _errors(index, rest[failed], problems),
                  pd.Series(typed.to_numpy(zero_copy_only=False), index=index))


# ---------------------------------------------------------------------------------------------
# Dates

_RFC = re.compile(
    r"(?P<wd>[A-Za-z]{3}), (?P<d>\d{1,2}) (?P<mon>[A-Za-z]{3}) (?P<y>\d{4}) "
    r"(?P<H>\d{2}):(?P<M>\d{2}):(?P<S>\d{2}) (?P<tz>GMT|UTC|UT|Z|[+-]\d{4})",
    re.IGNORECASE | re.ASCII)
_RFC_CANONICAL = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d\d:\d\d:\d\d GMT", re.ASCII)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_ISO_DATETIME = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)"
    r"(?P<tz>Z|[+-]\d{2}:?\d{2})?", re.IGNORECASE | re.ASCII)
_LOCAL_DATE = re.compile(r"\d{1,4}[/.\-]\d{1,2}[/.\-]\d{1,4}", re.ASCII)
_DATE_FORMS = ("write RFC 1123 in GMT (Fri, 04 Jul 2025 16:20:41 GMT) or ISO 8601 "
               "(2025-07-04 or 2025-07-04T16:20:41Z)")


# How systems write "no date": .NET's empty DateTime (0001-01-01), Excel's day 0 (1900-01-00,
# read as 1899-12-31) and Unix's 0 (1970-01-01). A date before the day after that last one is
# taken for such a placeholder, never posted as a real date.
_FLOOR = datetime(1970, 1, 2)
_DAY_TRAITS = frozenset({"no_day"})
_PLACEHOLDER = Problem("placeholder_date", "is before 1970-01-02: the way systems write 'no "
                       "date' (0001-01-01, Excel's day 0, 1970-01-01), not a real date; write "
                       "the real date, or leave an optional date empty")
_OUT_OF_CALENDAR = Problem("invalid_date", "leaves the calendar (before year 1 or after 9999) "
                           "once converted to GMT: a placeholder, not a real date; write the "
                           "real date")


def _iso_or_nat(text: str) -> np.datetime64:
    try:
        return np.datetime64(text, "us")
    except ValueError:
        return np.datetime64("NaT")


def rfc1123(moment: datetime) -> str:
    """Format an aware or UTC-naive datetime as the API's RFC 1123 GMT text.

    Locale-independent (``strftime('%a')`` would say ``fre`` under a Swedish locale).
    """
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return (f"{_WEEKDAYS[moment.weekday()]}, {moment.day:02d} {_MONTHS[moment.month - 1]} "
            f"{moment.year:04d} {moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} GMT")


def _utc_naive(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def _date_text(text: str) -> tuple[datetime | None, Problem | None]:
    t = text.strip(_SPACES)
    if not t:
        return None, None
    m = _RFC.fullmatch(t)
    if m:
        mon = m["mon"].title()
        if mon not in _MONTHS or m["wd"].title() not in _WEEKDAYS:
            return None, Problem("invalid_date", "has a weekday or month name that is not "
                                 f"English (Mon…Sun, Jan…Dec); {_DATE_FORMS}")
        try:
            moment = datetime(int(m["y"]), _MONTHS.index(mon) + 1, int(m["d"]),
                              int(m["H"]), int(m["M"]), int(m["S"]))
        except ValueError:
            return None, Problem("invalid_date", f"is not a real date or time; {_DATE_FORMS}")
        right = _WEEKDAYS[moment.weekday()]
        if m["wd"].title() != right:
            fixed = f"{right}{t[3:]}"
            return None, Problem("wrong_weekday", f"has weekday {m['wd']} but "
                                 f"{moment:%d} {mon} {moment:%Y} is a {right}; write '{fixed}'")
        tz = m["tz"].upper()
        if tz[0] in "+-":
            if (unreal := _unreal_offset(tz)) is not None:
                return None, unreal
            offset = int(tz[1:3]) * 60 + int(tz[3:5])
            try:
                moment -= timedelta(minutes=offset if tz[0] == "+" else -offset)
            except OverflowError:
                return None, _OUT_OF_CALENDAR
        return moment, None
    if _ISO_DATE.fullmatch(t):
        try:
            return datetime.fromisoformat(t), None
        except ValueError:
            return None, Problem("invalid_date", f"is not a real date; {_DATE_FORMS}")
    m = _ISO_DATETIME.fullmatch(t)
    if m:
        if not m["tz"]:
            return None, Problem("invalid_date", "has no time zone; add Z for GMT or an "
                                 "offset such as +02:00 (e.g. 2025-07-04T16:20:41Z), or give "
                                 "the date alone (2025-07-04)")
        if m["tz"][0] in "+-" and (unreal := _unreal_offset(m["tz"])) is not None:
            return None, unreal
        try:
            moment = datetime.fromisoformat(t.upper().replace("Z", "+00:00"))
        except ValueError:
            return None, Problem("invalid_date", f"is not a real date or time; {_DATE_FORMS}")
        # Any number of fraction digits (.NET and SQL Server write 7), with . or , as ISO
        # 8601 allows; the API's form holds whole seconds, and so does the moment checked.
        try:
            return _utc_naive(moment).replace(microsecond=0), None
        except OverflowError:  # 0001-01-01T00:00:00+01:00 (.NET's empty date, local time)
            return None, _OUT_OF_CALENDAR
    if _LOCAL_DATE.fullmatch(t):
        return None, Problem("invalid_date", "is not an accepted date form (the order of day "
                             f"and month cannot be told); {_DATE_FORMS}")
    if re.fullmatch(r"\d+([.,]\d+)?", t, re.ASCII):
        return None, Problem("invalid_date", "is a number, not a date (an Excel serial "
                             f"date?); format the cells as dates, or {_DATE_FORMS}")
    return None, Problem("invalid_date", f"is not a date in an accepted form; {_DATE_FORMS}")


def _unreal_offset(tz: str) -> Problem | None:
    """The problem of a time-zone offset (``+0200``, ``+02:00``) that no place has (no place
    on Earth is more than 14 hours off GMT), or None."""
    zone = tz.replace(":", "")
    if int(zone[1:3]) > 14 or int(zone[3:5]) > 59:
        return Problem("invalid_date", f"has a time-zone offset ({tz}) that is not a real one; "
                       f"{_DATE_FORMS}")
    return None


def _date_cell(value: Any) -> tuple[datetime | None, Problem | None]:
    moment, problem = _cell(value, _date_text, _date_typed)
    if moment is not None and moment < _FLOOR:
        return None, _PLACEHOLDER
    return moment, problem


def _date_typed(value: Any) -> tuple[datetime | None, Problem | None]:
    shown = _shown_problem(value, _DAY_TRAITS)  # a date cell shown without its day
    if shown is not None:
        return None, shown
    if isinstance(value, datetime):
        # An Excel date cell has no time zone; it is taken as GMT (a date alone is midnight).
        moment = value.to_pydatetime() if isinstance(value, pd.Timestamp) else value
        return _utc_naive(moment).replace(microsecond=0), None
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day), None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return None, Problem("invalid_date", "is a number cell, not a date (an Excel serial "
                             "date?); format the cells as dates")
    return None, _not_a_cell_type(value, "a date", "format the cells as dates", "invalid_date")


def dates(raw: pd.Series) -> Parsed:
    """Dates as RFC 1123 in GMT (``Fri, 04 Jul 2025 16:20:41 GMT``).

    Accepted: RFC 1123 whose weekday agrees with the date, in GMT (``UTC``/``UT``/``Z`` taken
    as the same; a numeric offset such as ``+0200`` is converted); ISO 8601 dates
    (``2025-07-04``: midnight GMT) and datetimes with ``Z`` or an offset (converted to GMT);
    Excel date/datetime cells (no time zone in Excel: taken as GMT). Nothing else is guessed:
    ``04/07/2025``, ``4 juli 2025``, an ISO datetime without a zone and numbers are refused,
    and so are placeholder dates (before 1970-01-02: ``placeholder_date``) and offsets no
    place has.

    Args:
        raw: the column as read.

    Returns:
        Values, problems, and ``typed``: ``datetime64[us]`` in UTC (NaT where empty/failed).
    """
    cells = _cells(raw)
    if cells.text is not None:
        return _dates_text(cells, raw.index)
    arr, n = cells.arr, len(cells.arr)
    texts = _filled(n, None)
    moments = np.full(n, np.datetime64("NaT"), dtype="datetime64[us]")
    rest = np.flatnonzero(~cells.empty)
    if cells.plain and len(rest):
        # Canonical cells (nearly all of a system's export) are read without Python per cell.
        good, when = _canonical_rfc(arr[rest])
        texts[rest[good]] = arr[rest[good]]
        moments[rest[good]] = when
        rest = rest[~good]
    failed = np.empty(0, dtype=np.int64)
    problems: list[Problem] = []
    if len(rest):
        texts[rest], moments[rest], failed, problems = _dates_per_unique(arr, rest)
    return Parsed(_obj_series(texts, raw.index), _errors(raw.index, failed, problems),
                  pd.Series(moments, index=raw.index))


def _dates_text(cells: _Cells, index: pd.Index) -> Parsed:
    """:func:`dates` for a CSV's column: canonical cells are their own value, kept as Arrow
    text; the others are read once per distinct value."""
    assert cells.text is not None
    text = cells.text
    moments = np.full(len(text), np.datetime64("NaT"), dtype="datetime64[us]")
    good, when = _canonical_rfc_text(text, cells.scan)
    moments[good] = when
    rest = np.flatnonzero(~good & ~cells.empty)
    found, failed = np.empty(0, dtype=object), np.empty(0, dtype=np.int64)
    problems: list[Problem] = []
    if len(rest):
        found, moments[rest], failed, problems = _dates_per_unique(
            _objects_at(text, rest), np.arange(len(rest)))
    return Parsed(_replaced(text, ~good, rest, found, index), _errors(index, rest[failed],
                                                                       problems),
                  pd.Series(moments, index=index))


def _objects_at(text: pa.Array, positions: np.ndarray) -> np.ndarray:
    """The values at ``positions`` as Python objects (for the per-value parsers)."""
    return np.array(text.take(pa.array(positions)).to_pylist(), dtype=object)


def _replaced(text: pa.Array, replace: np.ndarray, rest: np.ndarray, found: np.ndarray,
              index: pd.Index) -> pd.Series:
    """Arrow text where ``replace`` is False; elsewhere missing, except at the positions
    ``rest`` (a subset of ``replace``), which take ``found`` (None: missing)."""
    if replace.any():
        where = np.flatnonzero(replace)
        values = np.full(len(where), None, dtype=object)
        values[np.searchsorted(where, rest)] = found
        text = pc.replace_with_mask(text, pa.array(replace),
                                    pa.array(values.tolist(), type=text.type))
    return pd.Series(text, index=index, dtype=TEXT)


def _keys(words: tuple[str, ...]) -> np.ndarray:
    return np.array([int.from_bytes(w.encode(), "big") for w in words], dtype=np.int64)


_WEEKDAY_KEYS = _keys(_WEEKDAYS)
_MONTH_KEYS = _keys(_MONTHS)
_MONTH_ORDER = np.argsort(_MONTH_KEYS)
# "Fri, 04 Jul 2025 16:20:41 GMT": the fixed characters, and the digits of day, year, hour,
# minute and second.
_RFC_FIXED_AT = np.array([3, 4, 7, 11, 16, 19, 22, 25, 26, 27, 28])
_RFC_TEMPLATE = np.frombuffer(b"Fri, 04 Jul 2025 16:20:41 GMT", dtype=np.uint8)[_RFC_FIXED_AT]
_RFC_DIGITS_AT = np.array([5, 6, 12, 13, 14, 15, 17, 18, 20, 21, 23, 24])


def _canonical_rfc(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which plain-text cells are canonical RFC 1123 GMT naming the right weekday.

    The text is 29 fixed-width ASCII characters, so numpy reads every cell at once as a row
    of bytes; nothing is parsed per cell. Anything unusual (non-ASCII, another length, an
    impossible date, a NUL) is left to the per-value path, which says what is wrong.

    Returns:
        (mask over ``arr``, the moments of the cells it marks as ``datetime64[us]``).
    """
    n = len(arr)
    joined = "".join(arr)
    if "\x00" in joined or not joined.isascii():  # fixed width drops NULs; bytes need ASCII
        return np.zeros(n, dtype=bool), np.empty(0, dtype="datetime64[us]")
    at = arr.astype("S30").view(np.uint8).reshape(n, 30)
    return _canonical_rows(at[:, :29], (at[:, 29] == 0) & (at[:, 28] != 0))  # 29 characters


def _canonical_rfc_text(text: pa.Array, scan: TextBytes) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_canonical_rfc` for Arrow text (``scan``: its bytes): the 29-byte values are
    read in place as rows of bytes (each of the 29 is checked, so a byte of a non-ASCII
    character never passes)."""
    n = len(text)
    right = scan.lengths == 29
    if not right.any():
        return right, np.empty(0, dtype="datetime64[us]")
    picked = TextBytes(text.filter(pa.array(right))).u8.reshape(-1, 29)
    good, moments = _canonical_rows(picked, np.ones(len(picked), dtype=bool))
    mask = np.zeros(n, dtype=bool)
    mask[np.flatnonzero(right)[good]] = True
    return mask, moments


def _canonical_rows(at: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of 29 bytes (where ``ok``) that are canonical RFC 1123 GMT naming the right
    weekday, and their moments."""
    n = len(at)
    none = np.zeros(n, dtype=bool), np.empty(0, dtype="datetime64[us]")
    ok = ok & (at[:, _RFC_FIXED_AT] == _RFC_TEMPLATE).all(axis=1)
    digits = at[:, _RFC_DIGITS_AT] - np.uint8(ord("0"))  # wraps below '0': > 9
    ok &= (digits <= 9).all(axis=1)
    if not ok.any():
        return none
    picked = np.flatnonzero(ok)
    rows = at[picked]
    d = digits[picked].astype(np.int64).T

    def number(*places: int) -> np.ndarray:
        value = d[places[0]]
        for place in places[1:]:
            value = value * 10 + d[place]
        return value

    day, year, hour = number(0, 1), number(2, 3, 4, 5), number(6, 7)
    minute, second = number(8, 9), number(10, 11)

    def word(i: int) -> np.ndarray:
        part = rows[:, i:i + 3].astype(np.int64)
        return (part[:, 0] << 16) | (part[:, 1] << 8) | part[:, 2]

    months = word(8)
    month = _MONTH_ORDER[np.searchsorted(_MONTH_KEYS[_MONTH_ORDER], months).clip(0, 11)]
    first = (year - 1970).astype("datetime64[Y]").astype("datetime64[M]") + month
    start = first.astype("datetime64[D]")
    length = ((first + 1).astype("datetime64[D]") - start).astype(np.int64)
    days = start + (day - 1)
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday (Monday = 0)
    real = ((_MONTH_KEYS[month] == months) & (year > _FLOOR.year) & (day >= 1)
            & (day <= length)
            & (hour < 24) & (minute < 60) & (second < 60)
            & (_WEEKDAY_KEYS[weekday] == word(0)))
    mask = np.zeros(n, dtype=bool)
    mask[picked[real]] = True
    seconds = ((hour * 60 + minute) * 60 + second)[real]
    moments = days[real].astype("datetime64[us]") + (seconds * 1_000_000).astype(
        "timedelta64[us]")
    return mask, moments


def _dates_per_unique(arr: np.ndarray, positions: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Problem]]:
    """Parse the dates at ``positions`` (non-empty cells) once per distinct value.

    Returns:
        (texts, moments, the positions that failed, their problems).
    """
    codes, uniques = _distinct(arr[positions])
    k = len(uniques)
    texts_u = _filled(k, None)
    moments = np.full(k, np.datetime64("NaT"), dtype="datetime64[us]")
    problems_u: list[Problem | None] = [None] * k
    slow = np.arange(k)
    if k:
        # Fast path: canonical RFC 1123 text (an Excel text cell holding an export's date) is
        # parsed in one vectorised call; its value is the text itself once the weekday agrees.
        canonical = np.flatnonzero(np.fromiter(
            (type(u) is str and _RFC_CANONICAL.fullmatch(u) is not None for u in uniques),
            dtype=bool, count=k))
        if len(canonical):
            texts_c = uniques[canonical]
            iso = [f"{t[12:16]}-{_MONTH_NUMBER[t[8:11]]}-{t[5:7]}T{t[17:25]}" for t in texts_c]
            try:
                when = np.array(iso, dtype="datetime64[us]")
            except ValueError:  # an impossible date (30 Feb) among them: each on its own
                when = np.array([_iso_or_nat(v) for v in iso], dtype="datetime64[us]")
            # numpy reads year 0000 (Python's datetime and the API do not), and placeholder
            # dates are no dates: those go the slow way, which says why.
            when[when < np.datetime64(_FLOOR, "us")] = np.datetime64("NaT")
            read = ~np.isnat(when)
            # 1970-01-01 was a Thursday (weekday 3, Monday = 0).
            days = when[read].astype("datetime64[D]").astype(np.int64)
            weekday = np.array(_WEEKDAYS, dtype=object)[(days + 3) % 7]
            good = np.zeros(len(canonical), dtype=bool)
            good[np.flatnonzero(read)] = weekday == np.array([t[:3] for t in texts_c[read]],
                                                             dtype=object)
            texts_u[canonical[good]] = texts_c[good]
            moments[canonical[good]] = when[good]
            slow = np.setdiff1d(slow, canonical[good])  # wrong weekdays get their message there
    for u in slow:
        moment, problem = _date_cell(uniques[u])
        if moment is not None:
            texts_u[u] = rfc1123(moment)
            moments[u] = np.datetime64(moment, "us")
        problems_u[u] = problem
    failed_u = np.array([p is not None for p in problems_u], dtype=bool)
    failed = failed_u[codes]
    return (texts_u[codes], moments[codes], positions[failed],
            [p for p in (problems_u[c] for c in codes[failed]) if p is not None])


def utc_naive(moment: datetime) -> np.datetime64:
    """``moment`` as a naive-UTC ``datetime64[us]`` comparable with :func:`dates` ``typed``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return np.datetime64(_utc_naive(moment), "us")


__all__ = [
    "EXCEL_ERRORS", "MAX_AMOUNT", "MAX_CELL", "MAX_TEXT", "Parsed", "Problem", "amounts",
    "as_text", "dates", "display", "hex_ids", "is_formula_without_value", "number_text",
    "rfc1123", "screen", "texts", "utc_naive", "words",
]
