"""CSV files: encoding (BOM, UTF-8, cp1252), delimiter sniffing, header, chunks with row numbers.

Row numbers are spreadsheet rows: one CSV *record* is one row, as Excel shows it (a quoted
field with a line break inside is still one row), and blank lines count as rows.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from importer.errors import FileRejected, UsageError
from importer.read import (
    HASH_BLOCK,
    ROW,
    FileInfo,
    ReadOptions,
    Table,
    build_columns,
    file_info,
    find_header,
    header_score,
    kind_for,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from importer.normalise import TextBytes

SAMPLE_CHARS = 64 * 1024
DELIMITERS = (",", ";", "\t")
_DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "\t": "\t", "comma": ",", ",": ",",
                    "semicolon": ";", ";": ";", "pipe": "|", "|": "|"}
_BOMS = ((codecs.BOM_UTF8, "utf-8", "utf-8-sig", "UTF-8 with BOM"),
         (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16", "UTF-16 LE with BOM"),
         (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16", "UTF-16 BE with BOM"))
_TOO_MANY = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def parse_delimiter(value: str) -> str:
    """The delimiter a ``--delimiter`` value means (``tab``/``\\t`` = tab).

    Raises:
        UsageError: not a single character nor a known name.
    """
    if value in _DELIMITER_NAMES or value.lower() in _DELIMITER_NAMES:
        return _DELIMITER_NAMES.get(value) or _DELIMITER_NAMES[value.lower()]
    if len(value) == 1 and value not in "\"\r\n":
        return value
    raise UsageError(f"--delimiter {value!r}: give one character, or 'tab'")


class _Scan:
    """One pass over the file's bytes: sha256, size, and a strict decode of every byte."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.digest = hashlib.sha256()
        self.size = 0
        self.lines = 1  # line (physical, 1-based) at the start of the undecoded rest
        self.quotes = 0  # '"' characters: an odd count means a quote is never closed

    def error(self, exc: UnicodeDecodeError, base: int, codec: str) -> tuple[int, int]:
        """(absolute byte offset, line) of a decode error in bytes fed from ``base``."""
        before = exc.object[:exc.start]
        line = self.lines + bytes(before).decode(codec, errors="replace").count("\n")
        return base + exc.start, line


def _label(codec: str) -> str:
    return {"utf-8": "UTF-8", "cp1252": "cp1252"}.get(codec, codec)


