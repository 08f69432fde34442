"""The posting engine against the sandbox over HTTP, with the real client and a real journal."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import structlog
from fixtures_sandbox import (
    CLOSED_CASE,
    CREDITOR,
    OPEN_CASE,
    SEED_CASES,
    TOKEN,
    SeedCase,
    payment_body,
)

from importer.client import ApiClient, PostResult
from importer.config import Config
from importer.errors import ApiError
from importer.journal import COMPLETED, FAILED, IN_FLIGHT, SKIPPED, WARNING, Journal
from importer.kinds import PAYMENTS, Kind
from importer.post import (
    Outcome,
    PlannedRow,
    Tuning,
    case_key,
    matches,
    post_rows,
    preview,
    readback_filters,
)
from importer.sandbox.server import RunningSandbox

PAYMENTS_RESOURCE = "creditor--payments"
FAST = Tuning(readback_delays=(0.0, 0.05), extra_posts=2)

# Sixteen open cases with room for many payments.
MANY_CASES = [SeedCase(f"68b7f49c7b02934cadda{n:04x}", CREDITOR, f"INV-9{n:03d}", f"5{n:04d}",
                       100000.0, 0.0, 0.0, "debt_collection") for n in range(16)]


def fingerprint(kind: Kind, body: dict[str, Any]) -> str:
    """A stand-in for validate.fingerprint: the kind and every field of the body."""
    text = json.dumps({"kind": kind.name, **body}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def planned(body: dict[str, Any], row: int, sha: str = "a" * 64, name: str = "payments.csv",
            index: int | None = None) -> PlannedRow:
    return PlannedRow(index=row if index is None else index, file_name=name, file_sha256=sha,
                      sheet=None, row=row, kind=PAYMENTS, payload=body,
                      fingerprint=fingerprint(PAYMENTS, body), case_key=case_key(body))


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "state")
    try:
        yield j
    finally:
        j.close()


def config_for(sandbox: RunningSandbox, tmp_path: Path, **extra: Any) -> Config:
    values: dict[str, Any] = {"api_url": sandbox.url, "access_token": TOKEN,
                              "state_dir": tmp_path / "state", "backoff_base": 0.01,
                              "backoff_max": 0.05, "read_timeout": 10.0,
                              "settle_seconds": 0.0}  # the settle wait has tests of its own
    values.update(extra)
    return Config(**values)


class CountingClient(ApiClient):
    """The real client, counting how many POSTs are in flight at once."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def post(self, kind: Kind, body: dict[str, Any], on_send: Any = None) -> PostResult:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            return super().post(kind, body, on_send)
        finally:
            with self.lock:
                self.now -= 1


def run(rows: list[PlannedRow], config: Config, journal: Journal, run_id: str,
        client: ApiClient | None = None, **kwargs: Any) -> list[Outcome]:
    journal.start_run(run_id, "run")
    own = client is None
    client = client or ApiClient(config)
    try:
        return post_rows(rows, client, journal, run_id, config, structlog.get_logger(),
                         tuning=kwargs.pop("tuning", FAST), **kwargs)
    finally:
        if own:
            client.close()
        journal.finish_run(run_id, 0, {})


def stored(sandbox: RunningSandbox) -> list[dict[str, Any]]:
    return sandbox.state.records(PAYMENTS_RESOURCE)


def test_posts_and_reads_back_status(sandbox: RunningSandbox, tmp_path: Path,
                                     journal: Journal) -> None:
    """A 201 without status is read back: completed/warning come from the stored record."""
    rows = [planned(payment_body(OPEN_CASE, 100.0), 2),
            planned(payment_body(SEED_CASES[1], 9999.0), 3)]  # overpays: warning
    out = run(rows, config_for(sandbox, tmp_path), journal, "r1")
    assert [o.status for o in out] == [COMPLETED, "warning"]
    assert out[0].reason is None and out[0].posted and out[0].http_status == 201
    assert out[0].settled_amount == "100" and out[0].case_reference_number == "48640"
    assert out[1].reason == "api_warning"
    assert out[1].status_reason_locale == "creditor_payment.overpayment"
    ids = {r["_id"] for r in stored(sandbox)}
    assert {o.amili_id for o in out} == ids and len(ids) == 2
    assert {r.state for r in journal.rows("r1")} == {COMPLETED, "warning"}
    # Both ids in one where={"_id": {"$in": [...]}} query.
    assert sandbox.state.snapshot()["requests"][f"GET /{PAYMENTS_RESOURCE}"] == 1


