"""The file-import report: report.json, report.csv and report.xlsx, written atomically.

The writer streams: each report-frame chunk (see ``docs/ARCHITECTURE.md``, "The report frame")
is encoded once to JSON and CSV text and appended to temp files in the report folder; the XLSX
rows go to a spill file on disk. At ``close`` the three files are assembled, fsynced and renamed
into place, so a reader never sees half a report.

Why not ``DataFrame.to_json`` / ``to_csv``: on a report frame (about 30 text columns) they take
~15 s and ~6 s per million rows. The encoder below works column by column: it checks a whole
column at once (one ``join`` and a few substring scans) and only falls back to per-value work for
columns holding quotes, commas, control characters or formula-like text. Pieces are then
interleaved in a numpy object array and joined once.

Spreadsheet formula injection: in report.csv, report.xlsx and the failed-rows file, text cells
starting with ``= + - @``, tab or CR get a leading ``'`` (OWASP). report.json keeps every value
exactly as read, and nothing here touches the values sent to the API.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import queue
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from json.encoder import encode_basestring
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from importer.kinds import kind_from_label, without_kind_words

if TYPE_CHECKING:
    from types import TracebackType

    from importer.read import FileInfo

# Above this many rows the Rows sheet of report.xlsx keeps only rows that are not
# valid/completed (a finance person needs the problems; report.csv has everything).
XLSX_ALL_ROWS_LIMIT = 100_000
# Excel's hard limit is 1,048,576 rows per sheet, one of which is the header.
XLSX_MAX_ROWS = 1_048_575

INPUT_PREFIX = "input:"
OK_STATUSES = ("valid", "completed")
STATUS_ORDER = ("valid", "completed", "warning", "error")
NUMBER_COLUMNS = frozenset({"amount", "settled_amount"})  # JSON numbers
INTEGER_COLUMNS = frozenset({"row", "http_status", "attempts"})  # JSON integers
# Columns whose values come from our own fixed vocabulary: never formula-escaped.
VOCABULARY_COLUMNS = frozenset({"kind", "status"})
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# The failed-rows file's own columns after the input's: the row it came from in the first
# file (a failed-rows file run again keeps it), and why it failed.
FAILED_EXTRA_COLUMNS = ("source_row", "error_reason", "error_message")

_JSON_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?"
_SUB_BATCH = 25_000  # rows encoded at a time: bounds the transient text to ~25 MB
_TMP_PREFIX = ".amili-tmp-"
HEAD_RESERVE = 256 * 1024  # bytes kept at the start of report.json for the keys before rows
COPY_BELOW = 64 * 1024 * 1024  # smaller reports are copied behind their head (no blank room)


def default_frame_columns() -> tuple[str, ...]:
    """The report frame's fixed columns, as the validation module defines them.

    Returns:
        ``importer.validate.FRAME_COLUMNS``.
    """
    from importer.validate import FRAME_COLUMNS  # lazy: validate pulls in pandera

    return tuple(FRAME_COLUMNS)


def input_column(header: str) -> str:
    """The report column holding an original input header's raw text (``input:<header>``)."""
    return header if header.startswith(INPUT_PREFIX) else INPUT_PREFIX + header


def escape_formula(value: str) -> str:
    """Make one cell text inert in a spreadsheet (prefix ``'`` when it could start a formula).

    Args:
        value: the cell text.

    Returns:
        The text, with a leading ``'`` if it starts with ``= + - @``, tab or CR.
    """
    return "'" + value if value.startswith(FORMULA_START) else value


# --------------------------------------------------------------------------- summary


@dataclass
class Summary:
    """Counts and amounts of one run, for the terminal, the exit code and report.json.

    Attributes:
        totals: rows per status.
        amounts: sum of amounts per (kind, status), exact.
        rows: rows reported.
        counts: rows per (kind, status).
        files: one entry per input file (name, rows, rejected).
        report_dir: where the report files are.
        xlsx_rows_left_out: rows report.xlsx does not list (report.csv has them all).
    """

    totals: dict[str, int] = field(default_factory=dict)
    amounts: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    rows: int = 0
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)
    report_dir: Path | None = None
    xlsx_rows_left_out: int = 0

    @property
    def errors(self) -> int:
        """Rows in error."""
        return self.totals.get("error", 0)

    def summary_lines(self) -> list[str]:
        """A short human summary for the terminal.

        Returns:
            Lines: files, rows per status, amount per kind and status, the report folder.
        """
        lines = []
        for f in self.files:
            state = f"rejected: {f['rejected']}" if f.get("rejected") else f"{f['rows']} rows"
            lines.append(f"file {f['name']}: {state}")
        per_status = ", ".join(f"{n} {s}" for s, n in _ordered(self.totals).items())
        lines.append(f"rows: {self.rows}" + (f" ({per_status})" if per_status else ""))
        for (kind, status), n in sorted(self.counts.items(), key=_kind_status_key):
            amount = self.amounts.get((kind, status))
            money = f", {_money(amount)} SEK" if amount is not None else ""
            lines.append(f"  {kind} {status}: {n} row{'' if n == 1 else 's'}{money}")
        if self.xlsx_rows_left_out:
            lines.append(f"report.xlsx lists only rows needing attention "
                         f"({self.xlsx_rows_left_out} left out; report.csv has every row)")
        if self.report_dir is not None:
            lines.append(f"report: {self.report_dir}")
        return lines