def _detect_encoding(path: Path, forced: str | None) -> tuple[str, int, str, list[str], bool]:
    """Hash the file and find (and prove) its encoding in one streaming pass.

    Returns:
        (sha256, size, encoding to read it with, notes, whether its quotes come in pairs).

    Raises:
        FileRejected: some byte cannot be decoded (its offset and line are named), or the
            file is empty or plainly not a CSV.
    """
    name = path.name
    scan = _Scan(name)
    notes: list[str] = []
    with path.open("rb") as handle:
        block = handle.read(HASH_BLOCK)
        bom = next((b for b in _BOMS if block.startswith(b[0])), None)
        skip = 0
        if forced is not None:
            try:
                info = codecs.lookup(forced)
            except LookupError:
                info = None
            # rot13, base64, zlib… are codecs but not text encodings: open() refuses them.
            if info is None or not getattr(info, "_is_text_encoding", True):
                raise UsageError(f"--encoding {forced!r} is not a text encoding Python knows "
                                 "(try utf-8, cp1252, utf-16)") from None
            codec = info.name
            read_as = codec
            if bom is not None and not codec.startswith(bom[1][:6]):  # utf-8, utf-16…
                mark = bom[3].removesuffix(" with BOM")
                raise FileRejected(name, f"the file starts with a {mark} byte-order mark, "
                                         f"which says how it is encoded, but --encoding "
                                         f"{forced} was given: leave --encoding out")
            if codec == "utf-8" and bom is not None and bom[1] == "utf-8":
                skip, read_as = len(bom[0]), "utf-8-sig"
            notes.append(f"encoding {read_as} (from --encoding)")
        elif bom is not None:
            skip, codec, read_as = len(bom[0]), bom[1], bom[2]
            notes.append(f"encoding {bom[3]}")
        else:
            if block.startswith(b"PK\x03\x04"):
                raise FileRejected(name, "this is an Excel workbook (zip), not a CSV: "
                                         "give it the .xlsx extension")
            if b"\x00" in block:
                raise FileRejected(name, _nul_message(block))
            codec = read_as = "utf-8"
        decoder = codecs.getincrementaldecoder(codec)("strict")
        base = 0  # offset of the first byte the decoder holds (pending bytes included)
        ascii_so_far = True
        data = block[skip:]
        base = skip
        content = False
        while True:
            scan.digest.update(block)
            scan.size += len(block)
            final = len(block) < HASH_BLOCK
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(data, final)
            except UnicodeDecodeError as exc:
                offset, line = scan.error(exc, base - pending, codec)
                bad = bytes(exc.object[exc.start:exc.start + 1]).hex().upper()
                can_fall_back = (forced is None and bom is None and codec == "utf-8"
                                 and ascii_so_far and bytes(exc.object[:exc.start]).isascii())
                if not can_fall_back:
                    hint = ("the file mixes UTF-8 with another encoding; "
                            if forced is None and codec == "utf-8" else "")
                    raise FileRejected(name, f"not valid {_label(codec)} at byte {offset} "
                                             f"(line {line}): byte 0x{bad}; {hint}save it as "
                                             "CSV UTF-8, or pass --encoding") from None
                # Everything before was ASCII, so the same bytes read as cp1252 are the same.
                codec = read_as = "cp1252"
                notes.append(f"encoding cp1252 (Windows-1252, as Swedish Excel's 'CSV' saves): "
                             f"not valid UTF-8 at byte {offset} (line {line})")
                decoder = codecs.getincrementaldecoder(codec)("strict")
                try:
                    text = decoder.decode(data, final)
                except UnicodeDecodeError as exc2:
                    offset2, line2 = scan.error(exc2, base, codec)
                    raise FileRejected(name, f"cannot be decoded: not valid UTF-8 at byte "
                                             f"{offset} (line {line}) nor cp1252 at byte "
                                             f"{offset2} (line {line2}); save it as CSV UTF-8, "
                                             "or pass --encoding") from None
            except UnicodeError as exc:  # a decoder's own complaint, e.g. UTF-16 without a BOM
                raise FileRejected(name, f"cannot be read as {_label(codec)}: {exc}; save it as "
                                         "CSV UTF-8, or pass another --encoding (utf-16-le, "
                                         "utf-16-be)") from None
            ascii_so_far = ascii_so_far and data.isascii()
            scan.lines += text.count("\n")
            scan.quotes += text.count('"')
            content = content or bool(text.strip())
            base += len(data)
            if final:
                break
            block = handle.read(HASH_BLOCK)
            data = block
    if not content:
        raise FileRejected(name, "the file is empty (no header, no rows)")
    if forced is None and bom is None and codec == "utf-8":
        notes.append("encoding UTF-8")
    return scan.digest.hexdigest(), scan.size, read_as, notes, scan.quotes % 2 == 0


def _records(sample: str, delimiter: str, truncated: bool) -> list[tuple[int, list[str]]]:
    """The sample's records, numbered as spreadsheet rows (the last dropped if cut short)."""
    rows = list(enumerate(csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter),
                          start=1))
    if truncated and len(rows) > 1:
        rows.pop()
    return rows


def _sniff(sample: str, truncated: bool) -> tuple[str, str]:
    """Pick the delimiter whose reading of the top rows gives the most recognised headers.

    Counting recognised headers (not separator characters) is what makes ``1234,50`` values in
    a ``;`` file harmless; when no reading finds a header, the most frequent separator of the
    first non-empty line is taken (the missing-column message then shows what was read).
    """
    scores = {d: header_score(_records(sample, d, truncated)) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: scores[d])
    if scores[best] > 1 or (scores[best] == 1 and list(scores.values()).count(1) == 1):
        return best, "detected from the header"
    first = next((line for line in sample.splitlines() if line.strip()), "")
    best = max(DELIMITERS, key=first.count)
    return best, "guessed from the first line"


