"""Workbooks (.xlsx/.xlsm): one table per visible worksheet holding data, read with calamine.

python-calamine reads cells ~10x faster than openpyxl and gives formulas' cached values, but it
shows an error cell (``#N/A``) and a formula saved without a cached value both as an empty cell.
Both must reach validation, so the sheet's XML is scanned once, streaming, for ``t="e"`` cells
and ``<f>`` cells without a ``<v>``; blocks containing neither are skipped with one regex
test, so an ordinary sheet costs one decompression pass. A sheet whose rows or cells leave
out their optional ``r="A1"`` (or quote attributes with ``'``) is parsed again in full, each
row and cell counted, as calamine places them.
"""

from __future__ import annotations

import posixpath
import re
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from xml.etree import ElementTree

from importer.errors import FileRejected
from importer.kinds import kind_from_label, kinds_named
from importer.number_formats import BUILTIN, Format, parse, shown
from importer.read import (
    FORMULA_WITHOUT_VALUE,
    HIDDEN,
    MERGED,
    RECOGNISED,
    ROW,
    FileInfo,
    ReadOptions,
    Table,
    build_columns,
    canonical_header,
    file_info,
    find_header,
    hash_file,
    kind_for,
)

if TYPE_CHECKING:
    import pandas as pd

# Rows read from the top of a sheet to find the header (it is within 20 non-empty rows).
HEADER_PROBE_ROWS = 200
# Columns a data sheet may use (Excel allows 16 384); more is a stray cell, refused by name.
MAX_COLUMNS = 1000
XML_BLOCK = 1 << 20
MAX_PART_BYTES = 2 << 30  # a part of a workbook, unpacked (a million rows need far less)
_P = rb"(?:[\w.-]+:)?"  # an optional namespace prefix (<x:c> in some generators' files)
# A cell, with or without attributes (``<c>`` alone: no r=, as some generators write it).
_CELL = re.compile(rb"<" + _P + rb"c(?:\s([^>]*?))?(?:/>|>(.*?)</" + _P + rb"c>)", re.S)
_FORMULA = re.compile(rb"<" + _P + rb"f[\s>/]")
# An array formula's opening tag (its range's other cells hold results but no <f>), its range.
_ARRAY_FORMULA = re.compile(rb"<" + _P + rb"f\s[^>]*\bt=\"array\"[^>]*")
_REF_ATTR = re.compile(rb"\bref=\"([^\"]*)\"")
# A range of cells (``B2:B9``, ``$B$2:$B$9``): an Excel table's, an array formula's.
_RANGE = re.compile(r"^\$?([A-Z]{1,3})\$?(\d+):\$?([A-Z]{1,3})\$?(\d+)$")
# Cells of array formulas in a workbook to be calculated when opened that are marked one by one
# (their results are placeholders); a larger range rejects the file.
MAX_ARRAY_CELLS = 1_000_000
_VALUE = re.compile(rb"<" + _P + rb"v(?:\s[^>]*)?(?:/>|>(.*?)</" + _P + rb"v>)", re.S)
_REF = re.compile(rb"\br=\"([A-Z]{1,3})(\d+)\"")
_LETTERS = re.compile(rb"([A-Z]{1,3})\d+$")  # a cell reference's column (``AB`` of ``AB12``)
_TYPE = re.compile(rb"\bt=\"(\w+)\"")
_STYLE = re.compile(rb"\bs=\"(\d+)\"")
_MERGE_CELL = re.compile(rb"<" + _P + rb"mergeCell\s[^>]*\bref=\"([^\"]*)\"")
_MAX_EXACT = 2**53
_OLE2 = bytes.fromhex("d0cf11e0a1b11ae1")  # the Compound File Binary signature

Fixes = dict[int, list[tuple[int, str]]]  # 0-based row -> [(0-based column, value)]
_ROW_TAG = re.compile(rb"<" + _P + rb"row\s([^>]*)>")
# What the fast scan's patterns cannot read (single-quoted or spaced attributes, character
# references): a block holding one is read by the XML parser instead.
_ODD_ATTRIBUTES = (b"='", b"= ", b" =", b"=\t", b"\t=", b"&#")
# A row height that may be under a point: a block with one (or "hidden") is searched.
_LOW_HEIGHT = re.compile(rb'ht\s*=\s*"[^1-9]')  # ht="0", ".5", " 0", "+0", "&#48;"…
_ATTRIBUTE = re.compile(rb"\b([\w:]+)=\"([^\"]*)\"")
_HIDDEN_COLS = re.compile(rb"<" + _P + rb"col\s[^>]*\bhidden=\"(?:1|true)\"")


@dataclass(frozen=True)
class ExcelTable:
    """An Excel table (Insert > Table) with a Total Row: where it is on its sheet (0-based)."""

    name: str
    header_row: int
    first_column: int
    last_column: int
    totals_rows: range

    def is_the_data(self, header_row: int, positions: list[int]) -> bool:
        """Whether this table is the data read: its header is the sheet's header row
        (0-based) and it spans every given column position."""
        return self.header_row == header_row and all(
            self.first_column <= p <= self.last_column for p in positions)


