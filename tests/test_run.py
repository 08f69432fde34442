"""`amili-import run` end to end: real CSV files, the sandbox over HTTP, a real SQLite journal."""

from __future__ import annotations

import csv
import datetime
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from fixtures_sandbox import CLOSED_CASE, CREDITOR, OPEN_CASE, TOKEN

from importer.errors import ExitCode
from importer.journal import Journal
from importer.sandbox.server import RunningSandbox

# Recent, never in the future nor over a year old (which would add a warning), whenever it runs.
BANK_DATE = f"{datetime.date.today() - datetime.timedelta(days=20):%Y-%m-%d}"
HEADER = ["creditor", "case", "invoice_number", "currency", "amount", "bank_transaction_date",
          "creditor_payment_reference"]


def write_csv(path: Path, rows: list[list[Any]], header: list[str] = HEADER) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def env_for(box: RunningSandbox, state: Path) -> dict[str, str]:
    return {"AMILI_API_URL": box.url, "AMILI_ACCESS_TOKEN": TOKEN, "AMILI_STATE_DIR": str(state),
            "AMILI_CONFIG": ""}


def report(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    return data


def many_cases(n: int, capital: float = 100_000.0) -> list[dict[str, Any]]:
    return [{"_id": f"{0x68b7f49c7b02934cadd00000 + i:024x}", "creditor": CREDITOR,
             "invoice_number": f"INV-{5000 + i}", "reference_number": str(70000 + i),
             "capital": capital, "interest": 0.0, "costs": 0.0, "status": "debt_collection"}
            for i in range(n)]


def payment_rows(cases: list[dict[str, Any]], per_case: int) -> list[list[Any]]:
    rows = []
    for n in range(per_case):
        for i, case in enumerate(cases):
            rows.append([CREDITOR, case["_id"], "", "SEK", f"{10 + n}.{i % 100:02d}", BANK_DATE,
                         f"REF-{i}-{n}"])
    return rows


def _run_command(source: Path, concurrency: int) -> list[str]:
    return [sys.executable, "-m", "importer", "--log-format", "json", "run", str(source),
            "--concurrency", str(concurrency)]


def _posting(box: RunningSandbox, command: list[str], env: dict[str, str],
             stored: int) -> subprocess.Popen[str]:
    """A posting run in a process of its own, once ``stored`` payments have reached the
    sandbox (or 60 s have passed)."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while box.state.count("creditor--payments") < stored and time.monotonic() < deadline:
        time.sleep(0.01)
    return process


def stored_references(box: RunningSandbox) -> Counter[str]:
    return Counter(r.get("creditor_payment_reference")
                   for r in box.state.records("creditor--payments"))


def test_run_posts_valid_rows_and_reports_every_row(cli: Callable[..., Result], tmp_path: Path,
                                                    sandbox: RunningSandbox) -> None:
    """Valid rows are posted once; validation and API errors are reported; exit code 1."""
    source = write_csv(tmp_path / "payments.csv", [
        [CREDITOR, OPEN_CASE.id, "", "SEK", "100,50", BANK_DATE, "P-1"],
        [CREDITOR, "", OPEN_CASE.invoice_number, "SEK", "1 000,00", BANK_DATE, "P-2"],
        [CREDITOR, OPEN_CASE.id, "", "EUR", "5", BANK_DATE, "P-3"],
        [CREDITOR, CLOSED_CASE.id, "", "SEK", "50", BANK_DATE, "P-4"],
        [CREDITOR, "", "NO-SUCH-INVOICE", "SEK", "50", BANK_DATE, "P-5"],
    ])
    out = tmp_path / "out"
    result = cli(["run", str(source), "--report-dir", str(out)],
                 expect=ExitCode.ROWS_IN_ERROR, env=env_for(sandbox, tmp_path / "state"))
    assert str(out) in result.stdout
    rows = {r["row"]: r for r in report(out)["rows"]}
    assert [rows[n]["status"] for n in (2, 3, 4, 5, 6)] == [
        "completed", "completed", "error", "error", "error"]
    assert rows[2]["amili_id"] and rows[2]["http_status"] == 201 and rows[2]["amount"] == 100.5
    assert "currency" in rows[4]["message"] and rows[4]["http_status"] is None
    assert rows[5]["amili_id"], "a payment to a closed case is stored by Amili with status error"
    assert "invoice_number" in rows[6]["message"] and rows[6]["http_status"] == 422
    assert sorted(stored_references(sandbox)) == ["P-1", "P-2", "P-4"]
    # run.log tells row 2's story: stored (its 201 had no status), then the status read back.
    events = [json.loads(line) for line in (out / "run.log").read_text().splitlines()]
    story = [(e["event"], e.get("status")) for e in events if e.get("row") == 2]
    assert story == [("row.stored", None), ("row.status", "completed")], story
    with (out / "failed-payments.csv").open(encoding="utf-8-sig") as handle:
        failed = list(csv.DictReader(handle))
    # P-4 is stored in Amili (status error): settled there, not by importing it again.
    assert [f["creditor_payment_reference"] for f in failed] == ["P-3", "P-5"]
    assert list(failed[0])[:len(HEADER)] == HEADER and failed[0]["error_reason"]


def test_failed_rows_of_a_workbook_import_again_once_fixed(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox) -> None:
    """A workbook row with a bad amount and real Excel date-time cells: its failed-rows file,
    with only the amount fixed, imports and posts; the dates mean the same instants."""
    from datetime import UTC, datetime, timedelta

    from openpyxl import Workbook

    today = datetime.now(UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    paid, registered = today - timedelta(days=10, hours=-14, minutes=-30), today - timedelta(3)
    book = Workbook()
    sheet = book.active
    sheet.title = "Payments"
    sheet.append(["Month-end payments"])
    sheet.append(HEADER + ["client_registration_date"])
    sheet.append([CREDITOR, OPEN_CASE.id, "", "SEK", "12 3,4", paid, "WB-1", registered])
    source = tmp_path / "month-end.xlsx"
    book.save(source)
    env = env_for(sandbox, tmp_path / "state")
    cli(["run", str(source), "--report-dir", str(tmp_path / "first")],
        expect=ExitCode.ROWS_IN_ERROR, env=env)
    failed = tmp_path / "first" / "failed-month-end-Payments.csv"
    text = failed.read_text(encoding="utf-8-sig")
    assert f"{paid:%Y-%m-%d} 14:30:00Z" in text and f",{registered:%Y-%m-%d}," in text
    failed.write_text(text.replace("12 3,4", "123,40"), encoding="utf-8-sig")
    cli(["run", str(failed), "--report-dir", str(tmp_path / "again")], env=env)
    [row] = report(tmp_path / "again")["rows"]
    assert (row["status"], row["amount"]) == ("completed", 123.4), row["message"]
    assert row["bank_transaction_date"] == f"{paid:%a, %d %b %Y} 14:30:00 GMT"
    assert row["client_registration_date"] == f"{registered:%a, %d %b %Y} 00:00:00 GMT"
    assert stored_references(sandbox) == Counter({"WB-1": 1})


def test_a_formula_without_value_stays_an_error_in_the_failed_rows_file(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox) -> None:
    """A reference written as a formula saved without its value: in the failed-rows file the
    cell reads #N/A, so fixing only the other error leaves the row in error (not posted
    without its reference); filled in, it is valid."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "Payments"
    sheet.append(HEADER)
    sheet.append([CREDITOR, OPEN_CASE.id, "", "EUR", "10", BANK_DATE, "=1+2"])
    source = tmp_path / "month.xlsx"
    book.save(source)
    env = env_for(sandbox, tmp_path / "state")
    cli(["run", "--dry-run", str(source), "--report-dir", str(tmp_path / "first")],
        expect=ExitCode.ROWS_IN_ERROR, env=env)
    [row] = report(tmp_path / "first")["rows"]
    assert row["reason"] == "invalid_currency,formula_without_value"
    failed = tmp_path / "first" / "failed-month-Payments.csv"
    text = failed.read_text(encoding="utf-8-sig")
    assert ",EUR,10," in text and ",#N/A," in text
    failed.write_text(text.replace(",EUR,", ",SEK,"), encoding="utf-8-sig")
    cli(["validate", str(failed), "--report-dir", str(tmp_path / "again")],
        expect=ExitCode.ROWS_IN_ERROR, env=env)
    [row] = report(tmp_path / "again")["rows"]
    assert (row["status"], row["reason"]) == ("error", "cell_error")
    failed.write_text(text.replace(",EUR,", ",SEK,").replace(",#N/A,", ",REF-3,"),
                      encoding="utf-8-sig")
    cli(["validate", str(failed), "--report-dir", str(tmp_path / "fixed")], env=env)
    assert report(tmp_path / "fixed")["rows"][0]["status"] == "valid"


