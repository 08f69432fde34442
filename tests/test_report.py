"""The report writer: report.json/.csv/.xlsx from report frames, and the failed-rows file."""

from __future__ import annotations

import csv
import json
import os
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from openpyxl import load_workbook

from importer.kinds import kind_by_name, kind_from_label
from importer.report import ReportWriter, failed_rows_name, write_failed_rows

# The report frame's fixed columns (docs/ARCHITECTURE.md), pinned here on purpose.
FRAME = ("file", "sheet", "row", "kind", "status", "reason", "message", "creditor", "case",
         "invoice_number", "currency", "amount", "bank_transaction_date",
         "client_registration_date", "credit_invoice", "creditor_payment_reference",
         "creditor_reference", "origin", "amili_id", "settled_amount", "case_reference_number",
         "http_status", "attempts")
CREDITOR = "674dbeb208847b9501cc9138"
STARTED = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
FINISHED = datetime(2026, 11, 22, 8, 1, tzinfo=UTC)


@dataclass
class Info:
    """Stands in for read.FileInfo (the writer only reads these attributes)."""

    name: str = "payments.csv"
    path: Path = Path("in/payments.csv")
    sha256: str = "ab" * 32
    size: int = 123
    kinds: list[str] = field(default_factory=lambda: ["payments"])
    rows: int = 0
    rejected: str | None = None
    notes: list[str] = field(default_factory=lambda: ["encoding UTF-8"])


def frame(rows: list[dict[str, Any]], inputs: dict[str, list[Any]] | None = None,
          file: str = "payments.csv") -> pd.DataFrame:
    """A report frame: defaults for every fixed column, then the given input columns."""
    records = []
    for i, row in enumerate(rows):
        base: dict[str, Any] = {c: None for c in FRAME}
        base.update(file=file, row=i + 2, kind="payments", status="valid", creditor=CREDITOR,
                    currency="SEK", origin="creditor_system")
        base.update(row)
        records.append(base)
    out = pd.DataFrame.from_records(records, columns=list(FRAME))
    for name, values in (inputs or {}).items():
        out[f"input:{name}"] = values
    return out


def write(directory: Path, frames: list[pd.DataFrame], inputs: list[str],
          **kwargs: Any) -> Any:
    extra = kwargs.pop("extra", None)
    writer = ReportWriter(directory, "run-1", "validate", STARTED, inputs,
                          frame_columns=FRAME, **kwargs)
    for f in frames:
        writer.add(f)
    return writer.close([Info(rows=sum(len(f) for f in frames))], FINISHED, extra)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def xlsx_rows(path: Path) -> tuple[list[str], list[tuple[Any, ...]]]:
    ws = load_workbook(path)["Rows"]
    rows = list(ws.iter_rows(values_only=True))
    return [str(c) for c in rows[0]], rows[1:]


NASTY = ['plain', 'with "quotes"', "comma, inside", "new\nline", "back\\slash", "tab\there",
         "bell\x07char", "åäö €", "", None, "  padded  "]


def test_three_files_hold_the_same_rows(tmp_path: Path) -> None:
    """report.json, report.csv and report.xlsx list the same rows with the same values."""
    n = len(NASTY)
    f = frame([{"status": "valid" if i % 3 else "error", "amount": f"{i}.50",
                "invoice_number": v, "message": v} for i, v in enumerate(NASTY)],
              {"amount": [f"{i},50" for i in range(n)], "Kommentar": NASTY})
    summary = write(tmp_path, [f], ["amount", "Kommentar"])
    data = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    rows_csv = read_csv(tmp_path / "report.csv")
    header, rows_xlsx = xlsx_rows(tmp_path / "report.xlsx")
    assert summary.rows == n == len(data["rows"]) == len(rows_csv) == len(rows_xlsx)
    assert list(rows_csv[0]) == [*FRAME, "input:amount", "input:Kommentar"] == header
    for i, (j, c, x) in enumerate(zip(data["rows"], rows_csv, rows_xlsx, strict=True)):
        assert j["input:Kommentar"] == NASTY[i] and j["invoice_number"] == NASTY[i]
        assert c["input:Kommentar"] == (NASTY[i] or "")
        expected_xlsx = None if not NASTY[i] else NASTY[i].replace("\x07", "\ufffd")
        assert x[header.index("input:Kommentar")] == expected_xlsx
        assert j["row"] == int(c["row"]) == x[2] == i + 2
        assert j["amount"] == float(c["amount"]) == x[header.index("amount")] == i + 0.5
        assert list(j) == list(rows_csv[0])


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_report_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    """Report files get the mode the user's umask gives (others in the group can open the
    reports of a service account), as run.log does, not a private 0600."""
    old = os.umask(umask)
    try:
        write(tmp_path, [frame([{"status": "error"}])], [])
        failed = write_failed_rows(tmp_path / "failed-payments.csv", [{"a": "1"}], ["a"], ",")
    finally:
        os.umask(old)
    for path in [tmp_path / "report.json", tmp_path / "report.csv", tmp_path / "report.xlsx",
                 failed]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".amili-tmp")]