@dataclass
class SheetScan:
    """What calamine does not tell about a sheet, from its XML."""

    fixes: Fixes = field(default_factory=dict)
    hidden_rows: set[int] = field(default_factory=set)  # 0-based
    hidden_columns: bool = False
    tables: list[ExcelTable] = field(default_factory=list)  # those with a Total Row
    recalculate: bool = False  # the workbook disowns its formulas' saved results
    untrusted: int = 0  # formula cells read as without a value for that reason
    # Styles (cellXfs index) whose number format may show a cell otherwise than it holds,
    # and the cells found so shown: 0-based row -> [(0-based column, format, traits)].
    styles: dict[int, Format] = field(default_factory=dict)
    shown: dict[int, list[tuple[int, str, frozenset[str]]]] = field(default_factory=dict)
    merged: list[str] = field(default_factory=list)  # merged cell ranges (``B2:B3``)


def column_letter(index: int) -> str:
    """Excel's name of a 0-based column index (0 → A, 27 → AB)."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _column_index(letters: bytes) -> int:
    index = 0
    for char in letters:
        index = index * 26 + char - 64
    return index - 1


def cell_value(value: Any) -> Any:
    """A calamine cell as the table holds it: trimmed str, None for empty, whole floats as int.

    Whole numbers come back from Excel as floats; as int an invoice number typed as a number
    reads ``12345``, not ``12345.0``.
    """
    if type(value) is str:
        value = value.strip()
        return value or None
    if type(value) is float and value.is_integer() and abs(value) < _MAX_EXACT:
        return int(value)
    return value


@dataclass(frozen=True)
class _Book:
    """What the reader needs of a workbook's own parts, beside what calamine reads.

    Attributes:
        parts: worksheet name → its XML part in the zip (None when the workbook's list of
            sheets cannot be read).
        recalculate: the workbook asks to be calculated when opened.
        styles: the cell styles whose number format may show a number otherwise than it
            holds (see :func:`_cell_formats`).
    """

    parts: dict[str, str] | None
    recalculate: bool = False
    styles: dict[int, Format] = field(default_factory=dict)


def _read_book(path: Path) -> _Book:
    """The workbook's parts, read from the zip once; a part that unpacks to more than
    :data:`MAX_PART_BYTES` (a zip bomb, or far more than a sheet of a million rows needs)
    rejects the workbook before anything unpacks it.

    The workbook part is found as Excel finds it: through the package's relationships
    (``_rels/.rels``; ``xl/workbook.xml`` when they name none).

    ``<calcPr fullCalcOnLoad="1"/>`` is how programs that write workbooks without
    calculating them (xlsxwriter, openpyxl, PhpSpreadsheet, ExcelJS, openxlsx2) tell Excel to
    do it: the results saved in such a file are placeholders (xlsxwriter writes 0 for every
    formula) or stale (a workbook Excel saved, then edited by such a program). Excel
    calculates on opening and drops the flag when it saves.

    Raises:
        FileRejected: a part unpacks to too much.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            big = max(archive.infolist(), key=lambda part: part.file_size, default=None)
            if big is not None and big.file_size > MAX_PART_BYTES:
                raise FileRejected(path.name, (
                    f"its part {big.filename} unpacks to {big.file_size / 2**30:.1f} GiB, more "
                    f"than any sheet of payments needs ({MAX_PART_BYTES // 2**30} GiB at most):"
                    " not read. Check the file (save it again from Excel, or split it)"))
            workbook = _workbook_part(archive)
            folder, _, base = workbook.rpartition("/")
            book = ElementTree.fromstring(archive.read(workbook))
            rels = ElementTree.fromstring(archive.read(f"{folder}/_rels/{base}.rels"
                                                       if folder else f"_rels/{base}.rels"))
            styles = _styles_part(archive, folder, rels)
    except (KeyError, zipfile.BadZipFile, ElementTree.ParseError, OSError):
        return _Book(None)  # not a zip (_workbook says what it is), or no list of sheets
    recalculate = any(e.tag.endswith("}calcPr") and e.get("fullCalcOnLoad") in ("1", "true")
                      for e in book)
    targets = {r.get("Id"): r.get("Target", "") for r in rels.iter()
               if r.tag.endswith("Relationship")}
    parts = {}
    for sheet in book.iter():
        rel = next((v for k, v in sheet.attrib.items() if k.endswith("}id")), None)
        if sheet.tag.endswith("}sheet") and rel in targets:
            target = targets[rel]  # r:id in the Transitional or the Strict namespace
            parts[sheet.get("name", "")] = _part_name(folder, target)
    return _Book(parts, recalculate, _cell_formats(styles) if styles is not None else {})


