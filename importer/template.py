"""Blank templates per kind: a CSV and an XLSX with the header, hints and one example row.

The XLSX keeps the sheet importable as it stands: the header on row 1, the example on row 2,
the hints as cell comments on the header (not an extra sheet, which the reader would try to
import). Dates are real Excel date cells there; the CSV carries RFC 1123 text, which Excel
leaves alone when it opens the file (an ISO date would be turned into a local date format).

Regenerate the committed templates with ``python -m importer.template --all templates/``.
"""

from __future__ import annotations

import csv
import sys
from datetime import datetime
from pathlib import Path

from importer.errors import UsageError
from importer.kinds import CREDITOR_ORIGIN, CURRENCY, KINDS, Kind

# A date in the past so that the example row validates whenever it is used.
EXAMPLE_DATE = datetime(2026, 11, 2)
EXAMPLE_RFC1123 = "Mon, 02 Nov 2026 00:00:00 GMT"
EXAMPLE_CREDITOR = "674dbeb208847b9501cc9138"
FORMATS = ("csv", "xlsx")
VALIDATION_ROWS = 1000  # rows below the header that get the drop-down lists

HINTS: dict[str, str] = {
    "creditor": "Required. Your creditor id: 24 hex digits (0-9, a-f).",
    "case": "Amili case id (24 hex digits). Give either case or invoice_number, not both.",
    "invoice_number": "The invoice number of the case. Give either case or invoice_number.",
    "currency": "Required. SEK (the only currency Amili takes).",
    "amount": "Required. Greater than 0, at most two decimals: 1234.50 or 1234,50.",
    "bank_transaction_date": ("Required. The day the money reached your account: a date cell, "
                              "2026-11-02, or RFC 1123 (Mon, 02 Nov 2026 00:00:00 GMT). "
                              "Not in the future."),
    "client_registration_date": "Optional. When you registered it (same date forms).",
    "creditor_payment_reference": "Optional but recommended: your own unique payment reference.",
    "credit_invoice": "Optional. The credit invoice number.",
    "creditor_reference": "Optional but recommended: your own unique reference.",
    "origin": "creditor_system (filled in when empty).",
}

EXAMPLE: dict[str, str] = {
    "creditor": EXAMPLE_CREDITOR,
    "case": "",
    "invoice_number": "INV-1001",
    "currency": CURRENCY,
    "amount": "100.00",
    "bank_transaction_date": EXAMPLE_RFC1123,
    "client_registration_date": "",
    "creditor_payment_reference": "PAY-2026-0001",
    "credit_invoice": "CR-2026-0001",
    "creditor_reference": "CRED-2026-0001",
    "origin": CREDITOR_ORIGIN,
}


def header(kind: Kind) -> list[str]:
    """The template's columns for a kind: every API field the kind takes, in the docs' order."""
    return list(kind.fields)


def example_row(kind: Kind) -> dict[str, str]:
    """The example row as text (the CSV's second line)."""
    return {field: EXAMPLE[field] for field in kind.fields}


def write_template(kind: Kind, fmt: str, output: Path) -> Path:
    """Write a template for one kind.

    Args:
        kind: the record kind.
        fmt: ``csv`` or ``xlsx``.
        output: the file to write (its folder is created).

    Returns:
        The path written.

    Raises:
        UsageError: an unknown format.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown template format {fmt!r}: use csv or xlsx")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        _write_csv(kind, output)
    else:
        _write_xlsx(kind, output)
    return output


def _write_csv(kind: Kind, output: Path) -> None:
    row = example_row(kind)
    # UTF-8 with BOM: Excel then opens non-ASCII text (å ä ö) correctly.
    with open(output, "w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f, lineterminator="\r\n")
        writer.writerow(header(kind))
        writer.writerow([row[c] for c in header(kind)])


def _write_xlsx(kind: Kind, output: Path) -> None:
    from openpyxl import Workbook
    from openpyxl.comments import Comment
    from openpyxl.styles import Font, PatternFill
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.datavalidation import DataValidation

    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = kind.name.capitalize()
    columns = header(kind)
    example = example_row(kind)
    ws.append(columns)
    bold, grey = Font(bold=True), PatternFill("solid", start_color="D9D9D9")
    for j, name in enumerate(columns, start=1):
        cell = ws.cell(row=1, column=j)
        cell.font, cell.fill = bold, grey
        comment = Comment(HINTS[name], "amili-import")
        comment.width, comment.height = 300, 90
        cell.comment = comment
        letter = get_column_letter(j)
        ws.column_dimensions[letter].width = max(len(name) + 4, _width(name))
        value: object = example[name] or None
        target = ws.cell(row=2, column=j)
        if name in kind.dates:
            value = EXAMPLE_DATE if value else None
            number_format = "yyyy-mm-dd"  # so typed dates show as dates too
        elif name == "amount":
            value = float(example[name])
            number_format = "0.00"
        else:
            # Text down every row the template prepares, not only the example row (which the
            # user deletes): Excel must not turn ids or 0010045 into numbers.
            number_format = "@"
        for r in range(2, VALIDATION_ROWS + 2):
            ws.cell(row=r, column=j).number_format = number_format
        target.value = value
        if name in ("currency", "origin"):
            choice = CURRENCY if name == "currency" else CREDITOR_ORIGIN
            rule = DataValidation(type="list", formula1=f'"{choice}"', allow_blank=True,
                                  showErrorMessage=True, errorTitle=name,
                                  error=f"{name} must be {choice}")
            rule.add(f"{letter}2:{letter}{VALIDATION_ROWS + 1}")
            ws.add_data_validation(rule)
        if name == "amount":
            rule = DataValidation(type="decimal", operator="greaterThan", formula1="0",
                                  allow_blank=True, showErrorMessage=True, errorTitle=name,
                                  error="amount must be greater than 0")
            rule.add(f"{letter}2:{letter}{VALIDATION_ROWS + 1}")
            ws.add_data_validation(rule)
    ws.freeze_panes = "A2"
    # Fixed document times: regenerating gives the same content.
    wb.properties.created = wb.properties.modified = EXAMPLE_DATE
    wb.save(output)


def _width(name: str) -> int:
    return {"creditor": 27, "case": 27, "bank_transaction_date": 16,
            "client_registration_date": 16, "amount": 12, "invoice_number": 16}.get(name, 12)


def write_all(directory: Path) -> list[Path]:
    """Write every kind's CSV and XLSX template into a folder (``templates/``).

    Args:
        directory: the folder.

    Returns:
        The files written.
    """
    return [write_template(kind, fmt, directory / f"{kind.name}-template.{fmt}")
            for kind in KINDS.values() for fmt in FORMATS]


if __name__ == "__main__":  # python -m importer.template --all templates/
    if len(sys.argv) != 3 or sys.argv[1] != "--all":
        sys.exit("usage: python -m importer.template --all DIRECTORY")
    for written in write_all(Path(sys.argv[2])):
        print(written)