def test_failed_rows_of_a_swedish_excel_csv_keep_its_semicolons(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox) -> None:
    """A ';' cp1252 export: the failed-rows file uses ';' too (a Swedish Excel opens it in
    columns) and imports again once fixed."""
    source = tmp_path / "payments-sek.csv"
    lines = [";".join(HEADER), f"{CREDITOR};{OPEN_CASE.id};;SEK;1 234,5x;{BANK_DATE};Återbet-1"]
    source.write_bytes(("\r\n".join(lines) + "\r\n").encode("cp1252"))
    env = env_for(sandbox, tmp_path / "state")
    cli(["run", str(source), "--report-dir", str(tmp_path / "first")],
        expect=ExitCode.ROWS_IN_ERROR, env=env)
    failed = tmp_path / "first" / "failed-payments-sek.csv"
    text = failed.read_text(encoding="utf-8-sig")
    assert text.splitlines()[0] == ";".join([*HEADER, "source_row", "error_reason",
                                             "error_message"])
    assert ";1 234,5x;" in text and "Återbet-1" in text
    failed.write_text(text.replace("1 234,5x", "1 234,50"), encoding="utf-8-sig")
    cli(["run", str(failed), "--report-dir", str(tmp_path / "again")], env=env)
    [row] = report(tmp_path / "again")["rows"]
    assert (row["status"], row["amount"]) == ("completed", 1234.5), row["message"]


def test_same_file_again_posts_nothing_twice(cli: Callable[..., Result], tmp_path: Path,
                                             sandbox: RunningSandbox) -> None:
    """Running the same file again reports the earlier outcomes and posts nothing."""
    source = write_csv(tmp_path / "payments.csv", payment_rows(many_cases(1), 1)[:0] + [
        [CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "A"],
        [CREDITOR, OPEN_CASE.id, "", "SEK", "11", BANK_DATE, "B"]])
    env = env_for(sandbox, tmp_path / "state")
    cli(["run", str(source), "--report-dir", str(tmp_path / "r1")], env=env)
    first = {r["row"]: r["amili_id"] for r in report(tmp_path / "r1")["rows"]}
    cli(["run", str(source), "--report-dir", str(tmp_path / "r2")], env=env)
    again = report(tmp_path / "r2")["rows"]
    assert stored_references(sandbox) == Counter({"A": 1, "B": 1})
    assert {r["row"]: r["amili_id"] for r in again} == first
    assert all(r["status"] == "completed" and "already" in r["message"] for r in again)


def test_identical_row_from_another_file_needs_allow_duplicates(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox) -> None:
    """A row already posted from another file is not posted again: a warning (it was never
    sent from this file), whose hint leads to posting that one row, not the whole file."""
    row = [CREDITOR, OPEN_CASE.id, "", "SEK", "12", BANK_DATE, "DUP"]
    env = env_for(sandbox, tmp_path / "state")
    monday = [CREDITOR, OPEN_CASE.id, "", "SEK", "11", BANK_DATE, "MONDAY-ONLY"]
    first = write_csv(tmp_path / "payments-monday.csv", [row, monday])
    other = [CREDITOR, OPEN_CASE.id, "", "SEK", "13", BANK_DATE, "TUESDAY-ONLY"]
    second = write_csv(tmp_path / "payments-tuesday.csv", [other, row])
    cli(["run", str(first), "--report-dir", str(tmp_path / "r1")], env=env)
    cli(["run", str(second), "--report-dir", str(tmp_path / "r2")], env=env)
    skipped = report(tmp_path / "r2")["rows"][1]
    assert (skipped["status"], skipped["reason"]) == ("warning", "already_posted")
    assert "payments-monday.csv" in skipped["message"] and stored_references(sandbox)["DUP"] == 1
    assert skipped["message"].endswith(
        "Only if it really is a separate event with the same values, give it a "
        "creditor_payment_reference that tells it apart (the bank's or the ledger's own id) and "
        "run it again")
    # The whole file again with the flag: its rows judged already posted stay so.
    cli(["run", str(second), "--allow-duplicates", "--report-dir", str(tmp_path / "r3")], env=env)
    assert stored_references(sandbox)["DUP"] == 1
    assert report(tmp_path / "r3")["rows"][1]["reason"] == "already_posted"
    # The hint followed: the row told apart by a reference is posted (no flag needed) ...
    told = write_csv(tmp_path / "payments-tuesday.csv", [other, [*row[:6], "DUP-2"]])
    cli(["run", str(told), "--report-dir", str(tmp_path / "r3b")], env=env)
    assert stored_references(sandbox)["DUP-2"] == 1 and stored_references(sandbox)["DUP"] == 1
    # ... and the flag, for a row alone in a file of a new name, still posts it once.
    alone = write_csv(tmp_path / "payments-tuesday-second-payment.csv", [row])
    cli(["run", str(alone), "--allow-duplicates", "--report-dir", str(tmp_path / "r4")], env=env)
    cli(["run", str(alone), "--allow-duplicates", "--report-dir", str(tmp_path / "r5")], env=env)
    assert stored_references(sandbox)["DUP"] == 2
    assert report(tmp_path / "r5")["rows"][0]["status"] == "completed"  # that file's own post
    assert stored_references(sandbox)["TUESDAY-ONLY"] == 1


def test_an_export_repeating_a_pair_already_posted_does_not_ask_for_it_again(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox) -> None:
    """helper-51: Monday's pair A, A (two payments, no reference) is posted, the second from
    its failed-rows file. Tuesday's export repeats the pair: its second copy was a
    duplicate_row error in a failed-rows file, and posting that (as for Monday) posted a
    third A. A copy Amili already holds is `warning`/`already_posted` and in no failed-rows
    file; a third copy, beyond what Amili holds, stays an error; the dry run agrees."""
    env = env_for(sandbox, tmp_path / "state")
    a = [CREDITOR, OPEN_CASE.id, "", "SEK", "77", BANK_DATE, ""]
    mon = write_csv(tmp_path / "payments-mon.csv", [a, a])
    cli(["run", str(mon), "--report-dir", str(tmp_path / "r1")],
        expect=ExitCode.ROWS_IN_ERROR, env=env)
    cli(["run", str(tmp_path / "r1" / "failed-payments-mon.csv"), "--allow-duplicates",
         "--report-dir", str(tmp_path / "r2")], env=env)
    new = [CREDITOR, OPEN_CASE.id, "", "SEK", "5", BANK_DATE, "NEW"]
    tue = write_csv(tmp_path / "payments-tue.csv", [new, a, a])
    cli(["run", "--dry-run", str(tue), "--report-dir", str(tmp_path / "d3")], env=env)
    result = cli(["run", str(tue), "--report-dir", str(tmp_path / "r3")], env=env)
    for folder in ("d3", "r3"):
        rows = report(tmp_path / folder)["rows"]
        assert [(r["status"], r["reason"]) for r in rows][1:] == [
            ("warning", "already_posted")] * 2, folder
        assert "Amili already holds 2 rows with these values" in rows[2]["message"]
    assert not list((tmp_path / "r3").glob("failed-*.csv"))
    assert "2 row(s) already posted earlier were not sent again" in result.output
    wed = write_csv(tmp_path / "payments-wed.csv", [a, a, a])
    cli(["run", str(wed), "--report-dir", str(tmp_path / "r4")],
        expect=ExitCode.ROWS_IN_ERROR, env=env)
    assert [(r["status"], r["reason"]) for r in report(tmp_path / "r4")["rows"]] == [
        ("warning", "already_posted"), ("warning", "already_posted"), ("error", "duplicate_row")]
    assert [r["amount"] for r in sandbox.state.records("creditor--payments")].count(77) == 2


def _monday_pair(cli: Callable[..., Result], tmp_path: Path, env: dict[str, str],
                 row: list[Any], second: int = 0) -> None:
    """Monday's pair: the first copy posted by the file, the second from its failed-rows file."""
    mon = write_csv(tmp_path / "payments-mon.csv", [row, row])
    cli(["run", str(mon), "--report-dir", str(tmp_path / "r1")],
        expect=ExitCode.ROWS_IN_ERROR, env=env)
    cli(["run", str(tmp_path / "r1" / "failed-payments-mon.csv"), "--allow-duplicates",
         "--report-dir", str(tmp_path / "r2")], expect=second, env=env)