def _styles_part(archive: zipfile.ZipFile, folder: str,
                 rels: ElementTree.Element) -> ElementTree.Element | None:
    """The workbook's styles part, parsed; None when it has none that can be read (calamine
    then reads no date formats either)."""
    target = next((r.get("Target", "") for r in rels.iter()
                   if r.get("Type", "").endswith("/styles")), None)
    if target is None:
        return None
    try:
        return ElementTree.fromstring(archive.read(_part_name(folder, target)))
    except (KeyError, ElementTree.ParseError):
        return None


def _cell_formats(styles: ElementTree.Element) -> dict[int, Format]:
    """The cell styles (``cellXfs`` index) whose number format may show a number otherwise
    than it holds (see importer/number_formats.py)."""
    # The cells' formats only: <numFmts> and <cellXfs> at the top, not the conditional
    # formats' own (<dxfs>), which may reuse the same ids.
    parts = {e.tag.rpartition("}")[2]: e for e in styles}
    codes = dict(BUILTIN)
    for element in parts.get("numFmts", []):
        if (number := _number(element.get("numFmtId"))) is not None:
            codes[number] = element.get("formatCode", "")
    found: dict[int, Format] = {}
    for index, xf in enumerate(parts.get("cellXfs", [])):
        code = codes.get(_number(xf.get("numFmtId", "0")) or 0)
        if code is not None and (number_format := parse(code)).suspect:
            found[index] = number_format
    return found


def _number(text: str | None) -> int | None:
    """An attribute's whole number (ASCII digits only: ``"²".isdigit()`` is true)."""
    return int(text) if text and text.isascii() and text.isdigit() else None


def _workbook_part(archive: zipfile.ZipFile) -> str:
    """The workbook's part name, from the package relationships (the officeDocument one)."""
    try:
        package = ElementTree.fromstring(archive.read("_rels/.rels"))
    except KeyError:
        return "xl/workbook.xml"
    for rel in package.iter():
        if rel.tag.endswith("Relationship") and rel.get("Type", "").endswith(
                "/officeDocument"):
            return _part_name("", rel.get("Target", ""))
    return "xl/workbook.xml"


def _part_of(parts: dict[str, str] | None, name: str, sheet_name: str) -> str:
    """A visible worksheet's XML part, which must be found: without it, hidden rows, error
    cells and formulas without a saved result could not be seen, and would be posted.

    Raises:
        FileRejected: the list of sheets cannot be read, or does not name this one.
    """
    if parts is not None:
        if sheet_name in parts:
            return parts[sheet_name]
        # XML reads a tab or a line break in an attribute as a space; calamine does not.
        spaced = {re.sub(r"[\t\r\n]", " ", k): v for k, v in parts.items()}
        found = spaced.get(re.sub(r"[\t\r\n]", " ", sheet_name))
        if found is not None:
            return found
    raise FileRejected(name, (
        f"the workbook's list of sheets cannot be read (or does not name sheet {sheet_name!r}), "
        "so hidden rows and error cells could not be checked; open it in Excel and save it "
        "again as .xlsx"))


def _part_name(folder: str, target: str) -> str:
    """A relationship's target as a part name in the zip: absolute (``/xl/...``), or relative
    to the folder of the part whose relationships name it."""
    return target.lstrip("/") if target.startswith("/") else posixpath.normpath(
        f"{folder}/{target}" if folder else target)


def scan_sheet_xml(path: Path, part: str | None, recalculate: bool = False,
                   styles: dict[int, Format] | None = None) -> SheetScan:
    """Find error cells (as their text, ``#N/A``), formulas without a cached value, and
    hidden (or filtered-out) rows and columns.

    Args:
        path: the workbook.
        part: the worksheet's XML part, from :func:`_read_book`.
        recalculate: the workbook asks to be calculated when opened (see :func:`_read_book`):
            every formula counts as one without a cached value.
        styles: the workbook's styles whose number format may show a cell otherwise than it
            holds (see :func:`_cell_formats`): such cells are listed in ``shown``.

    Returns:
        the cells calamine shows as empty that must not be read as empty, and what is hidden.
    """
    scan = SheetScan(recalculate=recalculate, styles=styles or {})
    if part is None:
        return scan
    with zipfile.ZipFile(path) as archive:
        scan.tables = _tables_with_totals(archive, part)
        with archive.open(part) as stream:
            if _scan_blocks(stream, scan, path.name):
                return scan
        # Rows or cells without r= (optional in ECMA-376, left out by some generators) or
        # attributes in single quotes: every row and cell is counted instead.
        scan.fixes.clear()
        scan.hidden_rows.clear()
        scan.shown.clear()
        scan.merged.clear()
        scan.untrusted = 0
        with archive.open(part) as stream:
            _scan_by_position(stream, scan, path.name)
    return scan


