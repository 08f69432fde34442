"""validate.py: the pandera rules per kind, the report frame, payload() and fingerprint()."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from importer import normalise
from importer.config import Config
from importer.kinds import CANCELLATIONS, CREDITINGS, PAYMENTS, Kind
from importer.read import FORMULA_WITHOUT_VALUE, FileInfo, ReadOptions, Table, open_file
from importer.validate import FRAME_COLUMNS, REASONS, Checker, fingerprint, payload

NOW = datetime(2025, 8, 1, 12, 0, tzinfo=UTC)
CREDITOR = "674dbeb208847b9501cc9138"
CASE = "68678eda88b9226bb78d7169"
ACCOUNT = "674dbeaf08847b9501cc9132"
# The user's own header texts (matched case/space-insensitively by read.py).
HEADERS = {
    "creditor": "Creditor", "case": "Case", "invoice_number": "Invoice Number",
    "currency": "Currency", "amount": "Amount", "bank_transaction_date": "Bank Transaction Date",
    "client_registration_date": "Client Registration Date",
    "creditor_payment_reference": "Payment Reference", "credit_invoice": "Credit Invoice",
    "creditor_reference": "Creditor Reference", "origin": "Origin", "account": "Account",
    "file_import_report": "File Import Report",
}


def table(kind: Kind, fields: Sequence[str], extra: Sequence[str] = (),
          sheet: str | None = None) -> Table:
    """A Table as read.py builds it, for the given canonical columns (plus unknown ones)."""
    columns = [HEADERS[f] for f in fields] + list(extra)
    info = FileInfo(path=Path(f"{kind.name}.csv"), name=f"{kind.name}.csv", sha256="0" * 64,
                    size=0)

    def no_chunks() -> Iterator[pd.DataFrame]:
        return iter(())

    return Table(file=info, sheet=sheet, kind=kind, header_row=1, columns=columns,
                 fields={HEADERS[f]: f for f in fields}, chunks=no_chunks)


CELLS = ["objects"]  # how chunk() hands cells over; the fixture below runs each test both ways


@pytest.fixture(autouse=True, params=["objects", "arrow"])
def cells(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test twice: cells as a workbook's reader gives them (Python objects), and, where
    a column's cells are all text, as a CSV's reader does (Arrow text: the fast paths)."""
    CELLS[0] = request.param
    yield request.param
    CELLS[0] = "objects"


def chunk(tab: Table, rows: list[dict[str, Any]], first_row: int = 2) -> pd.DataFrame:
    """Raw cells by canonical field name (missing cells are ''), with user row numbers."""
    back = {h: f for h, f in tab.fields.items()}
    data = {h: [r.get(back.get(h, h), "") for r in rows] for h in tab.columns}
    frame = pd.DataFrame(data, dtype=object)
    if CELLS[0] == "arrow":
        for h, cells in data.items():
            if all(type(v) is str for v in cells):
                frame[h] = pd.Series(cells, dtype=normalise.TEXT)
    frame["_row"] = list(range(first_row, first_row + len(rows)))
    return frame


def payment(**overrides: Any) -> dict[str, Any]:
    row = {"creditor": CREDITOR, "case": CASE, "currency": "SEK", "amount": "100,50",
           "bank_transaction_date": "2025-07-04", "creditor_payment_reference": "PAY-1"}
    row.update(overrides)
    return row


PAY_FIELDS = ("creditor", "case", "invoice_number", "currency", "amount",
              "bank_transaction_date", "client_registration_date", "creditor_payment_reference")


def check(rows: list[dict[str, Any]], fields: Sequence[str] = PAY_FIELDS, kind: Kind = PAYMENTS,
          config: Config | None = None) -> pd.DataFrame:
    tab = table(kind, fields)
    return Checker(tab, config or Config(), NOW).check(chunk(tab, rows))