class _NoInClient(ApiClient):
    """A client for an API that refuses "$in" filters (as a stricter Eve setup might)."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.refused = 0

    def find(self, kind: Kind, where: dict[str, Any], max_pages: int = 10
             ) -> list[dict[str, Any]]:
        if "_id" in where:
            self.refused += 1
            raise ApiError(f"GET {kind.endpoint}: HTTP 400: operator $in is not allowed")
        return super().find(kind, where, max_pages)


def test_status_read_back_falls_back_to_one_get_per_row(
        sandbox: RunningSandbox, tmp_path: Path, journal: Journal) -> None:
    """When the batched "$in" read-back is refused, each row's status comes from GET by id,
    and after one refusal no further batch is tried."""
    rows = [planned(payment_body(OPEN_CASE, 1.0, creditor_payment_reference=f"FB-{n}"), n + 2)
            for n in range(150)]
    rows.append(planned(payment_body(SEED_CASES[1], 9999.0), 200))  # overpays: warning
    config = config_for(sandbox, tmp_path, concurrency=2)
    client = _NoInClient(config)
    try:
        out = run(rows, config, journal, "r1", client=client)
    finally:
        client.close()
    assert [o.status for o in out] == [COMPLETED] * 150 + ["warning"]
    assert out[-1].status_reason_locale == "creditor_payment.overpayment"
    assert all(o.settled_amount == "1" for o in out[:150])
    requests_made = sandbox.state.snapshot()["requests"]
    assert requests_made[f"GET /{PAYMENTS_RESOURCE}"] == 151  # one GET by id per row
    assert 1 <= client.refused <= 2  # both batches may be in flight before the first refusal


def test_status_read_back_batches_100_ids(sandbox: RunningSandbox, tmp_path: Path,
                                          journal: Journal) -> None:
    """250 statuses are read with 3 queries of up to 100 ids, each row its own record."""
    rows = [planned(payment_body(OPEN_CASE, 1.0, creditor_payment_reference=f"B-{n}"), n + 2)
            for n in range(250)]
    out = run(rows, config_for(sandbox, tmp_path), journal, "r1")
    assert {o.status for o in out} == {COMPLETED}
    by_ref = {r["creditor_payment_reference"]: r["_id"] for r in stored(sandbox)}
    assert [o.amili_id for o in out] == [by_ref[f"B-{n}"] for n in range(250)]
    assert sandbox.state.snapshot()["requests"][f"GET /{PAYMENTS_RESOURCE}"] == 3
    assert {r.state for r in journal.rows("r1")} == {COMPLETED}


def test_status_from_201_needs_no_get(make_sandbox: Callable[..., RunningSandbox],
                                      tmp_path: Path, journal: Journal) -> None:
    """When the 201 carries status, no GET is made for the row."""
    sandbox = make_sandbox(return_status_fields=True)
    out = run([planned(payment_body(OPEN_CASE, 50.0), 2)], config_for(sandbox, tmp_path),
              journal, "r1")
    assert out[0].status == COMPLETED and out[0].settled_amount == "50"
    assert sandbox.state.snapshot()["requests"].get(f"GET /{PAYMENTS_RESOURCE}", 0) == 0


def test_rejected_row_is_error_not_retryable(sandbox: RunningSandbox, tmp_path: Path,
                                             journal: Journal) -> None:
    """A 422 is an error with the API's message, not retryable, and nothing is stored."""
    body = payment_body(OPEN_CASE, 10.0, case="68b7f49c7b02934caddaffff")
    out = run([planned(body, 7)], config_for(sandbox, tmp_path), journal, "r1")
    assert out[0].status == "error" and out[0].reason == "api_rejected"
    assert not out[0].retryable and out[0].http_status == 422
    assert "must exist in resource 'cases'" in out[0].message
    assert stored(sandbox) == []


def test_write_ahead_visible_while_post_in_flight(make_sandbox: Callable[..., RunningSandbox],
                                                  tmp_path: Path, journal: Journal) -> None:
    """in_flight is committed (seen from a second connection) before the API stores the row."""
    sandbox = make_sandbox(latency_ms=400)
    config = config_for(sandbox, tmp_path)
    result: list[Outcome] = []
    worker = threading.Thread(target=lambda: result.extend(
        run([planned(payment_body(OPEN_CASE, 10.0), 2)], config, journal, "r1",
            handle_signals=False)))
    worker.start()
    other = sqlite3.connect(journal.path)
    proven = False
    deadline = time.monotonic() + 10
    while not proven and time.monotonic() < deadline and worker.is_alive():
        states = [r[0] for r in other.execute("SELECT state FROM rows")]
        # The journal is read first: if the sandbox holds nothing *after* that, it held
        # nothing when the journal already said in_flight.
        proven = states == [IN_FLIGHT] and sandbox.state.count(PAYMENTS_RESOURCE) == 0
        time.sleep(0.005)
    worker.join()
    assert proven
    assert other.execute("SELECT state FROM rows").fetchall() == [(COMPLETED,)]
    other.close()
    assert result[0].status == COMPLETED


def test_rerun_posts_nothing_twice(sandbox: RunningSandbox, tmp_path: Path,
                                   journal: Journal) -> None:
    """Running the same rows again reports the earlier outcome and posts nothing."""
    config = config_for(sandbox, tmp_path)
    rows = [planned(payment_body(OPEN_CASE, 10.0 + n), n + 2) for n in range(3)]
    first = run(rows, config, journal, "r1")
    second = run(rows, config, journal, "r2")
    assert len(stored(sandbox)) == 3
    assert [o.status for o in second] == [COMPLETED] * 3
    assert [o.amili_id for o in second] == [o.amili_id for o in first]
    assert all(o.reason == "already_posted" and not o.posted for o in second)
    assert second[1].message.startswith("already posted in run r1, file payments.csv row 3")
    assert {r.state for r in journal.rows("r2")} == {SKIPPED}