def _scan_blocks(stream: IO[bytes], scan: SheetScan, name: str) -> bool:
    """The fast scan: only blocks that hold a formula, an error cell or a hidden row are
    searched, and cells and rows are placed by their ``r="A1"`` attribute.

    Returns:
        False when something found cannot be placed or read that way (see
        :func:`_scan_by_position`).
    """
    pending: list[bytes] = []  # a row longer than a block, read so far (joined once)
    if 0 in scan.styles:
        return False  # cells without s= take style 0: the full scan reads every cell
    markers = [b's="%d"' % index for index in scan.styles]
    styled = _styled_cells(scan.styles)
    while True:
        block = stream.read(XML_BLOCK)
        if block:  # only whole rows are searched; the rest waits for the next block
            cut = block.rfind(b"row>")
            if cut < 0:
                pending.append(block)
                continue
            data = b"".join([*pending, block[:cut + 4]])
            pending = [block[cut + 4:]]
        else:
            data = b"".join(pending)
        if any(odd in data for odd in _ODD_ATTRIBUTES):
            return False
        # Plain substring tests (memchr-fast); a false alarm only costs the cell regex.
        if (b"<f" in data or b":f" in data or b't="e"' in data) and not _fix_cells(
                data, scan, name):
            return False
        if (b"hidden" in data or _LOW_HEIGHT.search(data)) and not _hidden_rows(data, scan):
            return False
        if any(mark in data for mark in markers) and not _shown_cells(data, scan, styled):
            return False
        if b"mergeCell" in data:
            scan.merged += [m.decode("ascii", "replace") for m in _MERGE_CELL.findall(data)]
        if not block:
            return True


def _styled_cells(styles: dict[int, Format]) -> re.Pattern[bytes]:
    """A pattern for the cells of the given styles only (attributes, inner XML)."""
    ids = b"|".join(b"%d" % index for index in sorted(styles)) or b"-"
    return re.compile(rb"<" + _P + rb"c\s([^>]*?\bs=\"(?:" + ids + rb")\"[^>]*?)(?:/>|>(.*?)</"
                      + _P + rb"c>)", re.S)


def _shown_cells(data: bytes, scan: SheetScan, styled: re.Pattern[bytes]) -> bool:
    """The number cells of whole rows of sheet XML whose style's number format shows them
    otherwise than they hold; False when one cannot be placed (no ``r``)."""
    for match in styled.finditer(data):
        attrs, inner = match.group(1) or b"", match.group(2) or b""
        style = _STYLE.search(attrs)
        kind = _TYPE.search(attrs)
        value = _VALUE.search(inner)
        if style is None or (kind is not None and kind.group(1) != b"n") or value is None:
            continue
        number_format = scan.styles.get(int(style.group(1)))
        if number_format is None:
            continue
        traits = number_format.of((value.group(1) or b"").decode("ascii", "replace"))
        if not traits:
            continue
        ref = _REF.search(attrs)
        if ref is None:
            return False
        scan.shown.setdefault(int(ref.group(2)) - 1, []).append(
            (_column_index(ref.group(1)), number_format.code, traits))
    return True


def _hidden_rows(data: bytes, scan: SheetScan) -> bool:
    """The hidden rows (and whether a column is hidden) of whole rows of sheet XML; False when
    a row's attributes cannot be read by pattern (the full scan parses them)."""
    for match in _ROW_TAG.finditer(data):
        tag = match.group(1)
        attributes = dict(_ATTRIBUTE.findall(tag))
        if re.search(rb"\s=|=\s", tag) or (b"hidden" in tag and b"hidden" not in attributes):
            return False  # written some other way (hidden\t=\t"1"): the XML parser reads it
        hidden = _row_hidden(attributes.get(b"hidden"), attributes.get(b"ht"))
        if hidden is None:
            return False
        if hidden:
            number = attributes.get(b"r")
            if number is None or not number.isdigit():
                return False
            scan.hidden_rows.add(int(number) - 1)
    scan.hidden_columns = scan.hidden_columns or bool(_HIDDEN_COLS.search(data))
    return True


def _row_hidden(hidden: bytes | str | None, height: bytes | str | None) -> bool | None:
    """Whether a row cannot be seen: hidden (or filtered out), or less than a point high (a
    height of 0 hides it just as well). None when an attribute is not a plain value
    (``&#49;``), which only the XML parser reads."""
    if isinstance(hidden, bytes):
        hidden = hidden.decode("ascii", "replace")
    if isinstance(height, bytes):
        height = height.decode("ascii", "replace")
    if hidden not in (None, "0", "1", "true", "false"):
        return None
    try:
        low = height is not None and float(height) < 1.0
    except ValueError:
        return None
    return hidden in ("1", "true") or low


