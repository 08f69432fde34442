"""report.xlsx for a finance person: a Summary sheet and a Rows sheet coloured by status.

Why not openpyxl here: without lxml its write-only mode costs ~20 µs per cell on our
machines (over a minute for a 100 000-row sheet). The workbook is simple — two sheets,
inline strings, a handful of styles — so we stream the SpreadsheetML parts straight into
the zip instead; tests read the result back with openpyxl. The rows arrive as the
report.csv texts of the rows to list, already formula-safe (``report.escape_formula``).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importer.report import Summary

MONEY_FORMAT = "#,##0.00"
WIDTHS = {"file": 22, "sheet": 14, "row": 7, "kind": 13, "status": 11, "reason": 26,
          "message": 60, "creditor": 26, "case": 26, "invoice_number": 16, "currency": 9,
          "amount": 14, "settled_amount": 14, "bank_transaction_date": 30,
          "client_registration_date": 30, "origin": 16, "amili_id": 26, "http_status": 8,
          "attempts": 8}
NUMBER_COLUMNS = ("amount", "settled_amount")
INTEGER_COLUMNS = ("row", "http_status", "attempts")
MAX_CELL_TEXT = 32_767  # Excel's limit per cell

# Style ids, in the order of cellXfs in _STYLES.
S_HEADER, S_MONEY, S_TITLE, S_BOLD = 1, 2, 6, 7
S_STATUS = {"valid": 3, "completed": 3, "warning": 4, "error": 5}
_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NEEDS_ESCAPE = re.compile(r"[&<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_INTEGER = re.compile(r"-?\d{1,15}")

_NS = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_XML = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'

_STYLES = _XML + f"""<styleSheet {_NS}>
<numFmts count="1"><numFmt numFmtId="164" formatCode="{MONEY_FORMAT}"/></numFmts>
<fonts count="6">
<font><sz val="11"/><name val="Calibri"/><family val="2"/></font>
<font><b/><sz val="11"/><name val="Calibri"/><family val="2"/></font>
<font><b/><sz val="11"/><color rgb="FF006100"/><name val="Calibri"/><family val="2"/></font>
<font><b/><sz val="11"/><color rgb="FF9C5700"/><name val="Calibri"/><family val="2"/></font>
<font><b/><sz val="11"/><color rgb="FF9C0006"/><name val="Calibri"/><family val="2"/></font>
<font><b/><sz val="14"/><name val="Calibri"/><family val="2"/></font>
</fonts>
<fills count="6">
<fill><patternFill patternType="none"/></fill>
<fill><patternFill patternType="gray125"/></fill>
<fill><patternFill patternType="solid"><fgColor rgb="FFD9D9D9"/></patternFill></fill>
<fill><patternFill patternType="solid"><fgColor rgb="FFC6EFCE"/></patternFill></fill>
<fill><patternFill patternType="solid"><fgColor rgb="FFFFEB9C"/></patternFill></fill>
<fill><patternFill patternType="solid"><fgColor rgb="FFFFC7CE"/></patternFill></fill>
</fills>
<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>
<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>
<cellXfs count="8">
<xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>
<xf numFmtId="0" fontId="1" fillId="2" borderId="0" xfId="0" applyFont="1" applyFill="1"/>
<xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>
<xf numFmtId="0" fontId="2" fillId="3" borderId="0" xfId="0" applyFont="1" applyFill="1"/>
<xf numFmtId="0" fontId="3" fillId="4" borderId="0" xfId="0" applyFont="1" applyFill="1"/>
<xf numFmtId="0" fontId="4" fillId="5" borderId="0" xfId="0" applyFont="1" applyFill="1"/>
<xf numFmtId="0" fontId="5" fillId="0" borderId="0" xfId="0" applyFont="1"/>
<xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" applyFont="1"/>
</cellXfs>
<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>
<dxfs count="2">
<dxf><fill><patternFill patternType="solid"><bgColor rgb="FFFFEB9C"/></patternFill></fill></dxf>
<dxf><fill><patternFill patternType="solid"><bgColor rgb="FFFFC7CE"/></patternFill></fill></dxf>
</dxfs>
</styleSheet>"""

_CONTENT_TYPES = _XML + """<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="xml" ContentType="application/xml"/>
<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>
<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>
<Override PartName="/xl/worksheets/sheet2.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>
<Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>
</Types>"""  # noqa: E501

_ROOT_RELS = _XML + """<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>
</Relationships>"""  # noqa: E501

_WORKBOOK_RELS = _XML + """<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>
<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet2.xml"/>
<Relationship Id="rId3" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/>
</Relationships>"""  # noqa: E501


def _workbook(filter_ref: str) -> str:
    return _XML + (
        f'<workbook {_NS} xmlns:r="{_REL_NS}"><bookViews><workbookView activeTab="0"/>'
        '</bookViews><sheets><sheet name="Summary" sheetId="1" r:id="rId1"/>'
        '<sheet name="Rows" sheetId="2" r:id="rId2"/></sheets><definedNames>'
        f'<definedName name="_xlnm._FilterDatabase" localSheetId="1" hidden="1">'
        f"Rows!{filter_ref}</definedName></definedNames></workbook>")


def column_letter(index: int) -> str:
    """Excel's column letters for a 1-based column index (1 → A, 27 → AA)."""
    letters = ""
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def _escape(text: str) -> str:
    if _NEEDS_ESCAPE.search(text):
        text = _ILLEGAL.sub("\ufffd", text)
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        # A raw CR would be read back as LF (XML line-end normalisation).
        text = text.replace("\r", "&#13;")
    return text