def test_valid_payment_row_and_frame_columns() -> None:
    """A valid row: normalised values as sent, exactly FRAME_COLUMNS then input:<header>."""
    out = check([payment(case=CASE.upper(), currency="sek")])
    assert list(out.columns) == list(FRAME_COLUMNS) + [f"input:{HEADERS[f]}" for f in PAY_FIELDS]
    row = out.iloc[0].to_dict()
    assert (row["status"], row["reason"], row["message"]) == ("valid", None, None)
    assert row["file"] == "payments.csv" and row["sheet"] is None and row["row"] == 2
    assert row["case"] == CASE and row["currency"] == "SEK" and row["amount"] == "100.50"
    assert row["bank_transaction_date"] == "Fri, 04 Jul 2025 00:00:00 GMT"
    assert row["origin"] == "creditor_system"  # the column is absent: filled in
    # Missing: None, or NaN in a column kept as Arrow text (a CSV's).
    assert pd.isna(row["invoice_number"]) and row["credit_invoice"] is None
    assert row["input:Case"] == CASE.upper() and row["input:Amount"] == "100,50"


def test_all_errors_of_a_row_at_once() -> None:
    """Every problem of a row is reported in one go, in column order, with the user's
    headers and values as read."""
    out = check([payment(creditor="", case="xyz", currency="EUR", amount="1,234.50",
                         bank_transaction_date="04/07/2025", invoice_number="103118")])
    row = out.iloc[0]
    assert row["status"] == "error"
    assert row["reason"].split(",") == ["missing_value", "invalid_case", "invalid_currency",
                                        "ambiguous_amount", "invalid_date", "case_and_invoice"]
    parts = row["message"].split("; ")
    assert parts[0] == "Creditor: '' is empty"
    assert any(p.startswith("Case: 'xyz' is not a case id") for p in parts)
    assert any(p.startswith("Currency: 'EUR' is not a currency") for p in parts)
    assert any(p.startswith("Amount: '1,234.50' mixes comma and point") for p in parts)
    assert any(p.startswith("Bank Transaction Date: '04/07/2025' is not an accepted")
               for p in parts)
    assert "Case: 'xyz', Invoice Number: '103118': both case and invoice number" in row["message"]
    assert set(row["reason"].split(",")) <= set(REASONS)


def test_every_reason_the_checks_give_is_in_the_vocabulary() -> None:
    """helper-57: placeholder_date was given but missing from REASONS, the stable vocabulary
    reports and monitoring match on. Every code a Problem or Rule is made with is in it."""
    import re

    import importer.normalise
    import importer.validate

    codes: set[str] = set()
    for module in (importer.normalise, importer.validate):
        text = Path(module.__file__ or "").read_text(encoding="utf-8")
        codes |= set(re.findall(r"\b(?:Problem|Rule)\(\s*\"(\w+)\"", text))
    assert {"placeholder_date", "invalid_amount", "missing_value"} <= codes
    assert codes <= set(REASONS)


def test_case_xor_invoice_number() -> None:
    """Exactly one of case and invoice_number: both is an error, neither is an error."""
    out = check([payment(invoice_number="103118"), payment(case=""),
                 payment(case="", invoice_number="103118", creditor_payment_reference="P2")])
    assert out["reason"].tolist() == ["case_and_invoice", "missing_case_or_invoice", None]
    assert "neither case nor invoice number" in out["message"][1]
    assert out["invoice_number"][2] == "103118" and pd.isna(out["case"][2])


def test_unreadable_case_is_not_also_missing() -> None:
    """A case cell that cannot be read counts as given: no second 'neither' error."""
    out = check([payment(case=1.5e23)])
    assert out["reason"][0] == "invalid_case"


def test_default_creditor_only_when_column_absent() -> None:
    """The configured default creditor fills a file without a creditor column; an empty cell
    in a creditor column is an error that says why it is not defaulted."""
    config = Config(default_creditor=CREDITOR.upper())
    without = check([payment()], fields=PAY_FIELDS[1:], config=config)
    assert without["status"][0] == "valid" and without["creditor"][0] == CREDITOR
    empty = check([payment(creditor="")], config=config)
    assert empty["reason"][0] == "missing_value"
    assert "applies only when the file has no creditor column" in empty["message"][0]
    nothing = check([payment()], fields=PAY_FIELDS[1:])
    assert nothing["reason"][0] == "missing_value"
    assert "no creditor column" in nothing["message"][0]


def test_invalid_creditor_id() -> None:
    """A creditor that is not 24 hex digits is an error."""
    out = check([payment(creditor="674dbeb208847b9501cc913")])
    assert out["reason"][0] == "invalid_creditor"


