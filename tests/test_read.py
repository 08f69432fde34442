"""read.py on real CSV files: encodings, delimiters, headers, row numbers, kinds, rejections."""

from __future__ import annotations

import codecs
import csv
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from importer.errors import FileRejected, UsageError
from importer.kinds import CANCELLATIONS, CREDITINGS, PAYMENTS
from importer.read import ReadOptions, Table, canonical_header, open_file

CRED = "5f1d7e8a9b0c1d2e3f4a5b6c"
HEADER = "creditor,invoice_number,currency,amount,bank_transaction_date"


def write(tmp_path: Path, name: str, content: str | bytes, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return path


def rows(table: Table) -> list[dict[str, Any]]:
    frames = list(table.chunks())
    return pd.concat(frames, ignore_index=True).to_dict("records") if frames else []


def read(path: Path, **options: Any) -> tuple[Any, list[Table]]:
    return open_file(path, ReadOptions(**options))


def test_canonical_header_ignores_case_spaces_hyphens_dots() -> None:
    """Headers compare case-, space-, hyphen- and dot-insensitively."""
    assert canonical_header(" Invoice Number ") == "invoice_number"
    assert canonical_header("Bank transaction date") == "bank_transaction_date"
    assert canonical_header("bank-transaction.date") == "bank_transaction_date"
    assert canonical_header("INVOICE__NUMBER") == "invoice_number"
    # camelCase and PascalCase, as API-minded exports write them
    assert canonical_header("bankTransactionDate") == "bank_transaction_date"
    assert canonical_header("CreditorPaymentReference") == "creditor_payment_reference"


def test_camel_case_headers_are_read(tmp_path: Path) -> None:
    """A header written InvoiceNumber, BankTransactionDate… is the documented columns."""
    header = "Creditor,InvoiceNumber,Currency,Amount,BankTransactionDate"
    _, (table,) = read(write(tmp_path, "payments.csv", f"{header}\n{CRED},A,SEK,1,d\n"))
    assert table.fields == {"Creditor": "creditor", "InvoiceNumber": "invoice_number",
                            "Currency": "currency", "Amount": "amount",
                            "BankTransactionDate": "bank_transaction_date"}


def test_utf8_csv_rows_fields_and_notes(tmp_path: Path) -> None:
    """A plain UTF-8 CSV gives one payments table, raw str cells and row numbers from 2."""
    path = write(tmp_path, "payments-2025-07.csv",
                 f"{HEADER}\n{CRED},Fakt åäö,SEK,1234.50,2025-07-04\n{CRED},F2,SEK,1,x\n")
    info, tables = read(path)
    assert info.kinds == ["payments"] and info.size == path.stat().st_size
    assert len(info.sha256) == 64
    assert "encoding UTF-8" in info.notes
    assert any("delimiter ','" in n for n in info.notes)
    (table,) = tables
    assert table.kind is PAYMENTS and table.sheet is None and table.header_row == 1
    assert table.fields["invoice_number"] == "invoice_number"
    got = rows(table)
    assert [r["_row"] for r in got] == [2, 3]
    assert got[0]["invoice_number"] == "Fakt åäö" and got[0]["amount"] == "1234.50"
    assert info.rows == 2


def test_utf8_bom_is_detected_and_stripped(tmp_path: Path) -> None:
    """A UTF-8 BOM is noted and does not stick to the first header."""
    path = write(tmp_path, "payments.csv", b"\xef\xbb\xbf" + f"{HEADER}\n{CRED},A,SEK,1,d\n"
                 .encode())
    info, (table,) = read(path)
    assert "encoding UTF-8 with BOM" in info.notes
    assert table.columns[0] == "creditor" and rows(table)[0]["creditor"] == CRED


def test_cp1252_semicolon_decimal_comma(tmp_path: Path) -> None:
    """Swedish Excel's CSV (cp1252, ';', decimal comma) reads right: å ä ö and 1234,50 kept."""
    text = ("Creditor;Invoice Number;Currency;Amount;Bank transaction date;Meddelande\n"
            f"{CRED};Faktura 1;SEK;1234,50;2025-07-04;Betalning för Åsa Öberg\n")
    path = write(tmp_path, "payments.csv", text, encoding="cp1252")
    info, (table,) = read(path)
    assert any(n.startswith("encoding cp1252") for n in info.notes)
    assert any("delimiter ';'" in n for n in info.notes)
    (row,) = rows(table)
    assert row["Amount"] == "1234,50"
    assert row["Meddelande"] == "Betalning för Åsa Öberg"
    assert any("'Meddelande'" in n for n in info.notes)


@pytest.mark.parametrize("codec,bom", [("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff")])
def test_utf16_with_bom_tab_delimited(tmp_path: Path, codec: str, bom: bytes) -> None:
    """UTF-16 with a BOM (Excel's 'Unicode text', tab-delimited) is decoded and sniffed."""
    text = f"creditor\tcase\n{CRED}\t{CRED}\n"
    path = write(tmp_path, "cancellations.txt", bom + text.encode(codec))
    info, (table,) = read(path)
    assert any("UTF-16" in n for n in info.notes) and "delimiter tab (detected from the header)" \
        in info.notes
    assert table.kind is CANCELLATIONS
    assert rows(table) == [{"creditor": CRED, "case": CRED, "_row": 2}]


def test_undecodable_bytes_rejected_with_byte_position(tmp_path: Path) -> None:
    """Bytes valid in neither UTF-8 nor cp1252 reject the file, naming the byte and line."""
    content = f"{HEADER}\n{CRED},A,SEK,1,d\n".encode() + b"x,\x81y,SEK,1,d\n"
    path = write(tmp_path, "payments.csv", content)
    with pytest.raises(FileRejected) as err:
        read(path)
    position = content.index(b"\x81")
    assert f"byte {position}" in str(err.value) and "(line 3)" in str(err.value)
    assert "payments.csv" in str(err.value)


def test_utf8_mixed_with_other_bytes_is_rejected_not_guessed(tmp_path: Path) -> None:
    """A UTF-8 file with a stray non-UTF-8 byte later on is rejected, not read as cp1252."""
    content = f"{HEADER}\n{CRED},Å,SEK,1,d\n".encode() + b"x,\xe5,SEK,1,d\n"
    with pytest.raises(FileRejected, match=r"not valid UTF-8 at byte \d+ \(line 3\)"):
        read(write(tmp_path, "payments.csv", content))


def test_decode_error_deep_in_a_large_file_found_up_front(tmp_path: Path) -> None:
    """A bad byte past the first MiB is found by open_file, before any chunk is read."""
    body = f"{CRED},Å,SEK,1,d\n".encode() * 80_000
    content = f"{HEADER}\n".encode() + body + b"x,\xff,SEK,1,d\n"
    with pytest.raises(FileRejected, match=f"byte {len(content) - 10}.*line 80002"):
        read(write(tmp_path, "payments.csv", content))


def test_encoding_and_delimiter_overrides(tmp_path: Path) -> None:
    """--encoding and --delimiter override detection ('tab' accepted)."""
    text = f"creditor\tcase\n{CRED}\tÅ;1,2\n"
    path = write(tmp_path, "cancel.csv", text, encoding="latin-1")
    info, (table,) = read(path, encoding="latin-1", delimiter="tab")
    assert "encoding iso8859-1 (from --encoding)" in info.notes
    assert "delimiter tab (from --delimiter)" in info.notes
    assert rows(table)[0]["case"] == "Å;1,2"
    for wrong in ("no-such-codec", "rot13", "base64"):  # the last two are not text codecs
        with pytest.raises(UsageError, match="not a text encoding"):
            read(path, encoding=wrong)


def test_utf16_forced_on_a_file_without_bom_is_rejected_not_a_crash(tmp_path: Path) -> None:
    """--encoding utf-16 on UTF-16 without a byte-order mark (the decoder cannot tell its byte
    order): the file is rejected with what to pass instead; utf-16-le then reads it."""
    path = write(tmp_path, "cancellations.csv", f"creditor,case\n{CRED},{CRED}\n".encode(
        "utf-16-le"))
    with pytest.raises(FileRejected, match=r"cancellations.csv.*cannot be read as .*utf-16-le"):
        read(path, encoding="utf-16")
    _, (table,) = read(path, encoding="utf-16-le")
    assert rows(table) == [{"creditor": CRED, "case": CRED, "_row": 2}]


def test_an_encoding_given_against_the_files_byte_order_mark_is_refused(
        tmp_path: Path) -> None:
    """--encoding cp1252 on a file that starts with a UTF-8 byte-order mark would read the
    mark into the first header ("missing column creditor"): the file is refused saying
    what the mark says. An --encoding of the mark's own family still reads it."""
    text = f"creditor,case\n{CRED},{CRED}\n"
    path = write(tmp_path, "cancellations.csv", codecs.BOM_UTF8 + text.encode())
    with pytest.raises(FileRejected, match="UTF-8 byte-order mark.*--encoding cp1252"):
        read(path, encoding="cp1252")
    _, (table,) = read(path, encoding="utf-8")
    assert rows(table) == [{"creditor": CRED, "case": CRED, "_row": 2}]
    utf16 = write(tmp_path, "cancellations-16.csv", codecs.BOM_UTF16_LE + text.encode(
        "utf-16-le"))
    _, (table,) = read(utf16, encoding="utf-16")
    assert rows(table) == [{"creditor": CRED, "case": CRED, "_row": 2}]


def test_nul_bytes_say_utf16_or_name_the_stray_byte(tmp_path: Path) -> None:
    """UTF-16 without a byte-order mark (a NUL beside every ASCII character) is named as
    such; a single NUL in a UTF-8 file is a damaged file, named by its byte and line."""
    utf16 = write(tmp_path, "cancellations.csv", f"creditor,case\n{CRED},{CRED}\n".encode(
        "utf-16-le"))
    with pytest.raises(FileRejected, match="looks like UTF-16 without a byte-order mark"):
        read(utf16)
    text = f"creditor,case\n{CRED},{CRED}\n{CRED},{CRED}\x00\n".encode()
    stray = write(tmp_path, "cancellations-2.csv", text)
    with pytest.raises(FileRejected, match=rf"cancellations-2.csv.*byte {text.index(0)} "
                                           r"\(line 3\) is a NUL byte"):
        read(stray)


def test_kind_override_and_unknown_name(tmp_path: Path) -> None:
    """--kind decides the kind; a name that tells no kind is rejected with the naming hint."""
    path = write(tmp_path, "export.csv", f"{HEADER}\n{CRED},A,SEK,1,d\n")
    with pytest.raises(FileRejected, match="name the file.*--kind"):
        read(path)
    _, (table,) = read(path, kind=PAYMENTS)
    assert table.kind is PAYMENTS


def test_ambiguous_name_rejected(tmp_path: Path) -> None:
    """A name matching two kinds is not guessed."""
    path = write(tmp_path, "payments-and-credits.csv", f"{HEADER}\n")
    with pytest.raises(FileRejected, match="cannot tell the kind"):
        read(path)


def test_kind_from_name_creditings(tmp_path: Path) -> None:
    """'credit…' names are creditings."""
    path = write(tmp_path, "credits_july.csv", "creditor,case,currency,amount\n")
    _, (table,) = read(path)
    assert table.kind is CREDITINGS


def test_header_below_titles_and_blank_rows_keep_row_numbers(tmp_path: Path) -> None:
    """Title rows above the header are skipped; blank rows count, so later rows keep numbers."""
    text = (f"Payments export\nCreditor AB,,\n\n{HEADER}\n{CRED},A,SEK,1,d\n\n,,,,\n"
            f"{CRED},B,SEK,2,d\n   \n")
    info, (table,) = read(write(tmp_path, "payments.csv", text))
    assert table.header_row == 4
    assert any("header on row 4" in n for n in info.notes)
    assert [(r["invoice_number"], r["_row"]) for r in rows(table)] == [("A", 5), ("B", 8)]


def test_quoted_multiline_field_is_one_row(tmp_path: Path) -> None:
    """A quoted value with a line break is one record = one spreadsheet row."""
    text = f'{HEADER},note\n{CRED},A,SEK,1,d,"two\nlines"\n{CRED},B,SEK,1,d,x\n'
    _, (table,) = read(write(tmp_path, "payments.csv", text))
    got = rows(table)
    assert got[0]["note"] == "two\nlines"
    assert [r["_row"] for r in got] == [2, 3]


def test_unclosed_quote_names_its_row(tmp_path: Path) -> None:
    """A quote never closed, on the first data row or far down, rejects the file naming the
    row where the quoted value starts."""
    first = f'{HEADER}\n{CRED},"I1,SEK,1,d\n{CRED},I2,SEK,1,d\n'
    _, (table,) = read(write(tmp_path, "payments.csv", first))
    with pytest.raises(FileRejected, match=r"row 2: a quoted value is never closed"):
        rows(table)
    body = "".join(f"{CRED},I{i},SEK,1,d\n" for i in range(3000))
    late = f'{HEADER}\n{body}{CRED},"IX,SEK,1,d\n{CRED},I2,SEK,1,d\n'
    _, (table,) = read(write(tmp_path, "payments.csv", late))
    with pytest.raises(FileRejected, match=r"row 3002: a quoted value is never closed"):
        rows(table)


def test_quote_closed_rows_later_rejects_the_file(tmp_path: Path) -> None:
    """A quote closed a few lines down swallows the rows between into one value: when that
    value holds the delimiter, the file is rejected naming the row and the column."""
    header = HEADER.replace(",", ";") + ";Kommentar"
    text = (f'{header}\n{CRED};I1;SEK;10,00;d;"Kunden sa: betalar\n'
            f"{CRED};I2;SEK;20,00;d;andra\n{CRED};I3;SEK;30,00;d;tredje\" klart\n"
            f"{CRED};I4;SEK;40,00;d;ok\n")
    _, (table,) = read(write(tmp_path, "payments.csv", text))
    with pytest.raises(FileRejected, match=r"row 2, column Kommentar: the value runs over "
                                           r"several lines that read like rows \(separated by "
                                           r"';'\)"):
        rows(table)
    # A multi-line note with a delimiter or two in it, properly quoted, is just a note.
    note = (f'{header}\n{CRED};I1;SEK;10,00;d;"Storgatan 1; 3 tr\n123 45 Stockholm"\n'
            f"{CRED};I2;SEK;20,00;d;ok\n")
    _, (table,) = read(write(tmp_path, "payments.csv", note))
    assert [r["Kommentar"] for r in rows(table)] == ["Storgatan 1; 3 tr\n123 45 Stockholm", "ok"]
    # In a file of three columns a row has two delimiters: a line with one comma is prose...
    narrow = (f'creditor,case,note\n{CRED},{CRED},"Customer called\nsays: pays tomorrow, by '
              f'Swish"\n{CRED},{CRED},ok\n')
    _, (table,) = read(write(tmp_path, "cancellations.csv", narrow))
    assert [r["note"] for r in rows(table)] == [
        "Customer called\nsays: pays tomorrow, by Swish", "ok"]
    # ...and rows swallowed by an open quote there are still found.
    swallowed = f'creditor,case,note\n{CRED},{CRED},"oops\n{CRED},{CRED},x\n{CRED},{CRED},y"\n'
    _, (table,) = read(write(tmp_path, "cancellations.csv", swallowed))
    with pytest.raises(FileRejected, match=r"row 2, column note: the value runs over"):
        rows(table)


def test_chunk_boundaries_keep_row_numbers(tmp_path: Path) -> None:
    """Small chunks with blank rows between still number every row as the file does."""
    lines = [HEADER]
    for i in range(1, 12):
        lines.append(f"{CRED},I{i},SEK,{i},d" if i % 3 else "")
    _, (table,) = read(write(tmp_path, "payments.csv", "\n".join(lines) + "\n"), chunk_rows=2)
    frames = list(table.chunks())
    assert len(frames) >= 4
    got = pd.concat(frames, ignore_index=True)
    assert got["_row"].tolist() == [i + 1 for i in range(1, 12) if i % 3]
    assert got["invoice_number"].tolist() == [f"I{i}" for i in range(1, 12) if i % 3]
    assert table.file.rows == len(got)
    assert len(pd.concat(list(table.chunks()))) == len(got) and table.file.rows == len(got)


def test_trimming_including_no_break_space(tmp_path: Path) -> None:
    """Surrounding whitespace, no-break space included, is trimmed; inner spaces kept."""
    text = f"{HEADER}\n  {CRED}\u00a0, A B ,\tSEK, 1\u00a0234.50 ,d\n"
    (row,) = rows(read(write(tmp_path, "payments.csv", text))[1][0])
    assert row["creditor"] == CRED and row["invoice_number"] == "A B"
    assert row["amount"] == "1\u00a0234.50" and row["currency"] == "SEK"


def test_missing_required_columns_named(tmp_path: Path) -> None:
    """A missing required column rejects the file and names every missing one."""
    path = write(tmp_path, "payments.csv", "creditor,amount,note\nx,1,y\n")
    with pytest.raises(FileRejected) as err:
        read(path)
    message = str(err.value)
    for column in ("currency", "bank_transaction_date", "case or invoice_number"):
        assert column in message
    assert "creditor," not in message.split("payments:")[1].split("(")[0]


def test_header_too_far_down_is_named_as_not_found(tmp_path: Path) -> None:
    """A header below the first 20 non-empty rows is "not found", and the message says where
    it must be, instead of reading the first title row as the header (and then calling the
    real header a row with too many cells)."""
    titles = "".join(f"Export line {i}\n" for i in range(25))
    path = write(tmp_path, "payments.csv", f"{titles}{HEADER}\n{CRED},A,SEK,1,d\n")
    with pytest.raises(FileRejected) as err:
        read(path)
    message = str(err.value)
    assert "no header row found: none of the first 20 non-empty rows" in message
    assert "row 1, has 'Export line 0'" in message and "too many" not in message
    assert "within the first 20 rows" in message


def test_default_creditor_makes_creditor_optional(tmp_path: Path) -> None:
    """With a default creditor, a file without a creditor column is accepted."""
    path = write(tmp_path, "cancellations.csv", "case\nabc\n")
    with pytest.raises(FileRejected, match="creditor"):
        read(path)
    _, (table,) = read(path, default_creditor=True)
    assert rows(table) == [{"case": "abc", "_row": 2}]


def test_duplicate_recognised_header_rejected(tmp_path: Path) -> None:
    """Two columns meaning the same field reject the file, naming both."""
    path = write(tmp_path, "cancellations.csv", "creditor,Case,case\n")
    with pytest.raises(FileRejected, match="'Case' and 'case'"):
        read(path)


def test_empty_file_and_header_only(tmp_path: Path) -> None:
    """An empty file is rejected; a header without rows gives a table with no rows."""
    with pytest.raises(FileRejected, match="empty"):
        read(write(tmp_path, "payments.csv", "\n \n"))
    _, (table,) = read(write(tmp_path, "payments2.csv", HEADER + "\n"))
    assert rows(table) == []


def test_unsupported_extensions_rejected(tmp_path: Path) -> None:
    """Legacy .xls and other extensions are rejected with a clear message."""
    with pytest.raises(FileRejected, match="save it as .xlsx"):
        read(write(tmp_path, "payments.xls", b"\xd0\xcf\x11\xe0"))
    with pytest.raises(FileRejected, match="unsupported file type"):
        read(write(tmp_path, "payments.json", b"{}"))


def test_headerless_and_trailing_columns(tmp_path: Path) -> None:
    """Every cell of the header row is a column: one without a name is kept as column_N (never
    sent), whether its values come at the top, far below, or not at all; the rows' empty cells
    past the header's last are ignored."""
    text = f"{HEADER},,\n{CRED},A,SEK,1,d,,,,\n{CRED},B,SEK,1,d,,x\n"
    info, (table,) = read(write(tmp_path, "payments.csv", text))
    assert table.columns[-2:] == ["column_6", "column_7"]
    assert [r["column_7"] for r in rows(table)] == ["", "x"]
    assert any("column_7" in n for n in info.notes)
    body = "".join(f"{CRED},I{i},SEK,1,d,,\n" for i in range(3000))
    late = f"{HEADER},,\n{body}{CRED},X,SEK,1,d,,paid by Swish\n"
    _, (table,) = read(write(tmp_path, "payments.csv", late))
    assert rows(table)[-1]["column_7"] == "paid by Swish"


def test_values_past_the_header_rejected(tmp_path: Path) -> None:
    """A row longer than the header (a decimal comma in a comma file shifts every cell after
    it) rejects the file, naming the row; blank extra cells are harmless."""
    text = f"{HEADER}\n{CRED},A,SEK,1,d,,\n{CRED},B,SEK,100,50,d\n"
    with pytest.raises(FileRejected, match=r"row 3 has 6 cells, more than the 5 columns.*"
                                           r"decimal comma"):
        read(write(tmp_path, "payments.csv", text))
    _, (table,) = read(write(tmp_path, "payments.csv", f"{HEADER}\n{CRED},A,SEK,1,d,,\n"))
    assert len(rows(table)) == 1


def test_too_many_cells_rejected_with_row(tmp_path: Path) -> None:
    """A row with more cells than the header (beyond the sniffed sample) names its row."""
    body = "".join(f"{CRED},I{i},SEK,1,d\n" for i in range(3000))
    text = f"{HEADER}\n{body}{CRED},X,SEK,1,d,extra\n"
    _, (table,) = read(write(tmp_path, "payments.csv", text))
    with pytest.raises(FileRejected, match="row 3002 has 6 cells"):
        rows(table)


@pytest.mark.parametrize("at", [3, 2800])
def test_blank_extra_cells_read_the_same_anywhere(tmp_path: Path, at: int) -> None:
    """Empty cells past the header's last (``…,d,,``) on one row are harmless whether that row
    is in the sample at the top or far below it; values there reject the file wherever they
    are, naming the row. Small chunks: the wider reading starts again mid-file."""
    def text(extra: str) -> str:
        lines = [f"{CRED},I{i},SEK,1,d" + (extra if i + 2 == at else "") for i in range(3000)]
        return HEADER + "\n" + "\n".join(lines) + "\n"

    _, (table,) = read(write(tmp_path, "payments.csv", text(",,")), chunk_rows=1000)
    got = rows(table)
    assert [r["_row"] for r in got] == list(range(2, 3002))
    assert got[at - 2]["invoice_number"] == f"I{at - 2}"
    _, (table,) = read(write(tmp_path, "payments.csv", text(",, ,")), chunk_rows=1000)
    assert len(rows(table)) == 3000  # wider again later: a second restart
    path = write(tmp_path, "payments.csv", text(",,x"))
    with pytest.raises(FileRejected, match=f"row {at} has 7 cells, more than the 5 columns"):
        rows(read(path, chunk_rows=1000)[1][0])


def test_huge_cell_is_kept(tmp_path: Path) -> None:
    """A 1 MB cell does not crash the reader; validation decides about it."""
    path = tmp_path / "payments.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER.split(","))
        writer.writerow([CRED, "A" * 1_000_000, "SEK", "1", "d"])
    (row,) = rows(read(path)[1][0])
    assert len(row["invoice_number"]) == 1_000_000


def test_a_payments_file_read_as_another_kind_is_rejected(tmp_path: Path) -> None:
    """A bank transaction date column read as creditings (--kind credits on a payments
    file) would book payments as credit notes: rejected. Other kinds' columns are noted."""
    path = write(tmp_path, "payments.csv", f"{HEADER}\n{CRED},I1,SEK,1,d\n")
    with pytest.raises(FileRejected, match="'bank_transaction_date' is a payments column, "
                                           "but the rows are read as creditings"):
        read(path, kind=CREDITINGS)
    cancel = write(tmp_path, "cancellations.csv",
                   f"creditor,case,origin,creditor_payment_reference\n{CRED},{'a' * 24},,R\n")
    info, _ = read(cancel)
    assert any("other kinds, not of cancellations" in n and "'creditor_payment_reference'" in n
               for n in info.notes)


@pytest.mark.parametrize("columns", ["amount", "credit_invoice", "Creditor Reference",
                                     "currency,amount,credit_invoice"])
def test_credit_note_columns_in_a_file_read_as_cancellations_reject_it(
        tmp_path: Path, columns: str) -> None:
    """helper-49: credit notes read as cancellations (a misnamed file, --kind cancellations)
    would each cancel their whole case: an amount, credit invoice or creditor reference column
    rejects the file, naming the column(s) and both ways out."""
    values = ",".join("1" for _ in columns.split(","))
    path = write(tmp_path, "cancellations.csv", f"creditor,case,{columns}\n{CRED},{'a' * 24},"
                                                f"{values}\n")
    with pytest.raises(FileRejected, match=r"belong to credit notes or payments, but the rows "
                                           r"are read as cancellations: each would cancel its "
                                           r"whole case\. If these are credit notes, pass "
                                           r"--kind creditings"):
        read(path)
    with pytest.raises(FileRejected, match="each would cancel its whole case"):
        read(write(tmp_path, "credits.csv", f"creditor,case,{columns}\n{CRED},{'a' * 24},"
                                            f"{values}\n"), kind=CANCELLATIONS)


def test_inert_formula_text_reads_back_as_written(tmp_path: Path) -> None:
    """Our reports and failed-rows files write '=…, '+…, '-…, '@… so that a spreadsheet does not
    run them: read again, the ' goes (the value is what was imported); other ' stay."""
    text = f"{HEADER}\n{CRED},'=INV-1,SEK,1,d\n{CRED},'-7,SEK,1,d\n{CRED},'ABC,SEK,1,d\n"
    _, (table,) = read(write(tmp_path, "payments.csv", text))
    assert [r["invoice_number"] for r in rows(table)] == ["=INV-1", "-7", "'ABC"]


def test_a_row_of_another_width_mid_file_hands_the_rest_to_pandas(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Arrow's reader reads the regular rows; from the first short row on (a row that ends
    early, read as empty cells) pandas reads the rest: every row once, numbered as in the
    file, whichever reader read it; the same on the second read."""
    from importer import read_csv

    monkeypatch.setattr(read_csv, "ARROW_BLOCK", 256)  # several Arrow blocks in a small file
    lines = [HEADER] + [f"{CRED},I{i},SEK,{i},d" for i in range(1, 30)]
    lines[20] = f"{CRED},I20,SEK"  # two cells short: amount and date empty
    lines[25] = f'{CRED},"I25, ""quoted""",SEK,25,d'
    _, (table,) = read(write(tmp_path, "payments.csv", "\n".join(lines) + "\n"), chunk_rows=3)
    for _ in range(2):
        got = pd.concat(list(table.chunks()), ignore_index=True)
        assert got["_row"].tolist() == list(range(2, 31))
        expected = [f"I{i}" for i in range(1, 30)]
        expected[24] = 'I25, "quoted"'
        assert got["invoice_number"].tolist() == expected
        assert got["amount"].tolist()[18:21] == ["19", "", "21"]
        assert table.file.rows == 29


def test_a_quote_never_closed_is_named_even_near_the_end(tmp_path: Path) -> None:
    """An odd number of quotes: the file is read by the reader that says where the quote
    opened, rather than taking the rest of the file as one value."""
    text = f'{HEADER}\n{CRED},I1,SEK,1,d\n{CRED},I2,SEK,2,"d\n'
    _, (table,) = read(write(tmp_path, "payments.csv", text))
    with pytest.raises(FileRejected, match="never closed"):
        rows(table)


def test_a_file_cut_off_inside_a_quoted_last_value_is_rejected(tmp_path: Path) -> None:
    """A file that ends inside a quoted value (cut off in transfer: "1 234 for 1 234 567,00)
    is rejected, even when a stray quote elsewhere makes the number of quotes even; a file
    whose last value is quoted and closed reads as it says."""
    header = f"{HEADER},creditor_payment_reference"
    cut = (f'{header}\n{CRED},I1,SEK,10.00,d,12" screen\n'
           f'{CRED},I2,SEK,10.00,d,"NIGHT-0')
    _, (table,) = read(write(tmp_path, "payments.csv", cut))
    with pytest.raises(FileRejected, match="never closed"):
        rows(table)
    whole = f'{header}\n{CRED},I1,SEK,10.00,d,12" screen\n{CRED},I2,SEK,10.00,d,"NIGHT-0"\n'
    _, (table,) = read(write(tmp_path, "payments2.csv", whole))
    assert [r["creditor_payment_reference"] for r in rows(table)] == ['12" screen', "NIGHT-0"]


def test_title_rows_with_a_line_break_in_a_cell_keep_the_header_out(tmp_path: Path) -> None:
    """A title cell with a line break in it ("Payments⏎November") is one row above the
    header: the data still starts on the row after the header, numbered as in Excel."""
    text = f'"Payments\nNovember"\n{HEADER}\n{CRED},I1,SEK,10,d\n{CRED},I2,SEK,10,d\n'
    _, (table,) = read(write(tmp_path, "payments.csv", text))
    got = rows(table)
    assert [(r["invoice_number"], r["_row"]) for r in got] == [("I1", 3), ("I2", 4)]