def open_csv(path: Path, options: ReadOptions) -> tuple[FileInfo, list[Table]]:
    """Open a CSV file (see ``read.open_file``)."""
    name = path.name
    kind = kind_for(name, path.stem, options)
    digest, size, encoding, notes, paired = _detect_encoding(path, options.encoding)
    info = file_info(path, digest, size)
    info.notes.extend(notes)
    with path.open(encoding=encoding, newline="") as handle:
        sample = handle.read(SAMPLE_CHARS)
        truncated = bool(handle.read(1))
    if options.delimiter is not None:
        delimiter, how = parse_delimiter(options.delimiter), "from --delimiter"
    else:
        delimiter, how = _sniff(sample, truncated)
    info.notes.append(f"delimiter {'tab' if delimiter == chr(9) else repr(delimiter)} ({how})")
    info.delimiter = delimiter
    records = _records(sample, delimiter, truncated)
    found = find_header(records)
    if found is None:
        raise FileRejected(name, "the file is empty (no header, no rows)")
    header_row, header = found
    # Arrow's reader skips lines, not records, to reach the first row below the header.
    straight = not any("\n" in c or "\r" in c for number, cells in records
                       if number <= header_row for c in cells)
    if header_row > 1:
        info.notes.append(f"header on row {header_row}; the rows above it are read as titles "
                          "and ignored")
    below = [cells for number, cells in records if number > header_row]
    header_cells = len(header)
    width = max([header_cells] + [len(cells) for cells in below])
    header = header + [""] * (width - header_cells)
    # Every cell of the header row is a column, named or not (an unnamed one is kept in the
    # report, never sent), wherever in the file its values are; cells past the header's last
    # must stay empty (checked per chunk).
    positions, columns, fields = build_columns(
        name, "", header, lambda i: i < header_cells, lambda i: str(i + 1), kind, options,
        header_row, info.notes)
    for number, cells in records:
        # Values past the header's last cell: a value split by an unquoted delimiter (a
        # decimal comma in a comma-separated file), so every cell after it is shifted.
        if number > header_row and any(v.strip() for v in cells[header_cells:]):
            raise FileRejected(name, _too_many(number, len(cells), header_cells, header_row))
    info.kinds.append(kind.name)
    table = Table(file=info, sheet=None, kind=kind, header_row=header_row, columns=columns,
                  fields=fields, chunks=lambda: iter(()))
    table.chunks = _chunker(table, encoding, delimiter, width, header_cells, positions,
                            options.chunk_rows,
                            arrow=paired and straight and encoding in ARROW_ENCODINGS)
    return info, [table]


MAX_WIDENINGS = 20  # restarts for rows wider than the sample showed (see _chunker)
ARROW_BLOCK = 1 << 20  # bytes per block of Arrow's reader: its read-ahead stays small
# Encodings whose end of file reads right from any byte (see _ends_inside_quotes).
ARROW_ENCODINGS = ("utf-8", "utf-8-sig", "cp1252")


def _chunker(table: Table, encoding: str, delimiter: str, width: int, header_cells: int,
             positions: list[int], chunk_rows: int, arrow: bool
             ) -> Callable[[], Iterator[pd.DataFrame]]:
    """The table's ``chunks`` callable: the rows below the header, read afresh per call.

    Arrow's CSV reader reads the file (in its own threads, the cells kept as Arrow text) as
    long as every row is regular. At the first record it cannot take (more cells than the
    sample at the top of the file showed, or fewer), and at a file's end inside a quoted
    value, pandas' more tolerant (and stricter) reader goes on from the first record not yet
    handed out: it fills short rows with empty cells, a row with more cells makes it start
    again, wider, so that a row with empty cells past the others (``…,2026-11-03,,``) reads
    the same wherever it is (values in those cells reject the file, naming the row), and a
    quote never closed rejects the file. pandas reads the whole file when ``arrow`` is False:
    its quotes do not pair up, a line break inside a cell above the first row (Arrow skips
    lines, not records, to get there), or an encoding not in :data:`ARROW_ENCODINGS`. Both
    readers hand over the same kind of chunk (see :func:`_cells`).
    """
    counted = False

    def chunks() -> Iterator[pd.DataFrame]:
        nonlocal counted
        info = table.file
        kept = dict(zip(positions, table.columns, strict=True))
        done = table.header_row  # records before the first row not yet handed out
        readers = [_arrow_blocks, _pandas_blocks] if arrow else [_pandas_blocks]
        for read in readers:
            try:
                for block in read(table, encoding, delimiter, width, done, chunk_rows):
                    out = _cells(info.name, block, kept, done + 1, delimiter, width,
                                 header_cells, table.header_row)
                    done += len(block[0])
                    if not counted:
                        info.rows += len(out)
                    yield out
                break
            except _Irregular:
                continue  # the next reader goes on from `done`
        counted = True

    return chunks


class _Irregular(Exception):
    """Arrow's reader met a record it does not read as pandas does: pandas takes over."""