TUESDAY_NEW = [CREDITOR, OPEN_CASE.id, "", "SEK", "5", BANK_DATE, "NEW"]


def test_a_repeated_pair_with_a_warning_is_recognised_too(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox) -> None:
    """helper-52: a year-old pair (its copies also carry old_date) repeated by the export is
    taken for the pair Amili holds too; the warning stays in the reason."""
    env = env_for(sandbox, tmp_path / "state")
    old = f"{datetime.date.today() - datetime.timedelta(days=400):%Y-%m-%d}"
    a = [CREDITOR, OPEN_CASE.id, "", "SEK", "77", old, ""]
    _monday_pair(cli, tmp_path, env, a)
    tue = write_csv(tmp_path / "payments-tue.csv", [TUESDAY_NEW, a, a])
    cli(["run", str(tue), "--report-dir", str(tmp_path / "r3")], env=env)
    rows = report(tmp_path / "r3")["rows"]
    assert [(r["status"], r["reason"]) for r in rows][1:] == [
        ("warning", "old_date,already_posted"), ("warning", "already_posted,old_date")]
    assert not list((tmp_path / "r3").glob("failed-*.csv"))


def test_a_repeated_pair_in_error_in_amili_stays_an_error(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox) -> None:
    """helper-52: both of Monday's copies were stored in error (a closed case): both repeated
    copies are errors, as the first one is."""
    env = env_for(sandbox, tmp_path / "state")
    a = [CREDITOR, CLOSED_CASE.id, "", "SEK", "77", BANK_DATE, ""]
    _monday_pair(cli, tmp_path, env, a, ExitCode.ROWS_IN_ERROR)
    tue = write_csv(tmp_path / "payments-tue.csv", [TUESDAY_NEW, a, a])
    cli(["run", str(tue), "--report-dir", str(tmp_path / "r3")],
        expect=ExitCode.ROWS_IN_ERROR, env=env)
    rows = report(tmp_path / "r3")["rows"]
    assert [(r["status"], r["reason"]) for r in rows][1:] == [
        ("error", "already_posted"), ("error", "already_posted")]


def test_a_repeated_pair_under_allow_duplicates_stays_a_duplicate_error(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox) -> None:
    """helper-52: with --allow-duplicates the first copy is posted anew (the flag's premise:
    these are new), so its twin is a duplicate_row error for a person, not "already held"."""
    env = env_for(sandbox, tmp_path / "state")
    a = [CREDITOR, OPEN_CASE.id, "", "SEK", "77", BANK_DATE, ""]
    _monday_pair(cli, tmp_path, env, a)
    tue = write_csv(tmp_path / "payments-tue.csv", [TUESDAY_NEW, a, a])
    cli(["run", str(tue), "--allow-duplicates", "--report-dir", str(tmp_path / "r3")],
        expect=ExitCode.ROWS_IN_ERROR, env=env)
    rows = report(tmp_path / "r3")["rows"]
    assert [(r["status"], r["reason"]) for r in rows][1:] == [
        ("completed", None), ("error", "duplicate_row")]


def test_a_refused_login_with_a_repeated_pair_is_reported_not_a_crash(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox) -> None:
    """helper-52: the login refused in a run whose file repeats a pair: "could not post" and
    the report folder on stdout (it ended with KeyError: 'posted')."""
    env = env_for(sandbox, tmp_path / "state")
    a = [CREDITOR, OPEN_CASE.id, "", "SEK", "77", BANK_DATE, ""]
    _monday_pair(cli, tmp_path, env, a)
    tue = write_csv(tmp_path / "payments-tue.csv", [TUESDAY_NEW, a, a])
    result = cli(["run", str(tue), "--report-dir", str(tmp_path / "r3")],
                 expect=ExitCode.CANNOT_RUN,
                 env=env | {"AMILI_ACCESS_TOKEN": "", "AMILI_API_CODE": "wrong-code"})
    assert "unexpected error" not in result.output and "could not post" in result.output
    assert str(tmp_path / "r3") in result.stdout


def test_two_files_of_one_name_in_one_run_dry_run_agrees_with_the_run(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox) -> None:
    """helper-51: north/payments.csv and south/payments.csv in one run with
    --allow-duplicates: the real run skips south's copy of north's row (a file of that name
    posted it moments before); the dry run said it would post it."""
    env = env_for(sandbox, tmp_path / "state")
    a = [CREDITOR, OPEN_CASE.id, "", "SEK", "21", BANK_DATE, "A"]
    s = [CREDITOR, OPEN_CASE.id, "", "SEK", "22", BANK_DATE, "S"]
    (tmp_path / "north").mkdir()
    (tmp_path / "south").mkdir()
    files = [str(write_csv(tmp_path / "north" / "payments.csv", [a])),
             str(write_csv(tmp_path / "south" / "payments.csv", [a, s]))]
    cli(["run", "--dry-run", "--allow-duplicates", *files, "--report-dir", str(tmp_path / "d")],
        env=env)
    cli(["run", "--allow-duplicates", *files, "--report-dir", str(tmp_path / "r")], env=env)
    dry = [(r["status"], r["reason"]) for r in report(tmp_path / "d")["rows"]]
    real = [(r["status"], r["reason"]) for r in report(tmp_path / "r")["rows"]]
    assert dry == [("valid", None), ("warning", "already_posted"), ("valid", None)]
    # South's row 2 is north's row 2 by name, sheet and row: the very same row, so it takes
    # that row's outcome as read back (it said "warning" while it copied the 201's
    # provisional state; an API whose 201 carries the status gave "completed" already).
    assert real == [("completed", None), ("completed", "already_posted"), ("completed", None)]
    assert stored_references(sandbox) == Counter({"A": 1, "S": 1})


def test_following_the_already_posted_hint_does_not_repost_an_overlapping_row(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox) -> None:
    """helper-46: Tuesday's export repeats Monday's row B and holds a second, identical
    payment A. Running Tuesday's file again with --allow-duplicates (as the old hint said)
    posted B twice; the rows it judged already posted now stay so."""
    env = env_for(sandbox, tmp_path / "state")
    a = [CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, ""]
    b = [CREDITOR, "", OPEN_CASE.invoice_number, "SEK", "20", BANK_DATE, "B"]
    write_csv(tmp_path / "payments-monday.csv", [a, b])
    tuesday = write_csv(tmp_path / "payments-tuesday.csv", [b, a])
    cli(["run", str(tmp_path / "payments-monday.csv"), "--report-dir", str(tmp_path / "r1")],
        env=env)
    result = cli(["run", str(tuesday), "--report-dir", str(tmp_path / "r2")], env=env)
    rows = report(tmp_path / "r2")["rows"]
    assert [(r["status"], r["reason"]) for r in rows] == [("warning", "already_posted")] * 2
    assert report(tmp_path / "r2")["posted"] == 0
    assert "payments warning: 2 rows, 30.00 SEK" in result.output  # never "completed"
    assert ("known to have reached Amili in this run: 0 row(s); 2 row(s) already posted "
            "earlier were not sent again") in result.output
    assert report(tmp_path / "r2")["already_posted"] == 2
    cli(["run", str(tuesday), "--allow-duplicates", "--report-dir", str(tmp_path / "r3")],
        env=env)
    assert stored_references(sandbox)["B"] == 1
    assert sandbox.state.count("creditor--payments") == 2


def test_a_duplicate_row_sent_alone_from_its_failed_rows_file_is_posted(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox) -> None:
    """helper-50: the same amount paid twice the same day, no reference: validation refuses
    the second row (duplicate_row), which lands alone in the failed-rows file. Run with
    --allow-duplicates, as the hint says, it is posted: a failed-rows file is a file of its
    own, not "the same row" as the first file's row 2."""
    import csv

    row = [CREDITOR, OPEN_CASE.id, "", "SEK", "77", BANK_DATE, ""]
    env = env_for(sandbox, tmp_path / "state")
    source = write_csv(tmp_path / "payments.csv", [row, row])
    cli(["run", str(source), "--report-dir", str(tmp_path / "r1")],
        expect=ExitCode.ROWS_IN_ERROR, env=env)
    assert [r["reason"] for r in report(tmp_path / "r1")["rows"]] == [None, "duplicate_row"]
    failed = tmp_path / "r1" / "failed-payments.csv"
    with failed.open(encoding="utf-8-sig") as handle:
        assert [r["source_row"] for r in csv.DictReader(handle)] == ["3"]
    cli(["run", str(failed), "--report-dir", str(tmp_path / "r2")], env=env)
    refused = report(tmp_path / "r2")["rows"][0]
    assert (refused["status"], refused["reason"]) == ("warning", "already_posted")
    cli(["run", str(failed), "--allow-duplicates", "--report-dir", str(tmp_path / "r3")],
        env=env)  # the failed-rows file's row 2 was judged already posted: it stays so
    alone = tmp_path / "payments-second.csv"
    alone.write_bytes(failed.read_bytes())
    cli(["run", str(alone), "--allow-duplicates", "--report-dir", str(tmp_path / "r4")],
        env=env)
    assert report(tmp_path / "r4")["rows"][0]["status"] == "completed"
    assert [r["amount"] for r in sandbox.state.records("creditor--payments")].count(77) == 2