def test_amounts_list_every_kind_and_status_with_rows(tmp_path: Path) -> None:
    """report.json's amounts and the terminal summary name cancellations too (no amount: null),
    so that their rows add up to the totals."""
    f = frame([{"amount": "1.50"}, {"amount": "2.50"},
               {"kind": "cancellations", "amount": None},
               {"kind": "cancellations", "amount": None, "status": "error"}])
    summary = write(tmp_path, [f], [])
    amounts = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))["amounts"]
    assert amounts == [
        {"kind": "cancellations", "status": "valid", "rows": 1, "amount": None},
        {"kind": "cancellations", "status": "error", "rows": 1, "amount": None},
        {"kind": "payments", "status": "valid", "rows": 2, "amount": 4.0}]
    assert sum(a["rows"] for a in amounts) == sum(summary.totals.values()) == 4
    lines = summary.summary_lines()
    assert "  cancellations valid: 1 row" in lines
    assert "  payments valid: 2 rows, 4.00 SEK" in lines


def test_json_types_and_head(tmp_path: Path) -> None:
    """JSON: numbers for amounts, integers or null for row/http_status/attempts; head keys."""
    f = frame([{"amount": "1234.50", "http_status": 201, "attempts": 1,
                "settled_amount": 100.25, "status": "completed"},
               {"amount": None, "http_status": None, "attempts": None, "status": "error"}])
    f["http_status"] = f["http_status"].astype(object)
    write(tmp_path, [f], [], extra={"exit_code": 1, "posted": 1})
    data = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    first, second = data["rows"]
    assert first["amount"] == 1234.5 and first["http_status"] == 201 and first["attempts"] == 1
    assert first["settled_amount"] == 100.25 and first["row"] == 2
    assert second["amount"] is None and second["http_status"] is None
    assert data["run_id"] == "run-1" and data["mode"] == "validate"
    assert data["started"] == "2026-11-22T08:00:00Z" and data["finished"] == "2026-11-22T08:01:00Z"
    assert data["exit_code"] == 1 and data["posted"] == 1
    assert data["totals"] == {"completed": 1, "error": 1}
    assert data["files"][0]["sha256"] == "ab" * 32 and data["files"][0]["rows"] == 2
    assert list(data)[-1] == "rows"
    # The Summary sheet names the keys in words and writes their numbers as numbers.
    summary = {r[0]: r[1] for r in load_workbook(tmp_path / "report.xlsx")["Summary"]
               .iter_rows(values_only=True) if r and r[0]}
    assert summary["Rows known to have reached Amili (posted)"] == 1
    assert summary["Exit code (exit_code)"] == 1


def test_extra_keys_may_not_replace_the_reports_own(tmp_path: Path) -> None:
    """An extra key named like a report key is refused, and no report is left behind."""
    writer = ReportWriter(tmp_path, "r", "run", STARTED, [], frame_columns=FRAME)
    writer.add(frame([{}]))
    with pytest.raises(ValueError, match="totals"):
        writer.close([], FINISHED, {"totals": {}})
    assert list(tmp_path.iterdir()) == []