def _arrow_blocks(table: Table, encoding: str, delimiter: str, width: int, done: int,
                  chunk_rows: int) -> Iterator[list[pa.Array]]:
    """The records after the first ``done``, about ``chunk_rows`` at a time, one Arrow text
    array per cell position.

    Raises:
        _Irregular: at a record of another width (nothing of its block is handed out).
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv

    names = [f"p{i}" for i in range(width)]
    try:
        reader = pcsv.open_csv(
            table.file.path,
            # A BOM sits in the first record, which is never read here (the header is).
            read_options=pcsv.ReadOptions(column_names=names, skip_rows=done,
                                          block_size=ARROW_BLOCK,
                                          encoding="utf8" if encoding == "utf-8-sig"
                                          else encoding),
            parse_options=pcsv.ParseOptions(delimiter=delimiter, quote_char='"',
                                            double_quote=True, escape_char=False,
                                            newlines_in_values=True, ignore_empty_lines=False),
            convert_options=pcsv.ConvertOptions(
                column_types={name: pa.string() for name in names},
                strings_can_be_null=False, quoted_strings_can_be_null=False))
        with reader:
            pending = reader.schema.empty_table()
            for batch in reader:
                pending = pa.concat_tables([pending, pa.Table.from_batches([batch])])
                while pending.num_rows > chunk_rows:  # the last row waits for the check below
                    yield _columns(pending.slice(0, chunk_rows))
                    pending = pending.slice(chunk_rows)
            if pending.num_rows:
                last = _columns(pending)
                if _ends_inside_quotes(table.file.path, encoding, last[-1][-1].as_py()):
                    raise _Irregular
                yield last
    except pa.ArrowInvalid:
        raise _Irregular from None


def _ends_inside_quotes(path: Path, encoding: str, last: str) -> bool:
    """Whether the file ends inside a quoted value that reads ``last``: Arrow's reader ends
    such a value at the end of the file (a file cut short would pass), pandas' rejects it.
    Its text would end with the opening quote and ``last`` (quotes doubled), unclosed. (The
    one closed value that also ends so, a lone quote character, only costs the handover.)
    """
    tail = '"' + last.replace('"', '""')
    with path.open("rb") as f:
        size = f.seek(0, 2)
        f.seek(max(0, size - len(tail.encode(encoding, errors="replace")) - 8))
        end = f.read()
    return end.decode(encoding, errors="replace").endswith(tail)


def _columns(table: pa.Table) -> list[pa.Array]:
    return [column.combine_chunks() for column in table.columns]


def _pandas_blocks(table: Table, encoding: str, delimiter: str, width: int, done: int,
                   chunk_rows: int) -> Iterator[list[pa.Array]]:
    """As :func:`_arrow_blocks`, read by pandas, which takes rows of any width."""
    import pandas as pd
    import pyarrow as pa

    info = table.file
    read_width = width
    for _ in range(MAX_WIDENINGS + 1):
        internal = [f"p{i}" for i in range(read_width)]
        try:
            # Inside the try: pandas may tokenise the first rows already here.
            reader = pd.read_csv(
                info.path, sep=delimiter, header=None, names=internal, skiprows=done,
                dtype=object, keep_default_na=False, na_filter=False, skip_blank_lines=False,
                index_col=False, chunksize=chunk_rows, engine="c", encoding=encoding,
                encoding_errors="strict", quotechar='"', doublequote=True)
            with reader:
                for chunk in reader:
                    done += len(chunk)
                    yield [pa.array(chunk[c].to_numpy(), type=pa.string()) for c in internal]
            return
        except pd.errors.ParserError as exc:
            match = _TOO_MANY.search(str(exc))
            if match is None or int(match.group(3)) <= read_width:
                raise FileRejected(info.name, _parser_message(str(exc), table.header_row)
                                   ) from None
            read_width = int(match.group(3))
    raise FileRejected(info.name, f"rows from row {done + 1} on keep getting longer than the "
                                  "header; check the delimiters")


def _cells(name: str, block: list[pa.Array], kept: dict[int, str], first_row: int,
           delimiter: str, width: int, header_cells: int, header_row: int) -> pd.DataFrame:
    """One chunk's kept columns, trimmed and screened (pandas text columns backed by Arrow),
    with the spreadsheet row numbers in ``_row``; empty rows are left out."""
    import numpy as np
    import pandas as pd
    import pyarrow.compute as pc

    from importer.normalise import TEXT, TextBytes

    n = len(block[0])
    rows = np.arange(first_row, first_row + n, dtype=np.int64)
    keep = np.zeros(n, dtype=bool)
    cells = {}
    for index, raw in enumerate(block):
        values = pc.utf8_trim_whitespace(raw)  # the same characters as str.strip()
        scan = TextBytes(values)
        filled = scan.lengths > 0
        if index in kept:
            cells[kept[index]] = pd.Series(
                _screen(name, kept[index], values, scan, rows, delimiter, width), dtype=TEXT)
            keep |= filled
        elif filled.any():  # past the header's last cell: a row shifted by a delimiter
            at = int(np.argmax(filled))
            raise FileRejected(name, _too_many(int(rows[at]), _count(block, at), header_cells,
                                               header_row))
    out = pd.DataFrame(cells, copy=False)
    out[ROW] = rows
    if not keep.all():
        out = out[keep].reset_index(drop=True)
    return out


def _count(block: list[pa.Array], at: int) -> int:
    """How many cells row ``at`` of the block has, up to its last non-empty one."""
    values = [str(column[at].as_py() or "").strip() for column in block]
    return max(i + 1 for i, v in enumerate(values) if v)


_INERT = ("'=", "'+", "'-", "'@")  # how our reports make formula-like text inert


def _screen(name: str, column: str, values: pa.Array, scan: TextBytes, rows: Any,
            delimiter: str, width: int) -> pa.Array:
    """One column's trimmed cells, screened (``scan``: their bytes, which answer the usual
    case; kernels, and Python per cell, only where needed).

    - A value with a line in it that reads like a whole row (as many delimiters as a row has,
      less one; all of them in a file of three columns or fewer, where one comma is just
      prose) is the mark of a quote not closed where it should be, so that the rows after
      it were read into this value (they would vanish from the import without a word): the
      file is rejected. A multi-line note with a comma or two in it is not.
    - ``'=…``, ``'+…``, ``'-…``, ``'@…`` lose the ``'``: the failed-rows file (and report.csv)
      write formula-like text that way, and must import again as the original value.

    Raises:
        FileRejected: naming the row and the column.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if scan.has("\n", "\r"):
        lines = pc.or_(pc.match_substring(values, "\n"), pc.match_substring(values, "\r"))
        enough = max(1, width - 1 if width <= 3 else width - 2)
        for at in np.flatnonzero(lines.to_numpy(zero_copy_only=False)):
            value = values[at].as_py()
            if any(line.count(delimiter) >= enough for line in value.splitlines()[1:]):
                raise FileRejected(name, (
                    f"row {rows[at]}, column {column}: the value runs over several lines that "
                    "read like rows (separated by "
                    f"{'tab' if delimiter == chr(9) else repr(delimiter)}): a quote is "
                    "probably not closed where it should be, so the rows after it were read "
                    "into this value; check the quotes"))
    quoted = pc.starts_with(values, "'") if scan.has("'") else None
    if quoted is not None and pc.any(quoted).as_py():
        texts = values.filter(quoted).to_pylist()
        values = pc.replace_with_mask(values, quoted, pa.array(
            [v[1:] if v.startswith(_INERT) else v for v in texts], type=values.type))
    return values