def test_origin_filled_and_checked() -> None:
    """origin: empty cells become creditor_system, case is folded, anything else is an error."""
    fields = (*PAY_FIELDS, "origin")
    out = check([payment(origin=""), payment(origin="Creditor_System", amount="2"),
                 payment(origin="bank", amount="3")], fields=fields)
    assert out["origin"].tolist()[:2] == ["creditor_system", "creditor_system"]
    assert out["reason"].tolist() == [None, None, "invalid_origin"]


def test_currency_normalised_or_refused() -> None:
    """Currency: 'sek' becomes SEK; EUR and an empty cell are errors."""
    out = check([payment(currency="sek"), payment(currency="EUR", amount="2"),
                 payment(currency="", amount="3")])
    assert out["currency"][0] == "SEK"
    assert out["reason"].tolist() == [None, "invalid_currency", "missing_value"]
    assert "write SEK" in out["message"][2]


def test_amount_range_and_missing() -> None:
    """Amounts must be above zero and below 1e12; an empty amount is missing."""
    out = check([payment(amount="-100"), payment(amount="0"),
                 payment(amount="1000000000000"), payment(amount="")])
    assert out["reason"].tolist() == ["invalid_amount", "invalid_amount", "invalid_amount",
                                      "missing_value"]
    assert "greater than zero" in out["message"][0]
    assert "too large" in out["message"][2]


def test_future_bank_date_is_an_error() -> None:
    """A bank transaction after today (Swedish time) is an error; today is fine."""
    out = check([payment(bank_transaction_date="2025-08-02"),
                 payment(bank_transaction_date="2025-08-01T21:59:00Z", amount="2")])
    assert out["reason"].tolist() == ["future_date", None]
    assert out["status"].tolist() == ["error", "valid"]


def test_future_means_after_today_in_sweden() -> None:
    """At 00:30 Swedish time, that day's date (read as midnight GMT) is not "in the future";
    the next day is."""
    tab = table(PAYMENTS, PAY_FIELDS)
    half_past_midnight = datetime(2026, 11, 21, 23, 30, tzinfo=UTC)  # 00:30 CET on the 22nd
    out = Checker(tab, Config(), half_past_midnight).check(chunk(tab, [
        payment(bank_transaction_date="2026-11-22"),
        payment(bank_transaction_date="Sun, 22 Nov 2026 22:59:59 GMT", amount="2"),
        payment(bank_transaction_date="2026-11-23", amount="3")]))
    assert out["reason"].tolist() == [None, None, "future_date"]


def test_warnings_are_still_posted() -> None:
    """Warnings: a bank date over a year old, a registration before the bank date, and a
    registration date in the future."""
    out = check([
        payment(bank_transaction_date="2024-07-01"),
        payment(client_registration_date="2025-07-01", amount="2"),
        payment(client_registration_date="2025-09-01", amount="3"),
        payment(client_registration_date="2025-07-04T10:00:00Z", amount="4"),
    ])
    assert out["status"].tolist() == ["warning", "warning", "warning", "valid"]
    assert out["reason"].tolist() == ["old_date", "registered_before_transaction", "future_date",
                                      None]
    assert out["message"][1].startswith("Client Registration Date: '2025-07-01' is before")


def test_errors_come_before_warnings() -> None:
    """A row with an error and a warning is an error; the error is named first."""
    out = check([payment(bank_transaction_date="2024-07-01", currency="EUR"),
                 payment(bank_transaction_date="2024-07-01", creditor_payment_reference="R2")])
    assert out["status"].tolist() == ["error", "warning"]
    assert out["reason"][0] == "invalid_currency,old_date"
    # A row in error is not posted: its warnings do not say it is.
    assert "more than a year old" in out["message"][0]
    assert "still posted" not in out["message"][0] and "still posted" in out["message"][1]


def test_texts_checked() -> None:
    """References: longer than 140 characters or with control characters are errors."""
    out = check([payment(creditor_payment_reference="x" * 141),
                 payment(creditor_payment_reference="a\tb", amount="2"),
                 payment(creditor_payment_reference="x" * 140, amount="3")])
    assert out["reason"].tolist() == ["too_long", "invalid_text", None]
    assert "'a\\x09b'" in out["message"][1]


