"""Number formats that make a whole number look like text: ``0000000``, ``"OCR "0``.

An invoice number typed into Excel as a number and formatted ``0000000`` shows as ``0010045``;
the cell holds 10045. calamine gives the number, so the text the user sees (and Amili knows)
would be lost. Only formats that show a whole number as zero-padded digits with optional fixed
text around them are understood here; any other format (decimals, thousands separators, dates,
percentages, several digit groups) is left alone and the number is read as it is.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from xml.etree import ElementTree

FIRST_CUSTOM_FORMAT = 164  # ids below are Excel's built-in formats: none pads or adds text
# Characters Excel shows as they are without quotes (besides space).
_PLAIN = set("$-+()/:!^&'~{}<>=")
_NOT_INTEGER = set(".,%Ee/?@hmsdyHMSDYAaPpGg")


@dataclass(frozen=True)
class IntegerFormat:
    """How a format shows a whole number: fixed text, at least ``digits`` digits, fixed text."""

    code: str
    prefix: str
    digits: int
    suffix: str

    def show(self, value: object) -> str | None:
        """The text the cell shows, or None when this format does not apply (not a whole
        number, negative, or not a number at all)."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if isinstance(value, float) and not (value.is_integer() and abs(value) < 2**53):
            return None
        if value < 0:
            return None
        return f"{self.prefix}{int(value):0{self.digits}d}{self.suffix}"


def parse_format(code: str) -> IntegerFormat | None:
    """The format code's first section as an IntegerFormat, or None when it is anything else
    or would show a whole number as it is anyway (``0``, ``#``, ``General``)."""
    prefix: list[str] = []
    suffix: list[str] = []
    digits = 0
    seen_digits = False
    after_digits = False
    i = 0
    while i < len(code):
        ch = code[i]
        literal: str | None = None
        if ch == ";":
            break
        if ch == '"':
            end = code.find('"', i + 1)
            if end < 0:
                return None
            literal, i = code[i + 1:end], end + 1
        elif ch == "\\" and i + 1 < len(code):
            literal, i = code[i + 1], i + 2
        elif ch == "[":  # a colour, a condition or a locale: a condition changes the rules
            end = code.find("]", i)
            if end < 0 or code[i + 1:end][:1] in "<>=":
                return None
            i = end + 1
            continue
        elif ch in "_*":  # a space as wide as the next character / fill: shown as nothing
            i += 2
            continue
        elif ch in "0#":
            if after_digits:
                return None  # two groups of digits (000-000): not understood
            seen_digits = True
            digits += ch == "0"
            i += 1
            continue
        elif ch == " " or ch in _PLAIN:
            literal, i = ch, i + 1
        elif ch in _NOT_INTEGER or ch.isalpha():
            return None
        else:
            literal, i = ch, i + 1
        if seen_digits:
            after_digits = True
            suffix.append(literal)
        else:
            prefix.append(literal)
    if not seen_digits or (digits <= 1 and not prefix and not "".join(suffix).strip()):
        return None
    return IntegerFormat(code, "".join(prefix), digits, "".join(suffix))


_NUMFMT = re.compile(r"numFmt$")


def integer_styles(archive: zipfile.ZipFile, styles_part: str) -> dict[int, IntegerFormat]:
    """Cell style index (the ``s`` of a cell) → its IntegerFormat, for the styles using one.

    Empty when the workbook has no such format or its styles part cannot be read.
    """
    try:
        root = ElementTree.fromstring(archive.read(styles_part))
    except (KeyError, ElementTree.ParseError, zipfile.BadZipFile):
        return {}
    formats: dict[int, IntegerFormat] = {}
    for element in root.iter():
        if _NUMFMT.search(element.tag) and element.get("numFmtId", "").isdigit():
            number = int(element.get("numFmtId", "0"))
            parsed = parse_format(element.get("formatCode", ""))
            if number >= FIRST_CUSTOM_FORMAT and parsed is not None:
                formats[number] = parsed
    if not formats:
        return {}
    found: dict[int, IntegerFormat] = {}
    for element in root.iter():
        if element.tag.endswith("cellXfs"):
            for index, xf in enumerate(x for x in element if x.tag.endswith("xf")):
                number_id = xf.get("numFmtId", "0")
                if number_id.isdigit() and int(number_id) in formats:
                    found[index] = formats[int(number_id)]
    return found


def styles_part(archive: zipfile.ZipFile) -> str:
    """The workbook's styles part (``xl/styles.xml`` unless its relationships say otherwise)."""
    try:
        rels = ElementTree.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
    except (KeyError, ElementTree.ParseError):
        return "xl/styles.xml"
    for rel in rels.iter():
        if rel.tag.endswith("Relationship") and rel.get("Type", "").endswith("/styles"):
            target = rel.get("Target", "")
            return target.lstrip("/") if target.startswith("/") else "xl/" + target
    return "xl/styles.xml"
