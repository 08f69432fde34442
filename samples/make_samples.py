"""Regenerate the sample files: ``python samples/make_samples.py [FOLDER]`` (default: here).

The samples reference the sandbox's seed cases (``cases.json``, written here too), so that
``make demo`` imports them all against the local sandbox. Some rows are wrong on purpose;
``README.md`` says which outcome each is meant to show. Output is byte-for-byte stable for
the CSV/JSON files (the workbook carries fixed document times).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import datetime
from pathlib import Path

CREDITOR = "674dbeb208847b9501cc9138"
ACCOUNT = "674dbeaf08847b9501cc9132"
API_CODE = "demo-api-code"
UNKNOWN_CASE = "68b7f49c7b02934caddabfff"  # well-formed, but no such case: the API says 422


def case_id(n: int) -> str:
    """The seed case id number ``n`` (24 hex digits)."""
    return f"68b7f49c7b02934caddab{n:03x}"


# n, capital, interest, costs, status, debtor
CASES = [
    (1, 2000.0, 14.0, 0.0, "debt_collection", "ACME Inc."),
    (2, 1250.0, 9.5, 60.0, "debt_collection", "Bergström Bygg AB"),
    (3, 4800.0, 32.0, 180.0, "debt_collection", "Café Linnéa"),
    (4, 950.0, 6.0, 0.0, "debt_collection", "Ekdahl Konsult"),
    (5, 3200.0, 21.0, 60.0, "debt_collection", "Fjällräven Sport HB"),
    (6, 780.0, 4.5, 0.0, "debt_collection", "Göransson, Anna"),
    (7, 15000.0, 120.0, 180.0, "debt_collection", "Hälsinge Trä AB"),
    (8, 6400.0, 48.0, 60.0, "debt_collection", "Isaksson Måleri"),
    (9, 1100.0, 0.0, 0.0, "closed", "Jönsson, Per"),
    (10, 2200.0, 15.0, 0.0, "cancelled", "Karlsson & Co"),
    (11, 5600.0, 40.0, 60.0, "debt_collection", "Lundqvist Data AB"),
    (12, 2300.0, 16.0, 0.0, "debt_collection", "Mölndals Bageri"),
    (13, 1800.0, 12.0, 0.0, "debt_collection", "Nordin Transport"),
    (14, 990.0, 5.0, 0.0, "debt_collection", "Olsson, Eva"),
    (15, 8700.0, 65.0, 180.0, "debt_collection", "Persson Fastigheter"),
    (16, 4100.0, 30.0, 60.0, "debt_collection", "Qvist Elektriska"),
    (17, 2750.0, 19.0, 0.0, "debt_collection", "Rydén Design"),
]


def invoice(n: int) -> str:
    """The invoice number of seed case ``n``."""
    return f"INV-{1000 + n}"


def cases_document() -> dict[str, object]:
    """The sandbox seed: every sample case of the demo creditor, and the demo API code."""
    cases = []
    for n, capital, interest, costs, status, debtor in CASES:
        case: dict[str, object] = {
            "_id": case_id(n), "creditor": CREDITOR, "account": ACCOUNT,
            "invoice_number": invoice(n), "reference_number": str(48_600 + 40 * n),
            "capital": capital, "interest": interest, "costs": costs, "status": status,
            "debtor_name": debtor, "invoice_date": "Mon, 07 Jul 2025 00:00:00 GMT",
        }
        if status == "closed":
            case["closed_reason"] = "fully_paid"
        cases.append(case)
    return {"cases": cases, "api_codes": {API_CODE: CREDITOR}}


PAYMENT_HEADER = ["creditor", "case", "invoice_number", "currency", "amount",
                  "bank_transaction_date", "client_registration_date",
                  "creditor_payment_reference"]
NIGHTLY = [  # row 2 onwards, as a spreadsheet shows them
    [CREDITOR, case_id(1), "", "SEK", "500.00", "Mon, 02 Nov 2026 00:00:00 GMT", "",
     "NIGHT-20261103-001"],
    [CREDITOR, "", invoice(2), "SEK", "300.00", "2026-11-03", "", "NIGHT-20261103-002"],
    [CREDITOR, case_id(3), "", "SEK", "1234.50", "Tue, 03 Nov 2026 10:15:00 GMT",
     "Wed, 04 Nov 2026 08:00:00 GMT", "NIGHT-20261104-001"],
    [CREDITOR, "", invoice(5), "EUR", "250.00", "2026-11-04", "", "NIGHT-20261104-002"],
    [CREDITOR, case_id(4), "", "SEK", "5000.00", "2026-11-05", "", "NIGHT-20261105-001"],
    [CREDITOR, case_id(9), "", "SEK", "400.00", "2026-11-05", "", "NIGHT-20261105-002"],
    [CREDITOR, "", "INV-9999", "SEK", "120.00", "2026-11-06", "", "NIGHT-20261106-001"],
    [CREDITOR, "", invoice(6), "SEK", "150.00", "2025-12-30", "", "NIGHT-20251230-001"],
    [CREDITOR, case_id(5), "", "SEK", "899.90", "2026-11-18", "", "NIGHT-20261118-001"],
    [CREDITOR, "", invoice(1), "SEK", "200.00", "Wed, 18 Nov 2026 00:00:00 GMT", "",
     "NIGHT-20261118-002"],
    [CREDITOR, case_id(6), "", "SEK", "75.00", "2026-11-20T09:30:00Z", "",
     "NIGHT-20261120-001"],
    [CREDITOR, case_id(5), invoice(5), "SEK", "60.00", "2026-11-20", "", "NIGHT-20261120-002"],
]

SWEDISH_HEADER = ["creditor", "invoice_number", "currency", "amount", "bank_transaction_date",
                  "creditor_payment_reference", "Kommentar"]
SWEDISH = [
    [CREDITOR, invoice(7), "SEK", "1 234,50", "2026-11-05", "SE-2026-1101",
     "Delbetalning från kund, Göteborg"],
    [CREDITOR, invoice(7), "SEK", "2\u00a0500,00", "2026-11-12", "SE-2026-1102",
     "Andra delbetalningen – tack för påminnelsen"],
    [CREDITOR, invoice(8), "SEK", "980,00", "2026-11-06", "SE-2026-1103",
     "Betalning via Bankgiro, Malmö"],
    [CREDITOR, invoice(8), "SEK", "1.234", "2026-11-09", "SE-2026-1104",
     "Ärende från Örebro: otydligt belopp"],
    [CREDITOR, invoice(8), "SEK", "150,75", "2025-12-31", "SE-2025-1231", "Årsskiftet"],
]

CREDITING_HEADER = ["creditor", "case", "invoice_number", "currency", "amount",
                    "credit_invoice", "client_registration_date", "creditor_reference"]
CREDITINGS = [
    [CREDITOR, case_id(11), "", "SEK", "600.00", "CR-5001", "Thu, 05 Nov 2026 00:00:00 GMT",
     "CRED-5001"],
    [CREDITOR, "", invoice(12), "SEK", "250.00", "CR-5002", "2026-11-10", "CRED-5002"],
    [CREDITOR, "", invoice(11), "SEK", "0.00", "CR-5003", "2026-11-10", "CRED-5003"],
    [CREDITOR, case_id(12), invoice(12), "SEK", "80.00", "CR-5004", "", "CRED-5004"],
    [CREDITOR, UNKNOWN_CASE, "", "SEK", "45.00", "CR-5005", "", "CRED-5005"],
    [CREDITOR, "", invoice(12), "SEK", "99.95", "CR-5006", "", "CRED-5006"],
]

CANCELLATION_HEADER = ["creditor", "case", "invoice_number"]
CANCELLATIONS = [
    [CREDITOR, case_id(13), ""],
    [CREDITOR, "", invoice(14)],
    [CREDITOR, case_id(10), ""],
    [CREDITOR, "12345", ""],
    [CREDITOR, "", ""],
]

WORKBOOK_TIME = datetime(2026, 11, 21, 7, 30)


def _csv_text(header: list[str], rows: list[list[str]], delimiter: str = ",") -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def write_workbook(path: Path) -> None:
    """month-end.xlsx: three kind sheets (title rows on one), date and number cells, a
    hidden draft sheet, and one row with a date nobody should guess."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Payments"
    ws.append(["Month-end payments, November 2026"])
    ws["A1"].font = Font(bold=True, size=14)
    ws.append(["Exported 2026-11-21 from the ledger; one row per bank transaction"])
    ws.append(["creditor", "invoice_number", "currency", "amount", "bank_transaction_date",
               "creditor_payment_reference", "comment"])
    payments = [
        (invoice(15), 1500.0, datetime(2026, 11, 9), "ME-P-001", "Bankgiro"),
        (invoice(15), 250.25, datetime(2026, 11, 16), "ME-P-002", "Swish"),
        (invoice(16), 3000.0, datetime(2026, 11, 13), "ME-P-003", "Bankgiro"),
        (invoice(16), 410.0, "31/10/2026", "ME-P-004", "typed by hand"),
    ]
    for inv, amount, when, ref, note in payments:
        ws.append([CREDITOR, inv, "SEK", amount, when, ref, note])
    for row in ws.iter_rows(min_row=4):
        row[3].number_format = "#,##0.00"
        if isinstance(row[4].value, datetime):
            row[4].number_format = "yyyy-mm-dd"
    for letter, width in zip("ABCDEFG", (27, 15, 9, 12, 22, 24, 16), strict=True):
        ws.column_dimensions[letter].width = width

    credits_ws = wb.create_sheet("Creditings")
    credits_ws.append(["creditor", "case", "currency", "amount", "credit_invoice",
                       "client_registration_date", "creditor_reference"])
    credits_ws.append([CREDITOR, case_id(16), "SEK", 200.0, "CR-ME-01",
                       datetime(2026, 11, 20), "ME-C-001"])
    credits_ws.append([CREDITOR, case_id(16), "SEK", 125.5, "CR-ME-02", None, "ME-C-002"])
    for row in credits_ws.iter_rows(min_row=2):
        row[3].number_format = "#,##0.00"
        row[5].number_format = "yyyy-mm-dd"

    cancel_ws = wb.create_sheet("Cancellations")
    cancel_ws.append(["creditor", "invoice_number"])
    cancel_ws.append([CREDITOR, invoice(17)])

    draft = wb.create_sheet("Payments draft")
    draft.sheet_state = "hidden"
    draft.append(["creditor", "invoice_number", "currency", "amount", "bank_transaction_date"])
    draft.append([CREDITOR, invoice(15), "SEK", 9999.0, datetime(2026, 11, 1)])

    wb.properties.created = wb.properties.modified = WORKBOOK_TIME
    wb.save(path)


def write_samples(folder: Path) -> list[Path]:
    """Write every sample file into ``folder``.

    Args:
        folder: where to write.

    Returns:
        The files written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "cases.json": (json.dumps(cases_document(), indent=2, ensure_ascii=False) + "\n",
                       "utf-8"),
        "payments-nightly.csv": (_csv_text(PAYMENT_HEADER, NIGHTLY), "utf-8"),
        "payments-swedish-excel.csv": (_csv_text(SWEDISH_HEADER, SWEDISH, ";"), "cp1252"),
        "creditings.csv": (_csv_text(CREDITING_HEADER, CREDITINGS), "utf-8"),
        "cancellations.csv": (_csv_text(CANCELLATION_HEADER, CANCELLATIONS), "utf-8"),
    }
    written = []
    for name, (text, encoding) in files.items():
        path = folder / name
        path.write_bytes(text.encode(encoding))
        written.append(path)
    write_workbook(folder / "month-end.xlsx")
    written.append(folder / "month-end.xlsx")
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    for written_path in write_samples(target):
        print(written_path)
