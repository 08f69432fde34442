"""`amili-import inbox DIR` through the real pipeline, the sandbox and the journal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import Result
from fixtures_sandbox import CREDITOR, OPEN_CASE, TOKEN
from test_run import BANK_DATE, write_csv

from importer.errors import ExitCode
from importer.lock import RunLock
from importer.sandbox.server import RunningSandbox

OLD = time.time() - 3600


def aged(path: Path) -> Path:
    os.utime(path, (OLD, OLD))
    return path


def env_for(box: RunningSandbox, state: Path) -> dict[str, str]:
    return {"AMILI_API_URL": box.url, "AMILI_ACCESS_TOKEN": TOKEN, "AMILI_STATE_DIR": str(state),
            "AMILI_CONFIG": ""}


def reports(folder: Path) -> dict[str, dict[str, object]]:
    """report.json of every run under DIR/reports, keyed by the input file name."""
    found = {}
    for path in sorted((folder / "reports").glob("*/report.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        found[data["files"][0]["name"]] = data
    return found


def test_inbox_posts_archives_and_reports_each_file(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox) -> None:
    """Each ready file is run, reported under reports/<run-id>/, moved to done/ or failed/."""
    inbox = tmp_path / "drop"
    inbox.mkdir()
    aged(write_csv(inbox / "payments-good.csv", [
        [CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "G1"]]))
    aged(write_csv(inbox / "payments-bad.csv", [
        [CREDITOR, OPEN_CASE.id, "", "EUR", "10", BANK_DATE, "B1"]]))
    write_csv(inbox / "payments-late.csv.part", [])
    result = cli(["inbox", str(inbox), "--min-age", "1"], expect=ExitCode.ROWS_IN_ERROR,
                 env=env_for(sandbox, tmp_path / "state"))
    done = [p.name for p in (inbox / "done").iterdir()]
    failed = [p.name for p in (inbox / "failed").iterdir()]
    assert len(done) == 1 and done[0].endswith("--payments-good.csv")
    assert len(failed) == 1 and failed[0].endswith("--payments-bad.csv")
    assert (inbox / "payments-late.csv.part").exists(), "partial uploads are never taken"
    by_file = reports(inbox)
    assert by_file["payments-good.csv"]["totals"] == {"completed": 1}
    assert by_file["payments-bad.csv"]["totals"] == {"error": 1}
    for data in by_file.values():
        assert str(inbox / "reports" / str(data["run_id"])) in result.stdout
    # The summary names each file's run, and says how to go on from rows in error.
    bad_run = by_file["payments-bad.csv"]["run_id"]
    assert "payments-bad.csv: error 1 -> failed/" in result.stderr
    assert f"[run {bad_run}]" in result.stderr
    assert "rows in error: `amili-import show RUN_ID` (the run in brackets)" in result.stderr
    assert sandbox.state.count("creditor--payments") == 1


def test_an_overlapping_export_says_what_reached_amili_and_what_was_posted_before(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox) -> None:
    """helper-50: the second night's export repeats a row of the first; its summary line says
    how many rows reached Amili that night and how many were posted before ("completed 2"
    alone read as two payments sent), and the repeated row is a warning, not "completed"."""
    inbox = tmp_path / "drop"
    inbox.mkdir()
    env = env_for(sandbox, tmp_path / "state")
    old = [CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "N1"]
    aged(write_csv(inbox / "payments-night1.csv", [old]))
    cli(["inbox", str(inbox), "--min-age", "1"], env=env)
    new = [CREDITOR, OPEN_CASE.id, "", "SEK", "11", BANK_DATE, "N2"]
    aged(write_csv(inbox / "payments-night2.csv", [old, new]))
    result = cli(["inbox", str(inbox), "--min-age", "1"], env=env)
    assert ("payments-night2.csv: completed 1, warning 1 (1 reached Amili now, 1 already posted "
            "before) -> done/") in result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    [event] = [e for e in events if e["event"] == "inbox.file"]
    assert (event["posted"], event["already_posted"]) == (1, 1)
    assert sandbox.state.count("creditor--payments") == 2


def test_inbox_log_names_each_files_content(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox) -> None:
    """The JSON log's inbox.file event carries the sha256 of a local file, as the report
    does, so the morning-after reader can tie a log line to a file's content."""
    import hashlib

    inbox = tmp_path / "drop"
    inbox.mkdir()
    source = aged(write_csv(inbox / "payments-one.csv", [
        [CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "S1"]]))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    result = cli(["--log-format", "json", "inbox", str(inbox), "--min-age", "1"],
                 env=env_for(sandbox, tmp_path / "state"))
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    [event] = [e for e in events if e.get("event") == "inbox.file"]
    assert event["sha256"] == digest and event["file"] == "payments-one.csv"


