"""normalise.py: raw cells → the values the API is sent, and the cells that cannot be read."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta

import numpy as np
import pandas as pd
import pytest

from importer import normalise
from importer.read import FORMULA_WITHOUT_VALUE

CELLS = ["objects"]  # how col() hands cells over; the fixture below runs each test both ways


@pytest.fixture(autouse=True, params=["objects", "arrow"])
def cells(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test twice: cells as a workbook's reader gives them (Python objects), and, where
    every cell is text, as a CSV's reader does (Arrow text: the fast paths)."""
    CELLS[0] = request.param
    yield request.param
    CELLS[0] = "objects"


def col(*values: object) -> pd.Series:
    """A raw column: Python objects, or Arrow text when every cell is a str (a CSV's)."""
    if CELLS[0] == "arrow" and all(type(v) is str for v in values):
        return pd.Series(list(values), dtype=normalise.TEXT)
    return pd.Series(list(values), dtype=object)


def values(parsed: normalise.Parsed) -> list[object]:
    """The normalised values, None where missing (whichever kind of Series holds them)."""
    return list(normalise.objects(parsed.values))


def problems(parsed: normalise.Parsed) -> dict[int, tuple[str, str]]:
    return {int(i): (p.code, p.text) for i, p in parsed.errors.items()}


# --- amounts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    ("1234.50", "1234.50"),
    ("1234,50", "1234.50"),
    ("1 234,50", "1234.50"),
    ("1\u00a0234,50", "1234.50"),
    ("1\u202f234,50", "1234.50"),
    ("12 345 678,5", "12345678.50"),
    ("1234", "1234.00"),
    ("0,5", "0.50"),
    ("007.10", "7.10"),
    ("100", "100.00"),
])
def test_amount_forms_accepted(raw: str, expected: str) -> None:
    """Swedish and plain amount forms become a plain two-decimal string."""
    parsed = normalise.amounts(col(raw))
    assert values(parsed) == [expected]
    assert parsed.errors.empty
    assert parsed.typed is not None and parsed.typed.iloc[0] == float(expected)


@pytest.mark.parametrize(("raw", "unit"), [
    ("1 234,50 kr", "kr"), ("1234,50 kr.", "kr."), ("SEK 1234,50", "SEK"), ("100:-", ":-"),
    ("€5", "€"), ("5 EUR", "EUR"),
])
def test_amounts_with_a_currency_say_so(raw: str, unit: str) -> None:
    """"1 234,50 kr" (Excel's CSV of a currency-formatted cell) is refused naming the currency,
    not as a stray space."""
    [(code, text)] = problems(normalise.amounts(col(raw))).values()
    assert code == "invalid_amount" and f"has a currency in it ({unit!r})" in text


@pytest.mark.parametrize(("raw", "hint"), [
    ("1,234.50", "1234.50"),
    ("1.234,50", "1234.50"),
    ("1.234", "1234"),
    ("1,234", "1234"),
    ("1.234.567", "1234567"),
    ("12.345", "12345"),
    ("1,005", "1005"),
])
def test_ambiguous_amounts_refused_with_what_to_write(raw: str, hint: str) -> None:
    """Forms that could mean thousands or decimals are never guessed; the message says what
    to write instead."""
    parsed = normalise.amounts(col(raw))
    assert values(parsed) == [None]
    [(code, text)] = problems(parsed).values()
    assert code == "ambiguous_amount"
    assert "write" in text and hint in text


@pytest.mark.parametrize("raw", ["1234.567", "1 234,567", "0.125", "abc", "12 kr", "1e5",
                                 "NaN", "inf", "12 34", ",50", "12."])
def test_invalid_amount_texts(raw: str) -> None:
    """Text, more than two decimals and odd forms are invalid_amount errors."""
    parsed = normalise.amounts(col(raw))
    assert values(parsed) == [None]
    assert [c for c, _ in problems(parsed).values()] == ["invalid_amount"]


def test_negative_and_zero_amounts_are_parsed_for_the_range_check() -> None:
    """Signs and zero are read; refusing them is the range check's job (it names them)."""
    parsed = normalise.amounts(col("-100", "0,00", "\u22125"))
    assert values(parsed) == ["-100.00", "0.00", "-5.00"]
    assert parsed.errors.empty