def test_invisible_characters_are_refused_and_shown() -> None:
    """A zero-width space, soft hyphen or BOM inside a text would make it differ from what the
    user sees (an invoice number that never matches): an error whose message shows it."""
    out = check([payment(invoice_number="INV-1\u200b", case=""),
                 payment(creditor_payment_reference="REF\u00ad1", amount="2"),
                 payment(creditor_payment_reference="\ufeffREF", amount="3"),
                 payment(creditor_payment_reference="Åsa’s – ok", amount="4")])
    assert out["reason"].tolist() == ["invalid_text"] * 3 + [None]
    assert "'INV-1\\u200b'" in out["message"][0] and "REF\\xad1" in out["message"][1]


def test_duplicates_across_chunks_name_the_first_row() -> None:
    """The later of two equal rows is an error naming the first, across chunk boundaries;
    a row differing in any key column is not a duplicate."""
    tab = table(PAYMENTS, PAY_FIELDS)
    checker = Checker(tab, Config(), NOW)
    first = checker.check(chunk(tab, [payment(), payment(amount="7")], first_row=2))
    assert first["status"].tolist() == ["valid", "valid"]
    second = checker.check(chunk(tab, [payment(creditor_payment_reference="PAY-2"),
                                       payment(amount="100.50"), payment(amount="100.50")],
                                 first_row=4))
    assert second["status"].tolist() == ["valid", "error", "error"]
    assert second["reason"].tolist() == [None, "duplicate_row", "duplicate_row"]
    assert second["message"][1].startswith("same as row 2 ")
    assert second["message"][2].startswith("same as row 2 ")


def test_duplicate_within_one_chunk_and_error_rows_ignored() -> None:
    """Within a chunk the second equal row is flagged; rows already in error are not compared."""
    out = check([payment(currency="EUR"), payment(currency="EUR"), payment(), payment()])
    assert out["reason"].tolist() == ["invalid_currency", "invalid_currency", None,
                                      "duplicate_row"]
    assert out["message"][3].startswith("same as row 4 ")


def test_duplicate_messages_name_each_kinds_own_fields() -> None:
    """A duplicate's message names the fields that kind compares and how to tell rows apart:
    a cancellation has no amount or reference, so it says the case is cancelled once."""
    cancel = check([{"creditor": CREDITOR, "case": CASE}] * 2, fields=("creditor", "case"),
                   kind=CANCELLATIONS)
    assert cancel["reason"].tolist() == [None, "duplicate_row"]
    assert "the case is cancelled once" in cancel["message"][1]
    assert "amount" not in cancel["message"][1] and "reference" not in cancel["message"][1]
    credit_fields = ("creditor", "invoice_number", "currency", "amount", "creditor_reference")
    credit = check([{"creditor": CREDITOR, "invoice_number": "1", "currency": "SEK",
                     "amount": "5"}] * 2, fields=credit_fields, kind=CREDITINGS)
    assert credit["message"][1].endswith("tell the two apart with a creditor_reference")
    pay = check([payment(), payment()])
    assert pay["message"][1].endswith("tell the two apart with a creditor_payment_reference")
    # helper-49: without a reference column ("Payment Reference" is not one) the message says
    # so, instead of claiming equal references the user sees differ.
    fields = tuple(f for f in PAY_FIELDS if f != "creditor_payment_reference")
    bare = check([payment(), payment()], fields=fields)
    assert bare["message"][1].endswith("(this file has no creditor_payment_reference column, so "
                                       "no reference tells rows apart; a column of references "
                                       "under another name is not read as one: rename it "
                                       "creditor_payment_reference)")
    assert "this file has no" not in credit["message"][1]  # it has a creditor_reference column


def test_composed_and_decomposed_texts_are_duplicates() -> None:
    """The same invoice number written composed and decomposed is one payment, twice."""
    out = check([payment(invoice_number="F\u00e4ktura-1", case=""),
                 payment(invoice_number="Fa\u0308ktura-1", case="")])
    assert out["reason"].tolist() == [None, "duplicate_row"]


