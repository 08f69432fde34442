"""Excel number formats that show a cell otherwise than the number it holds.

A workbook cell holds a number; its number format decides what the finance person sees. Most
formats only add separators, a currency or decimals, and what is seen is what is held. Some do
not: ``0%`` shows 0.5 as 50 %, ``#,##0,`` shows 1 234 567 as 1 235, ``;;;`` shows nothing,
``000000`` shows the invoice number 1234 as 001234, ``"INV-"0`` as INV-1234, ``mmmm yyyy`` a
date without its day. The reader (read_xlsx.py) marks such cells with the traits below; the
normaliser refuses them where the difference matters (an amount, an invoice number, a date)
rather than guess which of the two the person meant.

Traits:
    percent, scaled, hidden, scientific: the number is shown as another number (or not at all).
    rounded: shown with fewer decimals than it holds.
    padded: shown with leading zeros it does not hold.
    literal: shown with text or characters around its digits (``"INV-"0``, ``0000-00-00``).
    no_day: a date shown without its day.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

# Traits that change the number seen, wherever the cell is (an amount, a text, a date).
NUMBER_TRAITS = frozenset({"percent", "scaled", "hidden", "scientific", "rounded"})
# Traits that change only a number typed as a text (an invoice number, a reference).
TEXT_TRAITS = frozenset({"padded", "literal"})

# Excel's built-in formats (the ids a workbook may use without writing them out) that can
# show a number otherwise; the others are General, plain numbers and dates with a day.
BUILTIN = {
    1: "0", 3: "#,##0", 5: '"$"#,##0_);("$"#,##0)', 6: '"$"#,##0_);[Red]("$"#,##0)',
    7: '"$"#,##0.00_);("$"#,##0.00)', 8: '"$"#,##0.00_);[Red]("$"#,##0.00)', 9: "0%",
    10: "0.00%", 11: "0.00E+00", 12: "# ?/?", 13: "# ??/??", 17: "mmm-yy",
    37: "#,##0_);(#,##0)", 38: "#,##0_);[Red](#,##0)",
    41: '_(* #,##0_);_(* \\(#,##0\\);_(* "-"_);_(@_)',
    42: '_("$"* #,##0_);_("$"* \\(#,##0\\);_("$"* "-"_);_(@_)', 47: "mmss.0", 48: "##0.0E+0",
}

_TEXT = re.compile(r'"[^"]*"|\\.')  # literal text, an escaped character
_SPACING = re.compile(r"_.|\*.")  # room for a character, a fill: no text shown
_BRACKETS = re.compile(r"\[[^\]]*\]")  # colour, condition, locale ([$-41D], [$kr-41D])
_DIGIT = re.compile(r"[0#?]")
_DATE_TOKEN = re.compile(r"[ymdhs]", re.I)
_NUMBER_CHARS = set("0#?.,% ")  # what a number format shows no text with
_ELAPSED = re.compile(r"\[(h+|m+|s+)\]", re.I)  # [h]:mm: a duration, not a date


@dataclass(frozen=True)
class Format:
    """What a number format does to the numbers it shows.

    Attributes:
        code: the format as written in the workbook.
        traits: those that hold for any number it shows (see the module docstring).
        decimals: the decimals it shows (None: General, a date, or any number of them).
        digits: the integer digits it always shows (leading zeros).
    """

    code: str
    traits: frozenset[str]
    decimals: int | None
    digits: int

    def of(self, value: str) -> frozenset[str]:
        """The traits of one cell holding ``value`` (its ``<v>`` text)."""
        if value.isdigit() and (self.digits <= 1 or len(value) >= self.digits):
            return self.traits  # a whole number, shown whole, with no leading zeros added
        try:
            # As Excel shows it: 15 significant digits (57.900000000000006 is 57.9).
            number = Decimal(f"{float(value):.15g}")
        except (InvalidOperation, ValueError):
            return self.traits
        if not number.is_finite():
            return self.traits
        found = set(self.traits)
        exponent = number.normalize().as_tuple().exponent
        if (self.decimals is not None and isinstance(exponent, int)
                and -exponent > self.decimals):
            found.add("rounded")
        if self.digits > len(str(abs(int(number)))):
            found.add("padded")
        return frozenset(found)

    @property
    def suspect(self) -> bool:
        """Whether a cell of this format may be shown otherwise than it holds."""
        return bool(self.traits) or (self.decimals is not None and self.decimals < 2) or \
            self.digits > 1


def parse(code: str) -> Format:
    """What ``code`` does to a positive number (its first section)."""
    shown = _first_section(_SPACING.sub("", _BRACKETS.sub("", code)))  # positive numbers
    literal = any(text.strip('"\\ ') for text in _TEXT.findall(shown)) or bool(
        re.search(r"\[\$[^\]-]+", _first_section(code)))  # text, or a currency [$kr-41D]
    first = _TEXT.sub("", shown)
    traits: set[str] = set()
    if code.strip().lower() in ("general", "") or _ELAPSED.search(code) or "@" in first:
        return Format(code, frozenset(), None, 0)  # as held; a duration; text as typed
    if "general" in first.lower():  # every decimal shown, maybe with text around it
        return Format(code, frozenset({"literal"} if literal else set()), None, 0)
    if _DATE_TOKEN.search(first):  # a date or a time (hh:mm:ss.000 too)
        tokens = first.lower()
        if "d" not in tokens and ("y" in tokens or ("m" in tokens and not re.search(
                r"[hs]", tokens))):
            traits.add("no_day")  # a month and a year (a time alone is no date at all)
        return Format(code, frozenset(traits), None, 0)
    if not first.strip():
        traits.add("hidden")
    if "%" in first:
        traits.add("percent")
    if re.search(r"[0#?.][Ee][+-]", first):
        traits.add("scientific")
        first = re.sub(r"[Ee][+-]", "", first)
    digits_at = [m.start() for m in _DIGIT.finditer(first)]
    if digits_at and first[digits_at[-1] + 1:].startswith(","):
        traits.add("scaled")
    if literal or "/" in first or any(c not in _NUMBER_CHARS for c in first if not
                                      c.isspace()):
        traits.add("literal")
    whole, _, fraction = first.partition(".")
    # A fraction (# ?/?) shows what it holds; scientific notation is a trait of its own.
    decimals = None if "/" in first or "scientific" in traits else len(_DIGIT.findall(fraction))
    return Format(code, frozenset(traits), decimals, whole.count("0"))


def _first_section(code: str) -> str:
    return code.split(";", 1)[0]


class ShownNumber(float):
    """A number cell marked by the reader: its format (``code``) shows it otherwise."""

    code: str
    traits: frozenset[str]

    def __new__(cls, value: float, code: str, traits: frozenset[str]) -> ShownNumber:
        made = super().__new__(cls, value)
        made.code, made.traits = code, traits
        return made

    def __reduce__(self) -> tuple[Any, ...]:
        return (ShownNumber, (float(self), self.code, self.traits))


class ShownDate(datetime):
    """A date-and-time cell marked by the reader (see :class:`ShownNumber`)."""

    code: str
    traits: frozenset[str]


class ShownDay(date):
    """A date cell marked by the reader (see :class:`ShownNumber`)."""

    code: str
    traits: frozenset[str]


SHOWN = (ShownNumber, ShownDate, ShownDay)


def shown(value: Any, code: str, traits: frozenset[str]) -> Any:
    """``value`` marked with its format's traits (a value of another kind: as it is)."""
    marked: Any
    if isinstance(value, bool) or not isinstance(value, int | float | date):
        return value
    if isinstance(value, int | float):
        return ShownNumber(value, code, traits)
    if isinstance(value, datetime):
        marked = ShownDate(value.year, value.month, value.day, value.hour, value.minute,
                           value.second, value.microsecond, value.tzinfo)
    else:
        marked = ShownDay(value.year, value.month, value.day)
    marked.code, marked.traits = code, traits
    return marked