def test_cross_file_duplicate_refused_unless_allowed(sandbox: RunningSandbox, tmp_path: Path,
                                                     journal: Journal) -> None:
    """A row identical to one from another file is posted only with allow_duplicates, once."""
    body = payment_body(OPEN_CASE, 25.0)
    config = config_for(sandbox, tmp_path)
    run([planned(body, 4, sha="a" * 64, name="june.csv")], config, journal, "r1")
    other = [planned(body, 9, sha="b" * 64, name="july.csv")]
    refused = run(other, config, journal, "r2")
    assert len(stored(sandbox)) == 1
    assert refused[0].reason == "already_posted" and not refused[0].posted
    assert "run r1, file june.csv row 4" in refused[0].message
    assert "give it a creditor_payment_reference that tells it apart" in refused[0].message
    assert "--allow-duplicates" not in refused[0].message  # a flag for the whole run: no hint
    assert refused[0].status == WARNING  # never sent from july.csv: not "completed"
    allowed = config_for(sandbox, tmp_path, allow_duplicates=True)
    kept = run(other, allowed, journal, "r3")  # judged already posted in r2: stays so
    assert not kept[0].posted and kept[0].status == WARNING
    assert "run r1, file june.csv row 4" in kept[0].message
    alone = [planned(body, 2, sha="c" * 64, name="july-second-payment.csv")]
    posted = run(alone, allowed, journal, "r4")
    assert posted[0].posted and posted[0].status == COMPLETED
    again = run(alone, allowed, journal, "r5")  # the same source again: not a third post
    assert not again[0].posted and again[0].status == COMPLETED
    assert "already posted in run r4, file july-second-payment.csv row 2" in again[0].message
    assert len(stored(sandbox)) == 2


def test_only_this_very_row_is_completed_others_are_warnings_that_say_nothing_to_do(
        sandbox: RunningSandbox, tmp_path: Path, journal: Journal) -> None:
    """helper-48/50: `retry` posts row 7 of payments.csv. The drop folder's archived copy of
    that file, dropped back (row 7 again), is that row: `completed`. The fixed
    failed-payments.csv, another row of a file of that name (a fixed-name export of the next
    night) and an unrelated file are identical by their values only: a warning whose message
    first says that nothing is to be done for a repeated row."""
    config = config_for(sandbox, tmp_path)
    body = payment_body(OPEN_CASE, 42.0)
    run([planned(body, 7, sha="a" * 64, name="payments.csv")], config, journal, "retry1")
    [same] = run([planned(body, 7, sha="b" * 64, name="20261122T010203Z--payments.csv")],
                 config, journal, "r1")
    assert same.status == COMPLETED and not same.posted
    assert same.message.startswith("already posted in run retry1, file payments.csv row 7")
    for n, (name, row) in enumerate((("failed-payments.csv", 2), ("payments.csv", 3),
                                     ("payments-november.csv", 7))):
        [other] = run([planned(body, row, sha=f"{n}" * 64, name=name)], config, journal,
                      f"r{n + 2}")
        assert other.status == WARNING and not other.posted, name
        assert other.message.startswith("identical to a row already posted in run retry1, "
                                        "file payments.csv row 7, not sent again (Amili id ")
        assert ". Nothing to do if this file repeats rows already sent" in other.message
    assert len(stored(sandbox)) == 1


@pytest.mark.parametrize("hours", [1, 2, -2])  # a clock kept in Swedish time, read as UTC
def test_a_clock_off_by_hours_still_finds_a_lost_answer(
        make_sandbox: Callable[..., RunningSandbox], tmp_path: Path, journal: Journal,
        monkeypatch: pytest.MonkeyPatch, hours: int) -> None:
    """helper-54: this machine's clock runs hours fast; a POST is stored and its answer lost.
    The read-back took the record for one "created before the row was sent" and posted again
    (three records with max_attempts 1 and two hours). The API's answers say its time (the
    Date header): the record is found, as with a clock in sync (and one running slow)."""
    import importer.client
    import importer.journal
    import importer.post

    real = datetime

    class Off(real):  # type: ignore[misc, valid-type]
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return real.now(tz) + timedelta(hours=hours, minutes=5 if hours > 0 else -5)

    for module in (importer.journal, importer.post, importer.client):  # this machine's clock
        monkeypatch.setattr(module, "datetime", Off)
    sandbox = make_sandbox(drop_after_store=1.0)
    body = payment_body(OPEN_CASE, 10.0, creditor_payment_reference="R1")
    config = config_for(sandbox, tmp_path, max_attempts=1)
    [out] = run([planned(body, 2)], config, journal, "r1")
    assert len(stored(sandbox)) == 1
    assert out.status == COMPLETED and "found in Amili by read-back" in out.message


