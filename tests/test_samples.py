"""The sample files parse as CSV/XLSX, hold the intended mix, and are what the generator writes."""

from __future__ import annotations

import csv
import io
import json
import re
import runpy
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
CREDITOR = "674dbeb208847b9501cc9138"
TODAY = date(2026, 11, 22)
CSV_FILES = {  # name: (encoding, delimiter, data rows)
    "payments-nightly.csv": ("utf-8", ",", 12),
    "payments-swedish-excel.csv": ("cp1252", ";", 5),
    "creditings.csv": ("utf-8", ",", 6),
    "cancellations.csv": ("utf-8", ",", 5),
}


def cases() -> dict[str, Any]:
    return json.loads((SAMPLES / "cases.json").read_text(encoding="utf-8"))


def read_rows(name: str) -> list[dict[str, str]]:
    encoding, delimiter, _ = CSV_FILES[name]
    text = (SAMPLES / name).read_bytes().decode(encoding)
    return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter))


def dates_in(values: list[Any]) -> list[date]:
    found = []
    for value in values:
        if isinstance(value, datetime):
            found.append(value.date())
        elif isinstance(value, str) and (m := re.match(r"(\d{4})-(\d\d)-(\d\d)", value)):
            found.append(date(int(m[1]), int(m[2]), int(m[3])))
        elif isinstance(value, str) and (m := re.match(r"\w{3}, (\d\d) (\w{3}) (\d{4})", value)):
            found.append(datetime.strptime(f"{m[1]} {m[2]} {m[3]}", "%d %b %Y").date())
    return found


def test_every_sample_file_is_covered() -> None:
    """Each importable sample is known to these tests (a new one needs its checks)."""
    names = {p.name for p in SAMPLES.iterdir() if p.suffix in (".csv", ".xlsx")}
    assert names == set(CSV_FILES) | {"month-end.xlsx"}


def test_seed_cases_file() -> None:
    """cases.json: ~15 cases of the demo creditor, some closed/cancelled, and a demo API code."""
    doc = cases()
    ids = [c["_id"] for c in doc["cases"]]
    assert len(ids) == len(set(ids)) >= 15
    assert all(re.fullmatch(r"[0-9a-f]{24}", i) for i in ids)
    assert {c["creditor"] for c in doc["cases"]} == {CREDITOR}
    assert {c["account"] for c in doc["cases"]} == {"674dbeaf08847b9501cc9132"}
    assert sorted(c["status"] for c in doc["cases"] if c["status"] != "debt_collection") == [
        "cancelled", "closed"]
    assert doc["api_codes"] == {"demo-api-code": CREDITOR}


@pytest.mark.parametrize("name", sorted(CSV_FILES))
def test_csv_sample_parses_with_its_encoding_and_delimiter(name: str) -> None:
    """Each CSV decodes in its stated encoding, splits on its delimiter, and has its rows."""
    encoding, delimiter, count = CSV_FILES[name]
    raw = (SAMPLES / name).read_bytes()
    if encoding == "cp1252":
        with pytest.raises(UnicodeDecodeError):
            raw.decode("utf-8")
    rows = read_rows(name)
    assert len(rows) == count
    assert all(r["creditor"] == CREDITOR for r in rows)
    assert all(None not in r for r in rows), "no row has more cells than the header"
    assert all(TODAY >= d >= date(2025, 1, 1) for d in dates_in(
        [v for r in rows for v in r.values()]))


def test_sample_rows_reference_the_seed_cases() -> None:
    """Rows name seeded cases, except the ones meant to be unknown to the API."""
    doc = cases()
    ids = {c["_id"] for c in doc["cases"]}
    invoices = {c["invoice_number"] for c in doc["cases"]}
    deliberate = {"INV-9999", "68b7f49c7b02934caddabfff", "12345", ""}
    for name in CSV_FILES:
        for row in read_rows(name):
            assert row.get("case", "") in ids | deliberate
            assert row.get("invoice_number", "") in invoices | deliberate


def test_sample_mix_of_odd_rows() -> None:
    """The CSVs hold the deliberate mistakes the README lists."""
    nightly = read_rows("payments-nightly.csv")
    by_status = {c["_id"]: c["status"] for c in cases()["cases"]}
    assert [r["currency"] for r in nightly].count("EUR") == 1
    assert any(by_status.get(r["case"]) == "closed" for r in nightly)
    assert any(r["invoice_number"] == "INV-9999" for r in nightly)
    assert any(r["bank_transaction_date"].endswith("GMT") for r in nightly)
    assert any(re.fullmatch(r"\d{4}-\d\d-\d\d", r["bank_transaction_date"]) for r in nightly)
    swedish = read_rows("payments-swedish-excel.csv")
    assert any(" " in r["amount"] and "," in r["amount"] for r in swedish)
    assert any("\u00a0" in r["amount"] for r in swedish)
    assert any(ch in r["Kommentar"] for r in swedish for ch in "åäö")
    assert any(r["amount"] == "1.234" for r in swedish)
    creditings = read_rows("creditings.csv")
    assert any(r["amount"] == "0.00" for r in creditings)
    cancellations = read_rows("cancellations.csv")
    assert any(by_status.get(r["case"]) == "cancelled" for r in cancellations)
    assert any(not r["case"] and not r["invoice_number"] for r in cancellations)


def test_month_end_workbook() -> None:
    """Three kind sheets, title rows on Payments, date and number cells, a hidden sheet."""
    wb = load_workbook(SAMPLES / "month-end.xlsx")
    assert wb.sheetnames == ["Payments", "Creditings", "Cancellations", "Payments draft"]
    assert wb["Payments draft"].sheet_state == "hidden"
    assert all(wb[s].sheet_state == "visible" for s in wb.sheetnames[:3])
    payments = list(wb["Payments"].iter_rows(values_only=True))
    assert payments[2][:2] == ("creditor", "invoice_number")
    assert payments[0][1:] == (None,) * (len(payments[0]) - 1)
    data = payments[3:]
    assert all(isinstance(r[3], int | float) for r in data)
    assert sum(isinstance(r[4], datetime) for r in data) == len(data) - 1
    assert [r[4] for r in data if isinstance(r[4], str)] == ["31/10/2026"]
    assert all(TODAY >= d >= date(2025, 1, 1)
               for s in wb.sheetnames for r in wb[s].iter_rows(values_only=True)
               for d in dates_in(list(r)))
    assert not any(c.data_type == "f" for s in wb.sheetnames for r in wb[s].iter_rows()
                   for c in r)


def test_samples_are_what_the_generator_writes(tmp_path: Path) -> None:
    """samples/ is current: regenerating gives identical CSV/JSON bytes and workbook cells."""
    module = runpy.run_path(str(SAMPLES / "make_samples.py"))
    written = module["write_samples"](tmp_path)
    for path in written:
        committed = SAMPLES / path.name
        if path.suffix == ".xlsx":
            fresh, old = load_workbook(path), load_workbook(committed)
            assert fresh.sheetnames == old.sheetnames
            for sheet in fresh.sheetnames:
                assert list(fresh[sheet].values) == list(old[sheet].values)
        else:
            assert path.read_bytes() == committed.read_bytes(), path.name