def test_redropped_identical_file_is_not_posted_again(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox) -> None:
    """A file whose content was already processed goes to done/ with a report saying so."""
    inbox = tmp_path / "drop"
    inbox.mkdir()
    source = write_csv(tmp_path / "payments.csv", [
        [CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "ONCE"]])
    env = env_for(sandbox, tmp_path / "state")
    aged(Path(shutil.copy(source, inbox / "payments.csv")))
    cli(["inbox", str(inbox), "--min-age", "1"], env=env)
    aged(Path(shutil.copy(source, inbox / "payments-resent.csv")))
    cli(["inbox", str(inbox), "--min-age", "1"], env=env)
    assert sandbox.state.count("creditor--payments") == 1
    assert len(list((inbox / "done").iterdir())) == 2
    resent = reports(inbox)["payments-resent.csv"]
    notes = resent["files"][0]["notes"]  # type: ignore[index]
    assert "already processed" in " ".join(notes) and resent["duplicate_of"]


def test_second_inbox_on_same_folder_exits_3_naming_the_holder(
        tmp_path: Path, sandbox: RunningSandbox) -> None:
    """While another process holds the folder's lock, a second run exits 3 at once."""
    inbox = tmp_path / "drop"
    inbox.mkdir()
    env = {**os.environ, **env_for(sandbox, tmp_path / "state")}
    with RunLock(inbox / ".amili-import.lock"):
        out = subprocess.run([sys.executable, "-m", "importer", "inbox", str(inbox)], env=env,
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == ExitCode.CANNOT_RUN
    assert f"pid {os.getpid()}" in out.stderr


def test_sftp_inbox_posts_and_archives_on_the_server(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox) -> None:
    """`inbox sftp://...` downloads ready files from a real SFTP server, posts them, moves them
    on the server to done/ or failed/ and uploads each report to the pickup folder."""
    from sftp_server import sftp_server

    with sftp_server(tmp_path / "server") as server:
        incoming = server.root / "inbox"
        incoming.mkdir()
        (server.root / "pickup").mkdir()
        aged(write_csv(incoming / "payments-sftp.csv", [
            [CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "S1"]]))
        aged(write_csv(incoming / "payments-broken.csv", [[CREDITOR, "SEK"]],
                       header=["creditor", "currency"]))
        cli(["inbox", server.url(), "--identity", str(server.identity), "--known-hosts",
             str(server.known_hosts), "--pickup", "/pickup", "--min-age", "1"],
            expect=ExitCode.CANNOT_RUN, env=env_for(sandbox, tmp_path / "state"))
        done = [p.name for p in (incoming / "done").iterdir()]
        failed = [p.name for p in (incoming / "failed").iterdir()]
        picked = sorted(p.name for p in (server.root / "pickup").glob("*/report.json"))
    assert len(done) == 1 and done[0].endswith("--payments-sftp.csv")
    assert len(failed) == 1 and failed[0].endswith("--payments-broken.csv")
    assert len(picked) == 2
    assert [r.get("creditor_payment_reference") for r in
            sandbox.state.records("creditor--payments")] == ["S1"]


def test_refused_login_leaves_files_in_place_for_the_next_night(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox) -> None:
    """When the API refuses us, the drain stops (exit 3) and files stay; next run posts them."""
    inbox = tmp_path / "drop"
    inbox.mkdir()
    aged(write_csv(inbox / "payments.csv", [
        [CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "N1"]]))
    env = env_for(sandbox, tmp_path / "state")
    cli(["inbox", str(inbox), "--min-age", "1"], expect=ExitCode.CANNOT_RUN,
        env=env | {"AMILI_ACCESS_TOKEN": "expired"})
    assert (inbox / "payments.csv").exists()
    cli(["inbox", str(inbox), "--min-age", "1"], env=env)
    assert not (inbox / "payments.csv").exists()
    assert [p.name.split("--")[1] for p in (inbox / "done").iterdir()] == ["payments.csv"]
    assert sandbox.state.count("creditor--payments") == 1


def test_redropped_file_with_errors_runs_again(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox) -> None:
    """Content whose earlier run had rows in error is processed again (done rows skipped)."""
    inbox = tmp_path / "drop"
    inbox.mkdir()
    source = write_csv(tmp_path / "payments.csv", [
        [CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "OK1"],
        [CREDITOR, "", "INV-NOT-YET", "SEK", "10", BANK_DATE, "LATER"]])
    env = env_for(sandbox, tmp_path / "state")
    aged(Path(shutil.copy(source, inbox / "payments.csv")))
    cli(["inbox", str(inbox), "--min-age", "1"], expect=ExitCode.ROWS_IN_ERROR, env=env)
    aged(Path(shutil.copy(source, inbox / "payments-again.csv")))
    cli(["inbox", str(inbox), "--min-age", "1"], expect=ExitCode.ROWS_IN_ERROR, env=env)
    again = reports(inbox)["payments-again.csv"]
    assert "duplicate_of" not in again
    assert [r["reason"] for r in again["rows"]][0] == "already_posted"  # type: ignore[index]
    assert sandbox.state.count("creditor--payments") == 1


def test_inbox_takes_sidecar_rule_from_config(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox) -> None:
    """inbox_require_sidecar in the config file leaves files without a .done beside them."""
    inbox = tmp_path / "drop"
    inbox.mkdir()
    aged(write_csv(inbox / "payments.csv", [
        [CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "C1"]]))
    (tmp_path / "c.toml").write_text("inbox_require_sidecar = true\ninbox_min_age = 1\n",
                                     encoding="utf-8")
    env = env_for(sandbox, tmp_path / "state") | {"AMILI_CONFIG": str(tmp_path / "c.toml")}
    cli(["inbox", str(inbox)], env=env)
    assert (inbox / "payments.csv").exists() and sandbox.state.count("creditor--payments") == 0
    aged(inbox / "payments.csv")
    (inbox / "payments.csv.done").write_text("", encoding="utf-8")
    aged(inbox / "payments.csv.done")
    cli(["inbox", str(inbox)], env=env)
    assert sandbox.state.count("creditor--payments") == 1


def test_unreachable_api_leaves_files_in_place(cli: Callable[..., Result], tmp_path: Path,
                                               sandbox: RunningSandbox) -> None:
    """Nothing listens at the API URL: the first row's retries run out, the run stops (exit 3)
    and both files stay for the next night, which posts them. --min-age 0 is taken as given."""
    import socket

    inbox = tmp_path / "drop"
    inbox.mkdir()
    for name, ref in (("payments-a.csv", "U1"), ("payments-b.csv", "U2")):
        write_csv(inbox / name, [[CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, ref]])
    (tmp_path / "c.toml").write_text("max_attempts = 2\nbackoff_base = 0.01\n", encoding="utf-8")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    env = env_for(sandbox, tmp_path / "state") | {"AMILI_CONFIG": str(tmp_path / "c.toml")}
    result = cli(["inbox", str(inbox), "--min-age", "0"], expect=ExitCode.CANNOT_RUN,
                 env=env | {"AMILI_API_URL": dead})
    assert "cannot reach the API" in result.stderr
    assert sorted(p.name for p in inbox.glob("*.csv")) == ["payments-a.csv", "payments-b.csv"]
    cli(["inbox", str(inbox), "--min-age", "0"], env=env)
    assert sorted(p.name for p in inbox.glob("*.csv")) == []
    assert sandbox.state.count("creditor--payments") == 2


def test_a_signal_stops_the_drain_and_leaves_the_files(
        tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]) -> None:
    """SIGTERM (systemctl stop) while the first file posts: the requests in flight finish, the
    drain stops (exit 3) and both files stay in the folder; the next run posts the rest, each
    row once."""
    import signal
    from collections import Counter

    from test_run import many_cases, payment_rows, stored_references

    cases = many_cases(4)
    box = make_sandbox(cases=cases, latency_ms=60)
    inbox = tmp_path / "drop"
    inbox.mkdir()
    first = [r for r in payment_rows(cases, 6) if r[-1].startswith("REF-")]
    aged(write_csv(inbox / "payments-1.csv", first))
    second = [[*r[:-1], r[-1].replace("REF-", "TWO-")] for r in first]
    aged(write_csv(inbox / "payments-2.csv", second))
    env = {**os.environ, **env_for(box, tmp_path / "state")}
    command = [sys.executable, "-m", "importer", "--log-format", "json", "inbox", str(inbox),
               "--min-age", "1", "--concurrency", "1"]
    log = tmp_path / "inbox.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 30
    while box.state.count("creditor--payments") < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == ExitCode.CANNOT_RUN
    assert sorted(p.name for p in inbox.glob("*.csv")) == ["payments-1.csv", "payments-2.csv"]
    assert 0 < box.state.count("creditor--payments") < len(first)
    [report] = (inbox / "reports").glob("*/report.json")
    assert json.loads(report.read_text())["stopped"] is True
    # The monitoring line counts the rows the stopped file posted (the file is left in place).
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    [summary] = [e for e in events if e["event"] == "inbox.summary"]
    assert summary["files"] == 1 and summary["waiting"] == 1 and summary["exit_code"] == 3
    assert summary["rows"]["completed"] == box.state.count("creditor--payments")
    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr[-2000:]
    assert sorted(p.name for p in inbox.glob("*.csv")) == []
    assert stored_references(box) == Counter({r[-1]: 1 for r in first + second})