def test_a_twin_in_the_same_run_follows_the_status_read_back(sandbox: RunningSandbox,
                                                             tmp_path: Path,
                                                             journal: Journal) -> None:
    """Two files of one run hold the same row; the second is not sent. The first's 201 has
    no status, and the read-back finds Amili holds it in error (a closed case): the twin is
    an error too, naming it, not a warning that it was already posted."""
    body = payment_body(CLOSED_CASE, 10.0)
    first, twin = run([planned(body, 2, sha="a" * 64, name="june.csv"),
                       planned(body, 5, sha="b" * 64, name="june-copy.csv", index=1)],
                      config_for(sandbox, tmp_path, concurrency=1), journal, "r1")
    assert (first.status, first.reason, first.posted) == ("error", "api_error", True)
    assert (twin.status, twin.reason, twin.posted) == ("error", "already_posted", False)
    assert twin.message.startswith("identical to a row already posted in run r1, file "
                                   "june.csv row 2")
    assert "then: Amili: error" in twin.message
    assert twin.amili_id == first.amili_id and len(stored(sandbox)) == 1
    assert twin.journal_id != first.journal_id


def test_a_name_written_on_a_mac_is_the_same_name(sandbox: RunningSandbox, tmp_path: Path,
                                                  journal: Journal) -> None:
    """The same file name as a Mac writes it (NFD: "a" and a combining ring) and as Windows
    does (NFC: "å"), edited between the runs: this very row, `completed`, as for any name."""
    config = config_for(sandbox, tmp_path)
    body = payment_body(OPEN_CASE, 42.0)
    run([planned(body, 7, sha="a" * 64, name="betalningar-a\u030ar.csv")], config, journal, "mac")
    [same] = run([planned(body, 7, sha="b" * 64, name="betalningar-\u00e5r.csv")], config, journal,
                 "windows")
    assert same.status == COMPLETED and not same.posted
    assert len(stored(sandbox)) == 1


def test_every_run_after_an_upgrade_names_what_is_read_differently(
        sandbox: RunningSandbox, tmp_path: Path, journal: Journal) -> None:
    """helper-48: the second run of a file after an upgrade (values read differently) is a
    warning naming the difference; so is the third (its own skipped row must not turn it
    into a plain 'completed')."""
    config = config_for(sandbox, tmp_path)
    before = payment_body(OPEN_CASE, 100.0)
    run([planned(before, 2)], config, journal, "r1")
    now = {**before, "creditor_payment_reference": "OCR 4711"}
    for run_id in ("r2", "r3", "r4"):
        [out] = run([planned(now, 2)], config, journal, run_id)
        assert out.status == WARNING and "read with other values" in out.message, run_id
    assert len(stored(sandbox)) == 1


def test_allow_duplicates_after_an_upgrade_keeps_a_row_judged_already_posted(
        sandbox: RunningSandbox, tmp_path: Path, journal: Journal) -> None:
    """helper-51: tue.csv's row was skipped for mon.csv's; after an upgrade it is read with
    other values. Run with --allow-duplicates, it stays "already posted" (it was posted a
    second time): this very row was judged so, flag or not."""
    config = config_for(sandbox, tmp_path)
    flagged = config_for(sandbox, tmp_path, allow_duplicates=True)
    body = payment_body(OPEN_CASE, 100.0)
    run([planned(body, 2, sha="1" * 64, name="mon.csv")], config, journal, "r1")
    [tue] = run([planned(body, 2, sha="2" * 64, name="tue.csv")], config, journal, "r2")
    assert tue.reason == "already_posted"
    now = {**body, "creditor_payment_reference": "OCR 1"}
    [again] = run([planned(now, 2, sha="2" * 64, name="tue.csv")], flagged, journal, "r3")
    assert again.reason == "already_posted" and not again.posted
    assert "read with other values" in again.message
    assert len(stored(sandbox)) == 1


def test_same_case_in_order_then_error(sandbox: RunningSandbox, tmp_path: Path,
                                       journal: Journal) -> None:
    """A payment that closes a case, then one more for it: completed, then error (in order)."""
    rows = [planned(payment_body(OPEN_CASE, OPEN_CASE.remaining), 2)]
    rows += [planned(payment_body(SEED_CASES[1], 1.0 + n), 3 + n) for n in range(6)]
    rows += [planned(payment_body(OPEN_CASE, 5.0), 20)]
    out = run(rows, config_for(sandbox, tmp_path, concurrency=8), journal, "r1")
    assert out[0].status == COMPLETED
    assert out[-1].status == "error" and out[-1].reason == "api_error"
    assert out[-1].status_reason_locale == "creditor_payment.case_closed"
    assert not out[-1].retryable and out[-1].amili_id  # stored by Amili, with status error
    assert [o.index for o in out] == [r.index for r in rows]