def test_formula_text_is_inert_in_csv_and_xlsx_but_exact_in_json(tmp_path: Path) -> None:
    """Cells starting with = + - @ tab CR get a leading ' in CSV and XLSX; JSON keeps them."""
    risky = ["=1+2", "+46 70", "-2+3+cmd|' /C calc'!A0", "@SUM(A1)", "\tx", "\rx", "ok", "a=b"]
    f = frame([{"creditor_payment_reference": v, "status": "error"} for v in risky],
              {"ref": risky})
    write(tmp_path, [f], ["ref"])
    data = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    rows_csv = read_csv(tmp_path / "report.csv")
    header, rows_xlsx = xlsx_rows(tmp_path / "report.xlsx")
    expected = ["'" + v if v[0] in "=+-@\t\r" else v for v in risky]
    assert [r["input:ref"] for r in data["rows"]] == risky
    assert [r["creditor_payment_reference"] for r in data["rows"]] == risky
    assert [r["input:ref"] for r in rows_csv] == expected
    assert [r["creditor_payment_reference"] for r in rows_csv] == expected
    assert [r[header.index("input:ref")] for r in rows_xlsx] == expected
    ws = load_workbook(tmp_path / "report.xlsx")["Rows"]
    assert all(ws.cell(row=r, column=header.index("input:ref") + 1).data_type == "s"
               for r in range(2, len(risky) + 2))


def test_rows_sheet_is_coloured_frozen_and_filtered(tmp_path: Path) -> None:
    """Status cells are filled green/amber/red; header frozen; autofilter over the rows."""
    f = frame([{"status": s} for s in ("valid", "warning", "error", "completed")])
    write(tmp_path, [f], [])
    ws = load_workbook(tmp_path / "report.xlsx")["Rows"]
    status_col = FRAME.index("status") + 1
    fills = [ws.cell(row=r, column=status_col).fill.fgColor.rgb for r in range(2, 6)]
    assert fills == ["FFC6EFCE", "FFFFEB9C", "FFFFC7CE", "FFC6EFCE"]
    assert ws.freeze_panes == "A2"
    assert ws.auto_filter.ref == f"A1:{ws.cell(row=1, column=len(FRAME)).column_letter}5"
    rules = [r.formula[0] for rng in ws.conditional_formatting for r in rng.rules]
    assert rules == ['$E2="warning"', '$E2="error"']
    assert ws.cell(row=2, column=FRAME.index("amount") + 1).value is None
    assert ws.column_dimensions["G"].width == 60  # message


def test_summary_sheet_counts_and_amounts(tmp_path: Path) -> None:
    """The Summary sheet lists the run, the files, and rows and exact amounts per kind/status."""
    f = frame([{"amount": "0.10"}, {"amount": "0.20"}, {"amount": "1 000", "status": "error"},
               {"amount": "5.00", "status": "warning"}, {"kind": "cancellations"}])
    summary = write(tmp_path, [f], [])
    assert summary.amounts[("payments", "valid")] == Decimal("0.30")
    assert summary.counts == {("payments", "valid"): 2, ("payments", "error"): 1,
                              ("payments", "warning"): 1, ("cancellations", "valid"): 1}
    assert summary.totals == {"valid": 3, "warning": 1, "error": 1}
    rows = list(load_workbook(tmp_path / "report.xlsx")["Summary"].iter_rows(values_only=True))
    cells = [c for r in rows for c in r if c is not None]
    assert "run-1" in cells and "payments.csv" in cells and "ab" * 32 in cells
    table = {(r[0], r[1]): (r[2], r[3]) for r in rows if r[0] in ("payments", "cancellations")}
    assert table[("payments", "valid")] == (2, pytest.approx(0.3))
    assert table[("payments", "warning")] == (1, 5.0)
    assert ("cancellations", "valid") in table
    assert any(isinstance(c, str) and "lists all 5 rows" in c for c in cells)
    assert "Amount in the files (SEK)" in cells
    assert any(isinstance(c, str) and "settled_amount" in c for c in cells)
    data = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert {"kind": "payments", "status": "valid", "rows": 2, "amount": 0.3} in data["amounts"]