def _ordered(totals: dict[str, int]) -> dict[str, int]:
    known = {s: totals[s] for s in STATUS_ORDER if s in totals}
    return known | {s: n for s, n in sorted(totals.items()) if s not in known}


def _kind_status_key(item: tuple[tuple[str, str], Any]) -> tuple[str, int, str]:
    (kind, status), _ = item
    rank = STATUS_ORDER.index(status) if status in STATUS_ORDER else len(STATUS_ORDER)
    return kind, rank, status


def _float_or_none(amount: Decimal | None) -> float | None:
    return None if amount is None else float(amount)


def _money(amount: Decimal) -> str:
    return f"{amount:,.2f}".replace(",", " ")


class _Tally:
    """Counts and exact amount sums per (kind, status), fed chunk by chunk."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.cents: dict[tuple[str, str], int] = {}
        self.exact: dict[tuple[str, str], Decimal] = {}
        self.rows = 0

    def add(self, frame: pd.DataFrame) -> None:
        n = len(frame)
        if not n:
            return
        self.rows += n
        kind = frame["kind"].astype(object).fillna("").to_numpy()
        status = frame["status"].astype(object).fillna("").to_numpy()
        # One code per (kind, status) pair: factorize + bincount (a groupby costs ~4x more).
        kind_codes, kinds = pd.factorize(kind)
        status_codes, statuses = pd.factorize(status)
        pair = kind_codes.astype(np.int64) * len(statuses) + status_codes
        pairs = [(str(k), str(st)) for k in kinds for st in statuses]
        for code, count in enumerate(np.bincount(pair, minlength=len(pairs)).tolist()):
            if count:
                k = pairs[code]
                self.counts[k] = self.counts.get(k, 0) + count
        if "amount" not in frame:
            return
        raw = frame["amount"]
        num = _numbers(raw)
        with np.errstate(invalid="ignore"):
            cents = np.rint(num * 100)
            # Float cents are exact for validated amounts (at most two decimals, well below
            # 2**53 cents); anything else (error rows, odd precision) is summed as Decimal.
            fast = (np.abs(num * 100 - cents) < 1e-6) & (np.abs(num) < 1e11) & (status != "error")
        have = ~np.isnan(num)
        if fast.any():
            fast_pair, fast_cents = pair[fast], cents[fast].astype(np.int64)
            for code in np.unique(fast_pair).tolist():  # a handful of (kind, status) pairs
                k = pairs[code]
                total = int(fast_cents[fast_pair == code].sum())
                self.cents[k] = self.cents.get(k, 0) + total
        slow = np.flatnonzero(have & ~fast)
        raw_values = raw.to_numpy(dtype=object)
        for i in slow:
            k = (str(kind[i]), str(status[i]))
            self.exact[k] = self.exact.get(k, Decimal(0)) + Decimal(str(raw_values[i]))

    def amounts(self) -> dict[tuple[str, str], Decimal]:
        keys = set(self.cents) | set(self.exact)
        return {k: Decimal(self.cents.get(k, 0)).scaleb(-2) + self.exact.get(k, Decimal(0))
                for k in keys}

    def totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for (_, status), n in self.counts.items():
            totals[status] = totals.get(status, 0) + n
        return _ordered(totals)


def _text_as_arrow(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with its columns of Python text (str or None) as Arrow text, the form the
    encoder works on; numbers, dates and other objects stay as they are. The caller's frame
    is left as it was."""
    out = frame.copy(deep=False)
    for name in frame.columns:
        series = frame[name]
        if series.dtype != object or name in INTEGER_COLUMNS or name in NUMBER_COLUMNS:
            continue
        text = _python_text(series)
        if text is not None:
            out[name] = pd.Series(text, index=frame.index, dtype=pd.ArrowDtype(_LS))
    return out


def _python_text(series: pd.Series) -> pa.Array | None:
    """An object column of str and None as Arrow text; None when it holds anything else
    (numbers, dates… in a text column)."""
    try:
        return pa.array(series.to_numpy(), type=_LS, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def _numbers(raw: pd.Series) -> np.ndarray:
    """The amounts as float64, NaN where empty or not a number."""
    if raw.dtype == object or isinstance(raw.dtype, pd.StringDtype):
        try:  # decimal strings (the report frame's amounts): Arrow's cast is ~8x faster
            text = (pa.array(raw.array) if isinstance(raw.dtype, pd.StringDtype) else
                    pa.array(raw.to_numpy(), type=pa.string(), from_pandas=True))
            return pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    return pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)