def test_excel_number_cells() -> None:
    """Excel int/float cells: read to 15 significant digits as Excel shows them (binary
    artefacts rounded away, also above 8.4 million where they pass 1e-9: helper-59), real
    extra decimals and non-finite numbers refused, TRUE/FALSE and dates are not amounts."""
    parsed = normalise.amounts(col(100, 103.5, 0.1 + 0.2, 1.005, float("inf"), True,
                                   datetime(2025, 7, 4), 123456789012.34,
                                   9017490.38 + 5115.55))
    assert values(parsed) == ["100.00", "103.50", "0.30", None, None, None, None,
                                      "123456789012.34", "9022605.93"]
    assert {i: c for i, (c, _) in problems(parsed).items()} == {
        3: "invalid_amount", 4: "invalid_amount", 5: "invalid_amount", 6: "invalid_amount"}
    assert "two decimals" in problems(parsed)[3][1]


def test_mixed_column_keeps_fast_values_and_reports_the_rest() -> None:
    """One odd cell in a canonical column does not change the other values; empties stay None."""
    parsed = normalise.amounts(col("10.00", "1,234.50", "20,25", "", "7"))
    assert values(parsed) == ["10.00", None, "20.25", None, "7.00"]
    assert list(problems(parsed)) == [1]
    assert parsed.typed is not None
    assert np.isnan(parsed.typed.iloc[3]) and parsed.typed.iloc[4] == 7.0


# --- dates -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    ("Fri, 04 Jul 2025 16:20:41 GMT", "Fri, 04 Jul 2025 16:20:41 GMT"),
    ("fri, 4 jul 2025 16:20:41 gmt", "Fri, 04 Jul 2025 16:20:41 GMT"),
    ("Fri, 04 Jul 2025 16:20:41 UTC", "Fri, 04 Jul 2025 16:20:41 GMT"),
    ("Fri, 04 Jul 2025 16:20:41 +0000", "Fri, 04 Jul 2025 16:20:41 GMT"),
    ("Fri, 04 Jul 2025 01:20:41 +0200", "Thu, 03 Jul 2025 23:20:41 GMT"),
    ("2025-07-04", "Fri, 04 Jul 2025 00:00:00 GMT"),
    ("2025-07-04T16:20:41Z", "Fri, 04 Jul 2025 16:20:41 GMT"),
    ("2025-07-04T18:20:41+02:00", "Fri, 04 Jul 2025 16:20:41 GMT"),
    ("2025-07-04 00:30+0100", "Thu, 03 Jul 2025 23:30:00 GMT"),
    # Any number of fraction digits (.NET's "o" format and SQL Server's datetime2 write 7),
    # with a decimal point or comma: whole seconds are sent.
    ("2025-07-04T16:20:41.1234567Z", "Fri, 04 Jul 2025 16:20:41 GMT"),
    ("2025-07-04T16:20:41.987654321+02:00", "Fri, 04 Jul 2025 14:20:41 GMT"),
    ("2025-07-04T16:20:41,5Z", "Fri, 04 Jul 2025 16:20:41 GMT"),
])
def test_dates_accepted_and_converted_to_gmt(raw: str, expected: str) -> None:
    """RFC 1123 (GMT or a numeric offset) and ISO 8601 become RFC 1123 in GMT; the moment
    checked (future, old) is the one sent, to the second."""
    parsed = normalise.dates(col(raw))
    assert parsed.errors.empty
    assert values(parsed) == [expected]
    assert parsed.typed is not None
    assert parsed.typed.iloc[0] == np.datetime64(
        datetime.strptime(expected, "%a, %d %b %Y %H:%M:%S GMT"))


def test_excel_date_cells() -> None:
    """Excel date and datetime cells (no zone in Excel) are taken as GMT."""
    parsed = normalise.dates(col(datetime(2025, 7, 4, 16, 20, 41), date(2025, 7, 4),
                                 pd.Timestamp("2025-07-04 08:00"), None))
    assert values(parsed) == ["Fri, 04 Jul 2025 16:20:41 GMT",
                                      "Fri, 04 Jul 2025 00:00:00 GMT",
                                      "Fri, 04 Jul 2025 08:00:00 GMT", None]
    assert parsed.typed is not None
    assert parsed.typed.iloc[0] == np.datetime64("2025-07-04T16:20:41")
    assert pd.isna(parsed.typed.iloc[3])