def test_cases_run_in_parallel(make_sandbox: Callable[..., RunningSandbox], tmp_path: Path,
                               journal: Journal) -> None:
    """16 rows on 16 cases at concurrency 8 have 8 POSTs in flight at once (and no more)."""
    sandbox = make_sandbox(cases=[c.as_seed() for c in MANY_CASES], latency_ms=50)
    config = config_for(sandbox, tmp_path, concurrency=8)
    client = CountingClient(config)
    rows = [planned(payment_body(case, 10.0), n + 2) for n, case in enumerate(MANY_CASES)]
    out = run(rows, config, journal, "r1", client=client)
    client.close()
    assert [o.status for o in out] == [COMPLETED] * 16
    assert client.peak == 8


def test_faults_every_row_once(make_sandbox: Callable[..., RunningSandbox], tmp_path: Path,
                               journal: Journal) -> None:
    """With 503, 429, 500-after-store and drops on, every row is created once and completed."""
    sandbox = make_sandbox(cases=[c.as_seed() for c in MANY_CASES], fail_503=0.2,
                           fail_429=0.2, fail_500_after_store=0.15, drop_after_store=0.15,
                           retry_after=0, seed=11)
    config = config_for(sandbox, tmp_path, concurrency=8, max_attempts=15)
    rows = [planned(payment_body(case, 1.0 + n, creditor_payment_reference=f"P-{n}-{i}"),
                    n * 16 + i + 2)
            for n in range(3) for i, case in enumerate(MANY_CASES)]
    out = run(rows, config, journal, "r1")
    assert [o.status for o in out] == [COMPLETED] * len(rows)
    per_ref = Counter(r["creditor_payment_reference"] for r in stored(sandbox))
    assert per_ref == Counter(r.payload["creditor_payment_reference"] for r in rows)
    assert set(per_ref.values()) == {1}
    faults = sandbox.state.snapshot()["faults"]
    assert faults.get("500", 0) > 0 and faults.get("drop", 0) > 0  # the faults did happen
    assert len({o.amili_id for o in out}) == len(rows)
    assert any("found in Amili by read-back" in o.message for o in out)


def crash(journal: Journal, body: dict[str, Any], row: int) -> int:
    """A run that began a row and died before finishing it (this process's pid: not alive)."""
    journal.start_run("crashed", "run")
    ref = planned(body, row)
    return journal.begin("crashed", ref.ref, "payments", ref.fingerprint, ref.case_key, body)


def test_reconcile_in_flight_found(sandbox: RunningSandbox, tmp_path: Path,
                                   journal: Journal) -> None:
    """A row left in flight whose POST was stored is found by read-back and not posted again."""
    body = payment_body(OPEN_CASE, 33.0)
    jid = crash(journal, body, 5)
    answer = requests.post(sandbox.url + "/" + PAYMENTS_RESOURCE, json=body,
                           headers=sandbox.headers, timeout=5).json()
    out = run([planned(body, 5)], config_for(sandbox, tmp_path), journal, "r2")
    crashed = journal.row(jid)
    assert crashed is not None and crashed.state == COMPLETED
    assert crashed.amili_id == answer["_id"] and "found in Amili" in (crashed.message or "")
    assert out[0].amili_id == answer["_id"] and not out[0].posted
    assert "already posted in run crashed" in out[0].message
    assert len(stored(sandbox)) == 1


def test_reconcile_in_flight_not_found(sandbox: RunningSandbox, tmp_path: Path,
                                       journal: Journal) -> None:
    """A row left in flight that Amili never stored is marked failed, then posted once."""
    body = payment_body(OPEN_CASE, 44.0)
    jid = crash(journal, body, 5)
    out = run([planned(body, 5)], config_for(sandbox, tmp_path), journal, "r2")
    crashed = journal.row(jid)
    assert crashed is not None and crashed.state == FAILED and crashed.reason == "not_stored"
    assert out[0].posted and out[0].status == COMPLETED
    assert [r["_id"] for r in stored(sandbox)] == [out[0].amili_id]


def test_reconcile_ignores_records_the_journal_knows(sandbox: RunningSandbox, tmp_path: Path,
                                                     journal: Journal) -> None:
    """A stored twin already owned by another journal row is not claimed by read-back."""
    body = payment_body(OPEN_CASE, 55.0)
    config = config_for(sandbox, tmp_path, allow_duplicates=True)
    run([planned(body, 2, sha="c" * 64)], config, journal, "r1")
    jid = crash(journal, body, 3)  # same fingerprint, another source: never reached Amili
    run([], config, journal, "r2")
    crashed = journal.row(jid)
    assert crashed is not None and crashed.state == FAILED


class LosingClient(ApiClient):
    """The real client, except that the first POST 'loses its answer' without being sent."""

    lost = 0

    def post(self, kind: Kind, body: dict[str, Any], on_send: Any = None) -> PostResult:
        if self.lost == 0:
            self.lost += 1
            return PostResult("unknown", None, None, 1, "connection dropped (simulated)")
        return super().post(kind, body, on_send)