# --------------------------------------------------------------------------- encoder

_LS = pa.large_string()  # 64-bit offsets: a chunk's JSON text may pass 2 GB in theory
_EMPTY = pa.scalar("", _LS)
_QUOTE = pa.scalar('"', _LS)
_NULL = pa.scalar("null", _LS)
_CONTROL_RE = r"[\x00-\x1f]"
_CSV_SPECIAL = '",\r\n'


def _lit(text: str) -> pa.Scalar:
    return pa.scalar(text, _LS)


def _any_of(text: pa.Array, scan: _Bytes, needles: str, *, at_start: bool = False) -> pa.Array:
    """Which values hold (or start with) one of ``needles``: one plain substring kernel per
    needle the byte scan found (a regex costs ~30x more, mostly in setting it up)."""
    kernel = pc.starts_with if at_start else pc.match_substring
    mask: pa.Array | None = None
    for needle in needles:
        if scan.has(needle.encode()):
            found = kernel(text, needle)
            mask = found if mask is None else pc.or_(mask, found)
    if mask is None:
        return pa.array(np.zeros(len(text), dtype=bool))
    return pc.fill_null(mask, False)


def _true_count(mask: pa.Array) -> int:
    return int(pc.sum(mask).as_py() or 0)


def _arrow_text(series: pd.Series) -> pa.Array:
    """One column as an Arrow string array (null where missing), without per-value Python
    for the usual cases (str, int, pyarrow-backed columns)."""
    kind = series.dtype.kind
    if kind in "iu":
        return pc.cast(pa.array(series.to_numpy()), _LS)
    if isinstance(series.dtype, pd.StringDtype | pd.ArrowDtype) and kind in "OUT":
        arr = pa.array(series)
        return (arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr).cast(_LS)
    if kind == "O" and (text := _python_text(series)) is not None:
        return text
    values = series.to_numpy(dtype=object)
    return pa.array([_clean_text(v) for v in values], type=_LS)


def _clean_text(value: Any) -> str | None:
    text = _as_text(value)
    if text is None:
        return None
    # A lone surrogate (from a broken workbook) cannot be UTF-8: shown as "?" as before.
    return text.encode("utf-8", errors="replace").decode("utf-8")


def _as_text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _integer_values(series: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integers as decimal text (floats such as 201.0 come from NaN-widened columns).

    Returns:
        (texts, missing mask, not-an-integer mask): the last keep their own text.
    """
    raw_missing = series.isna().to_numpy()
    numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    missing = np.isnan(numbers)
    ints = np.where(missing, 0.0, numbers)
    bad = (missing & ~raw_missing) | (~missing & (ints != np.rint(ints)))
    values = np.rint(ints).astype(np.int64).astype(str).astype(object)
    if bad.any():  # not an integer after all: keep what it says
        raw = series.to_numpy(dtype=object)
        values[bad] = [_as_text(v) for v in raw[bad]]
    values[raw_missing] = None
    return values, raw_missing, bad


def _csv_quote(value: str) -> str:
    if '"' in value or "," in value or "\n" in value or "\r" in value:
        return '"' + value.replace('"', '""') + '"'
    return value


class _Bytes:
    """A string column's UTF-8 bytes, scanned once so that the usual column (no quotes, no
    control characters, nothing formula-like) skips the per-value kernels. A null's slot
    holds no bytes in the arrays made here; were it otherwise, a scan could only say "maybe",
    and the exact kernels decide."""

    def __init__(self, text: pa.Array) -> None:
        offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[
            text.offset:text.offset + len(text) + 1]
        data = text.buffers()[2]
        self.data = bytes(memoryview(data)[int(offsets[0]):int(offsets[-1])]) if data else b""
        self.u8 = np.frombuffer(self.data, dtype=np.uint8)
        self.starts = offsets[:-1][offsets[1:] > offsets[:-1]] - offsets[0]

    def has(self, needles: bytes) -> bool:
        return any(bytes([c]) in self.data for c in needles)

    def control(self) -> bool:
        return bool(len(self.u8)) and int(self.u8.min()) < 0x20

    def formula(self) -> bool:
        return bool(np.isin(self.u8[self.starts], _FORMULA_BYTES).any())


_FORMULA_BYTES = np.frombuffer("".join(FORMULA_START).encode(), dtype=np.uint8)


@dataclass(frozen=True)
class JsonQuoted:
    """A null-free column's escaped text, its JSON quotes still to add (by the row join)."""

    text: pa.Array