def test_dry_run_posts_nothing_and_plans(cli: Callable[..., Result], tmp_path: Path,
                                         sandbox: RunningSandbox) -> None:
    """--dry-run validates and plans (marking rows already posted) but sends nothing."""
    source = write_csv(tmp_path / "payments.csv", [
        [CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "X"]])
    env = env_for(sandbox, tmp_path / "state")
    cli(["run", "--dry-run", str(source), "--report-dir", str(tmp_path / "d1")], env=env)
    assert report(tmp_path / "d1")["mode"] == "dry-run"
    assert report(tmp_path / "d1")["rows"][0]["status"] == "valid"
    assert sandbox.state.count("creditor--payments") == 0
    cli(["run", str(source), "--report-dir", str(tmp_path / "r1")], env=env)
    cli(["run", "--dry-run", str(source), "--report-dir", str(tmp_path / "d2")], env=env)
    assert report(tmp_path / "d2")["rows"][0]["reason"] == "already_posted"
    assert sandbox.state.count("creditor--payments") == 1


def test_a_relative_report_folder_is_kept_absolute(cli: Callable[..., Result], tmp_path: Path,
                                                   sandbox: RunningSandbox,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`--report-dir out` is printed, and kept in the journal, as a full path: `show` and
    `retry` run later from another folder still find it."""
    source = write_csv(tmp_path / "payments.csv", [
        [CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "X"]])
    env = env_for(sandbox, tmp_path / "state")
    monkeypatch.chdir(tmp_path)
    printed = cli(["run", "--dry-run", str(source), "--report-dir", "out"], env=env).stdout
    assert printed.strip() == str(tmp_path / "out")
    monkeypatch.chdir(tmp_path / "state")
    shown = cli(["show", report(tmp_path / "out")["run_id"]], env=env).output
    assert f"report   {tmp_path / 'out'}" in shown


def test_rejected_file_posts_nothing_but_others_run(cli: Callable[..., Result], tmp_path: Path,
                                                    sandbox: RunningSandbox) -> None:
    """A file rejected whole posts nothing; the other files still run; exit code 3."""
    good = write_csv(tmp_path / "payments.csv", [
        [CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "GOOD"]])
    bad = write_csv(tmp_path / "payments-bad.csv", [[CREDITOR, OPEN_CASE.id, "SEK", "10"]],
                    header=["creditor", "case", "currency", "amount"])
    out = tmp_path / "out"
    result = cli(["run", str(good), str(bad), "--report-dir", str(out)],
                 expect=ExitCode.CANNOT_RUN, env=env_for(sandbox, tmp_path / "state"))
    files = {f["name"]: f for f in report(out)["files"]}
    assert "bank_transaction_date" in files["payments-bad.csv"]["rejected"]
    assert "payments-bad.csv" in result.output
    assert sorted(stored_references(sandbox)) == ["GOOD"]


def test_missing_api_url_stops_before_reading(cli: Callable[..., Result], tmp_path: Path) -> None:
    """Without an API URL the run cannot start: exit 3 with a message naming the setting."""
    source = write_csv(tmp_path / "payments.csv", [])
    result = cli(["run", str(source)], expect=ExitCode.CANNOT_RUN,
                 env={"AMILI_STATE_DIR": str(tmp_path), "AMILI_API_URL": "", "AMILI_CONFIG": ""})
    assert "api_url" in result.output


def test_per_case_order_close_then_error(cli: Callable[..., Result], tmp_path: Path,
                                         sandbox: RunningSandbox) -> None:
    """A payment that closes a case, then one more for it: completed, then error (file order)."""
    source = write_csv(tmp_path / "payments.csv", [
        [CREDITOR, OPEN_CASE.id, "", "SEK", f"{OPEN_CASE.remaining:.2f}", BANK_DATE, "FULL"],
        [CREDITOR, "", OPEN_CASE.invoice_number, "SEK", "10", BANK_DATE, "AFTER"]])
    cli(["run", str(source), "--concurrency", "8", "--report-dir", str(tmp_path / "o")],
        expect=ExitCode.ROWS_IN_ERROR, env=env_for(sandbox, tmp_path / "state"))
    statuses = [r["status"] for r in report(tmp_path / "o")["rows"]]
    assert statuses == ["completed", "error"]
    assert not (tmp_path / "o" / "failed-payments.csv").exists()  # it is in Amili: settled there
    # Run again: the row Amili stored with status error stays an error, already posted, and
    # is still not in a failed-rows file (importing it again could only be refused).
    cli(["run", str(source), "--report-dir", str(tmp_path / "again")],
        expect=ExitCode.ROWS_IN_ERROR, env=env_for(sandbox, tmp_path / "state"))
    again = report(tmp_path / "again")["rows"]
    assert [(r["status"], r["reason"]) for r in again] == [("completed", "already_posted"),
                                                           ("error", "already_posted")]
    assert not (tmp_path / "again" / "failed-payments.csv").exists()


def test_an_outage_of_bare_503_pages_stops_the_run_and_the_next_run_posts(
        cli: Callable[..., Result], tmp_path: Path,
        make_sandbox: Callable[..., RunningSandbox]) -> None:
    """Every POST answered by a proxy's bare 503 page (no Retry-After): each is read back
    (it may follow a stored row), found not stored, and after three such losses in a row the
    run stops (exit 3, the rest not posted); once the API is back the next run posts every
    row once."""
    cases = many_cases(8)
    box = make_sandbox(cases=cases, fail_503=1.0)
    source = write_csv(tmp_path / "payments.csv", payment_rows(cases, 2))
    (tmp_path / "c.toml").write_text("settle_seconds = 0\nconcurrency = 2\n", encoding="utf-8")
    env = env_for(box, tmp_path / "state") | {"AMILI_CONFIG": str(tmp_path / "c.toml")}
    result = cli(["run", str(source), "--report-dir", str(tmp_path / "r1")],
                 expect=ExitCode.CANNOT_RUN, env=env)
    assert "could not post" in result.output
    assert box.state.requests["POST /creditor--payments"] < 16  # stopped, not every row tried
    assert stored_references(box) == Counter()
    box.set_faults(fail_503=0.0)
    cli(["run", str(source), "--report-dir", str(tmp_path / "r2")], env=env)
    assert stored_references(box) == Counter({f"REF-{i}-{n}": 1 for i in range(8)
                                              for n in range(2)})


def test_a_case_waits_behind_its_row_that_failed(
        cli: Callable[..., Result], tmp_path: Path,
        make_sandbox: Callable[..., RunningSandbox]) -> None:
    """The payment that closes a case runs out of retries: the case's next row is held back
    (not sent before it), and `retry` then posts both in file order: completed, then error."""
    box = make_sandbox(fail_503=1.0, retry_after=0)
    source = write_csv(tmp_path / "payments.csv", [
        [CREDITOR, OPEN_CASE.id, "", "SEK", f"{OPEN_CASE.remaining:.2f}", BANK_DATE, "FULL"],
        [CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "AFTER"]])
    (tmp_path / "c.toml").write_text("max_attempts = 2\nbackoff_base = 0.01\n",
                                     encoding="utf-8")
    env = env_for(box, tmp_path / "state") | {"AMILI_CONFIG": str(tmp_path / "c.toml")}
    cli(["run", str(source), "--report-dir", str(tmp_path / "r1")],
        expect=ExitCode.ROWS_IN_ERROR, env=env)
    first = report(tmp_path / "r1")["rows"]
    assert [(r["status"], r["reason"]) for r in first] == [("error", "retry_exhausted"),
                                                           ("error", "held_back")]
    assert "file payments.csv row 2, earlier in the same case" in first[1]["message"]
    assert box.state.requests["POST /creditor--payments"] == 2  # FULL's two attempts only
    box.set_faults(fail_503=0.0)
    cli(["retry", str(tmp_path / "r1"), "--report-dir", str(tmp_path / "r2")],
        expect=ExitCode.ROWS_IN_ERROR, env=env)
    second = report(tmp_path / "r2")["rows"]
    assert [(r["creditor_payment_reference"], r["status"]) for r in second] == [
        ("FULL", "completed"), ("AFTER", "error")]
    assert stored_references(box) == Counter({"FULL": 1, "AFTER": 1})


def test_rows_an_earlier_run_posted_are_never_reported_unsent(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox) -> None:
    """A run stopped by a refused token before it reached a file posted by an earlier run
    reports that file's rows with their earlier outcome, not "nothing was sent", and keeps
    them out of the failed-rows file; the row never posted is retryable."""
    done = write_csv(tmp_path / "payments-a.csv", [
        [CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "A1"]])
    new = write_csv(tmp_path / "payments-b.csv", [
        [CREDITOR, OPEN_CASE.id, "", "SEK", "11", BANK_DATE, "B1"]])
    env = env_for(sandbox, tmp_path / "state")
    cli(["run", str(done), "--report-dir", str(tmp_path / "r1")], env=env)
    cli(["run", str(new), str(done), "--concurrency", "1", "--report-dir", str(tmp_path / "r2")],
        expect=ExitCode.CANNOT_RUN, env=env | {"AMILI_ACCESS_TOKEN": "not-the-token"})
    rows = {r["creditor_payment_reference"]: r for r in report(tmp_path / "r2")["rows"]}
    assert (rows["B1"]["status"], rows["B1"]["reason"]) == ("error", "api_unusable")
    assert (rows["A1"]["status"], rows["A1"]["reason"]) == ("completed", "already_posted")
    assert "nothing was sent" not in rows["A1"]["message"]
    assert not (tmp_path / "r2" / "failed-payments-a.csv").exists()
    assert (tmp_path / "r2" / "failed-payments-b.csv").exists()
    assert stored_references(sandbox) == Counter({"A1": 1})


def test_faults_still_give_every_row_exactly_once(
        cli: Callable[..., Result], tmp_path: Path,
        make_sandbox: Callable[..., RunningSandbox]) -> None:
    """503, 429, 500-after-store and dropped connections: every row stored once, completed."""
    cases = many_cases(12)
    box = make_sandbox(cases=cases, fail_503=0.15, fail_429=0.1, retry_after=0,
                       fail_500_after_store=0.1, drop_after_store=0.1, seed=11)
    source = write_csv(tmp_path / "payments.csv", payment_rows(cases, 4))
    # A quarter of all attempts fail before storing: with the default 6 attempts, one row in
    # ~4000 would run out of them (an honest "error, retryable"); 12 make that ~1 in 10^7.
    (tmp_path / "c.toml").write_text("max_attempts = 12\nbackoff_base = 0.01\n",
                                     encoding="utf-8")
    cli(["run", str(source), "--concurrency", "6", "--report-dir", str(tmp_path / "o")],
        env=env_for(box, tmp_path / "state") | {"AMILI_CONFIG": str(tmp_path / "c.toml")})
    rows = report(tmp_path / "o")["rows"]
    assert len(rows) == 48 and {r["status"] for r in rows} == {"completed"}
    assert stored_references(box) == Counter({f"REF-{i}-{n}": 1 for i in range(12)
                                              for n in range(4)})


def test_retry_reposts_transient_failures(cli: Callable[..., Result], tmp_path: Path,
                                          make_sandbox: Callable[..., RunningSandbox]) -> None:
    """Rows that failed for transient reasons are re-posted by `retry RUN_ID`, linked back; its
    report goes beside the earlier run's."""
    box = make_sandbox(fail_503=1.0, retry_after=0)
    source = write_csv(tmp_path / "payments.csv", [
        [CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "R1"],
        [CREDITOR, OPEN_CASE.id, "", "SEK", "11", BANK_DATE, "R2"]])
    env = env_for(box, tmp_path / "state") | {"AMILI_CONFIG": str(tmp_path / "c.toml")}
    (tmp_path / "c.toml").write_text("max_attempts = 2\nbackoff_base = 0.01\n", encoding="utf-8")
    reports = tmp_path / "reports"
    cli(["run", str(source), "--report-dir", str(reports / "r1")],
        expect=ExitCode.ROWS_IN_ERROR, env=env)
    first = report(reports / "r1")
    assert {r["status"] for r in first["rows"]} == {"error"}
    box.set_faults(fail_503=0.0)
    printed = Path(cli(["retry", str(reports / "r1")], env=env).stdout.strip())
    second = report(printed)
    assert printed == reports / second["run_id"]
    assert second["retry_of"] == first["run_id"]
    assert [r["status"] for r in second["rows"]] == ["completed", "completed"]
    assert stored_references(box) == Counter({"R1": 1, "R2": 1})
    # The retry's report names the file its rows come from (it listed none), saying it was
    # not read again; the journal keeps it the first run's (its content was not processed
    # completely by the retry: the drop folder still runs it when it comes again).
    [entry] = second["files"]
    assert (entry["name"], entry["sha256"], entry["rows"]) == (
        "payments.csv", first["files"][0]["sha256"], 2)
    assert entry["notes"] == [f"2 row(s) of run {first['run_id']} posted again; the file "
                              "itself was not read again"]
    listing = cli(["runs"], env=env).output
    assert first["run_id"] in listing and second["run_id"] in listing
    # helper-50: the failed night says it was settled, the retry says what it followed up.
    assert f"(retried by {second['run_id']}: exit 0)" in listing
    assert f"(retry of {first['run_id']})" in listing
    # A retry reads no file: its files column says so rather than "0".
    [retry_line] = [line for line in listing.splitlines() if "(retry of" in line]
    assert retry_line.split()[2:4] == ["retry", "-"]
    shown = cli(["show", second["run_id"]], env=env).output
    assert f"retry of {first['run_id']}" in shown and str(printed) in shown
    assert "rows     2 completed (the report" in shown
    assert "posting  2 completed (journal states" in shown
    original = cli(["show", first["run_id"]], env=env).output
    assert f"retried  by {second['run_id']} (exit 0; 2 completed;" in original


def test_a_state_directory_removed_under_a_run_stops_it_and_its_journal_comes_back(
        tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]) -> None:
    """helper-54: the state directory is removed while a run posts (a cleanup job, an
    `rm -rf`). The run went on into the deleted journal and exited 0; the next run posted
    every row again. Now it stops (exit 3, saying so), writes the journal it holds back in
    place when it ends, and the next run posts only the rows not yet posted."""
    import shutil

    cases = many_cases(4)
    box = make_sandbox(cases=cases, latency_ms=30)
    source = write_csv(tmp_path / "payments.csv", payment_rows(cases, 10))
    state = tmp_path / "state"
    env = {**os.environ, **env_for(box, state)}
    command = _run_command(source, concurrency=2)
    first = _posting(box, [*command, "--report-dir", str(tmp_path / "r1")], env, stored=5)
    shutil.rmtree(state)
    _, err = first.communicate(timeout=120)
    assert first.returncode == ExitCode.CANNOT_RUN
    assert "was removed or replaced while this run was using it; nothing more was posted" in err
    assert (state / "journal.sqlite3").exists()
    posted = box.state.count("creditor--payments")
    assert posted < 40
    second = subprocess.run([*command, "--report-dir", str(tmp_path / "r2")], env=env,
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == ExitCode.OK, second.stderr
    assert stored_references(box) == Counter({f"REF-{i}-{n}": 1 for i in range(4)
                                              for n in range(10)})


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_a_stderr_on_a_full_disk_changes_nothing(
        tmp_path: Path, make_sandbox: Callable[..., RunningSandbox], log_format: str) -> None:
    """helper-54: cron's `2>>/var/log/...` on a full disk (here /dev/full). With JSON logs
    nothing was posted and the run exited 1, left unfinished in the journal; with console
    logs every row was posted and the run still exited 1. What cannot be said is lost; the
    run and its exit code are what they would be."""
    cases = many_cases(2)
    box = make_sandbox(cases=cases)
    source = write_csv(tmp_path / "payments.csv", payment_rows(cases, 3))
    env = {**os.environ, **env_for(box, tmp_path / "state")}
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "importer", "--log-format", log_format,
                               "run", str(source), "--report-dir", str(tmp_path / "r")],
                              env=env, stdout=subprocess.PIPE, stderr=full, text=True,
                              timeout=120)
    assert done.returncode == ExitCode.OK
    assert done.stdout.strip() == str(tmp_path / "r")
    assert sum(stored_references(box).values()) == 6
    with Journal(tmp_path / "state", read_only=True) as journal:
        assert [(r.exit_code, r.finished is not None) for r in journal.runs()] == [(0, True)]