def test_excel_cells() -> None:
    """Workbook cells: numbers, dates, a formula without value and an error value."""
    tab = table(PAYMENTS, ("creditor", "invoice_number", "currency", "amount",
                           "bank_transaction_date"), sheet="payments")
    rows = [
        {"creditor": CREDITOR, "invoice_number": 103118.0, "currency": "SEK", "amount": 1234.5,
         "bank_transaction_date": datetime(2025, 7, 4, 16, 20, 41)},
        {"creditor": CREDITOR, "invoice_number": 103119, "currency": "SEK",
         "amount": FORMULA_WITHOUT_VALUE, "bank_transaction_date": "#N/A"},
    ]
    out = Checker(tab, Config(), NOW).check(chunk(tab, rows, first_row=5))
    assert out["invoice_number"].tolist() == ["103118", "103119"]
    assert out["amount"][0] == "1234.50"
    assert out["bank_transaction_date"][0] == "Fri, 04 Jul 2025 16:20:41 GMT"
    assert out["status"].tolist() == ["valid", "error"]
    assert out["reason"][1] == "formula_without_value,cell_error"
    assert "'=…' is a formula without a saved result" in out["message"][1]
    assert out["sheet"].tolist() == ["payments", "payments"]
    assert out["input:Invoice Number"].tolist() == ["103118", "103119"]
    assert out["input:Bank Transaction Date"][0] == "2025-07-04 16:20:41Z"


def test_messages_never_start_like_a_formula() -> None:
    """A header starting with '-' or '=' does not make a message that starts with it."""
    tab = table(PAYMENTS, PAY_FIELDS)
    tab.columns[tab.columns.index("Amount")] = "-Amount"
    tab.fields = {("-Amount" if h == "Amount" else h): f for h, f in tab.fields.items()}
    raw = chunk(table(PAYMENTS, PAY_FIELDS), [payment(amount="abc")]).rename(
        columns={"Amount": "-Amount"})
    out = Checker(tab, Config(), NOW).check(raw)
    assert out["message"][0].startswith("column -Amount: 'abc'")


def test_read_only_columns_not_sent_unless_send_account() -> None:
    """account/file_import_report stay input columns only, noted once on the file;
    with send_account the account column is checked and sent."""
    fields = (*PAY_FIELDS, "account", "file_import_report")
    tab = table(PAYMENTS, fields)
    out = Checker(tab, Config(), NOW).check(chunk(tab, [payment(account="bad",
                                                                file_import_report="x")]))
    assert out["status"][0] == "valid"
    assert "account" not in out.columns and out["input:Account"][0] == "bad"
    assert any("read-only" in note for note in tab.file.notes)
    body = payload(PAYMENTS, out.iloc[0].to_dict())
    assert "account" not in body and "file_import_report" not in body

    tab = table(PAYMENTS, fields)
    checker = Checker(tab, Config(send_account=True), NOW)
    out = checker.check(chunk(tab, [payment(account=ACCOUNT.upper()),
                                    payment(account="bad", amount="2")]))
    assert out["reason"].tolist() == [None, "invalid_account"]
    body = payload(PAYMENTS, out.iloc[0].to_dict(), send_account=True)
    assert body["account"] == ACCOUNT


def test_send_account_requires_the_account() -> None:
    """helper-55: the older API generation send_account is for requires account on payments
    and creditings; an empty cell, or a file without the column, is an error before any
    request (not a 422 per row). Cancellations carry none."""
    tab = table(PAYMENTS, (*PAY_FIELDS, "account"))
    out = Checker(tab, Config(send_account=True), NOW).check(chunk(tab, [payment(account="")]))
    assert (out["status"][0], out["reason"][0]) == ("error", "missing_value")
    assert out["message"][0].startswith("Account: '' is empty; fill in the account id")
    tab = table(PAYMENTS, PAY_FIELDS)
    out = Checker(tab, Config(send_account=True), NOW).check(chunk(tab, [payment()]))
    assert (out["status"][0], out["reason"][0]) == ("error", "missing_value")
    assert "the file has no account column" in out["message"][0]
    fields = ("creditor", "case", "origin")
    tab = table(CANCELLATIONS, fields)
    out = Checker(tab, Config(send_account=True), NOW).check(
        chunk(tab, [{"creditor": CREDITOR, "case": CASE}]))
    assert out["status"][0] == "valid"