def test_wrong_weekday_names_the_right_one() -> None:
    """An RFC 1123 date whose weekday disagrees is an error saying which day it is."""
    parsed = normalise.dates(col("Thu, 04 Jul 2025 16:20:41 GMT"))
    [(code, text)] = problems(parsed).values()
    assert code == "wrong_weekday"
    assert "is a Fri" in text and "'Fri, 04 Jul 2025 16:20:41 GMT'" in text


_RFC_EDGES = [
    "Thu, 02 Apr 2026 10:22:44 GMT", "Fri, 02 Apr 2026 10:22:44 GMT",
    "Mon, 30 Feb 2026 12:34:44 GMT", "Thu, 29 Feb 2024 00:00:00 GMT",
    "Sun, 29 Feb 2024 00:00:00 GMT", "Tue, 01 Mar 1900 00:00:00 GMT",
    "Thu, 29 Feb 1900 00:00:00 GMT", "Tue, 29 Feb 2000 00:00:00 GMT",
    "Mon, 27 Jul 2026 24:00:00 GMT", "Mon, 27 Jul 2026 23:59:60 GMT",
    "Mon, 27 Jul 2026 23:60:00 GMT", "Mon, 01 Jan 0001 00:00:00 GMT",
    "Sat, 01 Jan 0000 00:00:00 GMT", "Mon, 00 Jan 2026 00:00:00 GMT",
    "Mon, 31 Apr 2026 12:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT",
    "Wed, 31 Dec 1969 23:59:59 GMT", "mon, 27 Jul 2026 12:00:00 GMT",
    "Mon, 27 JUL 2026 12:00:00 GMT", "Mon, 27 Jul 2026 12:00:00 gmt",
    "Mon, 27 Xyz 2026 12:00:00 GMT", "Mon, 7 Jul 2026 12:00:00 GMT",
    "Mon, 27 Jul 2026 12:00:00 UTC", "2026-07-27", "", "x",
]


def test_dates_whole_column_path_agrees_with_per_value_path() -> None:
    """A text-only column (read at once as fixed-width bytes) reads like a mixed one."""
    text_only = normalise.dates(col(*_RFC_EDGES))
    mixed = normalise.dates(col(*_RFC_EDGES, 1.5))  # a number cell: every value on its own
    assert values(text_only) == values(mixed)[:-1]
    assert problems(text_only) == {i: p for i, p in problems(mixed).items()
                                   if i < len(_RFC_EDGES)}
    assert text_only.typed.astype(str).tolist() == mixed.typed.astype(str).tolist()[:-1]
    assert text_only.values[3] == "Thu, 29 Feb 2024 00:00:00 GMT"
    assert problems(text_only)[2][0] == "invalid_date"
    assert problems(text_only)[1][0] == "wrong_weekday"
    assert _RFC_EDGES[12].startswith("Sat, 01 Jan 0000")  # numpy reads year 0, Python does not
    assert problems(text_only)[12][0] == "invalid_date" and values(text_only)[12] is None


def test_dates_with_a_nul_character_are_refused() -> None:
    """A NUL after a canonical date is not a date (the fixed-width reading must not drop it)."""
    parsed = normalise.dates(col("Mon, 27 Jul 2026 12:00:00 GMT\x00",
                                 "Mon, 27 Jul 2026 12:00:00 GMT"))
    assert values(parsed) == [None, "Mon, 27 Jul 2026 12:00:00 GMT"]
    assert problems(parsed)[0][0] == "invalid_date"


def test_digits_are_ascii_only() -> None:
    """Digits of other scripts (Arabic-Indic, full-width) are not read as 0-9, in dates as in
    amounts (Python's float() and Decimal() would take them): an error, never a guess."""
    parsed = normalise.dates(col("Mon, \u0662\u0667 Jul 2026 12:00:00 GMT",
                                 "Mon, 27 Jul 2026 12:00:00 GMT"))
    assert values(parsed) == [None, "Mon, 27 Jul 2026 12:00:00 GMT"]
    amounts = normalise.amounts(col("\u0661\u0662\u0663", "\uff11\uff12\uff13",
                                    "1 \u0662\u0663\u0664,50", "123"))
    assert values(amounts) == [None, None, None, "123.00"]
    assert {code for code, _ in problems(amounts).values()} == {"invalid_amount"}


