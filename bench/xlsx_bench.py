"""Workbook reading benchmark: our `open_file` + every chunk against `pandas.read_excel(openpyxl)`.

Both read the same generated 100k-row payments workbook (a title row above the header, real date
and number cells) in this process, each timed from the call to the last row in hand. The order
alternates over the repeats so that neither side always gets the warm page cache.
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path
from typing import Any

from bench import gen
from bench.run import Skipped, goal

ROWS = 100_000
QUICK_ROWS = 5_000


def read_ours(path: Path) -> int:
    """Open the workbook with `importer.read.open_file` and consume every chunk of every table.

    Returns:
        The number of data rows read.
    """
    try:
        from importer.read import ReadOptions, open_file
    except ImportError as exc:
        raise Skipped(f"importer.read is not there yet ({exc})") from None
    _, tables = open_file(path, ReadOptions())
    return sum(len(chunk) for t in tables for chunk in t.chunks())


def read_pandas(path: Path) -> int:
    """`pandas.read_excel(path, engine="openpyxl")` with the header row given, as a user would.

    Returns:
        The number of data rows read.
    """
    import pandas as pd

    frame = pd.read_excel(path, sheet_name="payments", engine="openpyxl", header=2)
    return len(frame)


def run(out: Path, quick: bool = False) -> dict[str, Any]:
    """The workbook reading benchmark.

    Args:
        out: the bench output folder (the workbook is cached in `out/data`).
        quick: a small workbook, to check the harness.

    Returns:
        Result dict with `rows` and `goals`.
    """
    rows = QUICK_ROWS if quick else ROWS
    made = gen.payments_xlsx(out / "data", rows)
    import pandas  # noqa: F401  # imported once up front: its import is no part of either read

    repeats = 1 if not quick else 2
    timings: dict[str, list[float]] = {"ours": [], "pandas": []}
    counts: dict[str, int] = {}
    readers = {"ours": read_ours, "pandas": read_pandas}
    for i in range(repeats):
        order = ["ours", "pandas"] if i % 2 == 0 else ["pandas", "ours"]
        for name in order:
            gc.collect()
            start = time.perf_counter()
            counts[name] = readers[name](made.path)
            timings[name].append(time.perf_counter() - start)
            print(f"   xlsx {name}: {timings[name][-1]:.2f} s", file=sys.stderr, flush=True)
    best = {name: min(t) for name, t in timings.items()}
    ratio = best["pandas"] / best["ours"]
    table = [
        {"reader": "importer.read.open_file + all chunks", "rows": counts["ours"],
         "seconds": best["ours"], "rows_per_s": counts["ours"] / best["ours"]},
        {"reader": 'pandas.read_excel(engine="openpyxl")', "rows": counts["pandas"],
         "seconds": best["pandas"], "rows_per_s": counts["pandas"] / best["pandas"]},
    ]
    notes = [f"workbook: {made.path.name}, {made.path.stat().st_size / 2**20:.1f} MiB, "
             f"best of {repeats}"]
    if counts["ours"] != rows or counts["pandas"] != rows:
        notes.append(f"row counts differ from the {rows:,} written: {counts}")
    return {"rows": table, "notes": notes,
            "goals": [goal(f"xlsx read speed vs pandas/openpyxl ({rows:,} rows)", ratio, 3.0,
                           unit="x")]}