def _scan_by_position(stream: IO[bytes], scan: SheetScan, name: str) -> None:
    """The full scan: every row and cell parsed and counted. A row without ``r`` follows the
    row before it, a cell without ``r`` the cell before it in its row (as Excel and calamine
    read them)."""
    row = column = -1
    rows_parent: ElementTree.Element | None = None
    for event, element in ElementTree.iterparse(stream, events=("start", "end")):
        tag = element.tag.rpartition("}")[2]
        if event == "start":
            if tag == "sheetData":
                rows_parent = element
            elif tag == "row":
                number = element.get("r")
                row = int(number) - 1 if number and number.isdigit() else row + 1
                column = -1
                if _row_hidden(element.get("hidden"), element.get("ht")) is not False:
                    scan.hidden_rows.add(row)  # (a value not understood: hidden, to be safe)
            elif tag == "c":
                ref = _LETTERS.match(element.get("r", "").encode())
                column = _column_index(ref.group(1)) if ref else column + 1
            elif tag == "col" and element.get("hidden") in ("1", "true"):
                scan.hidden_columns = True
            elif tag == "mergeCell" and element.get("ref"):
                scan.merged.append(element.get("ref", ""))
            continue
        if tag == "c":
            children = {child.tag.rpartition("}")[2]: child for child in element}
            value_tag = children.get("v")
            style = _number(element.get("s", "0"))  # no s: the first style, as Excel reads it
            number_format = scan.styles.get(style) if style is not None else None
            if number_format is not None and element.get("t", "n") == "n" and \
                    value_tag is not None and (traits := number_format.of(value_tag.text or "")):
                scan.shown.setdefault(row, []).append((column, number_format.code, traits))
            fix = _cell_fix(element.get("t", "n"), "f" in children,
                            None if value_tag is None else value_tag.text or "", scan)
            formula = children.get("f")
            if formula is not None and formula.get("t") == "array":
                _mark_array_range(scan, name, formula.get("ref", ""))
            if fix is not None:
                scan.fixes.setdefault(row, []).append((column, fix))
            element.clear()
        elif tag == "row":
            element.clear()
            if rows_parent is not None:  # done with: a million rows must not pile up here
                rows_parent.remove(element)


def _mark_array_range(scan: SheetScan, name: str, cells: str) -> None:
    """In a workbook to be calculated when opened, the other cells of an array formula's range
    (``<f t="array" ref="B2:B9">`` in B2; B3:B9 hold results and no ``<f>``) are formulas
    without a saved result too.

    Raises:
        FileRejected: a range of more than :data:`MAX_ARRAY_CELLS` cells.
    """
    if not scan.recalculate:
        return
    found = _RANGE.match(cells)
    if found is None:  # one cell: the formula's own, counted
        return
    first_col, last_col = _column_index(found.group(1).encode()), _column_index(
        found.group(3).encode())
    first_row, last_row = int(found.group(2)) - 1, int(found.group(4)) - 1
    if (last_row - first_row + 1) * (last_col - first_col + 1) > MAX_ARRAY_CELLS:
        raise FileRejected(name, f"an array formula covers {cells}; "
                                 "the workbook asks Excel to calculate it when opened, so its "
                                 "results are not saved in it: open the file in Excel, let it "
                                 "calculate, save it and run it again")
    for row in range(first_row, last_row + 1):
        for column in range(first_col, last_col + 1):
            if (row, column) != (first_row, first_col):  # the formula's own cell: counted
                scan.fixes.setdefault(row, []).append((column, FORMULA_WITHOUT_VALUE))
                scan.untrusted += 1


def _cell_fix(cell_type: str, formula: bool, value: str | None,
              scan: SheetScan) -> str | None:
    """What a cell calamine shows (as empty, or as a value not to be trusted) really holds:
    its error text (``#N/A``), the formula-without-value marker, or None (calamine's value
    stands).

    Args:
        cell_type: the ``t`` attribute (``n`` when absent).
        formula: whether the cell has an ``<f>``.
        value: the ``<v>`` text, ``""`` for an empty one, None for none at all.
        scan: in a workbook that disowns its saved results (``recalculate``) every formula
            is one without a value, counted in ``untrusted``.
    """
    if formula and scan.recalculate:
        scan.untrusted += 1
        return FORMULA_WITHOUT_VALUE
    if cell_type == "e" and value:
        return value.strip()
    if formula and (value is None or (not value and cell_type != "str")):
        return FORMULA_WITHOUT_VALUE
    return None




def _tables_with_totals(archive: zipfile.ZipFile, part: str) -> list[ExcelTable]:
    """The sheet's Excel tables that have a Total Row (Table Design > Total Row: a sum, not a
    payment), from the sheet's relationships to its table parts. A part that cannot be read
    gives none (its totals row is then read as data, and fails validation)."""
    folder, _, base = part.rpartition("/")
    try:
        rels = ElementTree.fromstring(archive.read(f"{folder}/_rels/{base}.rels"))
    except (KeyError, ElementTree.ParseError):
        return []
    found: list[ExcelTable] = []
    for rel in rels.iter():
        if not (rel.tag.endswith("Relationship") and rel.get("Type", "").endswith("/table")):
            continue
        try:
            table = ElementTree.fromstring(archive.read(_part_name(folder, rel.get("Target", ""))))
            count = int(table.get("totalsRowCount") or 0)
            ref = _RANGE.match(table.get("ref", ""))
        except (KeyError, ElementTree.ParseError, ValueError):
            continue
        if not count or ref is None:
            continue
        first, last = int(ref.group(2)), int(ref.group(4))
        found.append(ExcelTable(
            name=table.get("displayName") or table.get("name") or "?",
            header_row=first - 1,
            first_column=_column_index(ref.group(1).encode()),
            last_column=_column_index(ref.group(3).encode()),
            totals_rows=range(last - count, last)))
    return found