@pytest.mark.parametrize("raw", ["04/07/2025", "4.7.2025", "4 juli 2025", "45842",
                                 "2025-07-04T16:20", "2025-02-30", "Fri, 04 Jul 2025",
                                 "Fri, 04 Jul 2025 16:20:41 CET",
                                 "Fre, 04 Jul 2025 16:20:41 GMT"])
def test_dates_not_guessed(raw: str) -> None:
    """Local forms, serial numbers, zone-less datetimes and impossible dates are errors."""
    parsed = normalise.dates(col(raw))
    assert values(parsed) == [None]
    [(code, text)] = problems(parsed).values()
    assert code == "invalid_date"
    assert "write" in text or "format" in text or "add Z" in text


@pytest.mark.parametrize("raw", ["Mon, 02 Nov 2026 10:00:00 +2400",
                                 "Mon, 02 Nov 2026 10:00:00 -9999",
                                 "Mon, 02 Nov 2026 10:00:00 +0160",
                                 "2026-11-02T10:00:00+23:00", "2026-11-02T10:00:00+1500"])
def test_an_impossible_numeric_offset_is_not_converted(raw: str) -> None:
    """helper-47: an RFC offset no place has (+2400, -9999) is an error, not a shift of a day
    or more; ISO likewise (helper-48)."""
    parsed = normalise.dates(col(raw, "Mon, 02 Nov 2026 10:00:00 +0130",
                                 "2026-11-02T10:00:00-14:00"))
    assert values(parsed) == [None, "Mon, 02 Nov 2026 08:30:00 GMT",
                                      "Tue, 03 Nov 2026 00:00:00 GMT"]
    [(code, text)] = problems(parsed).values()
    assert code == "invalid_date" and "offset" in text


@pytest.mark.parametrize("raw", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
                                 "Mon, 01 Jan 0001 00:00:00 +0100"])
def test_a_date_that_leaves_the_calendar_in_gmt_is_a_cell_error(raw: str) -> None:
    """helper-47: .NET's empty DateTime in local time (0001-01-01T00:00:00+01:00) is before
    year 1 in GMT: an error on the cell (it ended the whole run with an OverflowError)."""
    [(code, text)] = problems(normalise.dates(col(raw))).values()
    assert code == "invalid_date" and "leaves the calendar" in text


@pytest.mark.parametrize("raw", ["0001-01-01", "0001-01-01T00:00:00Z", "1970-01-01",
                                 "Mon, 01 Jan 0001 00:00:00 GMT",
                                 "Thu, 01 Jan 1970 00:00:00 GMT", datetime(1899, 12, 31),
                                 datetime(1900, 2, 28)])
def test_placeholder_dates_are_errors(raw: object) -> None:
    """How systems write "no date" (.NET's 0001-01-01, Excel's day 0 or 60, Unix's 0) is never
    posted as a date; the day after Unix's 0 is a date."""
    parsed = normalise.dates(col(raw, "Fri, 02 Jan 1970 00:00:00 GMT"))
    assert values(parsed) == [None, "Fri, 02 Jan 1970 00:00:00 GMT"]
    [(code, text)] = problems(parsed).values()
    assert code == "placeholder_date" and "no date" in text


def test_time_and_duration_cells_are_named_as_such() -> None:
    """helper-47: a date-formatted 0 (calamine: a time of day) or a [h]:mm duration cell is
    named for what it is, not sent to "format the cells as dates" (they are)."""
    [(code, text)] = problems(normalise.dates(col(time(0, 0)))).values()
    assert code == "invalid_date" and text.startswith("is a time or duration cell")
    [(code, text)] = problems(normalise.amounts(col(timedelta(days=46328)))).values()
    assert code == "invalid_amount" and "time or duration cell" in text


def test_texts_are_sent_in_composed_form() -> None:
    """helper-49: an invoice number with a decomposed letter (a plus a combining diaeresis, as
    macOS and PDFs give it) is sent composed, as Amili's lookup would hold it; ASCII is kept as
    is, cell by cell."""
    parsed = normalise.texts(col("Fa\u0308ktura-1", "INV-2", 103118.0))
    assert values(parsed) == ["F\u00e4ktura-1", "INV-2", "103118"]
    assert values(normalise.texts(col("Fa\u0308ktura-1"))) == ["F\u00e4ktura-1"]


