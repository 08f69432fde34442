"""The command-line contract: help for every command, usage errors, exit codes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from click.testing import Result

from importer.cli import main
from importer.errors import ExitCode


def all_commands() -> list[str]:
    return sorted(main.commands)


def test_every_command_has_help_text(cli: Callable[..., Result]) -> None:
    """Each command documents itself in --help with a one-line summary."""
    assert {"validate", "run", "template"} <= set(all_commands())
    for name in all_commands():
        command = main.commands[name]
        assert command.help and len(command.help.strip()) > 20, name
        result = cli([name, "--help"])
        assert "Usage:" in result.output


def test_unknown_option_is_usage_error(cli: Callable[..., Result]) -> None:
    """A wrong option exits with 2 (usage), not with a traceback."""
    result = cli(["validate", "--no-such-option", "x.csv"], expect=ExitCode.USAGE)
    assert "No such option" in result.output


def test_unknown_kind_is_usage_error(cli: Callable[..., Result]) -> None:
    """--kind outside the three kinds (and the `credits` alias) is a usage error."""
    cli(["validate", "--kind", "invoices", "x.csv"], expect=ExitCode.USAGE)


def test_exit_codes_are_the_documented_numbers() -> None:
    """Exit codes are a stable IntEnum: 0 ok, 1 rows in error, 2 usage, 3 cannot run."""
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3]


def test_help_does_not_import_pandas() -> None:
    """`amili-import --help` stays instant: pandas, pandera and requests are not imported."""
    code = ("import sys; from importer.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('pandas', 'pandera', 'requests') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_python_dash_m_runs_the_same_cli() -> None:
    """`python -m importer --help` is the same program as `amili-import`."""
    out = subprocess.run([sys.executable, "-m", "importer", "--help"], capture_output=True,
                         text=True, check=True)
    assert "validate" in out.stdout and isinstance(main, click.Group)


def test_duplicates_across_sheets_of_one_workbook(cli: Callable[..., Result],
                                                  tmp_path: Path) -> None:
    """The same payment on two sheets of one workbook: the later one is a duplicate naming
    the sheet and row of the first; the same row in another file is not (the journal decides)."""
    import json

    from openpyxl import Workbook

    header = ["creditor", "invoice_number", "currency", "amount", "bank_transaction_date"]
    row = ["674dbeb208847b9501cc9138", "INV-1", "SEK", 10, datetime(2025, 11, 3)]
    book = Workbook()
    first = book.active
    assert first is not None
    first.title = "Payments"
    second = book.create_sheet("Payments 2")
    for sheet in (first, second):
        sheet.append(header)
        sheet.append(row)
    book.save(tmp_path / "month.xlsx")
    book.save(tmp_path / "month-copy.xlsx")
    cli(["validate", str(tmp_path / "month.xlsx"), str(tmp_path / "month-copy.xlsx"),
         "--report-dir", str(tmp_path / "r")], expect=ExitCode.ROWS_IN_ERROR,
        env={"AMILI_STATE_DIR": str(tmp_path / "state")})
    rows = json.loads((tmp_path / "r" / "report.json").read_text(encoding="utf-8"))["rows"]
    got = [(r["file"], r["sheet"], r["status"], r["reason"]) for r in rows]
    assert got == [("month.xlsx", "Payments", "warning", "old_date"),
                   ("month.xlsx", "Payments 2", "error", "duplicate_row,old_date"),
                   ("month-copy.xlsx", "Payments", "warning", "old_date"),
                   ("month-copy.xlsx", "Payments 2", "error", "duplicate_row,old_date")]
    assert "same as row 2 of sheet Payments " in rows[1]["message"]


def test_a_date_out_of_the_calendar_is_a_row_error_not_the_end_of_the_run(
        cli: Callable[..., Result], tmp_path: Path) -> None:
    """helper-47: one cell with .NET's empty date in local time ended the whole command (exit
    3, no report for any file); it is an error on its row, the run goes on."""
    import json

    path = tmp_path / "payments.csv"
    cred = "674dbeb208847b9501cc9138"
    path.write_text("creditor;invoice_number;currency;amount;bank_transaction_date;"
                    "client_registration_date\n"
                    f"{cred};A1;SEK;100;2026-11-02;\n"
                    f"{cred};A2;SEK;100;2026-11-02;0001-01-01T00:00:00+01:00\n", encoding="utf-8")
    cli(["validate", str(path), "--report-dir", str(tmp_path / "r")],
        expect=ExitCode.ROWS_IN_ERROR, env={"AMILI_STATE_DIR": str(tmp_path / "state")})
    rows = json.loads((tmp_path / "r" / "report.json").read_text(encoding="utf-8"))["rows"]
    assert [(r["row"], r["status"], r["reason"]) for r in rows] == [
        (2, "valid", None), (3, "error", "invalid_date")]
    assert rows[1]["message"].startswith("client_registration_date: '0001-01-01T00:00:00+01:00'")


def test_a_stop_turned_into_another_error_is_still_an_interrupt(
        cli: Callable[..., Result], monkeypatch: Any, tmp_path: Path) -> None:
    """The fresh-clone suite saw SIGTERM end a run with "unexpected error (RuntimeError: Error
    calling __set_name__ on 'Field' instance 'type' in 'ArrowTime32')": Python wraps a
    KeyboardInterrupt raised while a class is made (pandera's, during its import). After a
    stop, any error is reported as the interrupt it is (exit 3, "interrupted")."""
    from importer import errors, pipeline

    def stopped(*args: Any, **kwargs: Any) -> None:
        errors.note_interrupt()  # as the signal handler does
        raise RuntimeError("Error calling __set_name__ on 'Field' instance 'type' in "
                           "'ArrowTime32'")

    monkeypatch.setattr(pipeline, "run_files", stopped)
    monkeypatch.setattr(errors, "_interrupt_seen", False)  # put back after the test
    result = cli(["validate", str(tmp_path / "payments.csv")], expect=ExitCode.CANNOT_RUN,
                 env={"AMILI_STATE_DIR": str(tmp_path / "state")})
    assert "interrupted; rows in flight are reconciled" in result.output
    assert "unexpected error" not in result.output


def test_journal_and_system_errors_are_one_clear_line(cli: Callable[..., Result],
                                                      monkeypatch: Any, tmp_path: Path) -> None:
    """Disk full in the journal, or an OS error, ends with exit 3 and one line that says what
    happened (no "unexpected error", no traceback)."""
    import sqlite3

    from importer import pipeline

    source = tmp_path / "payments.csv"
    source.write_text("creditor,case,currency,amount,bank_transaction_date\n", encoding="utf-8")
    for error, expected in ((sqlite3.OperationalError("database or disk is full"),
                             "the journal in the state directory cannot be used (database or "
                             "disk is full)"),
                            (OSError(28, "No space left on device", str(tmp_path / "r")),
                             f"No space left on device ({tmp_path / 'r'})")):
        def fail(*args: Any, error: Exception = error, **kwargs: Any) -> Any:
            raise error

        monkeypatch.setattr(pipeline, "execute", fail)
        result = cli(["validate", str(source)], expect=ExitCode.CANNOT_RUN,
                     env={"AMILI_STATE_DIR": str(tmp_path / "state")})
        assert expected in result.output and "unexpected" not in result.output
        assert "Traceback" not in result.output


def test_show_without_a_journal_is_a_usage_error(cli: Callable[..., Result],
                                                  tmp_path: Path) -> None:
    """`show RUN` before any run: exit 2 naming the run, not a journal error."""
    result = cli(["show", "20261122T010203Z-abcdef"], expect=ExitCode.USAGE,
                 env={"AMILI_STATE_DIR": str(tmp_path / "state")})
    assert "no run '20261122T010203Z-abcdef'" in result.output


def test_a_command_refused_leaves_a_json_line_too(cli: Callable[..., Result],
                                                  tmp_path: Path) -> None:
    """With JSON logs, a command that ends before any run (here: no such drop folder) says
    why in a JSON line as well as in the plain line."""
    import json

    result = cli(["--log-format", "json", "inbox", str(tmp_path / "missing")],
                 expect=ExitCode.CANNOT_RUN, env={"AMILI_STATE_DIR": str(tmp_path / "state")})
    lines = [json.loads(x) for x in result.stderr.splitlines() if x.startswith("{")]
    [event] = [e for e in lines if e["event"] == "command.failed"]
    assert event["exit_code"] == 3 and event["command"] == "inbox"
    assert "does not exist" in event["error"] and event["level"] == "error"
    assert any(x.startswith("amili-import: ") for x in result.stderr.splitlines())


def test_inbox_refuses_report_dir(cli: Callable[..., Result], tmp_path: Path) -> None:
    """--report-dir cannot apply to a drain of many files: a usage error, not ignored."""
    result = cli(["inbox", str(tmp_path), "--report-dir", str(tmp_path / "r")],
                 expect=ExitCode.USAGE, env={"AMILI_STATE_DIR": str(tmp_path / "state")})
    assert "--report-dir does not apply to inbox" in result.output
    assert not (tmp_path / "r").exists()