def _json_string(text: pa.Array, scan: _Bytes) -> pa.Array | pa.Scalar | JsonQuoted:
    """JSON string literals (``"null"`` where missing), as ``json.dumps`` would write them."""
    if text.null_count == len(text):
        return _NULL
    escaped = text
    if scan.has(b"\\"):
        escaped = pc.replace_substring(escaped, "\\", "\\\\")
    if scan.has(b'"'):
        escaped = pc.replace_substring(escaped, '"', '\\"')
    if not text.null_count and not scan.control():
        # The row join adds the quotes: one copy of the column fewer.
        return JsonQuoted(escaped)
    out = pc.binary_join_element_wise(_QUOTE, escaped, _QUOTE, _EMPTY)
    if scan.control():  # rare: \n, \t and \u00XX escapes, done the standard library's way
        control = pc.fill_null(pc.match_substring_regex(text, _CONTROL_RE), False)
        fixed = [encode_basestring(v) for v in text.filter(control).to_pylist()]
        out = pc.replace_with_mask(out, control, pa.array(fixed, type=_LS))
    return pc.fill_null(out, _NULL)


def _csv_cell(text: pa.Array, scan: _Bytes, formula_safe: bool) -> pa.Array | pa.Scalar:
    """CSV fields: formula-like text made inert (when asked), quoted when needed, "" if null."""
    if text.null_count == len(text):
        return _EMPTY
    out = text
    if formula_safe and scan.formula():
        formula = _any_of(out, scan, "".join(FORMULA_START), at_start=True)
        out = pc.if_else(formula, pc.binary_join_element_wise(_lit("'"), out, _EMPTY), out)
    if scan.has(_CSV_SPECIAL.encode()):
        special = _any_of(out, scan, _CSV_SPECIAL)
        # A date column has a comma in every value: all quoted; otherwise only the few that
        # need it are quoted and put back in place.
        every = _true_count(special) == len(out) - out.null_count  # nulls stay null
        picked = out if every else out.filter(special)
        if scan.has(b'"'):
            picked = pc.replace_substring(picked, '"', '""')
        quoted = pc.binary_join_element_wise(_QUOTE, picked, _QUOTE, _EMPTY)
        out = quoted if every else pc.replace_with_mask(out, special, quoted)
    return pc.fill_null(out, _EMPTY)


def _encode_column(name: str, series: pd.Series) -> tuple[pa.Array | pa.Scalar | JsonQuoted,
                                                           pa.Array | pa.Scalar]:
    """One column's JSON values and CSV fields, whole-column Arrow kernels."""
    if name in INTEGER_COLUMNS:
        if series.dtype.kind in "iu":
            text = _arrow_text(series)
            return text, text
        if series.dtype == object and not series.notna().any():  # not posted: all None
            return _NULL, _EMPTY
        values, mask, bad = _integer_values(series)
        if mask.all():
            return _NULL, _EMPTY
        csv_values = values.copy()
        csv_values[mask] = ""
        if bad.any():
            csv_values[bad] = [_csv_quote(escape_formula(v)) for v in csv_values[bad]]
        json_values = values.copy()
        json_values[mask | bad] = "null"  # the JSON promises an integer or null
        return pa.array(json_values, type=_LS), pa.array(csv_values, type=_LS)
    text = _arrow_text(series)
    if text.null_count == len(text):
        return _NULL, _EMPTY
    formula_safe = name not in VOCABULARY_COLUMNS and name not in NUMBER_COLUMNS
    scan = _Bytes(text)
    csv_part = _csv_cell(text, scan, formula_safe)
    if name not in NUMBER_COLUMNS:
        return _json_string(text, scan), csv_part
    if bool(pc.all(pc.match_substring_regex(text, f"^{_JSON_NUMBER}$")).as_py()):
        # Every value already is a JSON number literal ("1234.50"): use the text as is.
        return pc.fill_null(text, _NULL), csv_part
    numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    json_numbers = numbers.astype(str).astype(object)
    json_numbers[~np.isfinite(numbers)] = "null"
    return pa.array(json_numbers, type=_LS), csv_part


def _rows(n: int, parts: list[str | pa.Array | pa.Scalar]) -> pa.Array:
    """Concatenate the parts row by row (strings and scalars repeat on every row)."""
    merged: list[Any] = []
    for part in parts:
        if isinstance(part, pa.Scalar):
            part = part.as_py()
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    if not any(isinstance(p, pa.Array) for p in merged):
        merged.append(pa.array([""] * n, type=_LS))  # no column varies: still n rows
    return pc.binary_join_element_wise(
        *[_lit(p) if isinstance(p, str) else p for p in merged], _EMPTY)


def _text_bytes(rows: pa.Array) -> memoryview:
    """The UTF-8 bytes of a null-free Arrow string array, concatenated (no copy)."""
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int64)
    start, end = offsets[rows.offset], offsets[rows.offset + len(rows)]
    data = rows.buffers()[2]
    return memoryview(data if data is not None else b"")[int(start):int(end)]


