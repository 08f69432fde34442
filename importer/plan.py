"""The posting plan: which report-frame rows are posted, and their outcomes written back.

Pure data transforms between the report frames (validate.py) and the posting engine (post.py);
no I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import pandas as pd

from importer.kinds import KINDS, Kind
from importer.post import Outcome, PlannedRow, case_key
from importer.validate import RESULT_COLUMNS, fingerprint, payload

if TYPE_CHECKING:
    from importer.journal import RowRecord
    from importer.read import Table

POSTABLE = ("valid", "warning")
SEVERITY = {"valid": 0, "completed": 0, "warning": 1, "error": 2}


@dataclass
class Checked:
    """One validated chunk: the table it came from and its report frame."""

    table: Table
    frame: pd.DataFrame


@dataclass(frozen=True)
class Plan:
    """Rows to post, each with where its outcome goes (chunk number, frame position)."""

    rows: list[PlannedRow]
    places: list[tuple[int, int]]


# The codes a repeated copy may carry besides duplicate_row and still be taken for one already
# posted: warnings only (``future_date`` is left out: it is an error on a bank date).
_DUPLICATE_AND_WARNINGS = {"duplicate_row", "old_date", "registered_before_transaction"}


def _readable(chunks: Sequence[Checked]) -> Iterator[tuple[int, Checked, Kind]]:
    """(chunk number, chunk, kind) of the chunks of files not rejected whole."""
    for number, chunk in enumerate(chunks):
        if not chunk.table.file.rejected:
            yield number, chunk, KINDS[chunk.table.kind.name]


def make_plan(chunks: Sequence[Checked], send_account: bool = False) -> Plan:
    """Plan every valid/warning row of files that were not rejected, in file order.

    Args:
        chunks: validated chunks, in file order.
        send_account: send the file's ``account`` column (``config.send_account``).

    Returns:
        The planned rows and where each outcome goes.
    """
    rows: list[PlannedRow] = []
    places: list[tuple[int, int]] = []
    for number, chunk, kind in _readable(chunks):
        info, frame = chunk.table.file, chunk.frame
        postable = frame["status"].isin(POSTABLE).to_numpy()
        for position in postable.nonzero()[0]:
            record = {str(k): _plain(v) for k, v in frame.iloc[position].items()}
            body = payload(kind, record, send_account=send_account)
            rows.append(PlannedRow(
                index=len(rows), file_name=info.name, file_sha256=info.sha256,
                sheet=chunk.table.sheet, row=int(record["row"]), kind=kind, payload=body,
                fingerprint=fingerprint(kind, record), case_key=case_key(body)))
            places.append((number, int(position)))
    return Plan(rows, places)


def unify_case_keys(
        rows: list[PlannedRow],
        resolve: Callable[[list[tuple[str, str]]], dict[tuple[str, str], str]],
) -> list[PlannedRow]:
    """Give rows that name a case by invoice number the key of the case id, when the plan
    also names cases by id: rows touching one case must be posted in file order, whichever
    way each row names it.

    Args:
        rows: the planned rows.
        resolve: ``[(creditor, invoice_number)] -> {pair: case id}`` (API lookups); ``""``
            for an invoice Amili has no case for (its row is refused, touching no case); a
            pair left out (its case could not be told) puts all its creditor's rows in one
            line.

    Returns:
        The rows, with case keys unified where needed.
    """
    keys = {r.case_key.split(":", 1)[0] for r in rows}
    if keys != {"case", "invoice"}:
        return rows  # one way of naming cases: the keys already group rows per case
    pairs = list(dict.fromkeys(_invoice_pair(r) for r in rows
                               if r.case_key.startswith("invoice:")))
    found = resolve(pairs)
    # An invoice whose case could not be told (the lookup failed, or found several) may be
    # any case of its creditor: all that creditor's rows go in one line, in file order, so
    # that none overtakes another of the same case. One with no case at all touches none.
    unsure = {pair[0] for pair in pairs if pair not in found}
    out = []
    for row in rows:
        creditor = _invoice_pair(row)[0]
        case = found.get(_invoice_pair(row)) if row.case_key.startswith("invoice:") else None
        if creditor in unsure:
            out.append(replace(row, case_key=f"creditor:{creditor.lower()}"))
        elif case:
            out.append(replace(row, case_key=f"case:{case.lower()}"))
        else:
            out.append(row)
    return out


def _invoice_pair(row: PlannedRow) -> tuple[str, str]:
    return (str(row.payload.get("creditor", "")), str(row.payload.get("invoice_number", "")))


def apply_outcomes(chunks: Sequence[Checked], plan: Plan, outcomes: Iterable[Outcome]) -> None:
    """Write each outcome into its report-frame row.

    The row's final status is the worse of its validation status and the API's (a validation
    warning stays a warning when Amili completes the row); messages are joined.
    """
    updates = []
    for outcome in outcomes:
        number, position = plan.places[outcome.index]
        frame = chunks[number].frame
        before = frame["status"].iat[position]
        status = outcome.status
        if before == "warning" and SEVERITY.get(status, 2) < SEVERITY["warning"]:
            status = "warning"
        updates.append(((number, position), {
            "status": status,
            "reason": _join(",", frame["reason"].iat[position], outcome.reason),
            "message": _join("; ", frame["message"].iat[position], outcome.message),
            **{column: getattr(outcome, column) for column in RESULT_COLUMNS},
        }))
    write_updates(chunks, updates)


def annotate(chunks: Sequence[Checked], plan: Plan,
             notes: Iterable[tuple[int, str, str, str]]) -> None:
    """Mark the planned rows a dry run would not post, given as (index, the status a real run
    would report, reason, message): the row's status becomes that one where it is worse
    (a row Amili holds in error is an error, as a real run reports it), and stays otherwise
    (``valid`` or ``warning``, the dry run's words)."""
    updates = []
    for index, status, reason, message in notes:
        number, position = plan.places[index]
        current = str(chunks[number].frame["status"].iat[position])
        if SEVERITY.get(status, 2) > SEVERITY.get(current, 2):
            current = status
        updates.append(((number, position),
                        {"status": current, "reason": reason, "message": message}))
    write_updates(chunks, updates)


def repeated_duplicates(chunks: Sequence[Checked],
                        done_rows: Callable[[str], Sequence[RowRecord]]
                        ) -> list[tuple[tuple[int, int], dict[str, Any]]]:
    """The ``duplicate_row`` errors of a file that repeats a pair Amili already holds.

    Two identical rows in one file are one payment twice, or one payment written twice: the
    second is an error for a person to decide (a failed-rows file, a reference that tells the
    two apart). An export that repeats yesterday's rows repeats yesterday's pair as well; once
    both copies reached Amili, asking again invites a third. So the k-th copy after the first
    is taken for one already posted when Amili holds more than k rows with its values (before
    this run posts anything): ``warning``/``already_posted``, not sent, not in the failed-rows
    file (an error when Amili holds that row in error). Copies beyond what Amili holds stay
    errors, and so does a copy with another error than the duplicate; a warning it has stays
    (``already_posted,old_date``).

    Args:
        chunks: validated chunks, in file order.
        done_rows: the done journal rows with a fingerprint (the journal before this run).

    Returns:
        The updates, for :func:`write_updates`.
    """
    updates: list[tuple[tuple[int, int], dict[str, Any]]] = []
    copies: dict[tuple[str, str, str], int] = {}
    for number, chunk, kind in _readable(chunks):
        info, frame = chunk.table.file, chunk.frame
        reasons = frame["reason"].to_numpy(dtype=object)
        for position in map(int, (frame["status"] == "error").to_numpy().nonzero()[0]):
            codes = str(reasons[position] or "").split(",")
            if "duplicate_row" not in codes or not set(codes) <= _DUPLICATE_AND_WARNINGS:
                continue
            record = {str(k): _plain(v) for k, v in frame.iloc[position].items()}
            key = (info.sha256, kind.name, fingerprint(kind, record))
            copies[key] = copies.get(key, 0) + 1  # the first copy is a row of its own
            done = done_rows(key[2])
            if len(done) <= copies[key]:
                continue
            latest = done[-1]
            updates.append(((number, position), {
                "status": "error" if latest.state == "error" else "warning",
                "reason": ",".join("already_posted" if c == "duplicate_row" else c
                                   for c in codes),
                "message": _join("; ", frame["message"].iat[position], (
                    f"Amili already holds {len(done)} rows with these values (the latest: run "
                    f"{latest.run_id}, {latest.ref.describe()}): this copy repeats one of them "
                    "and is not sent. Nothing to do if the file repeats rows already sent; "
                    "only if it really is one more separate event, give it a reference that "
                    "tells it apart"))}))
    return updates


def mark_validated(chunks: Sequence[Checked], plan: Plan) -> None:
    """In ``run`` mode every planned row gets an outcome; unplanned valid rows (in rejected
    files) are marked as not posted so that no row claims more than is known."""
    planned = set(plan.places)
    updates = []
    for number, chunk in enumerate(chunks):
        info = chunk.table.file
        for position in map(int, chunk.frame["status"].isin(POSTABLE).to_numpy().nonzero()[0]):
            if (number, position) not in planned:
                updates.append(((number, position), {
                    "status": "error", "reason": "file_rejected",
                    "message": f"not posted: the file {info.name} was rejected whole "
                               f"({info.rejected})"}))
    write_updates(chunks, updates)


def write_updates(chunks: Sequence[Checked],
                  updates: Iterable[tuple[tuple[int, int], dict[str, Any]]]) -> None:
    """Write cells, given as ((chunk number, position), {column: value}), a whole column at a
    time once per chunk: the validator may share one array between empty columns, so a cell
    is never written in place."""
    grouped: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for (number, position), values in updates:
        grouped.setdefault(number, []).append((position, values))
    for number, items in grouped.items():
        frame = chunks[number].frame
        names = dict.fromkeys(name for _, values in items for name in values)
        columns = {name: frame[name].to_numpy(dtype=object, copy=True) for name in names}
        for position, values in items:
            for name, value in values.items():
                columns[name][position] = value
        for name, array in columns.items():
            frame[name] = array


@dataclass
class FailedRows:
    """The rows in error of one file (or sheet), as the failed-rows file holds them."""

    headers: list[str]  # the input's own, in order
    rows: list[dict[str, str]] = field(default_factory=list)  # plus error_reason/message
    delimiter: str = ","  # the input CSV's, so that it opens as the original did


def failed_rows(chunks: Sequence[Checked]) -> dict[tuple[str, str | None, str], FailedRows]:
    """The rows in error per (file, sheet, kind), with the input's own columns, for re-import.

    Rows Amili stored with status error (``api_error``, or ``already_posted`` by an earlier
    run) are left out: they exist in Amili, so importing them again can only be refused as
    already posted; they are settled in Amili.
    """
    out: dict[tuple[str, str | None, str], FailedRows] = {}
    for chunk in chunks:
        frame = chunk.frame
        stored = frame["reason"].astype(str).str.contains("api_error|already_posted")
        errors = frame[(frame["status"] == "error") & ~stored]
        if errors.empty:
            continue
        headers = list(chunk.table.columns)
        key = (chunk.table.file.name, chunk.table.sheet, chunk.table.kind.name)
        bucket = out.setdefault(key, FailedRows(headers, [], chunk.table.file.delimiter or ","))
        # A failed-rows file run again (its own three columns, as written): its source_row
        # names the first file's row. A column of the user's that is only named alike is not.
        earlier = ("source_row" if {"source_row", "error_reason", "error_message"} <= set(headers)
                   else None)
        for _, record in errors.iterrows():
            row = {h: _cell_text(record.get(f"input:{h}")) for h in headers}
            first = _text(record.get(f"input:{earlier}")) if earlier else ""
            row["source_row"] = first or _text(record.get("row"))
            row["error_reason"] = _text(record.get("reason"))
            row["error_message"] = _text(record.get("message"))
            bucket.rows.append(row)
    return out


def _cell_text(value: Any) -> str:
    """An input cell for the failed-rows file. A formula saved without its value becomes
    ``#N/A`` (read again, an Excel error value: the row stays in error until the cell is
    filled in), never an empty cell that would pass."""
    from importer.normalise import is_formula_without_value

    return "#N/A" if is_formula_without_value(value) else _text(value)


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value


def _text(value: Any) -> str:
    value = _plain(value)
    return "" if value is None or value is pd.NA else str(value)


def _join(sep: str, first: Any, second: Any) -> str | None:
    parts = [str(p) for p in (_plain(first), _plain(second))
             if p not in (None, "") and p is not pd.NA]
    return sep.join(dict.fromkeys(parts)) or None