def test_a_status_left_unread_one_night_is_settled_by_the_next(
        cli: Callable[..., Result], tmp_path: Path, unread_api: tuple[Any, dict[str, str]]
) -> None:
    """Night one: the payment is stored, but Amili stops answering reads before its status
    is read: warning/status_unknown, exit 0, the file goes to done/ and is never run again.
    Night two brings another file: its run reads that status too; Amili says error, so the
    drain exits 1 (the new file itself still goes to done/), its report.json lists the row
    under earlier_rows, the summary says where, and `show` of night one has it in error."""
    inbox = tmp_path / "drop"
    inbox.mkdir()
    server, env = unread_api
    aged(write_csv(inbox / "payments-night1.csv", [
        [CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "N1"]]))
    cli(["inbox", str(inbox), "--min-age", "1"], expect=ExitCode.OK, env=env)
    night1 = reports(inbox)["payments-night1.csv"]
    assert night1["totals"] == {"warning": 1}
    assert night1["rows"][0]["reason"] == "status_unknown"

    server.state.variant.fail_gets = 0
    server.records[0]["status"] = "error"
    server.records[0]["status_reason_locale"] = "Case closed"
    aged(write_csv(inbox / "payments-night2.csv", [
        [CREDITOR, OPEN_CASE.id, "", "SEK", "20", BANK_DATE, "N2"]]))
    result = cli(["inbox", str(inbox), "--min-age", "1"], expect=ExitCode.ROWS_IN_ERROR,
                 env=env)
    assert sorted(p.name.split("--")[-1] for p in (inbox / "done").iterdir()) == [
        "payments-night1.csv", "payments-night2.csv"]
    night2 = reports(inbox)["payments-night2.csv"]
    assert night2["totals"] == {"completed": 1}
    [earlier] = night2["earlier_rows"]
    assert {k: earlier[k] for k in ("run_id", "file", "row", "status", "reason")} == {
        "run_id": night1["run_id"], "file": "payments-night1.csv", "row": 2,
        "status": "error", "reason": "api_error"}
    assert "Case closed" in earlier["message"]
    assert f"run {night2['run_id']} found rows of earlier runs stored in error" in result.stderr
    shown = cli(["show", str(night1["run_id"])], env=env).output
    assert "posting  1 error " in shown, shown  # the journal's state of its row now
    assert server.posts == 2