def test_large_run_lists_only_rows_needing_attention(tmp_path: Path) -> None:
    """Above the limit the Rows sheet keeps non-valid rows only and the Summary says so."""
    statuses = ["error" if i in (1, 7) else "warning" if i == 12 else "valid" for i in range(15)]
    chunks = [frame([{"status": s, "row": i + 2} for i, s in enumerate(statuses[a:b], a)])
              for a, b in ((0, 4), (4, 10), (10, 15))]
    summary = write(tmp_path, chunks, [], xlsx_all_rows_limit=5)
    _, rows = xlsx_rows(tmp_path / "report.xlsx")
    assert [(r[2], r[4]) for r in rows] == [(3, "error"), (9, "error"), (14, "warning")]
    assert summary.xlsx_rows_left_out == 12
    summary_cells = [c for r in load_workbook(tmp_path / "report.xlsx")["Summary"].iter_rows(
        values_only=True) for c in r if isinstance(c, str)]
    assert any("more than 5" in c and "not valid/completed" in c for c in summary_cells)
    assert any("lists 3 of 15 rows" in c for c in summary_cells)
    assert len(read_csv(tmp_path / "report.csv")) == 15
    assert any("left out" in line for line in summary.summary_lines())


def test_rows_of_files_with_different_columns(tmp_path: Path) -> None:
    """CSV carries the union of input columns; a JSON row carries only its own file's."""
    a = frame([{}], {"amount": ["1"]}, file="a.csv")
    b = frame([{}], {"Belopp": ["2"]}, file="b.csv")
    write(tmp_path, [a, b], ["amount", "Belopp"])
    rows_csv = read_csv(tmp_path / "report.csv")
    assert [(r["input:amount"], r["input:Belopp"]) for r in rows_csv] == [("1", ""), ("", "2")]
    data = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert "input:Belopp" not in data["rows"][0] and data["rows"][1]["input:Belopp"] == "2"


def test_unknown_column_is_refused(tmp_path: Path) -> None:
    """A frame with an input column the writer was not opened with is a caller bug, loudly."""
    with ReportWriter(tmp_path, "r", "validate", STARTED, [], frame_columns=FRAME) as writer, \
            pytest.raises(ValueError, match="input:surprise"):
        writer.add(frame([{}], {"surprise": ["x"]}))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("at", [1, 2, 3, 4, 5])
def test_a_writer_interrupted_while_it_is_made_leaves_no_temp_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: int) -> None:
    """SIGTERM (KeyboardInterrupt) while the writer creates its temp files, or starts its
    threads: no `with` will abort a writer that was never made, so it cleans up itself."""
    from importer import report as report_module

    calls = {"n": 0}
    real_temp, real_worker = report_module._temp_path, report_module._Worker

    def interrupt() -> None:
        calls["n"] += 1
        if calls["n"] == at:
            raise KeyboardInterrupt

    def temp(directory: Path, name: str) -> Path:
        interrupt()
        return real_temp(directory, name)

    def worker(name: str, depth: int) -> object:
        interrupt()
        return real_worker(name, depth)

    monkeypatch.setattr(report_module, "_temp_path", temp)
    monkeypatch.setattr(report_module, "_Worker", worker)
    with pytest.raises(KeyboardInterrupt):
        ReportWriter(tmp_path / "r", "run1", "validate", datetime.now(UTC), ["amount"])
    assert list((tmp_path / "r").iterdir()) == []


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    """After close only the three report files exist; an aborted report leaves nothing."""
    write(tmp_path / "ok", [frame([{}] * 3)], [])
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == [
        "report.csv", "report.json", "report.xlsx"]
    writer = ReportWriter(tmp_path / "aborted", "r", "run", STARTED, [], frame_columns=FRAME)
    writer.add(frame([{}]))
    writer.abort()
    assert list((tmp_path / "aborted").iterdir()) == []