def _fix_cells(data: bytes, scan: SheetScan, name: str) -> bool:
    """Collect the fixes of the cells in ``data``; False when one cannot be placed (no
    ``r``)."""
    for match in _CELL.finditer(data):
        attrs, inner = match.group(1) or b"", match.group(2) or b""
        kind = _TYPE.search(attrs)
        cell_type = kind.group(1) if kind else b"n"
        formula = _FORMULA.search(inner) is not None
        if cell_type != b"e" and not formula:
            continue
        value_tag = _VALUE.search(inner)
        fix = _cell_fix(cell_type.decode("ascii"), formula, None if value_tag is None else
                        (value_tag.group(1) or b"").decode("utf-8", "replace"), scan)
        if formula and scan.recalculate and (array := _ARRAY_FORMULA.search(inner)) and (
                ref_attr := _REF_ATTR.search(array.group(0))):
            _mark_array_range(scan, name, ref_attr.group(1).decode("ascii", "replace"))
        if fix is None:
            continue
        ref = _REF.search(attrs)
        if ref is None:
            return False
        scan.fixes.setdefault(int(ref.group(2)) - 1, []).append(
            (_column_index(ref.group(1)), fix))
    return True


def _workbook(path: Path) -> Any:
    from python_calamine import CalamineWorkbook

    with path.open("rb") as head:
        ole2 = head.read(8) == _OLE2
    if ole2:  # an encrypted .xlsx is an OLE2 container (as an old .xls is)
        raise FileRejected(path.name, "is not an .xlsx workbook inside but an OLE2 file: a "
                           "password-protected (encrypted) workbook, or an old .xls renamed. "
                           "Open it in Excel; if it asks for a password, clear it (File > Info "
                           "> Protect Workbook > Encrypt with Password); save it as .xlsx")
    try:
        return CalamineWorkbook.from_path(str(path))
    except Exception as exc:  # calamine's errors for a corrupt or foreign file vary by version
        if "password" in str(exc).lower():
            raise FileRejected(path.name, "the workbook is password-protected (encrypted): in "
                               "Excel, File > Info > Protect Workbook > Encrypt with Password, "
                               "clear the password, and save it again") from None
        raise FileRejected(path.name, f"cannot be read as an Excel workbook ({exc}); "
                                      "save it again from Excel as .xlsx") from None


def _apply(row: list[Any], fixes: list[tuple[int, str]] | None, *,
           keep_shown: bool = False) -> list[Any]:
    """A row with the scan's fixes put where calamine shows a cell as empty; a formula's
    result the workbook disowns (see _read_book) is shown, and replaced too, unless
    ``keep_shown`` (the rows searched for the header: a header cell written as a formula is
    read as its saved text)."""
    if fixes:
        row = list(row)
        for column, value in fixes:
            if column < len(row) and (row[column] == "" or (
                    value is FORMULA_WITHOUT_VALUE and not keep_shown)):
                row[column] = value
            elif column >= len(row):
                row.extend([""] * (column - len(row)) + [value])
    return row


def open_xlsx(path: Path, options: ReadOptions) -> tuple[FileInfo, list[Table]]:
    """Open a workbook (see ``read.open_file``): one Table per visible sheet holding data."""
    from python_calamine import SheetTypeEnum, SheetVisibleEnum

    name = path.name
    digest, size = hash_file(path)
    info = file_info(path, digest, size)
    own = _read_book(path)
    book = _workbook(path)
    tables: list[Table] = []
    for meta in book.sheets_metadata:
        sheet_name = meta.name
        if meta.visible != SheetVisibleEnum.Visible:
            info.notes.append(f"sheet {sheet_name!r} is hidden and was skipped")
            continue
        if meta.typ != SheetTypeEnum.WorkSheet:
            info.notes.append(f"sheet {sheet_name!r} is not a worksheet and was skipped")
            continue
        with _sheet_errors(name, sheet_name):
            table = _open_sheet(path, book, sheet_name, _part_of(own.parts, name, sheet_name),
                                own.recalculate, own.styles, info, options)
        if table is not None:
            tables.append(table)
    if not tables:
        raise FileRejected(name, "no visible worksheet holds data")
    return info, tables


@contextmanager
def _sheet_errors(name: str, sheet_name: str) -> Iterator[None]:
    """A sheet calamine cannot read (a damaged part, a corrupt stream) rejects its file,
    named, instead of ending the run."""
    try:
        yield
    except FileRejected:
        raise
    except Exception as exc:  # calamine's and zipfile's errors vary by version
        raise FileRejected(name, f"sheet {sheet_name!r} cannot be read ({exc}); the workbook "
                                 "is damaged: save it again from Excel as .xlsx") from None