def test_a_file_rewritten_in_place_after_the_listing_is_never_read_half_written(
        cli: Callable[..., Result], tmp_path: Path, sandbox: RunningSandbox,
        monkeypatch: Any) -> None:
    """The exporter rewrites a listed file in place (its next export, same name) while the
    drain works on an earlier file, and is 4 bytes short when the drain reaches it. The drain
    copies a file before reading it and takes the copy only when it is still the file listed:
    nothing of the half-written file is posted (its cut last row would be, then the whole row
    the next night: one payment twice). The next night posts the finished export once.
    (helper-42)"""
    from importer.inbox import LocalFolder, local_work_dir

    inbox = tmp_path / "drop"
    inbox.mkdir()
    env = env_for(sandbox, tmp_path / "state")
    target = aged(write_csv(inbox / "payments-2.csv", [
        [CREDITOR, OPEN_CASE.id, "", "SEK", "5", BANK_DATE, "OLD-1"]]))
    export = write_csv(tmp_path / "export.csv", [
        [CREDITOR, OPEN_CASE.id, "", "SEK", "7", BANK_DATE, f"NEWREF-{i:03d}"] for i in range(3)])
    text = export.read_text(encoding="utf-8")
    real_fetch = LocalFolder.fetch

    def exporter_mid_write(self: LocalFolder, entry: Any) -> Any:
        target.write_text(text[:-4], encoding="utf-8")
        return real_fetch(self, entry)

    staging = local_work_dir(inbox, tmp_path / "state") / "staging"  # this host's own
    staging.mkdir(parents=True)
    (staging / "payments-1.csv").write_text("a copy a killed drain left", encoding="utf-8")
    monkeypatch.setattr(LocalFolder, "fetch", exporter_mid_write)
    cli(["inbox", str(inbox), "--min-age", "1"], env=env)
    assert sandbox.state.records("creditor--payments") == []
    assert target.exists() and not staging.exists()
    assert sorted(p.name for p in inbox.iterdir()) == [".amili-import.lock", "done", "failed",
                                                        "payments-2.csv", "reports"]
    monkeypatch.setattr(LocalFolder, "fetch", real_fetch)
    target.write_text(text, encoding="utf-8")
    aged(target)
    cli(["inbox", str(inbox), "--min-age", "1"], env=env)
    refs = sorted(r["creditor_payment_reference"]
                  for r in sandbox.state.records("creditor--payments"))
    assert refs == ["NEWREF-000", "NEWREF-001", "NEWREF-002"]
    assert [p.name for p in (inbox / "done").iterdir()][0].endswith("--payments-2.csv")
    assert not staging.exists()  # the copies are removed


def test_a_held_state_dir_leaves_the_file_and_no_empty_report_folder(
        tmp_path: Path, sandbox: RunningSandbox) -> None:
    """A manual run holds the state directory's lock when the nightly drain starts: the
    drain exits 3 naming the holder, the file stays for the next night, and no report folder
    with nothing in it is left in DIR/reports for the morning reader. (helper-42)"""
    inbox = tmp_path / "drop"
    inbox.mkdir()
    aged(write_csv(inbox / "payments.csv", [
        [CREDITOR, OPEN_CASE.id, "", "SEK", "10", BANK_DATE, "L1"]]))
    state = tmp_path / "state"
    state.mkdir()
    env = {**os.environ, **env_for(sandbox, state)}
    with RunLock(state / "run.lock"):
        out = subprocess.run([sys.executable, "-m", "importer", "inbox", str(inbox)], env=env,
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == ExitCode.CANNOT_RUN, out.stderr[-1000:]
    assert f"pid {os.getpid()}" in out.stderr
    assert (inbox / "payments.csv").exists()
    assert list((inbox / "reports").iterdir()) == []
