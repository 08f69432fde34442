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
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from json.encoder import encode_basestring
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from types import TracebackType

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
FAILED_EXTRA_COLUMNS = ("error_reason", "error_message")

_FORMULA_AFTER_SEP = re.compile("\x00[=+\\-@\t\r]")
_CONTROL = re.compile("[\x00-\x1f]")
_JSON_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?"
_JSON_NUMBERS = re.compile(f"{_JSON_NUMBER}(?:\x00{_JSON_NUMBER})*")
_SUB_BATCH = 20_000  # rows encoded at a time: bounds the transient text to ~20 MB
_TMP_PREFIX = ".amili-tmp-"
HEAD_RESERVE = 256 * 1024  # bytes kept at the start of report.json for the keys before rows
COPY_BELOW = 64 * 1024 * 1024  # smaller reports are copied behind their head (no blank room)


class FileSummaryLike(Protocol):
    """What the report needs from ``read.FileInfo`` (kept structural: no import cycle)."""

    path: Path
    name: str
    sha256: str
    size: int
    kinds: list[str]
    rows: int
    rejected: str | None
    notes: list[str]


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
        for (kind, status), amount in sorted(self.amounts.items(), key=_kind_status_key):
            n = self.counts.get((kind, status), 0)
            lines.append(f"  {kind} {status}: {n} rows, {_money(amount)} SEK")
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


def _money(amount: Decimal) -> str:
    return f"{amount:,.2f}".replace(",", " ")


def _pair(key: Any) -> tuple[str, str]:
    return str(key[0]), str(key[1])


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
        for key, count in pd.DataFrame({"k": kind, "s": status}).groupby(["k", "s"]).size().items():
            k = _pair(key)
            self.counts[k] = self.counts.get(k, 0) + int(count)
        if "amount" not in frame:
            return
        raw = frame["amount"]
        num = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            cents = np.rint(num * 100)
            # Float cents are exact for validated amounts (at most two decimals, well below
            # 2**53 cents); anything else (error rows, odd precision) is summed as Decimal.
            fast = (np.abs(num * 100 - cents) < 1e-6) & (np.abs(num) < 1e11) & (status != "error")
        have = ~np.isnan(num)
        if fast.any():
            fast_sum = pd.Series(cents[fast].astype(np.int64)).groupby(
                [kind[fast], status[fast]]).sum()
            for key, value in fast_sum.items():
                k = _pair(key)
                self.cents[k] = self.cents.get(k, 0) + int(value)
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


# --------------------------------------------------------------------------- encoder


@dataclass
class _Encoded:
    """One column's pieces: a literal shared by every row, or one string per row."""

    json: str | np.ndarray
    csv: str | np.ndarray
    json_quoted_raw: bool = False  # json holds the raw strings; quotes go in the literals