def _damage_two_indexes(journal: Path) -> None:
    """The b-trees of two pairs of the journal's indexes swapped (the classic form of index
    damage: a torn write, a bad sector); only SQLite's full integrity check sees it."""
    import sqlite3

    db = sqlite3.connect(journal)
    roots = dict(db.execute("SELECT name, rootpage FROM sqlite_master WHERE type = 'index'"))
    db.execute("PRAGMA writable_schema = ON")
    for a, b in (("rows_fingerprint", "rows_amili_id"), ("rows_source", "rows_state")):
        db.execute("UPDATE sqlite_master SET rootpage = ? WHERE name = ?", (roots[b], a))
        db.execute("UPDATE sqlite_master SET rootpage = ? WHERE name = ?", (roots[a], b))
    db.commit()
    db.close()


def test_a_damaged_journal_is_refused_not_trusted(
        cli: Callable[..., Result], tmp_path: Path,
        make_sandbox: Callable[..., RunningSandbox]) -> None:
    """helper-54: a journal whose indexes are damaged hid the rows already posted from the
    check that keeps them from being posted twice: every row went out again. A posting run
    checks the journal first (and `doctor` does): exit 3, nothing posted."""
    cases = many_cases(2)
    box = make_sandbox(cases=cases)
    source = write_csv(tmp_path / "payments.csv", payment_rows(cases, 3))
    env = env_for(box, tmp_path / "state")
    cli(["run", str(source), "--report-dir", str(tmp_path / "r1")], env=env)
    _damage_two_indexes(tmp_path / "state" / "journal.sqlite3")
    # A process of its own, as cron starts it (one process checks a journal file once).
    again = subprocess.run([sys.executable, "-m", "importer", "run", str(source),
                            "--report-dir", str(tmp_path / "r2")],
                           env={**os.environ, **env}, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == ExitCode.CANNOT_RUN
    assert "journal.sqlite3 is damaged (" in again.stderr
    assert "restore it from a backup before anything is posted" in again.stderr
    assert max(stored_references(box).values()) == 1
    doctor = cli(["doctor"], expect=ExitCode.CANNOT_RUN, env=env).output
    assert "FAIL  journal: " in doctor and "is damaged" in doctor


def test_sigkill_at_random_moments_never_doubles_a_row(
        tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]) -> None:
    """SIGKILL the importer several times mid-run; after a final run every row exists once."""
    cases = many_cases(10)
    box = make_sandbox(cases=cases, latency_ms=40)
    source = write_csv(tmp_path / "payments.csv", payment_rows(cases, 6))
    # Rows killed before their POST left are "not stored" only once their request is settled:
    # 2 s here instead of the default minute.
    env = {**os.environ, **env_for(box, tmp_path / "state"), "AMILI_LOG_FORMAT": "json",
           "AMILI_SETTLE_SECONDS": "2"}
    command = [sys.executable, "-m", "importer", "--log-format", "json", "run", str(source),
               "--concurrency", "4"]
    rng = random.Random(5)
    kills = 0
    for _ in range(4):
        before = box.state.count("creditor--payments")
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while (box.state.count("creditor--payments") == before and process.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.02)  # kill only once this run is posting
        time.sleep(rng.uniform(0.0, 0.4))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(timeout=30)
    assert kills >= 2
    from importer.journal import Journal

    with Journal(tmp_path / "state", read_only=True) as journal:  # `runs`/`show` name the file
        # Killed once posting (a kill can land earlier, when the last run's late POST was
        # what the loop saw stored).
        posting = [r for r in journal.runs(50) if r.finished is None and journal.counts(r.run_id)]
        assert posting
        assert all([f.name for f in journal.files(r.run_id)] == ["payments.csv"] for r in posting)
    final = subprocess.run([*command, "--report-dir", str(tmp_path / "final")], env=env,
                           capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr[-2000:]
    rows = report(tmp_path / "final")["rows"]
    assert len(rows) == 60 and {r["status"] for r in rows} == {"completed"}
    assert all(r["amili_id"] for r in rows)
    assert stored_references(box) == Counter({f"REF-{i}-{n}": 1 for i in range(10)
                                              for n in range(6)})


def test_sigterm_stops_the_run_and_says_how_to_go_on(
        tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]) -> None:
    """SIGTERM mid-run: rows in flight finish, the rest are 'not_posted' (exit 1), the report
    says the run was stopped, and the same command then posts only the rest."""
    cases = many_cases(2)
    box = make_sandbox(cases=cases, latency_ms=60)
    source = write_csv(tmp_path / "payments.csv", payment_rows(cases, 5))
    env = {**os.environ, **env_for(box, tmp_path / "state")}
    command = _run_command(source, concurrency=1)
    process = _posting(box, [*command, "--report-dir", str(tmp_path / "first")], env, stored=2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == ExitCode.ROWS_IN_ERROR, stderr[-2000:]
    assert "row(s) not reached are 'not_posted'; run the same command again" in stderr
    first = report(tmp_path / "first")
    assert first["stopped"] is True
    reasons = Counter(r["reason"] for r in first["rows"] if r["status"] == "error")
    assert set(reasons) == {"not_posted"} and 0 < reasons["not_posted"] < 10
    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr[-2000:]
    assert stored_references(box) == Counter({f"REF-{i}-{n}": 1 for i in range(2)
                                              for n in range(5)})


@pytest.fixture(scope="module")
def big_payments(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A payments CSV that takes a few seconds to validate."""
    rows = [[CREDITOR, OPEN_CASE.id, "", "SEK", f"{n % 900 + 1},50", BANK_DATE, f"V-{n}"]
            for n in range(300_000)]
    return write_csv(tmp_path_factory.mktemp("big") / "payments-big.csv", rows)


def test_a_stop_whose_keyboard_interrupt_was_swallowed_still_stops_the_run(
        tmp_path: Path) -> None:
    """The fresh-clone suite saw SIGTERM 0.35 s into a run end in exit 0 and a full report:
    the handler's KeyboardInterrupt had been swallowed (library code with a bare except:,
    while pandas or pandera was imported). The stop is remembered and the run stops at its
    next chunk, before any report is put in place."""
    from importer import errors
    from importer.config import Config
    from importer.pipeline import Mode, RunOptions, execute

    source = write_csv(tmp_path / "payments.csv",
                       [[CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "S1"]])
    out = tmp_path / "out"
    errors.note_interrupt()  # as the handler does, its KeyboardInterrupt then lost
    try:
        with pytest.raises(KeyboardInterrupt):
            execute([source], Config(state_dir=tmp_path / "state"), Mode.VALIDATE,
                    RunOptions(report_dir=out, quiet=True))
    finally:
        errors.forget_interrupt()
    assert not (out / "report.json").exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("delay", [0.0, 0.2, 0.35, 0.4, 0.425, 0.45, 0.475, 0.5, 0.55])
def test_sigterm_while_validating_ends_cleanly(tmp_path: Path, big_payments: Path,
                                               delay: float) -> None:
    """SIGTERM while a big file is validated (before any posting), at several moments (the
    libraries still being imported, then reading and checking): exit 3 with one line, no
    traceback, and no half-written report left in the report folder. (Python 3.11 made the
    process die by SIGINT, or crash, when the interrupt landed while pandera was imported:
    the exit code cron reads is now 3 whatever the moment.)"""
    source = big_payments
    out = tmp_path / "out"
    env = {**os.environ, "AMILI_STATE_DIR": str(tmp_path / "state")}
    process = subprocess.Popen([sys.executable, "-m", "importer", "--log-format", "json",
                                "validate", str(source), "--report-dir", str(out)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    assert process.stderr is not None
    for line in process.stderr:  # the run has started: its report folder exists
        if '"run.start"' in line:
            break
    time.sleep(delay)
    process.send_signal(signal.SIGTERM)
    rest = process.stderr.read()
    process.stderr.close()
    assert process.wait(timeout=60) == ExitCode.CANNOT_RUN, rest[-2000:]
    assert "interrupted" in rest and "Traceback" not in rest
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    assert not (out / "report.json").exists()


def test_jwt_login_is_renewed_mid_run(cli: Callable[..., Result], tmp_path: Path,
                                      make_sandbox: Callable[..., RunningSandbox]) -> None:
    """A run longer than the token's lifetime logs in again (JWT) and completes every row."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from fixtures_sandbox import API_CODE
    from test_auth import public_pem, write_key

    key = ec.generate_private_key(ec.SECP256R1())
    cases = many_cases(3)
    box = make_sandbox(cases=cases, token=None, public_keys=[public_pem(key)], token_lifetime=1,
                       latency_ms=150)  # 10 rows per case in order: ~1.5 s, longer than a token
    source = write_csv(tmp_path / "payments.csv", payment_rows(cases, 10))
    env = {"AMILI_API_URL": box.url, "AMILI_API_CODE": API_CODE, "AMILI_ACCESS_TOKEN": "",
           "AMILI_PRIVATE_KEY_FILE": str(write_key(tmp_path / "key.pem", key)),
           "AMILI_STATE_DIR": str(tmp_path / "state"), "AMILI_CONFIG": ""}
    result = cli(["run", str(source), "--concurrency", "3", "--report-dir", str(tmp_path / "o")],
                 env=env)
    rows = report(tmp_path / "o")["rows"]
    assert len(rows) == 30 and {r["status"] for r in rows} == {"completed"}
    logins = box.state.snapshot()["requests"].get("GET /authenticates", 0)
    assert logins >= 2, box.state.snapshot()["requests"]
    assert API_CODE not in result.output
    assert "BEGIN" not in (tmp_path / "o" / "run.log").read_text(encoding="utf-8")


def test_refused_login_exits_3_and_retry_posts_the_rows(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox) -> None:
    """A refused token posts nothing, exits 3, journals the rows; `retry` posts them later."""
    source = write_csv(tmp_path / "payments.csv", [
        [CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "L1"]])
    env = env_for(sandbox, tmp_path / "state")
    result = cli(["run", str(source), "--report-dir", str(tmp_path / "r1")],
                 expect=ExitCode.CANNOT_RUN, env=env | {"AMILI_ACCESS_TOKEN": "wrong-token"})
    assert "could not post" in result.output and "wrong-token" not in result.output
    first = report(tmp_path / "r1")
    assert first["rows"][0]["reason"] == "api_unusable"
    assert sandbox.state.count("creditor--payments") == 0
    cli(["retry", first["run_id"], "--report-dir", str(tmp_path / "r2")], env=env)
    assert report(tmp_path / "r2")["rows"][0]["status"] == "completed"
    assert stored_references(sandbox) == Counter({"L1": 1})


def test_allow_duplicates_never_reposts_rows_of_an_edited_file(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox) -> None:
    """Fix one row of a file and run it again, even with --allow-duplicates: the rows already
    posted from that file are not posted a second time."""
    env = env_for(sandbox, tmp_path / "state")
    good = [CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "E1"]
    source = write_csv(tmp_path / "payments.csv", [
        good, [CREDITOR, OPEN_CASE.id, "", "EUR", "11", BANK_DATE, "E2"]])
    cli(["run", str(source), "--report-dir", str(tmp_path / "r1")],
        expect=ExitCode.ROWS_IN_ERROR, env=env)
    write_csv(source, [good, [CREDITOR, OPEN_CASE.id, "", "SEK", "11", BANK_DATE, "E2"]])
    cli(["run", str(source), "--report-dir", str(tmp_path / "r2")], env=env)
    cli(["run", str(source), "--allow-duplicates", "--report-dir", str(tmp_path / "r3")],
        env=env)
    assert stored_references(sandbox) == Counter({"E1": 1, "E2": 1})
    assert [r["reason"] for r in report(tmp_path / "r3")["rows"]] == ["already_posted"] * 2
    # A row deleted above them moves the others up: still the same file, still not re-posted.
    write_csv(source, [[CREDITOR, OPEN_CASE.id, "", "SEK", "11", BANK_DATE, "E2"]])
    cli(["run", str(source), "--allow-duplicates", "--report-dir", str(tmp_path / "r4")],
        env=env)
    assert stored_references(sandbox) == Counter({"E1": 1, "E2": 1})
    assert [r["reason"] for r in report(tmp_path / "r4")["rows"]] == ["already_posted"]


def test_retry_refuses_a_run_that_never_finished(cli: Callable[..., Result],
                                                 tmp_path: Path) -> None:
    """A killed run recorded only the rows it reached: retry says to run its files again
    instead of reporting success over the rows it never saw."""
    from importer.journal import Journal

    with Journal(tmp_path / "state") as journal:
        journal.start_run("killed-run", "run", ["amili-import", "run", "payments.csv"])
    env = {"AMILI_STATE_DIR": str(tmp_path / "state"), "AMILI_CONFIG": ""}
    result = cli(["retry", "killed-run"], expect=ExitCode.CANNOT_RUN, env=env)
    assert "never finished" in result.output and "amili-import run payments.csv" in result.output
    # runs and show say so too (this test's own pid counts as gone: the run is not current).
    [line] = [x for x in cli(["runs"], env=env).output.splitlines() if "killed-run" in x]
    assert " kill " in line
    assert "never: the process is gone" in cli(["show", "killed-run"], env=env).output


def test_retry_keeps_the_runs_allow_duplicates(cli: Callable[..., Result], tmp_path: Path,
                                               make_sandbox: Callable[..., RunningSandbox]
                                               ) -> None:
    """A run with --allow-duplicates whose rows failed for transient reasons: its retry posts
    the identical row too, as the run itself would have."""
    box = make_sandbox()
    env = env_for(box, tmp_path / "state") | {"AMILI_CONFIG": str(tmp_path / "c.toml")}
    (tmp_path / "c.toml").write_text("max_attempts = 1\n", encoding="utf-8")
    monday = [CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "R1"]
    cli(["run", str(write_csv(tmp_path / "payments-mon.csv", [monday]))], env=env)
    box.set_faults(fail_503=1.0, retry_after=0)
    tuesday = write_csv(tmp_path / "payments-tue.csv", [
        monday, [CREDITOR, OPEN_CASE.id, "", "SEK", "11", BANK_DATE, "R2"]])
    cli(["run", str(tuesday), "--allow-duplicates", "--report-dir", str(tmp_path / "r1")],
        expect=ExitCode.ROWS_IN_ERROR, env=env)
    box.set_faults(fail_503=0.0)
    cli(["retry", str(tmp_path / "r1"), "--report-dir", str(tmp_path / "r2")], env=env)
    assert [r["status"] for r in report(tmp_path / "r2")["rows"]] == ["completed", "completed"]
    assert stored_references(box) == Counter({"R1": 2, "R2": 1})


def test_run_exits_1_when_an_earlier_runs_unread_status_turns_out_error(
        cli: Callable[..., Result], tmp_path: Path, unread_api: tuple[Any, dict[str, str]]
) -> None:
    """`run` of another file reads the status an earlier run could not: Amili has it in
    error, so this run exits 1 (its own row completed) and says which row, where."""
    server, env = unread_api
    first = write_csv(tmp_path / "payments-a.csv",
                      [[CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "A1"]])
    cli(["run", str(first), "--report-dir", str(tmp_path / "r1")], env=env)
    server.state.variant.fail_gets = 0
    server.records[0]["status"] = "error"
    other = write_csv(tmp_path / "payments-b.csv",
                      [[CREDITOR, OPEN_CASE.id, "", "SEK", "20", BANK_DATE, "B1"]])
    result = cli(["run", str(other), "--report-dir", str(tmp_path / "r2")],
                 expect=ExitCode.ROWS_IN_ERROR, env=env)
    report = json.loads((tmp_path / "r2" / "report.json").read_text(encoding="utf-8"))
    assert report["totals"] == {"completed": 1}
    assert [(r["file"], r["row"], r["status"]) for r in report["earlier_rows"]] == [
        ("payments-a.csv", 2, "error")]
    assert ("earlier runs: 1 of their row(s) looked up again: 1 error (api_error); "
            "listed under earlier_rows in report.json") in result.stderr
    assert "  in error in Amili: run " in result.stderr
    assert "file payments-a.csv, row 2: Amili: error; status read in run" in result.stderr
    with Journal(tmp_path / "state") as journal:  # the runs' own exit codes
        assert [r.exit_code for r in journal.runs()] == [0, 0]
    import openpyxl

    sheet = openpyxl.load_workbook(tmp_path / "r2" / "report.xlsx")["Summary"]
    cells = [[c for c in row if c is not None] for row in sheet.iter_rows(values_only=True)]
    at = cells.index(["Rows of earlier runs looked up again (not rows of these files)"])
    assert cells[at + 1] == ["Run", "File", "Sheet", "Row", "Status", "Reason", "Message"]
    assert cells[at + 2][1:5] == ["payments-a.csv", 2, "error", "api_error"]
    log = (tmp_path / "r2" / "run.log").read_text(encoding="utf-8").splitlines()
    [finish] = [json.loads(line) for line in log if '"run.finish"' in line]
    assert (finish["exit_code"], finish["process_exit_code"]) == (0, 1)


def test_an_earlier_rows_error_survives_a_run_killed_before_its_report(
        tmp_path: Path, unread_api: tuple[Any, dict[str, str]]) -> None:
    """Night two is SIGKILLed while its own POST hangs, before any report: the status it
    would have read is still unread in the journal, so night three reads it, reports it
    and exits 1. Nothing is posted twice."""
    server, env = unread_api
    env = {**os.environ, **env}
    exe = str(Path(sys.executable).parent / "amili-import")

    def night(name: str, amount: str) -> list[str]:
        path = write_csv(tmp_path / f"payments-{name}.csv",
                         [[CREDITOR, OPEN_CASE.id, "", "SEK", amount, BANK_DATE, name]])
        return [exe, "run", str(path), "--report-dir", str(tmp_path / name)]

    assert subprocess.run(night("a", "10"), env=env, capture_output=True).returncode == 0
    server.state.variant.fail_gets = 0
    server.records[0]["status"] = "error"
    server.state.variant.lose = ["slow"]
    server.state.variant.slow_seconds = 30
    killed = subprocess.Popen(night("b", "20"), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while server.state.posts < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    killed.kill()
    killed.wait()
    server.state.variant.lose = []
    third = subprocess.run(night("c", "30"), env=env, capture_output=True, text=True)
    assert third.returncode == ExitCode.ROWS_IN_ERROR, third.stderr
    report = json.loads((tmp_path / "c" / "report.json").read_text(encoding="utf-8"))
    assert [(r["file"], r["status"], r["reason"]) for r in report["earlier_rows"]
            if r["file"] == "payments-a.csv"] == [("payments-a.csv", "error", "api_error")]
    assert len(server.records) == 3


def test_an_earlier_error_is_told_when_another_done_row_is_named_instead(
        cli: Callable[..., Result], tmp_path: Path, unread_api: tuple[Any, dict[str, str]]
) -> None:
    """Run 1 stores row X (status unread); run 2 posts the same row from another file with
    --allow-duplicates; Amili then has run 1's record in error. Run 3 repeats the row: it
    names run 2's row as already posted, so run 1's error is not on any of its rows: it is
    listed under earlier_rows, and run 3 exits 1."""
    server, env = unread_api
    row = [CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "X1"]
    other = [CREDITOR, OPEN_CASE.id, "", "SEK", "11", BANK_DATE, "B2"]
    cli(["run", str(write_csv(tmp_path / "payments-a.csv", [row])),
         "--report-dir", str(tmp_path / "r1")], env=env)
    cli(["run", str(write_csv(tmp_path / "payments-b.csv", [row, other])),
         "--allow-duplicates", "--report-dir", str(tmp_path / "r2")], env=env)
    server.state.variant.fail_gets = 0
    server.records[0]["status"] = "error"
    server.records[0]["status_reason_locale"] = "Case closed"
    new = [CREDITOR, OPEN_CASE.id, "", "SEK", "30", BANK_DATE, "Y1"]
    cli(["run", str(write_csv(tmp_path / "payments-c.csv", [row, new])),
         "--report-dir", str(tmp_path / "r3")], expect=ExitCode.ROWS_IN_ERROR, env=env)
    report = json.loads((tmp_path / "r3" / "report.json").read_text(encoding="utf-8"))
    in_error = [r for r in report["earlier_rows"] if r["reason"] == "api_error"]
    assert [(r["file"], r["row"]) for r in in_error] == [("payments-a.csv", 2)]
    assert "Case closed" in in_error[0]["message"]
    # (the repeated row is a warning: it was never sent from payments-c.csv)
    assert [r["status"] for r in report["rows"]] == ["warning", "completed"]
    assert len(server.records) == 4


def test_a_row_kept_skipped_under_allow_duplicates_shows_the_status_read_now(
        cli: Callable[..., Result], tmp_path: Path, unread_api: tuple[Any, dict[str, str]]
) -> None:
    """helper-48: payments-b.csv's row was skipped for payments-a.csv's row, whose status was
    unread; Amili then has that record in error. Run again with --allow-duplicates, b's row
    stays skipped and names a's row: its status is read before the posting, so the row says
    `error` with Amili's reason (it said the stale `warning`), and the run exits 1."""
    server, env = unread_api
    row = [CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "X1"]
    cli(["run", str(write_csv(tmp_path / "payments-a.csv", [row])),
         "--report-dir", str(tmp_path / "r1")], env=env)
    b = write_csv(tmp_path / "payments-b.csv", [row])
    cli(["run", str(b), "--report-dir", str(tmp_path / "r2")], env=env)
    server.state.variant.fail_gets = 0
    server.records[0]["status"] = "error"
    server.records[0]["status_reason_locale"] = "Case closed"
    cli(["run", str(b), "--allow-duplicates", "--report-dir", str(tmp_path / "r3")],
        expect=ExitCode.ROWS_IN_ERROR, env=env)
    report = json.loads((tmp_path / "r3" / "report.json").read_text(encoding="utf-8"))
    [only] = report["rows"]
    assert (only["status"], only["reason"]) == ("error", "already_posted")
    assert "Case closed" in only["message"]
    assert len(server.records) == 1


def test_a_dry_run_reports_a_row_amili_holds_in_error_as_the_run_would(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox) -> None:
    """A payment to a closed case is stored by Amili in error. Running the file again reports
    it error/already_posted with exit 1; its dry run says the same, not `valid` with exit 0.
    A row posted completed before stays `valid` in the dry run, with its reason."""
    source = write_csv(tmp_path / "payments.csv", [
        [CREDITOR, CLOSED_CASE.id, "", "SEK", "50", BANK_DATE, "P-4"],
        [CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "P-5"]])
    env = env_for(sandbox, tmp_path / "state")
    cli(["run", str(source), "--report-dir", str(tmp_path / "r1")],
        expect=ExitCode.ROWS_IN_ERROR, env=env)
    cli(["run", "--dry-run", str(source), "--report-dir", str(tmp_path / "d")],
        expect=ExitCode.ROWS_IN_ERROR, env=env)
    rows = report(tmp_path / "d")["rows"]
    assert [(r["status"], r["reason"]) for r in rows] == [("error", "already_posted"),
                                                          ("valid", "already_posted")]


def test_posted_counts_only_rows_that_reached_amili(cli: Callable[..., Result],
                                                    tmp_path: Path) -> None:
    """With the API refusing connections nothing reached Amili: `posted` is 0, not the rows
    the run tried."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = write_csv(tmp_path / "payments.csv", [
        [CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "P-1"],
        [CREDITOR, "", "INV-OTHER", "SEK", "20", BANK_DATE, "P-2"]])
    quick = tmp_path / "quick.toml"
    quick.write_text("backoff_base = 0.01\nbackoff_max = 0.02\n", encoding="utf-8")
    env = {"AMILI_API_URL": f"http://127.0.0.1:{port}", "AMILI_ACCESS_TOKEN": TOKEN,
           "AMILI_STATE_DIR": str(tmp_path / "state"), "AMILI_CONFIG": str(quick)}
    cli(["run", str(source), "--report-dir", str(tmp_path / "r")], expect=ExitCode.CANNOT_RUN,
        env=env)
    data = report(tmp_path / "r")
    assert data["could_not_run"] and data["posted"] == 0


def test_a_column_of_ones_own_named_source_row_is_not_taken_for_the_first_files_row(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox) -> None:
    """A first file with its own 'Source row' column (an ERP line number): the failed-rows
    file's source_row is still the row in this file; only a failed-rows file's own
    source_row (beside error_reason and error_message) is carried on. (helper-45)"""
    source = write_csv(tmp_path / "payments.csv", [
        [CREDITOR, OPEN_CASE.id, "", "XXX", "10", BANK_DATE, "A", "ERP-9001"]],
        header=[*HEADER, "Source row"])
    env = env_for(sandbox, tmp_path / "state")
    cli(["run", "--dry-run", str(source), "--report-dir", str(tmp_path / "first")],
        expect=ExitCode.ROWS_IN_ERROR, env=env)
    with (tmp_path / "first" / "failed-payments.csv").open(encoding="utf-8-sig") as handle:
        [row] = list(csv.DictReader(handle))
    assert (row["source_row"], row["Source row"]) == ("2", "ERP-9001")