def test_payload_shape_per_kind() -> None:
    """payload(): only the kind's fields, empty ones dropped, amount a JSON number."""
    pay = check([payment(client_registration_date="Sat, 05 Jul 2025 10:00:00 GMT")])
    assert payload(PAYMENTS, pay.iloc[0].to_dict()) == {
        "creditor": CREDITOR, "case": CASE, "currency": "SEK", "amount": 100.5,
        "bank_transaction_date": "Fri, 04 Jul 2025 00:00:00 GMT",
        "client_registration_date": "Sat, 05 Jul 2025 10:00:00 GMT",
        "creditor_payment_reference": "PAY-1", "origin": "creditor_system"}
    credit_fields = ("creditor", "invoice_number", "currency", "amount", "credit_invoice",
                     "creditor_reference")
    credit = check([{"creditor": CREDITOR, "invoice_number": "103118", "currency": "SEK",
                     "amount": "1 000", "credit_invoice": "CI-9"}],
                   fields=credit_fields, kind=CREDITINGS)
    assert credit["status"][0] == "valid"
    assert payload(CREDITINGS, credit.iloc[0].to_dict()) == {
        "creditor": CREDITOR, "invoice_number": "103118", "currency": "SEK", "amount": 1000.0,
        "credit_invoice": "CI-9", "origin": "creditor_system"}
    cancel = check([{"creditor": CREDITOR, "case": CASE}], fields=("creditor", "case"),
                   kind=CANCELLATIONS)
    assert cancel["status"][0] == "valid"
    assert payload(CANCELLATIONS, cancel.iloc[0].to_dict()) == {
        "creditor": CREDITOR, "case": CASE, "origin": "creditor_system"}
    assert json.loads(json.dumps(payload(PAYMENTS, pay.iloc[0].to_dict())))["amount"] == 100.5


def test_fingerprint_is_stable_and_discriminating() -> None:
    """Same event → same fingerprint (whatever file or row); any sent field changes it."""
    row = check([payment()]).iloc[0].to_dict()
    moved = {**row, "file": "other.csv", "row": 99, "input:Amount": "100.50"}
    assert fingerprint(PAYMENTS, row) == fingerprint(PAYMENTS, moved)
    assert len(fingerprint(PAYMENTS, row)) == 64
    assert fingerprint(PAYMENTS, row) != fingerprint(PAYMENTS, {**row, "amount": "100.51"})
    assert fingerprint(PAYMENTS, row) != fingerprint(CREDITINGS, row)
    # A pinned value: the fingerprint must not change between versions (the journal keeps it).
    fixed = {"creditor": CREDITOR, "case": CASE, "currency": "SEK", "amount": "100.00",
             "bank_transaction_date": "Fri, 04 Jul 2025 00:00:00 GMT", "origin": "creditor_system"}
    assert fingerprint(PAYMENTS, fixed) == fingerprint(PAYMENTS, dict(reversed(fixed.items())))


def test_through_a_real_swedish_csv(tmp_path: Path) -> None:
    """A cp1252 semicolon CSV with decimal commas, read by read.py and checked end to end."""
    path = tmp_path / "payments-2025-07.csv"
    path.write_bytes((
        "Creditor;Case;Invoice Number;Currency;Amount;Bank Transaction Date;Betalningsref\r\n"
        f"{CREDITOR};{CASE};;sek;1 234,50;2025-07-04;Över\r\n"
        f"{CREDITOR};;103118;SEK;1.234;Thu, 04 Jul 2025 16:20:41 GMT;x\r\n"
        "\r\n"
        f"{CREDITOR};{CASE};;SEK;1 234,50;2025-07-04;Över\r\n"
    ).encode("cp1252"))
    info, tables = open_file(path, ReadOptions())
    [tab] = tables
    checker = Checker(tab, Config(), NOW)
    out = pd.concat([checker.check(c) for c in tab.chunks()], ignore_index=True)
    assert out["row"].tolist() == [2, 3, 5]
    assert out["status"].tolist() == ["valid", "error", "error"]
    assert out["amount"][0] == "1234.50" and out["currency"][0] == "SEK"
    assert out["reason"][1] == "ambiguous_amount,wrong_weekday"
    assert out["message"][1].startswith("Amount: '1.234' is ambiguous")
    assert out["message"][2].startswith("same as row 2")
    assert out["input:Betalningsref"][0] == "Över"
    assert info.name == "payments-2025-07.csv"