def _text_values(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Object array of str (None where missing) and the missing mask."""
    kind = series.dtype.kind
    if kind in "iu":
        values = series.to_numpy().astype(str).astype(object)
        return values, np.zeros(len(values), dtype=bool)
    mask = series.isna().to_numpy()
    if kind == "f":
        values = series.to_numpy().astype(str).astype(object)
        values[mask] = None
        return values, mask
    values = series.to_numpy(dtype=object, na_value=None)  # type: ignore[call-overload]
    if isinstance(series.dtype, pd.StringDtype) or pd.api.types.infer_dtype(
            values, skipna=True) in ("string", "empty"):
        return values, mask
    return np.array([_as_text(v) for v in values], dtype=object), mask


def _as_text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _integer_values(series: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integers as decimal text (floats such as 201.0 come from NaN-widened columns).

    Returns:
        (texts, missing mask, not-an-integer mask): the last keep their own text.
    """
    if series.dtype.kind in "iu":
        none = np.zeros(len(series), dtype=bool)
        return series.to_numpy().astype(str).astype(object), none, none
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


def _encode_column(name: str, series: pd.Series) -> _Encoded:
    """Encode one column for JSON and CSV, checking the whole column at once."""
    if name in INTEGER_COLUMNS:
        values, mask, bad = _integer_values(series)
        if mask.all():
            return _Encoded("null", "")
        csv_values = values.copy()
        csv_values[mask] = ""
        if bad.any():
            csv_values[bad] = [_csv_quote(escape_formula(v)) for v in csv_values[bad]]
        json_values = values.copy()
        json_values[mask | bad] = "null"  # the JSON promises an integer or null
        return _Encoded(json_values, csv_values)
    values, mask = _text_values(series)
    n = len(values)
    if mask.all():
        return _Encoded("null", "")
    present = values[~mask] if mask.any() else values
    joined = "\x00".join(present)
    separators_only = joined.count("\x00") == len(present) - 1
    has_control = not separators_only or _CONTROL.search(joined.replace("\x00", "")) is not None
    json_clean = not has_control and '"' not in joined and "\\" not in joined
    csv_clean = not has_control and '"' not in joined and "," not in joined
    escape = name not in VOCABULARY_COLUMNS and name not in NUMBER_COLUMNS
    formula = escape and (str(present[0]).startswith(FORMULA_START)
                          or _FORMULA_AFTER_SEP.search(joined) is not None)
    constant = not mask.any() and n > 1 and present[0] == present[-1] and bool(
        (present == present[0]).all())

    json_part: str | np.ndarray
    if name in NUMBER_COLUMNS and _JSON_NUMBERS.fullmatch(joined):
        # Every value already is a JSON number literal ("1234.50"): use the text as is.
        if constant:
            json_part = present[0]
        else:
            literal = values.copy()
            literal[mask] = "null"
            json_part = literal
    elif name in NUMBER_COLUMNS:
        numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
        finite = np.isfinite(numbers)
        json_numbers = numbers.astype(str).astype(object)
        json_numbers[~finite] = "null"
        json_part = json_numbers
        if finite.all() and constant:
            json_part = str(json_numbers[0])
    elif constant:
        json_part = encode_basestring(present[0])
    elif json_clean and not mask.any():
        return _Encoded(values, _csv_part(values, mask, csv_clean, formula), True)
    elif json_clean:
        filled = values.copy()
        filled[mask] = ""
        quoted = np.add(np.add('"', filled), '"')
        quoted[mask] = "null"
        json_part = quoted
    else:
        json_part = np.array(["null" if v is None else encode_basestring(v) for v in values],
                             dtype=object)
    if constant:
        text = escape_formula(present[0]) if formula else present[0]
        return _Encoded(json_part, text if csv_clean else _csv_quote(text))
    return _Encoded(json_part, _csv_part(values, mask, csv_clean, formula))


def _csv_part(values: np.ndarray, mask: np.ndarray, clean: bool, formula: bool) -> np.ndarray:
    out = values
    if formula:
        out = np.array([v if v is None else escape_formula(v) for v in values], dtype=object)
    if not clean:
        out = np.array([None if v is None else _csv_quote(v) for v in out], dtype=object)
    if mask.any():
        out = out.copy() if out is values else out
        out[mask] = ""
    return out


def _grid(n: int, segments: list[str | np.ndarray]) -> np.ndarray:
    """Pieces row-major: literal segments repeat on every row, arrays give one piece per row."""
    merged: list[str | np.ndarray] = []
    for seg in segments:
        if isinstance(seg, str) and merged and isinstance(merged[-1], str):
            merged[-1] += seg
        else:
            merged.append(seg)
    grid = np.empty((n, len(merged)), dtype=object)
    for j, seg in enumerate(merged):
        grid[:, j] = seg
    return grid


def _join(grid: np.ndarray) -> str:
    return "".join(grid.ravel().tolist())


class _Encoder:
    """Report-frame rows → JSON objects (each preceded by ``,\\n``) and CSV lines."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        self.keys = [encode_basestring(c) + ":" for c in self.columns]

    def encode(self, frame: pd.DataFrame,
               json_columns: Sequence[str]) -> tuple[str, str, np.ndarray]:
        """Encode rows; JSON objects carry ``json_columns``, CSV lines carry all columns.

        Args:
            frame: rows holding every column of ``self.columns`` (missing ones all None).
            json_columns: the columns this frame really has (other files' inputs left out).

        Returns:
            (JSON text, CSV text, the CSV pieces: one grid row per frame row).
        """
        n = len(frame)
        present = set(json_columns)
        json_segments: list[str | np.ndarray] = []
        csv_segments: list[str | np.ndarray] = []
        first_key = True
        for j, (name, key) in enumerate(zip(self.columns, self.keys, strict=True)):
            if name in frame.columns:
                enc = _encode_column(name, frame[name])
            else:
                enc = _Encoded("null", "")
            if j:
                csv_segments.append(",")
            csv_segments.append(enc.csv)
            if name not in present:
                continue
            json_segments.append(("{" if first_key else ",") + key)
            first_key = False
            if enc.json_quoted_raw:
                json_segments.extend(['"', enc.json, '"'])
            else:
                json_segments.append(enc.json)
        json_segments.insert(0, ",\n")
        json_segments.append("}")
        csv_segments.append("\r\n")
        csv_grid = _grid(n, csv_segments)
        return _join(_grid(n, json_segments)), _join(csv_grid), csv_grid


# --------------------------------------------------------------------------- atomic files


def _temp_path(directory: Path, final_name: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{final_name}.", dir=directory)
    os.close(fd)
    return Path(name)


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


def write_csv_atomically(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> Path:
    """Write a UTF-8 (BOM) CSV through a temp file in the same folder, then rename it.

    Args:
        path: the final file.
        header: the header row.
        rows: data rows, already formula-safe.

    Returns:
        The path written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_path(path.parent, path.name)
    try:
        with open(temp, "w", encoding="utf-8-sig", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
        _publish(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


# --------------------------------------------------------------------------- writer


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", errors="replace")


class _WriterThread:
    """Writes on a background thread: file writes release the GIL, so the disk works while
    the next batch is encoded. The queue is short, which bounds the memory held."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[IO[bytes], bytes | memoryview] | None] = queue.Queue(4)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="report-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    item[0].write(item[1])
            except BaseException as exc:  # handed to the caller on its next call
                self._error = exc
            finally:
                self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, target: IO[bytes], data: bytes | memoryview) -> None:
        self._raise()
        self._queue.put((target, data))

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
        # report.json is streamed in place: the keys before "rows" are only known at close,
        # so room for them is kept at the start (JSON allows the whitespace) and filled in
        # then; copying ~750 MB of rows per million after the fact would double the I/O.
        self._rows_path = self._temp("report.json")
        self._csv_path = self._temp("report.csv")
        self._spill_path = self._temp("report.xlsx.rows")
        self._rows_file: IO[bytes] = open(self._rows_path, "wb")  # noqa: SIM115
        self._rows_file.write(b" " * HEAD_RESERVE)
        self._csv_file: IO[bytes] = open(self._csv_path, "wb")  # noqa: SIM115
        # UTF-8 with BOM, so that Excel opens å ä ö right.
        self._csv_file.write(b"\xef\xbb\xbf" + (",".join(
            _csv_quote(escape_formula(c)) for c in self.columns) + "\r\n").encode())
        self._spill: IO[bytes] = open(self._spill_path, "wb")  # noqa: SIM115
        self._io = _WriterThread()
        self._spill_rows = 0
        self._spill_all = True  # still keeping valid rows for the XLSX
        self._left_out = 0
        self._first_json = True
        self._closed = False
        status_index = self.columns.index("status")
        self._status_index = status_index

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
        self._tally.add(frame)
        json_columns = [c for c in self.columns if c in frame.columns or c in self._fixed]
        statuses = frame["status"].astype(object).to_numpy()
        for start in range(0, len(frame), _SUB_BATCH):
            part = frame.iloc[start:start + _SUB_BATCH]
            json_text, csv_text, csv_grid = self._encoder.encode(part, json_columns)
            data = json_text.encode("utf-8", errors="replace")
            view = memoryview(data)
            if self._first_json:  # no comma before the very first row
                view = view[2:]
                self._first_json = False
            self._io.write(self._rows_file, view)
            self._io.write(self._csv_file, _utf8(csv_text))
            self._spill_xlsx(csv_text, csv_grid, statuses[start:start + _SUB_BATCH])

    def _spill_xlsx(self, csv_text: str, csv_grid: np.ndarray, statuses: np.ndarray) -> None:
        """Keep the rows report.xlsx will list, as CSV text on disk (memory stays flat)."""
        keep_all = self._spill_all and self._tally.rows <= self._limit
        if self._spill_all and not keep_all:
            self._drop_ok_rows_from_spill()
        if keep_all:
            self._io.write(self._spill, _utf8(csv_text))
            self._spill_rows += len(statuses)
            return
        attention = ~np.isin(statuses, OK_STATUSES)
        self._left_out += int((~attention).sum())
        if not attention.any():
            return
        room = XLSX_MAX_ROWS - self._spill_rows
        chosen = csv_grid[attention][:max(room, 0)]
        self._left_out += int(attention.sum()) - len(chosen)
        self._io.write(self._spill, _utf8("".join(chosen.ravel().tolist())))
        self._spill_rows += len(chosen)

    def _drop_ok_rows_from_spill(self) -> None:
        self._io.flush()
        self._spill_all = False
        self._spill.close()
        kept_path = self._temp("report.xlsx.rows")
        kept = 0
        with (open(self._spill_path, encoding="utf-8", newline="") as src,
              open(kept_path, "w", encoding="utf-8", newline="") as dst):
            writer = csv.writer(dst, lineterminator="\r\n")
            for row in csv.reader(src):
                if row[self._status_index] in OK_STATUSES:
                    self._left_out += 1
                else:
                    writer.writerow(row)
                    kept += 1
        self._spill_path.unlink()
        self._spill_path = kept_path
        self._spill_rows = kept
        self._spill = open(kept_path, "ab")  # noqa: SIM115

    def close(self, files: Sequence[FileSummaryLike], finished: datetime,
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
                with open(json_temp, "wb") as out, open(self._rows_path, "rb") as rows:
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
            "amounts": [
                {"kind": kind, "status": status, "rows": summary.counts.get((kind, status), 0),
                 "amount": float(amount)}
                for (kind, status), amount in sorted(summary.amounts.items(),
                                                     key=_kind_status_key)
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
        with open(self._spill_path, encoding="utf-8", newline="") as spill:
            write_report_xlsx(temp, head, summary, self.columns, csv.reader(spill),
                              truncated=not self._spill_all, limit=self._limit)
        _publish(temp, self.directory / "report.xlsx")


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` (naive datetimes are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _file_entry(info: FileSummaryLike) -> dict[str, Any]:
    return {"name": info.name, "path": str(info.path), "sha256": info.sha256, "size": info.size,
            "kinds": list(info.kinds), "rows": info.rows, "rejected": info.rejected,
            "notes": list(info.notes)}


# --------------------------------------------------------------------------- failed rows


def failed_rows_name(file_name: str, sheet: str | None = None) -> str:
    """The failed-rows file name for one input file (and worksheet).

    Args:
        file_name: the input file's base name.
        sheet: the worksheet name, None for a CSV.

    Returns:
        ``failed-<stem>[-<sheet>].csv`` with characters unsafe in file names replaced.
    """
    stem = Path(file_name).stem + (f"-{sheet}" if sheet else "")
    return "failed-" + re.sub(r"[^\w.\- ]+", "_", stem).strip() + ".csv"


def write_failed_rows(path: Path, rows: list[dict[str, str]], columns: list[str]) -> Path:
    """Write the rows in error with the input's own columns, ready to fix and import again.

    Columns are the input's original headers in their order, then ``error_reason`` and
    ``error_message`` (the importer ignores unknown columns, so the file imports as it
    stands once corrected; a failed-rows file imported again gets fresh ones, not a second
    pair). UTF-8 with BOM, formula-safe, written atomically.

    Plain numbers such as ``-100`` or ``+46 70 123`` are left as they are: a spreadsheet reads
    them as numbers, never as formulas, and quoting them would change the value on re-import.

    Args:
        path: the file to write (see ``failed_rows_name``).
        rows: one dict per row in error, keyed by original header (plus the two extras).
        columns: the input's original headers, in file order.

    Returns:
        The path written.
    """
    own = [c for c in columns if c not in FAILED_EXTRA_COLUMNS]
    header = own + list(FAILED_EXTRA_COLUMNS)
    return write_csv_atomically(path, [escape_formula(h) for h in header],
                                ([_safe_reimport(row.get(c)) for c in header] for row in rows))


_PLAIN_NUMBER = re.compile(r"[+-]?\d[\d\s\u00a0.,]*")


def _safe_reimport(value: Any) -> str:
    text = _as_text(value) or ""
    if _PLAIN_NUMBER.fullmatch(text):
        return text
    return escape_formula(text)


def iter_report_rows(path: Path) -> Iterator[dict[str, Any]]:
    """Read the rows of a report.json back (tests and tools; loads the file whole).

    Args:
        path: a report.json.

    Returns:
        An iterator over the row objects.
    """
    with open(path, encoding="utf-8") as f:
        yield from json.load(f)["rows"]
