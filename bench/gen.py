"""Data generators for the benchmarks: realistic payments CSVs and workbooks, and sandbox cases.

Every generator is deterministic for a given seed (and for a given "today": bank dates are spread
over the 330 days up to yesterday, so that none is in the future), and writes to a cache path whose
name carries the parameters, so that a second `make bench` reuses the files instead of rewriting
a million rows.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from importer.kinds import PAYMENTS

# Bump when the generated content changes, so that cached files are not reused.
GENERATOR_VERSION = 3

PAYMENTS_HEADER = list(PAYMENTS.fields)
RFC1123 = "%a, %d %b %Y %H:%M:%S GMT"
# Bank dates span the last 330 days (today: 2026-11 → Dec 2025 to Nov 2026). Not further back:
# the importer warns about bank dates more than a year old, and a file where half the rows are
# warnings is not what a nightly export looks like (warnings also go to report.xlsx in full).
HISTORY_DAYS = 330
ERROR_SHARE = 0.005

# The kinds of mistakes a creditor's export really makes; one is injected per error row.
ERROR_KINDS = (
    "ambiguous_amount",  # 1,234.50
    "wrong_weekday",  # Mon for a Tuesday
    "bad_currency",  # EUR
    "missing_creditor",
    "case_and_invoice",  # both given
    "future_date",
    "bad_case_id",  # 23 hex digits
    "zero_amount",
)


def hex24(rng: random.Random) -> str:
    """A random 24-hex-digit id, like a MongoDB ObjectId."""
    return f"{rng.getrandbits(96):024x}"


@dataclass(frozen=True)
class Generated:
    """A generated input file and what was put in it.

    Attributes:
        path: the file.
        rows: data rows written.
        error_rows: rows deliberately made invalid.
    """

    path: Path
    rows: int
    error_rows: int


def _date_pool(rng: random.Random, today: date, size: int, days: int = HISTORY_DAYS) -> list[str]:
    """RFC 1123 bank dates on weekdays in the `days` before today, at business-ish hours."""
    first = today - timedelta(days=days)
    span = (today - first).days  # up to yesterday: never in the future
    start = datetime.combine(first, datetime.min.time(), UTC)
    moments: list[datetime] = []
    while len(moments) < size:
        moment = start + timedelta(days=rng.randrange(span),
                                   seconds=rng.randrange(6 * 3600, 20 * 3600))
        if moment.weekday() < 5:  # banks book on weekdays
            moments.append(moment)
    moments.sort()
    # Sorted, so that an index at or after a bank date's index is a later (or equal) moment.
    return [m.strftime(RFC1123) for m in moments]


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def _cached(path: Path, rows: int) -> Generated | None:
    meta = _meta_path(path)
    if path.exists() and meta.exists():
        data = json.loads(meta.read_text())
        made = date.fromisoformat(data.get("made", "2000-01-01"))
        fresh = (datetime.now(UTC).date() - made).days <= 14  # dates age; regenerate now and then
        if data.get("rows") == rows and data.get("version") == GENERATOR_VERSION and fresh:
            return Generated(path, rows, int(data["error_rows"]))
    return None


def _remember(gen: Generated) -> Generated:
    _meta_path(gen.path).write_text(
        json.dumps({"rows": gen.rows, "error_rows": gen.error_rows, "version": GENERATOR_VERSION,
                    "made": datetime.now(UTC).date().isoformat()})
    )
    return gen


def payment_rows(
    rows: int, seed: int = 1, today: date | None = None, error_share: float = ERROR_SHARE
) -> tuple[list[list[str]], int]:
    """Realistic payments rows as text cells (the CSV form), with about `error_share` invalid.

    Args:
        rows: how many data rows.
        seed: the random seed; the same seed gives the same rows.
        today: the day the rows are generated for (bank dates end the day before).
        error_share: the share of rows given exactly one deliberate mistake.

    Returns:
        The rows (cells in `PAYMENTS_HEADER` order) and how many were made invalid.
    """
    rng = random.Random(seed)
    today = today or datetime.now(UTC).date()
    creditors = [hex24(rng) for _ in range(7)]
    cases = [hex24(rng) for _ in range(min(rows, 50_000))]
    dates = _date_pool(rng, today, 20_000)
    tomorrow = (datetime.now(UTC) + timedelta(days=30)).strftime(RFC1123)
    out: list[list[str]] = []
    errors = 0
    for i in range(rows):
        creditor = creditors[rng.randrange(len(creditors))]
        # Most creditors' systems know Amili's case id; some only their own invoice number.
        if rng.random() < 0.7:
            case, invoice = cases[rng.randrange(len(cases))], ""
        else:
            case, invoice = "", f"INV-{rng.randrange(2023, 2027)}-{rng.randrange(10**6):06d}"
        # Amounts: mostly a few hundred to a few thousand kronor, some large, always 2 decimals.
        amount = f"{min(rng.lognormvariate(6.5, 1.2), 999_999.99) + 1:.2f}"
        at = rng.randrange(len(dates))
        bank = dates[at]
        # Registered by the creditor on or after the bank date, for some rows only.
        registered = dates[rng.randrange(at, len(dates))] if rng.random() < 0.3 else ""
        reference = f"PAY-{seed}-{i:08d}"
        origin = "creditor_system" if rng.random() < 0.8 else ""
        row = [creditor, case, invoice, "SEK", amount, bank, registered, reference, origin]
        if rng.random() < error_share:
            errors += 1
            _inject_error(row, ERROR_KINDS[rng.randrange(len(ERROR_KINDS))], rng, tomorrow)
        out.append(row)
    return out, errors


def _inject_error(row: list[str], error: str, rng: random.Random, future: str) -> None:
    if error == "ambiguous_amount":
        row[4] = f"{rng.randrange(1, 99)},{rng.randrange(100, 999)}.{rng.randrange(100):02d}"
    elif error == "wrong_weekday":
        day = datetime.strptime(row[5], RFC1123)
        wrong = (day + timedelta(days=1)).strftime("%a")
        row[5] = wrong + row[5][3:]
    elif error == "bad_currency":
        row[3] = "EUR"
    elif error == "missing_creditor":
        row[0] = ""
    elif error == "case_and_invoice":
        row[1], row[2] = row[1] or hex24(rng), row[2] or f"INV-2025-{rng.randrange(10**6):06d}"
    elif error == "future_date":
        row[5] = future
    elif error == "bad_case_id":
        row[1], row[2] = hex24(rng)[:23], ""
    elif error == "zero_amount":
        row[4] = "0.00"


def payments_csv(directory: Path, rows: int, seed: int = 1) -> Generated:
    """Write (or reuse) `payments-<rows>.csv`: UTF-8, comma-separated, header row 1.

    Args:
        directory: where the file goes (created if missing).
        rows: data rows.
        seed: random seed.

    Returns:
        The file, its row count and how many rows carry a deliberate error.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"payments-{rows}-s{seed}.csv"
    hit = _cached(path, rows)
    if hit:
        return hit
    tmp = path.with_suffix(".tmp")
    errors = 0
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(PAYMENTS_HEADER)
        # In blocks, so that a million rows never sit in memory at once.
        block = 100_000
        for start in range(0, rows, block):
            part, err = payment_rows(min(block, rows - start), seed=seed * 1000 + start // block)
            errors += err
            writer.writerows(part)
    tmp.replace(path)
    return _remember(Generated(path, rows, errors))


def payments_xlsx(directory: Path, rows: int, seed: int = 1) -> Generated:
    """Write (or reuse) `payments-<rows>.xlsx`: a `payments` sheet, real date and number cells.

    A title row and a blank row sit above the header, as in creditors' exports; the bank date is
    an Excel date-time cell and the amount a number cell. No deliberate errors.

    Args:
        directory: where the file goes.
        rows: data rows.
        seed: random seed.

    Returns:
        The workbook, its row count and 0 error rows.
    """
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"payments-{rows}-s{seed}.xlsx"
    hit = _cached(path, rows)
    if hit:
        return hit
    data, _ = payment_rows(rows, seed=seed, error_share=0.0)
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("payments")
    ws.append(["Payments export, generated for the benchmark"])
    ws.append([])
    ws.append(PAYMENTS_HEADER)
    date_fmt = "yyyy-mm-dd hh:mm:ss"
    for row in data:
        bank = WriteOnlyCell(ws, value=datetime.strptime(row[5], RFC1123))
        bank.number_format = date_fmt
        registered: object = None
        if row[6]:
            cell = WriteOnlyCell(ws, value=datetime.strptime(row[6], RFC1123))
            cell.number_format = date_fmt
            registered = cell
        amount = WriteOnlyCell(ws, value=float(row[4]))
        amount.number_format = "0.00"
        ws.append([row[0], row[1] or None, row[2] or None, row[3], amount, bank, registered,
                   row[7], row[8] or None])
    tmp = path.with_name(path.stem + ".tmp.xlsx")
    wb.save(tmp)
    tmp.replace(path)
    return _remember(Generated(path, rows, 0))


def sandbox_cases(creditor: str, count: int, seed: int = 7) -> list[dict[str, object]]:
    """Open cases for the posting benchmark, each with room for many small payments.

    Args:
        creditor: the creditor id every case belongs to.
        count: number of cases.
        seed: random seed.

    Returns:
        Case dicts: `_id`, `creditor`, `invoice_number`, `reference_number`, `capital`.
    """
    rng = random.Random(seed)
    return [
        {
            "_id": hex24(rng),
            "creditor": creditor,
            "invoice_number": f"BENCH-{i:06d}",
            "reference_number": f"{rng.randrange(10**12):012d}",
            "capital": 1_000_000.0,
        }
        for i in range(count)
    ]


def posting_csv(
    directory: Path, name: str, creditor: str, case_ids: list[str], rows: int, seed: int = 3
) -> Generated:
    """Write a valid payments CSV whose rows go round-robin over `case_ids` (1 SEK to 99 SEK each).

    Round-robin order keeps rows of the same case far apart, so that per-case ordering does not
    serialise the posting; small amounts keep every case open and bank dates from the last 60
    days draw no warning, so every row is `completed`.

    Args:
        directory: where the file goes.
        name: file name (must name the kind, e.g. `payments-post.csv`).
        creditor: creditor id of every row.
        case_ids: cases to spread the rows over.
        rows: data rows.
        seed: random seed.

    Returns:
        The file and its row count.
    """
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    today = datetime.now(UTC).date()
    # Recent dates only: the importer warns about bank dates more than a year old, and every
    # row here should come back `completed`.
    dates = _date_pool(rng, today, 500, days=60)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(PAYMENTS_HEADER)
        for i in range(rows):
            writer.writerow([creditor, case_ids[i % len(case_ids)], "", "SEK",
                             f"{rng.randrange(100, 9900) / 100:.2f}", dates[i % len(dates)], "",
                             f"BENCH-{seed}-{i:07d}", "creditor_system"])
    return Generated(path, rows, 0)