def test_unknown_not_found_is_posted_again(sandbox: RunningSandbox, tmp_path: Path,
                                           journal: Journal) -> None:
    """After a lost answer, a read-back that finds nothing allows one more POST, journaled."""
    config = config_for(sandbox, tmp_path)
    client = LosingClient(config)
    out = run([planned(payment_body(OPEN_CASE, 66.0), 2)], config, journal, "r1", client=client)
    client.close()
    assert out[0].status == COMPLETED and out[0].attempts == 2
    rec = journal.row(out[0].journal_id or 0)
    assert rec is not None and rec.posts == 2 and rec.state == COMPLETED
    assert len(stored(sandbox)) == 1


def test_stop_leaves_rest_not_posted(sandbox: RunningSandbox, tmp_path: Path,
                                     journal: Journal) -> None:
    """A stop lets the row in flight finish; rows not reached are error/not_posted, retryable."""
    stop = threading.Event()
    rows = [planned(payment_body(OPEN_CASE, 1.0 + n), n + 2) for n in range(5)]
    out = run(rows, config_for(sandbox, tmp_path, concurrency=1), journal, "r1",
              stop=stop, progress=lambda outcome: stop.set())
    assert [o.status for o in out] == [COMPLETED] + ["error"] * 4
    assert all(o.reason == "not_posted" and o.retryable for o in out[1:])
    assert len(stored(sandbox)) == 1
    assert [r.state for r in journal.rows("r1")] == [COMPLETED] + [FAILED] * 4
    again = run(rows, config_for(sandbox, tmp_path), journal, "r2")  # the rest, once
    assert [o.posted for o in again] == [False] + [True] * 4
    assert len(stored(sandbox)) == 5


SIGTERM_SCRIPT = """
import json, os, signal, sys, threading
from pathlib import Path
from importer.client import ApiClient
from importer.config import Config
from importer.errors import ApiError
from importer.journal import Journal
from importer.kinds import PAYMENTS
from importer.post import PlannedRow, post_rows

url, token, state, bodies = sys.argv[1], sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4])
config = Config(api_url=url, access_token=token, state_dir=state, concurrency=1)
rows = [PlannedRow(n, "p.csv", "a" * 64, None, n + 2, PAYMENTS, body, f"fp{n}", "case:x")
        for n, body in enumerate(bodies)]
journal = Journal(state)
journal.start_run("t", "run")
before = signal.getsignal(signal.SIGTERM)
sent = []
stop = threading.Event()

def progress(outcome):
    if not sent:  # once: a second SIGTERM means "abort at once"
        sent.append(1)
        os.kill(os.getpid(), signal.SIGTERM)
        # The handler runs in the main thread when it next wakes: this worker goes on only
        # once it has (on a loaded machine that can take a while).
        assert stop.wait(30), "the SIGTERM handler never ran"

out = post_rows(rows, ApiClient(config), journal, "t", config, progress=progress, stop=stop)
assert signal.getsignal(signal.SIGTERM) is before
print(json.dumps([[o.status, o.reason] for o in out]))
"""