def _text_cell(ref: str, text: str, style: int = 0) -> str:
    if len(text) > MAX_CELL_TEXT:
        text = text[:MAX_CELL_TEXT - 20] + " …(cut; see CSV)"
    space = ' xml:space="preserve"' if text[:1].isspace() or text[-1:].isspace() else ""
    s = f' s="{style}"' if style else ""
    return f'<c r="{ref}"{s} t="inlineStr"><is><t{space}>{_escape(text)}</t></is></c>'


def _number_cell(ref: str, number: Any, style: int = 0) -> str:
    s = f' s="{style}"' if style else ""
    return f'<c r="{ref}"{s}><v>{number}</v></c>'


def _cell(ref: str, value: Any, style: int = 0) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return _text_cell(ref, str(value), style)
    if isinstance(value, Decimal):
        return _number_cell(ref, format(value, "f"), style)
    if isinstance(value, int | float):
        return _number_cell(ref, value, style)
    return _text_cell(ref, str(value), style)


def _cols(widths: Sequence[float]) -> str:
    return "<cols>" + "".join(
        f'<col min="{i}" max="{i}" width="{w}" customWidth="1"/>'
        for i, w in enumerate(widths, start=1)) + "</cols>"


def write_report_xlsx(path: Path, head: dict[str, Any], summary: Summary,
                      columns: Sequence[str], rows: Iterable[list[str]], *,
                      truncated: bool, limit: int) -> None:
    """Write report.xlsx: the Summary sheet, then the Rows sheet.

    Args:
        path: the (temp) file to write.
        head: the report.json keys other than rows (run id, mode, times, files, extra).
        summary: counts and amounts.
        columns: the Rows sheet header (report.csv's, formula-safe).
        rows: the rows to list, as report.csv texts.
        truncated: only rows that are not valid/completed are listed.
        limit: the row count above which the sheet is truncated (for the Summary text).
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("[Content_Types].xml", _CONTENT_TYPES)
        zf.writestr("_rels/.rels", _ROOT_RELS)
        zf.writestr("xl/_rels/workbook.xml.rels", _WORKBOOK_RELS)
        zf.writestr("xl/styles.xml", _STYLES)
        with zf.open("xl/worksheets/sheet2.xml", "w", force_zip64=True) as raw:
            listed = _write_rows(raw, columns, rows)
        last = column_letter(len(columns))
        zf.writestr("xl/workbook.xml", _workbook(f"$A$1:${last}${listed + 1}"))
        zf.writestr("xl/worksheets/sheet1.xml",
                    _summary_xml(head, summary, truncated=truncated, limit=limit, listed=listed))


def _write_rows(out: IO[bytes], columns: Sequence[str], rows: Iterable[list[str]]) -> int:
    """Stream the Rows sheet; returns how many data rows were written."""
    letters = [column_letter(i) for i in range(1, len(columns) + 1)]
    widths = [WIDTHS.get(c, min(max(len(c) + 2, 12), 40)) for c in columns]
    status_at = columns.index("status")
    numbers = {columns.index(c) for c in NUMBER_COLUMNS if c in columns}
    integers = {columns.index(c) for c in INTEGER_COLUMNS if c in columns}
    plain = [j for j in range(len(columns)) if j not in numbers | integers | {status_at}]
    status_letter = letters[status_at]

    header = "".join(_text_cell(f"{letters[j]}1", name, S_HEADER)
                     for j, name in enumerate(columns))
    out.write((_XML + f'<worksheet {_NS} xmlns:r="{_REL_NS}">'
               '<sheetViews><sheetView workbookViewId="0">'
               '<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>'
               '<selection pane="bottomLeft" activeCell="A2" sqref="A2"/></sheetView>'
               f'</sheetViews><sheetFormatPr defaultRowHeight="15"/>{_cols(widths)}'
               f'<sheetData><row r="1">{header}</row>').encode("utf-8"))
    count = 0
    batch: list[str] = []
    for count, row in enumerate(rows, start=1):  # noqa: B007 - count is used after the loop
        n = count + 1
        cells = [""] * len(columns)
        for j in plain:
            value = row[j]
            if value:
                cells[j] = _text_cell(f"{letters[j]}{n}", value)
        status = row[status_at]
        cells[status_at] = _text_cell(f"{status_letter}{n}", status,
                                      S_STATUS.get(status, 0)) if status else ""
        for j in numbers:
            cells[j] = _money_cell(f"{letters[j]}{n}", row[j])
        for j in integers:
            value = row[j]
            if _INTEGER.fullmatch(value):
                cells[j] = _number_cell(f"{letters[j]}{n}", value)
            elif value:
                cells[j] = _text_cell(f"{letters[j]}{n}", value)
        batch.append(f'<row r="{n}">{"".join(cells)}</row>')
        if len(batch) >= 5000:
            out.write("".join(batch).encode("utf-8", errors="replace"))
            batch.clear()
    out.write("".join(batch).encode("utf-8", errors="replace"))
    last = letters[-1]
    span = f"A2:{last}{max(count + 1, 2)}"
    # Whole rows take their status colour through conditional formatting: no per-cell
    # styles, and the colour follows the row when the sheet is sorted or filtered.
    rules = "".join(
        f'<conditionalFormatting sqref="{span}"><cfRule type="expression" dxfId="{dxf}" '
        f'priority="{dxf + 1}"><formula>${status_letter}2="{status}"</formula></cfRule>'
        f"</conditionalFormatting>"
        for dxf, status in enumerate(("warning", "error")))
    out.write((f'</sheetData><autoFilter ref="A1:{last}{count + 1}"/>{rules}'
               '<pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" header="0.3" '
               'footer="0.3"/></worksheet>').encode())
    return count


def _money_cell(ref: str, text: str) -> str:
    if not text:
        return ""
    try:
        number = Decimal(text)
    except InvalidOperation:
        return _text_cell(ref, text)
    if not number.is_finite():
        return _text_cell(ref, text)
    return _number_cell(ref, format(number, "f"), S_MONEY)


# The Summary sheet's words for report.json's keys (the key itself in brackets, for scripts).
_LABELS = {
    "exit_code": "Exit code (exit_code)",
    "process_exit_code": "Exit code of the process (process_exit_code)",
    "posted": "Rows known to have reached Amili (posted)",
    "already_posted": "Rows already posted earlier, not sent again (already_posted)",
    "planned": "Rows a real run would post (planned)",
    "would_not_post": "Rows a real run would not post (would_not_post)",
    "could_not_run": "Why the API could not be used (could_not_run)",
    "stopped": "Stopped by a signal (stopped)",
    "not_reached": "Rows not posted because of the stop (not_reached)",
}


def _summary_xml(head: dict[str, Any], summary: Summary, *, truncated: bool, limit: int,
                 listed: int) -> str:
    from importer.report import escape_formula

    lines: list[list[tuple[Any, int]]] = []

    def add(*values: Any, style: int = 0) -> None:
        lines.append([(escape_formula(v) if isinstance(v, str) else v, style) for v in values])

    add("amili-import file-import report", style=S_TITLE)
    for label, key in (("Run id", "run_id"), ("Mode", "mode"), ("Started (UTC)", "started"),
                       ("Finished (UTC)", "finished")):
        lines.append([(label, S_BOLD), (escape_formula(str(head.get(key, ""))), 0)])
    for key, value in head.items():
        if key in {"run_id", "mode", "started", "finished", "files", "totals", "amounts",
                   "columns"}:
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            lines.append([(_LABELS.get(key, key), S_BOLD), (value, 0)])  # a number, as such
        elif value is None or isinstance(value, str | bool):
            lines.append([(_LABELS.get(key, key), S_BOLD), (escape_formula(str(value)), 0)])
    add()
    add("Files", "Rows", "Kinds", "Rejected", "SHA-256", "Notes", style=S_HEADER)
    for f in head.get("files", []):
        add(f["name"], f["rows"], ", ".join(f["kinds"]), f["rejected"] or "", f["sha256"],
            "; ".join(f["notes"]))
    add()
    add("Kind", "Status", "Rows", "Amount in the files (SEK)", style=S_HEADER)
    keys = sorted(set(summary.counts) | set(summary.amounts),
                  key=lambda k: (k[0], _rank(k[1]), k[1]))
    for kind, status in keys:
        amount = summary.amounts.get((kind, status))
        lines.append([(kind, 0), (status, S_STATUS.get(status, 0)),
                      (summary.counts.get((kind, status), 0), 0),
                      (amount if amount is not None else None, S_MONEY)])
    if keys:
        add("Amounts as written in the files; what Amili applied to each case (e.g. less, for "
            "an overpayment) is the row's settled_amount on the Rows sheet.")
    add()
    add("Status", "Rows", style=S_HEADER)
    for status, n in summary.totals.items():
        lines.append([(status, S_STATUS.get(status, 0)), (n, 0)])
    lines.append([("All rows", S_BOLD), (summary.rows, S_BOLD)])
    add()
    earlier = head.get("earlier_rows") or []
    if earlier:  # not rows of these files, but what this run learned about earlier runs
        add("Rows of earlier runs looked up again (not rows of these files)", style=S_BOLD)
        add("Run", "File", "Sheet", "Row", "Status", "Reason", "Message", style=S_HEADER)
        for r in earlier:
            lines.append([(escape_formula(str(r["run_id"])), 0),
                          (escape_formula(str(r["file"])), 0),
                          (escape_formula(str(r["sheet"] or "")), 0), (r["row"], 0),
                          (r["status"], S_STATUS.get(r["status"], 0)),
                          (escape_formula(str(r["reason"] or "")), 0),
                          (escape_formula(str(r["message"] or "")), 0)])
        add()
    if truncated:
        add(f"This run has {summary.rows} rows, more than {limit}: the Rows sheet lists only "
            "the rows that are not valid/completed.")
    if summary.xlsx_rows_left_out:
        add(f"The Rows sheet lists {listed} of {summary.rows} rows "
            f"({summary.xlsx_rows_left_out} left out); report.csv and report.json list "
            "every row.")
    else:
        add(f"The Rows sheet lists all {listed} rows.")

    body = []
    for r, values in enumerate(lines, start=1):
        cells = "".join(_cell(f"{column_letter(c)}{r}", v, s)
                        for c, (v, s) in enumerate(values, start=1))
        body.append(f'<row r="{r}">{cells}</row>')
    return (_XML + f'<worksheet {_NS} xmlns:r="{_REL_NS}"><sheetViews>'
            '<sheetView workbookViewId="0" tabSelected="1"/></sheetViews>'
            f'<sheetFormatPr defaultRowHeight="15"/>{_cols((26, 24, 14, 18, 66, 40))}'
            f'<sheetData>{"".join(body)}</sheetData>'
            '<pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" header="0.3" '
            'footer="0.3"/></worksheet>')


def _rank(status: str) -> int:
    order = ("valid", "completed", "warning", "error")
    return order.index(status) if status in order else len(order)