class _Encoder:
    """Report-frame rows → JSON objects (each preceded by ``,\\n``) and CSV lines."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        self.keys = [encode_basestring(c) + ":" for c in self.columns]

    def encode(self, frame: pd.DataFrame,
               json_columns: Sequence[str]) -> tuple[memoryview, pa.Array]:
        """Encode rows; JSON objects carry ``json_columns``, CSV lines carry all columns.

        Args:
            frame: rows holding every column of ``self.columns`` (missing ones all None).
            json_columns: the columns this frame really has (other files' inputs left out).

        Returns:
            (the JSON text as UTF-8, the CSV lines: one Arrow string per frame row).
        """
        n = len(frame)
        present = set(json_columns)
        json_parts: list[str | pa.Array | pa.Scalar] = [",\n"]
        csv_parts: list[str | pa.Array | pa.Scalar] = []
        first_key = True
        for j, (name, key) in enumerate(zip(self.columns, self.keys, strict=True)):
            if name in frame.columns:
                json_part, csv_part = _encode_column(name, frame[name])
            else:
                json_part, csv_part = _NULL, _EMPTY
            if j:
                csv_parts.append(",")
            csv_parts.append(csv_part)
            if name not in present:
                continue
            json_parts.append(("{" if first_key else ",") + key)
            if isinstance(json_part, JsonQuoted):
                json_parts += ['"', json_part.text, '"']
            else:
                json_parts.append(json_part)
            first_key = False
        json_parts.append("}")
        csv_parts.append("\r\n")
        return _text_bytes(_rows(n, json_parts)), _rows(n, csv_parts)


# --------------------------------------------------------------------------- atomic files


def _temp_path(directory: Path, final_name: str) -> Path:
    """A new, empty temp file beside ``final_name``, with the mode the user's umask gives
    (``mkstemp`` would make it 0600: a report others in the group could not open)."""
    for _ in range(100):
        path = directory / f"{_TMP_PREFIX}{final_name}.{secrets.token_hex(4)}"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free temporary name for {final_name} in {directory}")


def _open_new(path: Path) -> IO[bytes]:
    """A new, empty temp file (from :func:`_temp_path`) opened for writing without
    truncating it: ext4 writes a truncated file's blocks out when it is closed (~0.6 s for the
    reports of a million rows, at the end of the run), while fsync does that anyway."""
    return open(path, "r+b")  # noqa: SIM115


_DATASYNC = getattr(os, "fdatasync", os.fsync)  # macOS has fsync only


def _to_disk(*files: IO[bytes]) -> None:
    for f in files:
        f.flush()
        _DATASYNC(f.fileno())


def _publish(temp: Path, final: Path) -> None:
    """fsync a finished temp file and rename it over the final name (atomic on POSIX)."""
    with open(temp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(temp, final)
    with contextlib.suppress(OSError):  # not every platform lets a directory be fsynced
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_csv_atomically(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]],
                         delimiter: str = ",") -> Path:
    """Write a UTF-8 (BOM) CSV through a temp file in the same folder, then rename it.

    Args:
        path: the final file.
        header: the header row.
        rows: data rows, already formula-safe.
        delimiter: the field delimiter.

    Returns:
        The path written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_path(path.parent, path.name)
    try:
        with open(temp, "w", encoding="utf-8-sig", newline="") as f:
            writer = csv.writer(f, delimiter=delimiter)
            writer.writerow(header)
            writer.writerows(rows)
        _publish(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


# --------------------------------------------------------------------------- writer


class _Worker:
    """Runs jobs in order on a background thread. Arrow kernels and file writes release the
    GIL, so encoding and disk I/O overlap the caller's reading and checking of the next chunk.
    The queue is short, which bounds the memory held; the first error is handed to the caller
    on its next call."""

    def __init__(self, name: str, depth: int) -> None:
        self._queue: queue.Queue[Callable[[], object] | None] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                if self._error is None:
                    job()
            except BaseException as exc:  # handed to the caller on its next call
                self._error = exc
            finally:
                self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, job: Callable[[], object]) -> None:
        self._raise()
        self._queue.put(job)

    def write(self, target: IO[bytes], data: bytes | memoryview) -> None:
        self.submit(lambda: target.write(data))

    def flush(self) -> None:
        self._queue.join()
        self._raise()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise()