def test_long_numbers_in_number_cells_are_refused() -> None:
    """An OCR or invoice number of 16+ digits in a number cell has lost digits in Excel: an
    error asking for a Text column, never sent in scientific notation or rounded."""
    tab = table(PAYMENTS, ("creditor", "invoice_number", "currency", "amount",
                           "bank_transaction_date", "creditor_payment_reference"),
                sheet="payments")
    base = {"creditor": CREDITOR, "currency": "SEK", "amount": 10.0,
            "bank_transaction_date": datetime(2025, 7, 4)}
    rows = [{**base, "invoice_number": 7350000000001234567.0, "creditor_payment_reference": "a"},
            {**base, "invoice_number": "INV-2", "creditor_payment_reference": 1234567890123456},
            {**base, "invoice_number": 123456789012345.0, "creditor_payment_reference": "c"}]
    out = Checker(tab, Config(), NOW).check(chunk(tab, rows))
    assert out["status"].tolist() == ["error", "error", "valid"]
    assert "Excel keeps only 15 digits" in out["message"][0]
    assert "Excel keeps only 15 digits" in out["message"][1]
    assert out["invoice_number"][2] == "123456789012345"


def test_duplicate_index_over_many_chunks_names_each_first_row() -> None:
    """The keys of many chunks (repeats within and across them, in any order): each key is
    found from the second time on, with the row and sheet that had it first; the runs it is
    kept in stay few."""
    import random

    import numpy as np

    from importer.validate import Duplicates

    rng = random.Random(3)
    index, first = Duplicates(), {}
    for chunk_number in range(60):
        size = rng.randint(1, 400)
        keys = np.array(sorted({rng.choice([rng.randint(0, 5000), rng.randint(-2**63, 2**63 - 1)])
                                for _ in range(size)}), dtype=np.int64)
        rows = np.arange(len(keys), dtype=np.int64) + chunk_number * 1000
        sheets = np.full(len(keys), chunk_number % 3, dtype=np.int64)
        seen, seen_rows, seen_sheets = index.first(keys)
        for key, was, row, sheet in zip(keys.tolist(), seen.tolist(), seen_rows.tolist(),
                                        seen_sheets.tolist(), strict=True):
            assert was == (key in first)
            if was:
                assert (row, sheet) == first[key]
        new = ~seen
        for key, row, sheet in zip(keys[new].tolist(), rows[new].tolist(),
                                   sheets[new].tolist(), strict=True):
            first[key] = (row, sheet)
        index.add(keys[new], rows[new], sheets[new])
        assert len(index.runs) <= 12
        assert all(bool((run[0][1:] > run[0][:-1]).all()) for run in index.runs)  # sorted
    assert sum(len(run[0]) for run in index.runs) == len(first)


def test_byte_level_shortcuts_agree_with_the_exact_checks_on_sliced_arrays() -> None:
    """The id, length and control-character checks answer from a column's bytes: on Arrow
    arrays that are slices of larger ones, of either offset width, with multi-byte characters
    at the limits, they agree value by value with the exact per-value checks."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from importer import validate

    cases = [[CREDITOR], [CREDITOR.upper()], [CREDITOR[:-1] + "é"], ["é" * 140], ["é" * 141],
             ["a" * 140], ["a\x00b"], ["a\x7f"], ["a\u0085"], ["", CREDITOR],
             ["é" * 1000], ["é" * 1001]]
    for kind in (pa.string(), pa.large_string()):
        for values in cases:
            sliced = pa.array(["PAD", *values, "PAD"], type=kind).slice(1, len(values))
            column = pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array([sliced])),
                               dtype=normalise.TEXT)
            text = pa.array(values, type=pa.large_string())
            assert list(validate._hex24(column)) == pc.match_substring_regex(
                text, "^[0-9a-f]{24}$").to_pylist()
            assert list(validate._short(column)) == pc.less_equal(
                pc.utf8_length(text), normalise.MAX_TEXT).to_pylist()
            assert list(validate._no_control(column)) == [
                not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in v) for v in values]