def test_csv_has_bom_and_summary_lines(tmp_path: Path) -> None:
    """report.csv starts with a UTF-8 BOM (Excel reads å ä ö); summary lines name the folder."""
    summary = write(tmp_path, [frame([{"amount": "1234.50"}, {"status": "error"}])], [])
    assert (tmp_path / "report.csv").read_bytes().startswith(b"\xef\xbb\xbffile,sheet,row")
    lines = summary.summary_lines()
    assert lines[0] == "file payments.csv: 2 rows"
    assert "rows: 2 (1 valid, 1 error)" in lines
    assert "  payments valid: 1 row, 1 234.50 SEK" in lines
    assert lines[-1] == f"report: {tmp_path}"


def test_frame_columns_match_the_validator() -> None:
    """The writer's default columns are validate.FRAME_COLUMNS, the list the docs fix."""
    from importer.report import default_frame_columns

    assert default_frame_columns() == FRAME


def test_failed_rows_file_round_trip(tmp_path: Path) -> None:
    """The failed-rows file has the input's headers in order, then the error columns."""
    from importer.read import ReadOptions, open_file

    columns = ["Creditor", "Invoice Number", "currency", "amount", "bank_transaction_date",
               "Kommentar"]
    rows = [{"Creditor": CREDITOR, "Invoice Number": "=cmd", "currency": "EUR",
             "amount": "-100", "bank_transaction_date": "2026-11-02", "Kommentar": "åäö, \"x\"",
             "error_reason": "invalid_currency", "error_message": "currency: 'EUR' is not SEK"}]
    name = failed_rows_name("payments nightly.csv", None)
    assert name == "failed-payments nightly.csv"[:-4] + ".csv"
    assert failed_rows_name("month-end.xlsx", "Payments") == "failed-month-end-Payments.csv"
    # Read with --kind: the name says the kind, so the file imports again without it.
    assert failed_rows_name("bank-export.csv", None, "payments") == \
        "failed-payments-bank-export.csv"
    assert failed_rows_name("payments.csv", None, "payments") == "failed-payments.csv"
    # --kind against the name (or a name telling two kinds): the other kind's words go.
    for source, kind, expected in [
            ("payments-x.csv", "creditings", "failed-creditings-x.csv"),
            ("betalningar-x.csv", "credits", "failed-credits-x.csv"),
            ("payments-and-credits.csv", "payments", "failed-payments-and.csv"),
            ("creditor-payments.csv", "cancellations", "failed-cancellations-creditor.csv")]:
        name = failed_rows_name(source, None, kind)
        assert name == expected
        assert kind_from_label(Path(name).stem) is kind_by_name(kind)
    path = write_failed_rows(tmp_path / "failed-payments.csv", rows, columns)
    back = read_csv(path)
    assert list(back[0]) == [*columns, "source_row", "error_reason", "error_message"]
    assert back[0]["Invoice Number"] == "'=cmd" and back[0]["amount"] == "-100"
    assert back[0]["Kommentar"] == "åäö, \"x\"" and back[0]["error_reason"] == "invalid_currency"
    assert [p.name for p in tmp_path.iterdir()] == ["failed-payments.csv"]
    info, tables = open_file(path, ReadOptions())
    assert tables[0].columns == [*columns, "source_row", "error_reason", "error_message"]
    again = write_failed_rows(tmp_path / "again.csv", [back[0]], tables[0].columns)
    assert list(read_csv(again)[0]) == [*columns, "source_row", "error_reason", "error_message"]


def test_a_huge_cell_is_reported_in_every_file(tmp_path: Path) -> None:
    """A 200 000-character input cell (refused by validation) is written whole to the JSON
    and the CSV, and cut to Excel's 32 767 characters in the XLSX."""
    huge = "x" * 200_000
    summary = write(tmp_path, [frame([{"status": "error", "reason": "too_long"}],
                                     {"ref": [huge]})], ["ref"])
    assert summary.totals == {"error": 1}
    data = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert data["rows"][0]["input:ref"] == huge
    csv.field_size_limit(2**31 - 1)
    assert read_csv(tmp_path / "report.csv")[0]["input:ref"] == huge
    header, rows = xlsx_rows(tmp_path / "report.xlsx")
    cell = rows[0][header.index("input:ref")]
    assert len(cell) <= 32_767 and cell.endswith("(cut; see CSV)")