def test_sigterm_stops_like_a_stop(sandbox: RunningSandbox, tmp_path: Path) -> None:
    """SIGTERM during posting lets the row in flight finish, then no new row starts."""
    bodies = [payment_body(OPEN_CASE, 1.0 + n) for n in range(6)]
    done = subprocess.run(
        [sys.executable, "-c", SIGTERM_SCRIPT, sandbox.url, TOKEN, str(tmp_path / "state"),
         json.dumps(bodies)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.splitlines()[-1])
    # The worker settled row 1, the signal came, and no new row started after it.
    assert out == [[COMPLETED, None]] + [["error", "not_posted"]] * 5
    assert len(stored(sandbox)) == 1


def test_refused_token_stops_the_run(make_sandbox: Callable[..., RunningSandbox],
                                     tmp_path: Path, journal: Journal) -> None:
    """When the API refuses the token, the run stops; nothing is stored, all rows retryable."""
    sandbox = make_sandbox(token="another-token")
    rows = [planned(payment_body(OPEN_CASE, 1.0 + n), n + 2) for n in range(3)]
    out = run(rows, config_for(sandbox, tmp_path, concurrency=1), journal, "r1")
    assert out[0].reason == "api_unusable" and all(o.retryable for o in out)
    assert [o.reason for o in out[1:]] == ["not_posted", "not_posted"]
    assert "refused" in out[1].message
    assert stored(sandbox) == []


def test_matches_compares_values_not_spelling() -> None:
    """Read-back matching: amounts as decimals, dates as instants, ids ignoring case."""
    body = payment_body(OPEN_CASE, 100.5, creditor_payment_reference="R1")
    record = {**body, "amount": 100.50, "case": OPEN_CASE.id.upper(), "_id": "x",
              "bank_transaction_date": "Wed, 03 Sep 2025 08:00:00 +0000"}
    assert matches(PAYMENTS, body, record)
    assert not matches(PAYMENTS, body, {**record, "amount": 100.51})
    assert not matches(PAYMENTS, body, {**record, "bank_transaction_date":
                                        "Thu, 04 Sep 2025 08:00:00 GMT"})
    assert matches(PAYMENTS, body, {k: v for k, v in record.items() if k != "amount"}) is None
    # ISO 8601 in the answer is the same instant; what cannot be read cannot be told.
    assert matches(PAYMENTS, body, {**record, "bank_transaction_date": "2025-09-03T08:00:00Z"})
    assert matches(PAYMENTS, body, {**record, "bank_transaction_date": "3/9/2025"}) is None
    assert matches(PAYMENTS, body, {**record, "amount": "n/a"}) is None
    assert matches(PAYMENTS, body, {**record, "amount": "n/a", "creditor_payment_reference":
                                    "R2"}) is False


def test_a_lost_answer_is_found_whatever_account_amili_set(
        make_sandbox: Callable[..., RunningSandbox], tmp_path: Path, journal: Journal) -> None:
    """helper-55: with send_account (an older API generation required the field), Amili
    stores the case's own account, read-only, whatever was sent. A lost answer's read-back
    compared it and found "nothing stored": the payment was posted three times."""
    sandbox = make_sandbox(drop_after_store=1.0)
    body = payment_body(OPEN_CASE, 77.0, creditor_payment_reference="R-1",
                        account="aa" * 12)
    [out] = run([planned(body, 2)], config_for(sandbox, tmp_path, send_account=True), journal,
                "r1")
    assert len(stored(sandbox)) == 1
    assert out.status == COMPLETED and "found in Amili by read-back" in out.message
    record = {**body, "_id": "x", "account": {"$oid": "bb" * 12}}
    assert matches(PAYMENTS, body, record)


def test_preview_and_retry_rows(sandbox: RunningSandbox, tmp_path: Path,
                                journal: Journal) -> None:
    """preview() tells what a run would skip; from_record() rebuilds a row for retry."""
    config = config_for(sandbox, tmp_path)
    done = planned(payment_body(OPEN_CASE, 11.0), 2)
    run([done], config, journal, "r1")
    fresh = planned(payment_body(OPEN_CASE, 12.0), 3)
    twin = planned(payment_body(OPEN_CASE, 12.0), 4, sha="d" * 64, name="other.csv")
    seen = preview([done, fresh, twin], journal, config)
    assert seen[0] is not None and seen[0].status == COMPLETED
    assert "already posted in run r1" in seen[0].message
    assert seen[1] is None
    assert seen[2] is not None and "payments.csv row 3" in seen[2].message
    assert len(stored(sandbox)) == 1 and journal.rows("r1")[0].state == COMPLETED
    rebuilt = PlannedRow.from_record(journal.rows("r1")[0], 0)
    assert rebuilt.ref == done.ref and rebuilt.payload == done.payload
    assert rebuilt.fingerprint == done.fingerprint and rebuilt.kind is PAYMENTS


def test_lost_answer_on_invoice_row_is_read_back(make_sandbox: Callable[..., RunningSandbox],
                                                 tmp_path: Path, journal: Journal) -> None:
    """A row naming its case by invoice number whose answer is dropped is found, not re-sent."""
    sandbox = make_sandbox(drop_after_store=1.0)
    body = {k: v for k, v in payment_body(OPEN_CASE, 77.0).items() if k != "case"}
    body["invoice_number"] = OPEN_CASE.invoice_number
    out = run([planned(body, 2)], config_for(sandbox, tmp_path), journal, "r1")
    assert out[0].status == COMPLETED and "found in Amili by read-back" in out[0].message
    assert [r["_id"] for r in stored(sandbox)] == [out[0].amili_id]


def test_readback_filters() -> None:
    """Read-back filters: by case id; by invoice number, its case projection, or resolved case."""
    by_case = payment_body(OPEN_CASE, 1.0, creditor_payment_reference="R9")
    assert readback_filters(PAYMENTS, by_case) == [
        {"creditor": CREDITOR, "creditor_payment_reference": "R9", "case": OPEN_CASE.id}]
    by_invoice = {k: v for k, v in by_case.items() if k != "case"} | {"invoice_number": "I-1"}
    found = readback_filters(PAYMENTS, by_invoice, "case:abc")
    assert [sorted(f) for f in found] == [
        ["creditor", "creditor_payment_reference", "invoice_number"],
        ["case_invoice_number", "creditor", "creditor_payment_reference"],
        ["case", "creditor", "creditor_payment_reference"]]
    assert found[2]["case"] == "abc"


def test_an_invoice_whose_case_cannot_be_told_puts_its_creditor_in_one_line() -> None:
    """The case of INV-9 could not be looked up: it may be any case of its creditor, so all
    that creditor's rows (by id, by a resolved invoice, by INV-9) go in one line in file
    order; another creditor's rows keep their own lines."""
    from importer.plan import unify_case_keys

    def by_id(case: str, creditor: str = CREDITOR) -> dict[str, Any]:
        return {**payment_body(OPEN_CASE, 1.0), "case": case, "creditor": creditor}

    def by_invoice(invoice: str) -> dict[str, Any]:
        return {k: v for k, v in by_id("").items() if k != "case"} | {"invoice_number": invoice}

    other = "5f1d7e8a9b0c1d2e3f4a5b6c"
    rows = [planned(by_id(OPEN_CASE.id), 2), planned(by_invoice("INV-1"), 3),
            planned(by_invoice("INV-9"), 4), planned(by_id(OPEN_CASE.id, other), 5)]
    keys = [r.case_key for r in unify_case_keys(
        rows, lambda pairs: {(CREDITOR, "INV-1"): OPEN_CASE.id})]
    assert keys == [f"creditor:{CREDITOR}"] * 3 + [f"case:{OPEN_CASE.id}"]
    resolved = [r.case_key for r in unify_case_keys(
        rows[:2], lambda pairs: {(CREDITOR, "INV-1"): OPEN_CASE.id})]
    assert resolved == [f"case:{OPEN_CASE.id}"] * 2
    # An invoice Amili has no case for ("") touches no case: the others keep their lines.
    no_case = [r.case_key for r in unify_case_keys(
        rows[:3], lambda pairs: {(CREDITOR, "INV-1"): OPEN_CASE.id, (CREDITOR, "INV-9"): ""})]
    assert no_case == [f"case:{OPEN_CASE.id}"] * 2 + [f"invoice:{CREDITOR}:INV-9"]


def test_a_row_read_differently_after_an_upgrade_is_not_posted_again(
        sandbox: RunningSandbox, tmp_path: Path, journal: Journal) -> None:
    """A file whose rows were posted is run again by a newer version that reads a cell
    differently (here: a reference column it now recognises): the row's values, hence its
    fingerprint, differ, but it is the same row of the same file, so it is not sent again,
    in a real run as in a dry run. It is a warning naming what differs (Amili holds the
    values sent then). The same values in another file are still judged by content alone."""
    config = config_for(sandbox, tmp_path)
    before = payment_body(OPEN_CASE, 100.0)
    [first] = run([planned(before, 2)], config, journal, "r1")
    assert first.status == COMPLETED
    now = {**before, "creditor_payment_reference": "OCR 4711"}
    [would] = preview([planned(now, 2)], journal, config)
    assert would is not None and would.reason == "already_posted"
    [again] = run([planned(now, 2)], config, journal, "r2")
    assert (again.status, again.reason) == ("warning", "already_posted")
    assert "this same row of this same file was read with other values in run r1" in \
        again.message
    assert "creditor_payment_reference None then, 'OCR 4711' now" in again.message
    assert len(stored(sandbox)) == 1
    [other] = run([planned(now, 2, sha="b" * 64, name="payments-2.csv")], config, journal, "r3")
    assert (other.status, other.reason) == (COMPLETED, None) and len(stored(sandbox)) == 2


def test_a_row_skipped_as_covered_is_not_posted_after_an_upgrade_either(
        sandbox: RunningSandbox, tmp_path: Path, journal: Journal) -> None:
    """Monday's file has payment P; Tuesday's repeats P (skipped there: already posted by
    Monday's) and adds Q. Read differently after an upgrade, Tuesday's file run again posts
    neither: P's row stands for Monday's record, Q's for its own."""
    config = config_for(sandbox, tmp_path)
    p = payment_body(OPEN_CASE, 100.0)
    q = payment_body(OPEN_CASE, 5.0)
    [mon] = run([planned(p, 2, sha="1" * 64, name="mon.csv")], config, journal, "r1")
    tue = run([planned(p, 2, sha="2" * 64, name="tue.csv"),
               planned(q, 3, sha="2" * 64, name="tue.csv")], config, journal, "r2")
    assert mon.status == COMPLETED and [o.reason for o in tue] == ["already_posted", None]
    again = run([planned({**p, "creditor_payment_reference": "OCR 1"}, 2, sha="2" * 64,
                         name="tue.csv"),
                 planned({**q, "creditor_payment_reference": "OCR 2"}, 3, sha="2" * 64,
                         name="tue.csv")], config, journal, "r3")
    assert [(o.status, o.reason) for o in again] == [("warning", "already_posted")] * 2
    assert ("read with other values in run r2, and skipped there as already posted in run "
            "r1, file mon.csv row 2") in again[0].message
    assert len(stored(sandbox)) == 2


def test_a_row_in_flight_read_differently_waits_for_its_read_back(
        sandbox: RunningSandbox, tmp_path: Path, journal: Journal) -> None:
    """An earlier version left row 2 in flight; this version reads row 2 with other values:
    it is not posted before the read-back, and the message does not call it identical."""
    config = config_for(sandbox, tmp_path)
    before = payment_body(OPEN_CASE, 100.0)
    old = planned(before, 2)
    journal.start_run("r1", "run")
    assert journal.claim("r1", old.ref, old.kind.name, old.fingerprint, old.case_key,
                         old.payload)
    [would] = preview([planned({**before, "creditor_payment_reference": "X"}, 2)], journal,
                      config)
    assert would is not None and would.reason == "outcome_unknown"
    assert "this same row of this same file, read with other values in run r1" in would.message