def test_number_cell_in_a_date_column() -> None:
    """An Excel number where a date belongs is refused (it may be a serial date)."""
    [(code, text)] = problems(normalise.dates(col(45842.0))).values()
    assert code == "invalid_date" and "number" in text


def test_rfc1123_is_locale_independent() -> None:
    """Formatting uses English names whatever the locale; aware times are converted."""
    moment = datetime(2025, 7, 4, 18, 0, tzinfo=UTC)
    assert normalise.rfc1123(moment) == "Fri, 04 Jul 2025 18:00:00 GMT"


# --- ids, texts, words -------------------------------------------------------------------------


def test_hex_ids_lowercased_and_number_cells_refused() -> None:
    """Ids are lowercased; a number cell (Excel drops digits) is an error; empty is None."""
    parsed = normalise.hex_ids(col("674DBEB208847B9501CC9138", "", 1.23e23, True), "invalid_case")
    assert values(parsed) == ["674dbeb208847b9501cc9138", None, None, None]
    found = problems(parsed)
    assert set(found) == {2, 3}
    assert found[2][0] == "invalid_case" and "Text" in found[2][1]


def test_hex_ids_fast_path_returns_lowercase_values_as_is() -> None:
    """A column of lowercase ids comes back unchanged."""
    ids = [f"{i:024x}" for i in range(5)]
    assert values(normalise.hex_ids(col(*ids), "invalid_case")) == ids


def test_texts_from_excel_numbers() -> None:
    """An invoice number read as 103118.0 becomes '103118'; dates and booleans are refused."""
    parsed = normalise.texts(col(103118.0, 42, 12.5, "INV-1", "", datetime(2025, 1, 1), False))
    assert values(parsed) == ["103118", "42", "12.5", "INV-1", None, None, None]
    assert {i: c for i, (c, _) in problems(parsed).items()} == {5: "invalid_text",
                                                                 6: "invalid_text"}


def test_words_fold_case_and_default() -> None:
    """Currency is upper-cased, origin lower-cased; empty cells take the default."""
    currency = normalise.words(col("sek", "SEK", "Sek", "", "eur"), "invalid_currency", upper=True)
    assert values(currency) == ["SEK", "SEK", "SEK", None, "EUR"]
    origin = normalise.words(col("", "", ""), "invalid_origin", default="creditor_system")
    assert values(origin) == ["creditor_system"] * 3
    origin = normalise.words(col("Creditor_System", None), "invalid_origin",
                             default="creditor_system")
    assert values(origin) == ["creditor_system", "creditor_system"]


# --- cells that are not values -----------------------------------------------------------------


def test_formula_without_value_error_value_and_long_cells() -> None:
    """A formula without a cached value, #N/A and a >1000-character cell are errors by name,
    in every kind of column."""
    raw = col(FORMULA_WITHOUT_VALUE, "#N/A", "x" * 1001, "ok")
    assert [c for c, _ in problems(normalise.texts(raw)).values()] == [
        "formula_without_value", "cell_error", "too_long"]
    assert values(normalise.texts(raw)) == [None, None, None, "ok"]
    for parsed in (normalise.amounts(raw), normalise.dates(raw),
                   normalise.hex_ids(raw, "invalid_case"),
                   normalise.words(raw, "invalid_currency", upper=True)):
        codes = {i: c for i, (c, _) in problems(parsed).items()}
        assert codes[0] == "formula_without_value"
        assert codes[1] == "cell_error"
        assert codes[2] == "too_long"
    assert list(normalise.screen(raw).index) == [0, 1, 2]


def test_display_and_as_text() -> None:
    """Cells are shown as the user sees them: numbers without '.0', dates in ISO form (an
    Excel date-time, read as GMT, with a Z so that the text means the same instant)."""
    raw = col("a", 103118.0, 2.5, True, datetime(2025, 7, 4, 1, 2, 3), date(2025, 7, 4),
              datetime(2025, 7, 5), None)
    assert normalise.as_text(raw).tolist() == ["a", "103118", "2.5", "TRUE",
                                               "2025-07-04 01:02:03Z", "2025-07-04",
                                               "2025-07-05", ""]
    plain = col("a", "b")
    assert normalise.as_text(plain) is plain