def _nul_message(block: bytes) -> str:
    """Why a file holding NUL bytes is not read: UTF-16 text (one NUL beside every ASCII
    character) or, for a few, a damaged or binary file, named by the first one's place."""
    if block.count(b"\x00") * 4 >= len(block):
        return ("the file holds NUL bytes: it looks like UTF-16 without a byte-order mark; "
                "save it as CSV UTF-8 or pass --encoding utf-16-le")
    at = block.index(b"\x00")
    line = block.count(b"\n", 0, at) + 1
    return (f"byte {at} (line {line}) is a NUL byte, which no CSV text holds: the file is "
            "damaged or not a CSV export; export it again")


def _too_many(row: int, cells: int, columns: int, header_row: int) -> str:
    return (f"row {row} has {cells} cells, more than the {columns} columns of the header "
            f"(row {header_row}); check for an unquoted delimiter in a value (e.g. a decimal "
            "comma in a comma-separated file: quote the value, or save with ';')")


def _parser_message(message: str, header_row: int) -> str:
    """Say what pandas' tokenizer error means in the user's terms."""
    match = _TOO_MANY.search(message)
    if match:
        expected, row, saw = match.groups()
        return _too_many(int(row), int(saw), int(expected), header_row)
    if "EOF inside string" in message:
        start = re.search(r"starting at row (\d+)", message)
        where = f"row {int(start.group(1)) + header_row}: " if start else ""
        return (f"{where}a quoted value is never closed (a \" without its pair), so the rest "
                "of the file would be read as one value; check the quotes")
    return f"cannot be parsed as CSV: {message.strip()}"