def _sheet(book: Any, name: str, sheet_name: str) -> Any:
    """A worksheet, refused when its used area is absurdly wide (a stray cell far to the
    right would make every row that wide in memory)."""
    sheet = book.get_sheet_by_name(sheet_name)
    _check_width(name, sheet_name, sheet.end[1] + 1 if sheet.end is not None else 0)
    return sheet


def _check_width(name: str, sheet_name: str, columns: int) -> None:
    if columns > MAX_COLUMNS:
        raise FileRejected(name, (
            f"sheet {sheet_name!r} is used up to column {column_letter(columns - 1)} "
            f"({columns:,} columns): a stray cell far to the right of the data? Delete the "
            "columns right of your data (or copy the data to a new sheet) and save again"))


def _open_sheet(path: Path, book: Any, sheet_name: str, part: str | None, recalculate: bool,
                styles: dict[int, Format], info: FileInfo,
                options: ReadOptions) -> Table | None:
    """One visible worksheet as a Table; None (with a note) when it holds no data."""
    name = path.name
    sheet = _sheet(book, name, sheet_name)
    scan = scan_sheet_xml(path, part, recalculate, styles)
    fixes = scan.fixes
    if sheet.start is None and not fixes:
        info.notes.append(f"sheet {sheet_name!r} is empty and was skipped")
        return None
    first = sheet.start[0] if sheet.start is not None else min(fixes)
    top = sheet.to_python(skip_empty_area=False, nrows=first + HEADER_PROBE_ROWS)
    found = find_header((i + 1, _apply(row, fixes.get(i), keep_shown=True))
                        for i, row in enumerate(top))
    if found is None:
        info.notes.append(f"sheet {sheet_name!r} is empty and was skipped")
        return None
    header_row, header = found
    if _not_data(sheet_name, path.stem, header, options):
        info.notes.append(f"sheet {sheet_name!r} has no recognised columns and its name "
                          "names no kind: skipped as not data")
        return None
    kind = kind_for(name, sheet_name, options, fallback=path.stem)
    where = f"sheet {sheet_name!r}: "
    if header_row > 1:
        info.notes.append(f"{where}header on row {header_row}; the rows above it are read "
                          "as titles and ignored")
    width = max([len(header)] + [c + 1 for row in fixes.values() for c, _ in row])
    _check_width(name, sheet_name, width)  # a formula cell calamine does not count, too
    header = header + [""] * (width - len(header))
    with_values = _headerless_with_values(sheet, header, header_row, fixes)
    try:
        positions, columns, fields = build_columns(
            name, where, header, with_values.__contains__, column_letter, kind, options,
            header_row, info.notes)
    except FileRejected as exc:
        if options.kind is not None or kinds_named(sheet_name):
            raise
        # The kind came from the file name: say so, the sheet may hold another kind.
        raise FileRejected(name, f"{exc.reason}. The sheet's name tells no kind, so it was "
                                 f"read as {kind.name}, the kind the file name tells; if it "
                                 "holds another kind, rename the sheet after it ('Payments', "
                                 "'Creditings', 'Cancellations')") from None
    info.kinds.append(kind.name)
    hidden = {r for r in scan.hidden_rows if r >= header_row}
    if hidden:
        info.notes.append(f"{where}{len(hidden)} row(s) are hidden or filtered out (e.g. row "
                          f"{min(hidden) + 1}): they are reported as errors, never posted")
    if scan.hidden_columns:
        info.notes.append(f"{where}some columns are hidden; they are read like the others")
    # header_row is the header's row number, i.e. the 0-based index of the first data row.
    recognised = [p for p, c in zip(positions, columns, strict=True) if c in fields]
    last = max([sheet.end[0] if sheet.end is not None else 0, *fixes, header_row])
    merged = _merged_rows(scan.merged, header_row, last, set(recognised))
    if scan.untrusted:
        sent = set(recognised)  # a formula in a column never sent harms nothing
        untrusted = sum(value is FORMULA_WITHOUT_VALUE and column in sent
                        for row, cells in fixes.items() if row >= header_row
                        for column, value in cells)
        if untrusted:
            info.notes.append(
                f"{where}the workbook asks Excel to calculate it when opened (it was written "
                "by a program, not saved by Excel), so the results saved with its formulas are "
                f"placeholders or out of date: {untrusted} formula cell(s) of columns that are "
                "sent are read as formulas without a saved result. Open the file in Excel, let "
                "it calculate, save it and run it again")
    totals: set[int] = set()
    for excel_table in scan.tables:  # only a table that is the data: not one beside it
        if excel_table.is_the_data(header_row - 1, recognised):
            totals.update(excel_table.totals_rows)
            rows_text = ", ".join(str(r + 1) for r in excel_table.totals_rows)
            info.notes.append(f"{where}row {rows_text} is the Total Row of the Excel table "
                              f"{excel_table.name!r}: a sum, not data; skipped")
    table = Table(file=info, sheet=sheet_name, kind=kind, header_row=header_row,
                  columns=columns, fields=fields, chunks=lambda: iter(()))
    table.chunks = _chunker(table, positions, fixes, scan.shown, hidden, merged, totals,
                            options.chunk_rows)
    return table