class ReportWriter:
    """Streams report-frame chunks into report.json, report.csv and report.xlsx.

    Args:
        directory: the report folder (created if missing).
        run_id: the run's id.
        mode: ``validate``, ``dry-run`` or ``run``.
        started: when the run started (aware, or naive UTC).
        input_columns: the union of the input files' original headers, in a stable order
            (with or without the ``input:`` prefix).
        frame_columns: the frame's fixed columns; default ``importer.validate.FRAME_COLUMNS``.
        xlsx_all_rows_limit: above this many rows report.xlsx lists only rows needing attention.
    """

    def __init__(self, directory: Path, run_id: str, mode: str, started: datetime,
                 input_columns: Sequence[str], *, frame_columns: Sequence[str] | None = None,
                 xlsx_all_rows_limit: int = XLSX_ALL_ROWS_LIMIT) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id
        self.mode = mode
        self.started = started
        fixed = list(frame_columns if frame_columns is not None else default_frame_columns())
        inputs = list(dict.fromkeys(input_column(c) for c in input_columns))
        self.columns = fixed + [c for c in inputs if c not in fixed]
        self._fixed = fixed
        self._known = set(self.columns)
        self._encoder = _Encoder(self.columns)
        self._tally = _Tally()
        self._limit = xlsx_all_rows_limit
        self._temps: list[Path] = []
        opened: list[IO[bytes]] = []
        try:
            # report.json is streamed in place: the keys before "rows" are only known at
            # close, so room for them is kept at the start (JSON allows the whitespace) and
            # filled in then; copying ~750 MB of rows per million afterwards would double
            # the I/O.
            self._rows_path = self._temp("report.json")
            self._csv_path = self._temp("report.csv")
            self._spill_path = self._temp("report.xlsx.rows")
            self._rows_file: IO[bytes] = _open_new(self._rows_path)
            opened.append(self._rows_file)
            self._rows_file.write(b" " * HEAD_RESERVE)
            self._csv_file: IO[bytes] = _open_new(self._csv_path)
            opened.append(self._csv_file)
            # UTF-8 with BOM, so that Excel opens å ä ö right.
            self._csv_file.write(b"\xef\xbb\xbf" + (",".join(
                _csv_quote(escape_formula(c)) for c in self.columns) + "\r\n").encode())
            self._spill: IO[bytes] = _open_new(self._spill_path)
            opened.append(self._spill)
            self._io = _Worker("report-writer", 2)
            self._work = _Worker("report-encoder", 1)
        except BaseException:
            # Interrupted (SIGTERM) or failed half-way: no half-made writer, no temp files
            # left in the report folder (no caller's `with` will abort it).
            for worker in (getattr(self, "_io", None), getattr(self, "_work", None)):
                if worker is not None:
                    with contextlib.suppress(Exception):
                        worker.stop()
            for f in opened:
                with contextlib.suppress(OSError):
                    f.close()
            self._remove_temps()
            raise
        self._spill_rows = 0
        self._spill_all = True  # still keeping valid rows for the XLSX
        self._spill_lengths: list[np.ndarray] = []
        self._spill_ok: list[np.ndarray] = []
        self._left_out = 0
        self._first_json = True
        self._closed = False

    def _temp(self, name: str) -> Path:
        path = _temp_path(self.directory, name)
        self._temps.append(path)
        return path

    def __enter__(self) -> ReportWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self._closed:
            self.abort()

    def add(self, frame: pd.DataFrame) -> None:
        """Append one report-frame chunk (any number of rows) to every report file.

        Args:
            frame: rows with the frame columns and the file's ``input:<header>`` columns.

        Raises:
            ValueError: the frame has a column the writer was not told about.
        """
        if self._closed:
            raise ValueError("the report is already closed")
        unknown = [c for c in frame.columns if c not in self._known and not c.startswith("_")]
        if unknown:
            raise ValueError(f"report frame has columns the report was not opened with: "
                             f"{unknown}; pass them in input_columns")
        if not len(frame):
            return
        # The parts that need Python objects are done here, while the encoder's thread
        # still encodes the frame before (it is the slower one on large files).
        self._tally.add(frame)
        frame = _text_as_arrow(frame)
        # One frame in flight: it is encoded while the caller checks the next one.
        self._work.flush()
        self._work.submit(lambda: self._encode(frame))

    def _encode(self, frame: pd.DataFrame) -> None:
        json_columns = [c for c in self.columns if c in frame.columns or c in self._fixed]
        statuses = frame["status"].astype(object).to_numpy()
        for start in range(0, len(frame), _SUB_BATCH):
            part = frame.iloc[start:start + _SUB_BATCH]
            json_bytes, csv_rows = self._encoder.encode(part, json_columns)
            if self._first_json:  # no comma before the very first row
                json_bytes = json_bytes[2:]
                self._first_json = False
            self._io.write(self._rows_file, json_bytes)
            csv_bytes = _text_bytes(csv_rows)
            self._io.write(self._csv_file, csv_bytes)
            self._spill_xlsx(csv_bytes, csv_rows, statuses[start:start + _SUB_BATCH])
        # On disk as the run goes, by the writer's thread: the fsync at the end (a report is
        # put in place only once it is on disk) then has little left to wait for.
        self._io.submit(lambda: _to_disk(self._rows_file, self._csv_file))

    def _spill_xlsx(self, csv_bytes: memoryview, csv_rows: pa.Array,
                    statuses: np.ndarray) -> None:
        """Keep the rows report.xlsx will list, as CSV text on disk (memory stays flat)."""
        keep_all = self._spill_all and self._tally.rows <= self._limit
        if self._spill_all and not keep_all:
            self._drop_ok_rows_from_spill()
        if keep_all:
            self._io.write(self._spill, csv_bytes)
            self._spill_rows += len(statuses)
            # Each row's byte length and status: dropping the valid rows later needs no parse.
            self._spill_lengths.append(np.diff(np.frombuffer(
                csv_rows.buffers()[1], dtype=np.int64)[csv_rows.offset:
                                                       csv_rows.offset + len(csv_rows) + 1]))
            self._spill_ok.append(np.isin(statuses, OK_STATUSES))
            return
        attention = ~np.isin(statuses, OK_STATUSES)
        self._left_out += int((~attention).sum())
        if not attention.any():
            return
        room = XLSX_MAX_ROWS - self._spill_rows
        chosen = csv_rows.filter(pa.array(attention))[:max(room, 0)]
        self._left_out += int(attention.sum()) - len(chosen)
        if len(chosen):
            self._io.write(self._spill, _text_bytes(chosen))
        self._spill_rows += len(chosen)

    def _drop_ok_rows_from_spill(self) -> None:
        self._io.flush()
        self._spill_all = False
        self._spill.close()
        kept_path = self._temp("report.xlsx.rows")
        lengths = np.concatenate(self._spill_lengths or [np.empty(0, dtype=np.int64)])
        ok = np.concatenate(self._spill_ok or [np.empty(0, dtype=bool)])
        self._spill_lengths, self._spill_ok = [], []
        ends = np.cumsum(lengths)
        starts = ends - lengths
        # Runs of consecutive rows to keep: one read per run (rows needing attention are few).
        keep = np.flatnonzero(~ok)
        breaks = np.flatnonzero(np.diff(keep) != 1) + 1
        with open(self._spill_path, "rb") as src, _open_new(kept_path) as dst:
            for run in np.split(keep, breaks) if len(keep) else []:
                src.seek(int(starts[run[0]]))
                dst.write(src.read(int(ends[run[-1]] - starts[run[0]])))
        self._left_out += int(ok.sum())
        self._spill_path.unlink()
        self._spill_path = kept_path
        self._spill_rows = len(keep)
        self._spill = open(kept_path, "ab")  # noqa: SIM115

    def close(self, files: Sequence[FileInfo], finished: datetime,
              extra: dict[str, Any] | None = None) -> Summary:
        """Write report.json, report.csv and report.xlsx into place and summarise the run.

        Args:
            files: the run's input files (``read.FileInfo``), rejected ones included.
            finished: when the run finished.
            extra: more top-level keys for report.json (placed before ``rows``).

        Returns:
            The run's Summary.
        """
        if self._closed:
            raise ValueError("the report is already closed")
        self._closed = True
        try:
            self._work.stop()
            self._io.stop()
            for f in (self._rows_file, self._csv_file, self._spill):
                f.close()
            summary = Summary(totals=self._tally.totals(), amounts=self._tally.amounts(),
                              rows=self._tally.rows, counts=dict(self._tally.counts),
                              files=[_file_entry(f) for f in files],
                              report_dir=self.directory, xlsx_rows_left_out=self._left_out)
            head = self._head(summary, finished, extra)
            self._write_xlsx(summary, head)
            _publish(self._csv_path, self.directory / "report.csv")
            head_text = (json.dumps(head, ensure_ascii=False, indent=1)[:-2]
                         + ',\n "rows": [\n').encode("utf-8")
            json_temp = self._rows_path
            rows_size = os.path.getsize(json_temp) - HEAD_RESERVE
            if len(head_text) <= HEAD_RESERVE and rows_size > COPY_BELOW:
                with open(json_temp, "rb+") as out:
                    out.write(head_text)
                    out.seek(0, os.SEEK_END)
                    out.write(b"\n]}\n")
            else:  # small (a tidy file costs little) or a head too large for the room kept
                json_temp = self._temp("report.json")
                with _open_new(json_temp) as out, open(self._rows_path, "rb") as rows:
                    out.write(head_text)
                    rows.seek(HEAD_RESERVE)
                    while block := rows.read(1 << 20):
                        out.write(block)
                    out.write(b"\n]}\n")
            _publish(json_temp, self.directory / "report.json")
        finally:
            self._remove_temps()
        return summary

    def abort(self) -> None:
        """Drop the half-written report (temp files); nothing is put in place."""
        self._closed = True
        with contextlib.suppress(Exception):  # aborting: a write error is moot now
            self._work.stop()
        with contextlib.suppress(Exception):
            self._io.stop()
        for f in (self._rows_file, self._csv_file, self._spill):
            with contextlib.suppress(OSError):
                f.close()
        self._remove_temps()

    def _remove_temps(self) -> None:
        for path in self._temps:
            path.unlink(missing_ok=True)

    def _head(self, summary: Summary, finished: datetime,
              extra: dict[str, Any] | None) -> dict[str, Any]:
        head: dict[str, Any] = {
            "run_id": self.run_id,
            "mode": self.mode,
            "started": iso_utc(self.started),
            "finished": iso_utc(finished),
            "files": summary.files,
            "totals": summary.totals,
            # Every (kind, status) with rows; amount null where none is known (cancellations).
            "amounts": [
                {"kind": kind, "status": status, "rows": rows,
                 "amount": _float_or_none(summary.amounts.get((kind, status)))}
                for (kind, status), rows in sorted(summary.counts.items(), key=_kind_status_key)
            ],
            "columns": self.columns,
        }
        clash = set(extra or {}) & (set(head) | {"rows"})
        if clash:
            raise ValueError(f"extra report keys clash with the report's own: {sorted(clash)}")
        head.update(extra or {})
        return head  # "rows" is streamed in after these keys

    def _write_xlsx(self, summary: Summary, head: dict[str, Any]) -> None:
        from importer.report_xlsx import write_report_xlsx

        temp = self._temp("report.xlsx")
        # A report cell is as long as its input cell (a 200 000-character value is reported,
        # then refused); the csv module's default cap of 128 KiB per field would stop here.
        csv.field_size_limit(2**31 - 1)
        with open(self._spill_path, encoding="utf-8", newline="") as spill:
            write_report_xlsx(temp, head, summary, self.columns, csv.reader(spill),
                              truncated=not self._spill_all, limit=self._limit)
        _publish(temp, self.directory / "report.xlsx")


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` (naive datetimes are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _file_entry(info: FileInfo) -> dict[str, Any]:
    return {"name": info.name, "path": str(info.path), "sha256": info.sha256, "size": info.size,
            "kinds": list(info.kinds), "rows": info.rows, "rejected": info.rejected,
            "notes": list(info.notes)}


# --------------------------------------------------------------------------- failed rows


def failed_rows_name(file_name: str, sheet: str | None = None, kind: str | None = None) -> str:
    """The failed-rows file name for one input file (and worksheet).

    Args:
        file_name: the input file's base name.
        sheet: the worksheet name, None for a CSV.
        kind: the rows' kind; put in front when the name would not tell it (a file read with
            ``--kind``), so that the failed-rows file imports again without it.

    Returns:
        ``failed-[<kind>-]<stem>[-<sheet>].csv`` with characters unsafe in file names replaced.
    """
    stem = Path(file_name).stem + (f"-{sheet}" if sheet else "")
    told = kind_from_label(stem)
    if kind is not None and (told is None or told.name != kind):
        named = f"{kind}-{stem}"
        again = kind_from_label(named)
        if again is None or again.name != kind:  # the name told another kind, or two
            rest = re.sub(r"[-_. ]{2,}", "-", without_kind_words(stem)).strip("-_. ")
            named = f"{kind}-{rest}" if rest else kind
        stem = named
    return "failed-" + re.sub(r"[^\w.\- ]+", "_", stem).strip() + ".csv"


def write_failed_rows(path: Path, rows: list[dict[str, str]], columns: list[str],
                      delimiter: str = ",") -> Path:
    """Write the rows in error with the input's own columns, ready to fix and import again.

    Columns are the input's original headers in their order, then ``source_row`` (the row
    in the first file, as the user sees it there), ``error_reason`` and ``error_message``
    (the importer ignores unknown columns, so the file imports as it stands once corrected;
    a failed-rows file imported again gets fresh ones, not a second set, and keeps the first
    file's ``source_row``). UTF-8 with BOM, the input CSV's delimiter (a Swedish Excel opens
    a ``;`` file in columns, a ``,`` one in one column), formula-safe, written atomically.

    Plain numbers such as ``-100`` or ``+46 70 123`` are left as they are: a spreadsheet reads
    them as numbers, never as formulas, and quoting them would change the value on re-import.

    Args:
        path: the file to write (see ``failed_rows_name``).
        rows: one dict per row in error, keyed by original header (plus the extras).
        columns: the input's original headers, in file order.
        delimiter: the input's (``,`` for a workbook).

    Returns:
        The path written.
    """
    own = [c for c in columns if c not in FAILED_EXTRA_COLUMNS]
    header = own + list(FAILED_EXTRA_COLUMNS)
    return write_csv_atomically(path, [escape_formula(h) for h in header],
                                ([_safe_reimport(row.get(c)) for c in header] for row in rows),
                                delimiter)


_PLAIN_NUMBER = re.compile(r"[+-]?\d[\d\s\u00a0.,]*")


def _safe_reimport(value: Any) -> str:
    text = _as_text(value) or ""
    if _PLAIN_NUMBER.fullmatch(text):
        return text
    return escape_formula(text)


