"""A floor for the validation benchmark: the least work a validator of the payments file does.

pyarrow only: stream the CSV in 8 MiB blocks, five vectorised checks (creditor and case ids,
currency, amount shape, bank date parsed), one status column, and the rows written back as a
CSV. No normalisation, no messages, no report.json, no duplicates, no pandas or pandera. What
`amili-import validate` does costs more than this, never less; so if this floor is already
slower than 8x Frictionless, no implementation on this machine can reach that goal.

    python -m bench.arrow_floor FILE [OUT.csv]     # prints one JSON line
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

COLUMNS = ("creditor", "case", "invoice_number", "currency", "amount", "bank_transaction_date",
           "client_registration_date", "creditor_payment_reference", "origin")


def floor(path: Path, out: Path) -> dict[str, float | int]:
    """Run the floor pipeline once; seconds per stage and in all (imports included)."""
    start = time.perf_counter()
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    imported = time.perf_counter()
    reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=8 << 20),
                           convert_options=pcsv.ConvertOptions(
                               column_types={c: pa.string() for c in COLUMNS},
                               strings_can_be_null=False))
    names = [*COLUMNS, "status"]
    writer = pcsv.CSVWriter(out, pa.schema([(c, pa.string()) for c in names]))
    rows, read_s, check_s, write_s = 0, 0.0, 0.0, 0.0
    while True:
        t0 = time.perf_counter()
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        t1 = time.perf_counter()
        ok = pc.match_substring_regex(batch["creditor"], "^[0-9a-fA-F]{24}$")
        ok = pc.and_(ok, pc.match_substring_regex(batch["case"], "^([0-9a-fA-F]{24})?$"))
        ok = pc.and_(ok, pc.equal(batch["currency"], "SEK"))
        ok = pc.and_(ok, pc.match_substring_regex(batch["amount"], r"^\d+(\.\d{1,2})?$"))
        dates = pc.strptime(batch["bank_transaction_date"], format="%a, %d %b %Y %H:%M:%S GMT",
                            unit="s", error_is_null=True)
        ok = pc.and_(ok, pc.is_valid(dates))
        status = pc.if_else(ok, "valid", "error")
        t2 = time.perf_counter()
        writer.write_batch(pa.RecordBatch.from_arrays([*batch.columns, status], names=names))
        write_s += time.perf_counter() - t2
        read_s, check_s, rows = read_s + t1 - t0, check_s + t2 - t1, rows + batch.num_rows
    writer.close()
    return {"rows": rows, "import_s": imported - start, "read_s": read_s, "check_s": check_s,
            "write_s": write_s, "seconds": time.perf_counter() - start}


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print("usage: python -m bench.arrow_floor FILE [OUT.csv]", file=sys.stderr)
        return 2
    path = Path(argv[0])
    out = Path(argv[1]) if len(argv) == 2 else path.with_suffix(".floor.csv")
    try:
        print(json.dumps(floor(path, out)))
    finally:
        out.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
