"""Templates: headers per kind, XLSX drop-downs and hints, an example row that validates."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from openpyxl import load_workbook

from importer.kinds import KINDS, Kind
from importer.template import FORMATS, header, write_all, write_template

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
CASES = [(kind, fmt) for kind in KINDS.values() for fmt in FORMATS]


def ids(case: tuple[Kind, str]) -> str:
    return f"{case[0].name}-{case[1]}"


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_template_header_and_example(tmp_path: Path, case: tuple[Kind, str]) -> None:
    """Row 1 holds the kind's API fields in the docs' order, row 2 one example row."""
    kind, fmt = case
    path = write_template(kind, fmt, tmp_path / f"{kind.name}-template.{fmt}")
    if fmt == "csv":
        assert path.read_bytes().startswith(b"\xef\xbb\xbf")
        with path.open(encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f))
        assert len(rows) == 2
        first, example = rows
    else:
        wb = load_workbook(path)
        assert wb.sheetnames == [kind.name.capitalize()]
        ws = wb.active
        assert ws is not None
        values = [r for r in ws.iter_rows(values_only=True) if any(v is not None for v in r)]
        assert len(values) == 2
        first, example = list(values[0]), list(values[1])
    assert first == header(kind) == list(kind.fields)
    assert dict(zip(first, example, strict=True))["creditor"] == "674dbeb208847b9501cc9138"
    assert dict(zip(first, example, strict=True))["origin"] == "creditor_system"


@pytest.mark.parametrize("kind", list(KINDS.values()), ids=lambda k: k.name)
def test_xlsx_template_has_dropdowns_hints_and_formats(tmp_path: Path, kind: Kind) -> None:
    """XLSX: drop-downs for currency/origin, a hint per column, frozen header, formats."""
    ws = load_workbook(write_template(kind, "xlsx", tmp_path / "t.xlsx")).active
    assert ws is not None
    columns = [c.value for c in ws[1]]
    lists = {dv.formula1: str(dv.sqref) for dv in ws.data_validations.dataValidation
             if dv.type == "list"}
    expected = {'"creditor_system"'} | ({'"SEK"'} if "currency" in columns else set())
    assert set(lists) == expected
    letter = ws.cell(row=1, column=columns.index("origin") + 1).column_letter
    assert lists['"creditor_system"'] == f"{letter}2:{letter}1001"
    assert all(ws.cell(row=1, column=j).comment is not None for j in range(1, len(columns) + 1))
    assert ws.freeze_panes == "A2"
    if kind.amount:
        amount = ws.cell(row=2, column=columns.index("amount") + 1)
        assert amount.value == 100.0 and amount.number_format == "0.00"
    for name in kind.dates:
        cell = ws.cell(row=2, column=columns.index(name) + 1)
        assert cell.number_format == "yyyy-mm-dd"
    if "bank_transaction_date" in columns:
        cell = ws.cell(row=2, column=columns.index("bank_transaction_date") + 1)
        assert cell.is_date
    # Every prepared row keeps its column's format, not only the example row (which the user
    # deletes): an invoice number 0010045 typed on row 3 or row 1001 stays text.
    for j, name in enumerate(columns, start=1):
        wanted = ("yyyy-mm-dd" if name in kind.dates else "0.00" if name == "amount" else "@")
        assert {ws.cell(row=r, column=j).number_format for r in (2, 3, 1001)} == {wanted}, name


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_template_example_row_validates(cli: Callable[..., Result], tmp_path: Path,
                                        case: tuple[Kind, str]) -> None:
    """The example row of every template is valid for `amili-import validate`."""
    kind, fmt = case
    path = tmp_path / f"{kind.name}-template.{fmt}"
    cli(["template", kind.name, "--format", fmt, "--output", str(path)])
    cli(["validate", str(path), "--report-dir", str(tmp_path / "r")],
        env={"AMILI_STATE_DIR": str(tmp_path / "state")})
    report = json.loads((tmp_path / "r" / "report.json").read_text(encoding="utf-8"))
    assert report["totals"] == {"valid": 1}
    assert report["rows"][0]["kind"] == kind.name


def test_committed_templates_are_current(tmp_path: Path) -> None:
    """templates/ holds exactly what `python -m importer.template --all` writes today."""
    written = write_all(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in TEMPLATES.iterdir())
    for path in written:
        committed = TEMPLATES / path.name
        if path.suffix == ".csv":
            assert path.read_bytes() == committed.read_bytes()
        else:
            fresh, old = load_workbook(path).active, load_workbook(committed).active
            assert fresh is not None and old is not None
            assert list(fresh.values) == list(old.values)