def _merged_rows(ranges: list[str], first_row: int, last_row: int,
                 columns: set[int]) -> dict[int, str]:
    """The data rows (0-based, ``first_row`` to ``last_row``) that lie in merged cells below
    their first row, or right of their first column, over a column that is read: the value
    the person sees there is held by the first cell only, and the row's own cell is empty."""
    rows: dict[int, str] = {}
    for ref in ranges:
        found = _RANGE.match(ref.replace("$", ""))
        if found is None:
            continue
        first_col, last_col = (_column_index(found.group(i).encode()) for i in (1, 3))
        top, bottom = int(found.group(2)) - 1, int(found.group(4)) - 1
        read = [c for c in columns if first_col <= c <= last_col]
        if not read:
            continue
        for row in range(max(top, first_row), min(bottom, last_row) + 1):
            if any((row, c) != (top, first_col) for c in read):
                rows.setdefault(row, ref)
    return rows


def _headerless_with_values(sheet: Any, header: list[str], header_row: int,
                            fixes: Fixes) -> set[int]:
    """Positions without a header text that hold a value below the header."""
    empty = {i for i, text in enumerate(header) if not text}
    if not empty:  # the usual case: no need to look at every row
        return set()
    found = {c for r, row in fixes.items() if r >= header_row for c, _ in row if c in empty}
    for row in sheet.to_python(skip_empty_area=False)[header_row:]:
        for index in empty - found:
            if index < len(row) and cell_value(row[index]) is not None:
                found.add(index)
    return found


def _not_data(sheet_name: str, stem: str, header: list[str], options: ReadOptions) -> bool:
    """A sheet beside the data (notes, instructions, a pivot) is skipped, not fatal.

    Its name names no kind, and its header has no recognised column (or fewer than two when
    neither the file name nor --kind gives a kind either). A sheet that looks like data of an
    unknown kind still rejects the file, with the naming hint.
    """
    if kind_from_label(sheet_name) is not None:
        return False
    recognised = sum(canonical_header(t) in RECOGNISED for t in header)
    if options.kind is not None or kind_from_label(stem) is not None:
        return recognised == 0
    return recognised < 2


def _chunker(table: Table, positions: list[int], fixes: Fixes,
             formats: dict[int, list[tuple[int, str, frozenset[str]]]], hidden: set[int],
             merged: dict[int, str], skip: set[int],
             chunk_rows: int) -> Callable[[], Iterator[pd.DataFrame]]:
    """The table's ``chunks`` callable: re-reads the sheet on each call (memory stays bounded
    by one sheet, not by every workbook the run has opened). Rows in ``skip`` (0-based: the
    totals rows of Excel tables) are left out like empty rows; cells in ``formats`` (see
    ``SheetScan.shown``) are marked with what their number format does to them."""
    counted = False

    def chunks() -> Iterator[pd.DataFrame]:
        nonlocal counted
        import pandas as pd

        info = table.file
        assert table.sheet is not None
        with _sheet_errors(info.name, table.sheet):
            sheet = _sheet(_workbook(info.path), info.name, table.sheet)
            rows = sheet.to_python(skip_empty_area=False)
        del sheet
        width = max(positions) + 1
        # calamine's range ends at its last cell with a value: rows below it holding only
        # formulas without a cached value (or error cells) are known from the XML alone.
        end = max([len(rows)] + [index + 1 for index in fixes])
        for start in range(table.header_row, end, chunk_rows):
            data: list[list[Any]] = []
            numbers: list[int] = []
            for index in range(start, min(start + chunk_rows, end)):
                if index in skip:
                    continue
                row = _apply(rows[index] if index < len(rows) else [], fixes.get(index))
                if len(row) < width:
                    row = list(row) + [""] * (width - len(row))
                if index in formats:
                    row = list(row)
                    for column, code, traits in formats[index]:
                        if column < len(row):
                            row[column] = shown(row[column], code, traits)
                cells = [cell_value(row[p]) for p in positions]
                if any(c is not None for c in cells):
                    data.append(cells)
                    numbers.append(index + 1)
            if not data:
                continue
            out = pd.DataFrame(data, columns=table.columns, dtype=object)
            out[ROW] = pd.Series(numbers, dtype="int64")
            if hidden:
                out[HIDDEN] = pd.Series([n - 1 in hidden for n in numbers], dtype=bool)
            if merged:
                out[MERGED] = pd.Series([merged.get(n - 1) for n in numbers], dtype=object)
            if not counted:
                info.rows += len(out)
            yield out
        counted = True

    return chunks
