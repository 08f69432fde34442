"""Answers Amili's docs allow but the sandbox does not give: exactly once still holds.

A doc-following server may write dates in ISO 8601, project fields out of lists, cap pages
without saying so, use another list envelope, or answer a 201 without a usable id. Where the
read-back cannot tell, the row must be left "unknown", never posted a second time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from doc_server import DocServer, Variant
from test_post import fingerprint

from importer.client import ApiClient
from importer.config import Config
from importer.journal import Journal
from importer.kinds import PAYMENTS
from importer.post import Outcome, PlannedRow, Tuning, case_key, post_rows

CREDITOR = "674dbeb208847b9501cc9138"
CASE = "68678eda88b9226bb78d7169"
RESOURCE = "creditor--payments"
FAST = Tuning(readback_delays=(0.0,), extra_posts=2)


def body(amount: float = 100.0, ref: str | None = "PAY-1") -> dict[str, Any]:
    out: dict[str, Any] = {"creditor": CREDITOR, "case": CASE, "currency": "SEK",
                           "amount": amount, "origin": "creditor_system",
                           "bank_transaction_date": "Fri, 04 Jul 2025 16:20:41 GMT"}
    if ref is not None:
        out["creditor_payment_reference"] = ref
    return out


def row(payload: dict[str, Any], number: int = 2) -> PlannedRow:
    return PlannedRow(index=number, file_name="payments.csv", file_sha256="b" * 64, sheet=None,
                      row=number, kind=PAYMENTS, payload=payload,
                      fingerprint=fingerprint(PAYMENTS, payload), case_key=case_key(payload))


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[DocServer] = []

    def start(variant: Variant) -> DocServer:
        servers.append(DocServer(variant))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def post(server: DocServer, tmp_path: Path, rows: list[PlannedRow],
         run_id: str = "r1", settle: float = 60.0,
         stop: threading.Event | None = None, concurrency: int = 8,
         client_class: type[ApiClient] = ApiClient,
         earlier: list[Any] | None = None, allow_duplicates: bool = False) -> list[Outcome]:
    config = Config(api_url=server.url, access_token="T", state_dir=tmp_path / "state",
                    backoff_base=0.01, backoff_max=0.02, read_timeout=5.0,
                    settle_seconds=settle, concurrency=concurrency,
                    allow_duplicates=allow_duplicates)
    with Journal(tmp_path / "state") as journal, client_class(config) as client:
        journal.start_run(run_id, "run")
        return post_rows(rows, client, journal, run_id, config, structlog.get_logger(),
                         tuning=FAST, handle_signals=False, stop=stop, earlier=earlier)


def test_iso_dates_in_answers_are_matched(serve: Any, tmp_path: Path) -> None:
    """The answer to the POST is lost; the record read back writes its dates in ISO 8601."""
    server = serve(Variant(iso_dates=True, lose=["drop"]))
    [out] = post(server, tmp_path, [row(body())])
    assert (out.status, server.posts, len(server.records)) == ("completed", 1, 1)
    assert "found in Amili by read-back" in out.message


def test_a_projected_list_is_read_whole_by_id(serve: Any, tmp_path: Path) -> None:
    """The list leaves the amount out: the candidate is read by id before it is judged."""
    server = serve(Variant(projection=("creditor", "case", "creditor_payment_reference"),
                           lose=["drop"]))
    [out] = post(server, tmp_path, [row(body())])
    assert (out.status, server.posts, len(server.records)) == ("completed", 1, 1)
    assert out.amili_id == server.records[0]["_id"]


@pytest.mark.parametrize("meta", ["eve", "none"])
def test_capped_pages_are_all_read(serve: Any, tmp_path: Path, meta: str) -> None:
    """30 earlier payments on the case, pages of 25, with or without _meta: the lost row's
    record sits on page 2 and is found, not posted again."""
    server = serve(Variant(page_cap=25, meta=meta, lose=["drop"]))
    for n in range(30):
        server.add(RESOURCE, {**body(amount=1.0 + n, ref=None), "_id": f"{n:024x}",
                              "status": "completed"})
    [out] = post(server, tmp_path, [row(body(ref=None))])
    assert (out.status, server.posts, len(server.records)) == ("completed", 1, 31)


def test_an_unreadable_list_leaves_the_row_unknown(serve: Any, tmp_path: Path) -> None:
    """A list envelope without _items proves nothing: the row is not posted again."""
    server = serve(Variant(items_key="items", lose=["drop"]))
    [out] = post(server, tmp_path, [row(body())])
    assert (out.status, out.reason, out.retryable) == ("error", "outcome_unknown", True)
    assert not out.posted  # not known to have reached Amili: not counted in `posted`
    assert "no _items list" in out.message
    assert (server.posts, len(server.records)) == (1, 1)


def test_an_empty_201_is_stored_and_found(serve: Any, tmp_path: Path) -> None:
    """A 201 with no body means stored: the id comes from the read-back, no second POST."""
    server = serve(Variant(answer="empty", iso_dates=True))
    [out] = post(server, tmp_path, [row(body())])
    assert (out.status, out.amili_id, server.posts) == ("completed", server.records[0]["_id"], 1)


def test_an_object_id_in_extended_json_is_unwrapped(serve: Any, tmp_path: Path) -> None:
    """``{"_id": {"$oid": "..."}}``: the id is the text inside, and its status is read by it."""
    server = serve(Variant(answer="oid"))
    [out] = post(server, tmp_path, [row(body())])
    assert (out.status, out.amili_id) == ("completed", server.records[0]["_id"])


def test_a_201_without_id_is_never_posted_again(serve: Any, tmp_path: Path) -> None:
    """A 201 saying "error" without an id, and a read-back that cannot list: the row is
    reported as the answer said, and a second run does not post it again (a 2xx is proof)."""
    server = serve(Variant(answer="no_id", status="error", items_key="items"))
    [first] = post(server, tmp_path, [row(body())])
    assert (first.status, first.http_status, first.amili_id) == ("error", 201, None)
    assert "not sent again" in first.message
    [second] = post(server, tmp_path, [row(body())], run_id="r2")
    assert second.reason == "already_posted" and not second.posted
    assert (server.posts, len(server.records)) == (1, 1)


def test_a_201_without_body_that_cannot_be_read_back(serve: Any, tmp_path: Path) -> None:
    """An empty 201 and a read-back that cannot list: a warning saying so, never re-sent."""
    server = serve(Variant(answer="empty", items_key="items"))
    [out] = post(server, tmp_path, [row(body())])
    assert (out.status, out.reason, out.http_status) == ("warning", "stored_without_id", 201)
    assert "could not be read back" in out.message and "not sent again" in out.message
    assert server.posts == 1


def test_statuses_are_read_in_batches_without_meta(serve: Any, tmp_path: Path) -> None:
    """201s without a status, from a server that gives no _meta: the statuses are still read
    with one filtered list (an empty page ends it), not one GET per record."""
    server = serve(Variant(meta="none"))
    rows = [row(body(amount=10.0 + n, ref=f"B-{n}"), n + 2) for n in range(10)]
    outs = post(server, tmp_path, rows)
    assert [o.status for o in outs] == ["completed"] * 10
    by_id = [g for g in server.gets if g.count("/") == 2]
    assert by_id == [] and len(server.gets) == 2  # the ids' page, then an empty one


@pytest.mark.parametrize("status", ["completed", "error"])
def test_a_status_set_a_moment_after_storing_is_read_tonight(serve: Any, tmp_path: Path,
                                                             status: str) -> None:
    """Amili sets the status 1.5 s after storing: the first read finds none, the statuses
    still unknown are read again after short pauses, and the rows end with Amili's status
    in this run (an error shows tonight, not at the next run)."""
    server = serve(Variant(status=status, status_after=1.5))
    rows = [row(body(amount=10.0 + n, ref=f"L-{n}"), n + 2) for n in range(3)]
    started = time.monotonic()
    outs = post(server, tmp_path, rows)
    assert [o.status for o in outs] == [status] * 3
    assert time.monotonic() - started < 6  # pauses of 1 s and 2 s, not the full 7 s
    assert server.posts == 3


def test_statuses_are_read_again_no_longer_than_the_settle_time(serve: Any,
                                                                tmp_path: Path) -> None:
    """With settle_seconds 0.5, the statuses still unknown are read again only within it:
    the row stays status_unknown (read by the next run) and the run does not wait 7 s."""
    server = serve(Variant(status_after=30.0))
    started = time.monotonic()
    [out] = post(server, tmp_path, [row(body())], settle=0.5)
    assert (out.status, out.reason) == ("warning", "status_unknown")
    assert time.monotonic() - started < 3
    assert len(server.gets) == 2  # the record by id: the first read and one read again


def test_a_record_stored_late_is_waited_for_not_posted_twice(serve: Any, tmp_path: Path) -> None:
    """The POST gets a 500 and the backend stores the record a second later: the quick
    read-back finds nothing, but the row is not posted again before its request is settled;
    the read-back then finds the record."""
    server = serve(Variant(lose=["late"], late_seconds=1.0))
    started = time.monotonic()
    [out] = post(server, tmp_path, [row(body())], settle=2.0)
    assert (out.status, server.posts, len(server.records)) == ("completed", 1, 1)
    assert "found in Amili by read-back" in out.message
    assert time.monotonic() - started >= 1.5


def test_nothing_stored_is_posted_again_only_once_settled(serve: Any, tmp_path: Path) -> None:
    """A 500 that stored nothing (the record never comes): posted again after the settle
    time, and stored once."""
    server = serve(Variant(lose=["late"], late_seconds=3600))
    started = time.monotonic()
    [out] = post(server, tmp_path, [row(body())], settle=1.0)
    assert (out.status, server.posts, len(server.records)) == ("completed", 2, 1)
    assert time.monotonic() - started >= 0.9


def test_a_stop_while_waiting_leaves_the_row_unknown(serve: Any, tmp_path: Path) -> None:
    """Stopped during the settle wait: nothing is posted again, the row stays unknown (read
    back by the next run), and the stop does not wait out the settle time."""
    server = serve(Variant(lose=["late"], late_seconds=3600))
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    [out] = post(server, tmp_path, [row(body())], settle=60.0, stop=stop)
    assert (out.status, out.reason, out.retryable, server.posts) == (
        "error", "outcome_unknown", True, 1)
    assert time.monotonic() - started < 10


def test_reconcile_waits_for_a_killed_runs_late_record(serve: Any, tmp_path: Path) -> None:
    """A row a killed run left in flight whose record the backend stores a moment after the
    next run starts: reconcile waits for the settle time and finds it; nothing is re-sent."""
    server = serve(Variant())
    payload = body()
    with Journal(tmp_path / "state") as journal:
        journal.start_run("r0", "run")
        assert journal.claim("r0", row(payload).ref, "payments", row(payload).fingerprint,
                             case_key(payload), payload)
    late = {**payload, "_id": "68b82422d6fd1d378f17ffff", "status": "completed",
            "_created": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())}
    threading.Timer(1.0, server.add, [RESOURCE, late]).start()
    [out] = post(server, tmp_path, [row(payload)], run_id="r1", settle=2.0)
    assert server.posts == 0 and len(server.records) == 1
    assert (out.status, out.amili_id) == ("completed", "68b82422d6fd1d378f17ffff")


def test_status_reads_stop_when_the_api_goes_away(serve: Any, tmp_path: Path) -> None:
    """The 201s carry no status and every GET then fails: the batch read and one read by
    id run out of retries, and the others are not tried (each would wait through its own);
    the rows stay stored, their status unknown, and they say why."""
    server = serve(Variant(fail_gets=503))
    rows = [row(body(100.0 + n, ref=f"PAY-{n}"), n + 2) for n in range(5)]
    out = post(server, tmp_path, rows)
    assert server.posts == 5 and len(server.records) == 5
    assert {(o.status, o.reason) for o in out} == {("warning", "status_unknown")}
    assert "reading the record back failed" in out[0].message
    assert all("not read back, the API stopped answering" in o.message for o in out[1:])
    lists = [g for g in server.gets if g == "/creditor--payments"]
    assert 1 <= len(lists) == len(server.gets) - len(lists)  # one read by id, as many tries


def test_status_reads_go_one_by_one_when_the_batch_read_fails(serve: Any,
                                                                tmp_path: Path) -> None:
    """The 201s carry no status and the batch read ("$in" on the ids) keeps failing with a
    gateway timeout while reads by id work: every row's status is read by id."""
    server = serve(Variant(fail_lists=504))
    rows = [row(body(100.0 + n, ref=f"PAY-{n}"), n + 2) for n in range(5)]
    out = post(server, tmp_path, rows)
    assert server.posts == 5 and len(server.records) == 5
    assert [(o.status, o.reason) for o in out] == [("completed", None)] * 5
    by_id = [g for g in server.gets if g.count("/") == 2]
    assert sorted(by_id) == sorted(f"/creditor--payments/{r['_id']}" for r in server.records)


def test_a_read_back_never_takes_another_invoices_record(serve: Any, tmp_path: Path) -> None:
    """A server that ignores the read-back's filter and keeps no invoice number on its
    records holds another invoice's payment (same creditor, amount and date, posted by other
    means): it cannot be told apart, so the row whose answer was lost is not claimed
    `completed` with it, and nothing is sent again blind."""
    server = serve(Variant(ignore_where=True, drop_invoice=True, lose=["late"],
                           late_seconds=3600))
    payload = {**{k: v for k, v in body(100.0, ref=None).items() if k != "case"},
               "invoice_number": "INV-2"}
    other = {k: v for k, v in payload.items() if k != "invoice_number"}
    now = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())
    server.add(RESOURCE, {**other, "_id": "68b82422d6fd1d378f17aaaa", "status": "completed",
                          "_created": now})
    [out] = post(server, tmp_path, [row(payload)], settle=0.2)
    assert (out.status, out.reason, out.retryable) == ("error", "outcome_unknown", True)
    assert out.amili_id is None and server.posts == 1
    assert "may be this row's" in out.message


def test_a_status_never_read_is_read_by_the_next_run(serve: Any, tmp_path: Path) -> None:
    """Stored, status unknown (the API went away before it was read); Amili then settles one
    record as error. Running the file again reads the status: that row is reported error,
    the other completed, and nothing is posted again."""
    server = serve(Variant(fail_gets=503))
    rows = [row(body(100.0 + n, ref=f"PAY-{n}"), n + 2) for n in range(2)]
    first = post(server, tmp_path, rows)
    assert {o.reason for o in first} == {"status_unknown"}
    server.state.variant.fail_gets = 0
    server.records[1]["status"] = "error"
    again = post(server, tmp_path, rows, run_id="r2")
    assert server.posts == 2
    assert [(o.status, o.reason) for o in again] == [("completed", "already_posted"),
                                                     ("error", "already_posted")]


def test_a_status_never_read_is_read_by_the_next_run_of_another_file(
        serve: Any, tmp_path: Path) -> None:
    """A drop folder's files are new every night: the status a run could not read is read
    by the next run whatever file it posts (after its own posting), and handed to the caller
    (report.json's earlier_rows, the exit code), which writes it to the journal once its
    report is written. Until then the row stays unread: a run killed before its report
    leaves it for the next run to read and report again."""
    server = serve(Variant(fail_gets=503))
    first = post(server, tmp_path, [row(body(100.0 + n, ref=f"PAY-{n}"), n + 2)
                                    for n in range(2)])
    assert {o.reason for o in first} == {"status_unknown"}
    server.state.variant.fail_gets = 0
    server.records[1]["status"] = "error"
    server.records[1]["status_reason_locale"] = "Case closed"
    tonight = PlannedRow(index=0, file_name="payments-tonight.csv", file_sha256="c" * 64,
                         sheet=None, row=2, kind=PAYMENTS, payload=body(7.0, ref="PAY-9"),
                         fingerprint=fingerprint(PAYMENTS, body(7.0, ref="PAY-9")),
                         case_key=case_key(body(7.0, ref="PAY-9")))
    for run_id in ("r2", "r3"):  # r2 is "killed" before its report: nothing committed
        earlier: list[Any] = []
        [out] = post(server, tmp_path, [tonight], run_id=run_id, earlier=earlier)
        learned = sorted(earlier, key=lambda item: item.record.id)
        assert [(i.record.run_id, i.record.ref.row, i.record.state, i.record.reason)
                for i in learned] == [("r1", 2, "completed", None), ("r1", 3, "error", "api_error")]
        assert "Case closed" in (learned[1].record.message or "")
        with Journal(tmp_path / "state") as journal:
            assert len(journal.status_unread()) == 2  # not yet journaled
    assert out.status == "completed" and server.posts == 3
    with Journal(tmp_path / "state") as journal:
        for item in earlier:
            item.commit(journal)
        assert journal.status_unread() == [] and not journal.has_status_unknown("r1")
        assert journal.counts("r1") == {"completed": 1, "error": 1}
    again: list[Any] = []
    post(server, tmp_path, [tonight], run_id="r4", earlier=again)
    assert again == [] and server.posts == 3  # settled once; nothing posted twice


def test_a_stopped_run_leaves_earlier_statuses_for_the_next(serve: Any, tmp_path: Path) -> None:
    """A run stopped by a signal (a service manager waits only so long) does not go on to
    read earlier runs' statuses: they stay unread, for the next run."""
    server = serve(Variant(fail_gets=503))
    [first] = post(server, tmp_path, [row(body(100.0, ref="PAY-1"))])
    assert first.reason == "status_unknown"
    server.state.variant.fail_gets = 0
    reads_before = len(server.gets)
    stop = threading.Event()
    stop.set()
    earlier: list[Any] = []
    tonight = replace(row(body(7.0, ref="PAY-9")), file_name="b.csv", file_sha256="e" * 64)
    [out] = post(server, tmp_path, [tonight], run_id="r2", stop=stop, earlier=earlier)
    assert out.reason == "not_posted" and earlier == []
    with Journal(tmp_path / "state") as journal:
        assert len(journal.status_unread()) == 1
    assert server.gets[reads_before:] == []


def test_an_identical_row_of_another_file_does_not_hide_the_earlier_rows_error(
        serve: Any, tmp_path: Path) -> None:
    """With --allow-duplicates, tonight's identical payment from another file is posted as
    its own event; the earlier row's status, read in the same run, is still handed over
    (earlier_rows), since tonight's report does not show it."""
    server = serve(Variant(fail_gets=503))
    [first] = post(server, tmp_path, [row(body(100.0, ref="PAY-1"))])
    assert first.reason == "status_unknown"
    server.state.variant.fail_gets = 0
    server.records[0]["status"] = "error"
    other = replace(row(body(100.0, ref="PAY-1")), file_name="b.csv", file_sha256="e" * 64)
    earlier: list[Any] = []
    [out] = post(server, tmp_path, [other], run_id="r2", earlier=earlier,
                 allow_duplicates=True)
    assert (out.status, out.reason, server.posts) == ("completed", None, 2)
    assert [(i.record.run_id, i.record.state, i.record.reason) for i in earlier] == [
        ("r1", "error", "api_error")]


def test_the_unread_status_of_the_same_row_read_differently_is_its_status(
        serve: Any, tmp_path: Path) -> None:
    """The same row of the same file, read by a newer version with other values: its
    earlier record's unread status is read before the posting and reported on the row
    (error, from Amili), not listed apart under earlier_rows."""
    server = serve(Variant(fail_gets=503))
    first_row = row(body(100.0, ref="PAY-1"))
    [first] = post(server, tmp_path, [first_row])
    assert first.reason == "status_unknown"
    server.state.variant.fail_gets = 0
    server.records[0]["status"] = "error"
    newer = {**first_row.payload, "creditor_payment_reference": "PAY-1/X"}
    earlier: list[Any] = []
    [out] = post(server, tmp_path, [replace(first_row, payload=newer,
                                            fingerprint=fingerprint(PAYMENTS, newer))],
                 run_id="r2", earlier=earlier)
    assert (out.status, out.reason, server.posts) == ("error", "already_posted", 1)
    assert earlier == []


def test_a_row_reconciled_then_read_again_is_handed_over_once(
        serve: Any, tmp_path: Path) -> None:
    """A killed run left a row in flight; Amili stored it without a status yet. Reconcile
    finds it (status unknown, with its id), and the status read of the same run reads it
    again, settled by now: it is handed over once, with what was learned last."""
    server = serve(Variant())
    payload = body()
    planned = row(payload)
    with Journal(tmp_path / "state") as journal:
        journal.start_run("r0", "run")
        assert journal.claim("r0", planned.ref, "payments", planned.fingerprint,
                             case_key(payload), payload)
        journal.finish_run("r0", 3, {})
    now = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())
    server.add(RESOURCE, {**payload, "_id": "68b82422d6fd1d378f17ffff", "_created": now})

    class Settling(ApiClient):
        def post(self, kind: Any, body: dict[str, Any], on_send: Any = None) -> Any:
            server.records[0]["status"] = "error"  # Amili settles it meanwhile
            return super().post(kind, body, on_send)

    tonight = replace(row(body(7.0, ref="PAY-9")), file_name="b.csv", file_sha256="e" * 64)
    earlier: list[Any] = []
    post(server, tmp_path, [tonight], run_id="r1", settle=0.0, earlier=earlier,
         client_class=Settling)
    assert [(i.record.run_id, i.record.state, i.record.reason) for i in earlier] == [
        ("r0", "error", "api_error")]


def test_rows_of_earlier_runs_are_named_by_what_became_of_them() -> None:
    """Only a row stored in error in Amili counts for the exit code and gets an "in error
    in Amili" line; a row found not stored, or still of unknown outcome, is listed with its
    reason and not called settled."""
    from importer.errors import ExitCode
    from importer.pipeline import EARLIER_LINES, earlier_exit_code, earlier_lines

    def earlier_row(n: int, status: str, reason: str | None, amili_id: str | None) -> Any:
        return {"run_id": "r0", "file": "a.csv", "sheet": None, "row": n, "kind": "payments",
                "status": status, "reason": reason, "message": None, "amili_id": amili_id}

    open_fates = [earlier_row(2, "error", "not_stored", None),
                  earlier_row(3, "error", "outcome_unknown", None),
                  earlier_row(4, "completed", None, "c" * 24)]
    lines = earlier_lines(open_fates)
    assert lines == ["earlier runs: 3 of their row(s) looked up again: 1 completed, 1 error "
                     "(not_stored), 1 error (outcome_unknown); listed under earlier_rows in "
                     "report.json"]
    assert earlier_exit_code({"earlier_rows": open_fates}) == ExitCode.OK
    in_error = [earlier_row(n, "error", "api_error", f"{n:024x}")
                for n in range(2, EARLIER_LINES + 7)]
    lines = earlier_lines(in_error)
    assert earlier_exit_code({"earlier_rows": in_error}) == ExitCode.ROWS_IN_ERROR
    assert len(lines) == 1 + EARLIER_LINES + 1
    assert lines[-1] == "  ... and 5 more in error (report.json)"


def test_a_proxys_503_after_the_record_was_stored_is_read_back(serve: Any,
                                                               tmp_path: Path) -> None:
    """helper-55: a proxy in front of the API (Envoy: "upstream reset before headers") may
    answer 503 after the API stored the row. It was re-sent at once: two payments. A 503 that
    does not decline the request itself (no Retry-After, not the API's own error) is read back;
    one that does (the "busy" 503 with Retry-After) is still re-sent at once."""
    server = serve(Variant(lose=["proxy503", "busy"]))
    [out] = post(server, tmp_path, [row(body(100.0, ref="R-503"))])
    assert (out.status, server.posts, len(server.records)) == ("completed", 1, 1), out.message
    assert "found in Amili by read-back" in out.message
    [busy] = post(server, tmp_path, [row(body(200.0, ref="R-BUSY"), 3)], run_id="r2")
    assert (busy.status, server.posts, len(server.records)) == ("completed", 3, 2)


def _with_an_identical_record_two_hours_old(serve: Any) -> tuple[DocServer, str]:
    """A server holding body(100.0) entered by other means two hours ago, whose next POST
    answers 500 and stores its record only later (too late for a read-back at once)."""
    server = serve(Variant(lose=["late"], late_seconds=2.0))
    two_hours_ago = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() - 7200))
    server.add(RESOURCE, {**body(100.0), "_id": "68b82422d6fd1d378f17aaaa",
                          "status": "completed", "_created": two_hours_ago})
    return server, two_hours_ago


def test_an_identical_record_entered_hours_before_is_neither_claimed_nor_proof(
        serve: Any, tmp_path: Path) -> None:
    """Amili holds an identical payment entered by other means two hours before; this row's
    POST gets a 500 and is not stored in time for the read-back. That record is not this
    row's (not claimed), nor proof that nothing was stored: the outcome stays unknown,
    nothing is sent again, and the message names the record and the clocks."""
    server, two_hours_ago = _with_an_identical_record_two_hours_old(serve)
    [out] = post(server, tmp_path, [row(body(100.0))], settle=0.0)
    assert (out.status, out.reason, server.posts) == ("error", "outcome_unknown", 1)
    assert (f"Amili holds an identical record 68b82422d6fd1d378f17aaaa created {two_hours_ago},"
            " over an hour before this row was sent") in out.message
    assert "s against Amili's): not claimed, as it may have been entered by other means" \
        in out.message


def test_a_stale_date_on_reads_does_not_claim_an_older_identical_record(
        serve: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-60: a proxy answers the read-back with the Date of three hours ago. Taken for
    this machine's clock running three hours fast, it widened the window and claimed the
    identical record entered by other means two hours before. The answer to the POST (never
    from a cache) tells the clock; the record stays unclaimed."""
    import doc_server

    stale = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() - 3 * 3600))
    real = doc_server._Handler.date_time_string

    def date_time_string(self: Any, timestamp: Any = None) -> str:
        return stale if self.command == "GET" else str(real(self, timestamp))

    monkeypatch.setattr(doc_server._Handler, "date_time_string", date_time_string)
    server, _ = _with_an_identical_record_two_hours_old(serve)
    [out] = post(server, tmp_path, [row(body(100.0))], settle=0.0)
    assert (out.status, out.reason) == ("error", "outcome_unknown"), out.message


def _twin(planned: PlannedRow, number: int) -> PlannedRow:
    """The same row in another file (copy.csv), at row ``number``."""
    return replace(planned, file_name="copy.csv", file_sha256="c" * 64, row=number,
                   index=number)


def test_a_twin_follows_a_status_read_on_the_second_try(serve: Any, tmp_path: Path) -> None:
    """helper-56: the twin of a row was judged again on that row's first status read, which
    found no status yet; the read a moment later found an error, and the twin stayed a
    warning. Twins are judged again after every read, report and journal alike."""
    server = serve(Variant(status="error", status_after=1.5))
    first = row(body(amount=10.0, ref="T-1"), 2)
    a, b = post(server, tmp_path, [first, _twin(first, 3)], concurrency=1)
    assert (a.status, server.posts) == ("error", 1)
    assert (b.status, b.reason) == ("error", "already_posted")
    assert "then: Amili: error" in b.message
    with Journal(tmp_path / "state", read_only=True) as journal:
        [skipped] = [r for r in journal.rows("r1") if r.ref.file_name == "copy.csv"]
    assert skipped.message == b.message  # `show` and `retry` read this


def test_a_twin_held_back_follows_the_status_read_back(serve: Any, tmp_path: Path) -> None:
    """helper-56: a twin held back behind an open row of its case was never judged again."""
    server = serve(Variant(status="error", lose=["", "drop"], fail_lists=504))
    a = row(body(amount=10.0, ref="T-1"), 2)
    b = row(body(amount=20.0, ref="T-2"), 3)  # its answer lost, and the read-back fails
    outs = post(server, tmp_path, [a, b, _twin(a, 4)], concurrency=1)
    assert outs[0].status == "error" and outs[1].reason == "outcome_unknown"
    assert (outs[2].status, outs[2].reason) == ("error", "already_posted")


def test_a_read_back_reads_a_busy_case_whole(serve: Any, tmp_path: Path) -> None:
    """300 earlier payments without a reference on the case, pages capped at 25: the answer to
    the POST is lost and the read-back pages through all of them and finds the record."""
    server = serve(Variant(lose=["drop"]))
    for n in range(300):
        server.add(RESOURCE, {**body(1.0 + n, ref=None), "_id": f"{n:024x}", "status": "completed",
                              "_created": "Mon, 03 Nov 2025 10:00:00 GMT"})
    [out] = post(server, tmp_path, [row(body(5000.0, ref=None))])
    assert (out.status, server.posts) == ("completed", 1), out.message
    assert "found in Amili by read-back" in out.message


def test_a_status_read_that_fails_again_keeps_what_the_journal_knew(
        serve: Any, tmp_path: Path) -> None:
    """The next run's read of an unknown status fails too: the earlier row keeps its Amili id
    (so a third run still reads it), and a record with only _payment_status is then
    believed, as any record read back is."""
    server = serve(Variant(fail_gets=503))
    rows = [row(body(100.0), 2)]
    [first] = post(server, tmp_path, rows)
    assert (first.reason, first.amili_id) == ("status_unknown", server.records[0]["_id"])
    [second] = post(server, tmp_path, rows, run_id="r2")
    assert (second.status, second.amili_id) == ("warning", server.records[0]["_id"])
    server.state.variant.fail_gets = 0
    del server.records[0]["status"]  # only _payment_status: completed is left
    [third] = post(server, tmp_path, rows, run_id="r3")
    assert (third.status, third.reason, server.posts) == ("completed", "already_posted", 1)


def test_the_settle_time_counts_from_the_attempt_that_was_lost(
        serve: Any, tmp_path: Path) -> None:
    """The first attempt gets a 503 with Retry-After: 2; the second, sent 2 s after the row
    was begun, gets a 500 and is stored a second later. The settle time (1.5 s) counts from
    that second attempt, not from the start: the record is found, nothing is sent again."""
    server = serve(Variant(lose=["busy", "late"], late_seconds=1.0))
    [out] = post(server, tmp_path, [row(body())], settle=1.5)
    assert (out.status, server.posts, len(server.records)) == ("completed", 2, 1), out.message


def test_a_held_up_send_moves_the_journal_time_on(serve: Any, tmp_path: Path) -> None:
    """A send that goes out more than a second after the row was begun (here after a 503's
    Retry-After) moves the row's journal time on, so that a reconcile after a crash counts
    the settle time from that send."""
    server = serve(Variant(lose=["busy"]))
    seen: list[tuple[str, str]] = []

    class Watching(ApiClient):
        def post(self, kind: Any, body: dict[str, Any], on_send: Any = None) -> Any:
            def spy() -> None:
                on_send()
                with Journal(tmp_path / "state", read_only=True) as journal:
                    [rec] = [r for r in journal.rows("r1")]
                    seen.append((rec.created, rec.updated))
            return super().post(kind, body, spy)

    config = Config(api_url=server.url, access_token="T", state_dir=tmp_path / "state",
                    backoff_base=0.01, backoff_max=0.02)
    with Journal(tmp_path / "state") as journal, Watching(config) as client:
        journal.start_run("r1", "run")
        post_rows([row(body())], client, journal, "r1", config, structlog.get_logger(),
                  tuning=FAST, handle_signals=False)
    (created, first), (_, second) = seen
    assert first == created  # sent at once: no extra write
    gap = datetime.fromisoformat(second) - datetime.fromisoformat(created)
    assert gap.total_seconds() >= 1.9


def test_posts_that_keep_failing_without_storing_stop_the_run(
        serve: Any, tmp_path: Path) -> None:
    """Every POST answers 500 and stores nothing: once three POSTs sent after the first loss
    was proven are lost and unstored too, the run stops instead of waiting out the settle
    time for every row; nothing is stored and the rows not reached are retryable."""
    server = serve(Variant(lose=["late"] * 20, late_seconds=3600))
    # One case per row: rows of one case would wait behind the first (held_back).
    rows = [row({**body(100.0 + n, ref=f"PAY-{n}"), "case": f"{CASE[:-1]}{n}"}, n + 2)
            for n in range(4)]
    out = post(server, tmp_path, rows, settle=0.2, concurrency=1)
    # Row 2's first loss proves the API loses POSTs; while it waits out the settle time the
    # spare worker sends row 3, and the losses that follow stop the run: row 2 is the one
    # that saw the third loss since, row 3 was in flight, rows 4 and 5 were not reached.
    assert server.records == []
    assert out[0].reason == "api_unusable" and "3 POSTs in a row" in out[0].message
    assert out[1].reason == "outcome_unknown"
    assert [o.reason for o in out[2:]] == ["not_posted"] * 2
    assert server.posts == 6  # 3 for each row sent, none for the rows not reached
    assert all(o.retryable for o in out)


def test_a_read_back_never_takes_the_record_of_a_look_alike_row(
        serve: Any, tmp_path: Path) -> None:
    """One payment entered twice, once by case id and once by invoice number (no reference,
    the plan could not tie the invoice to the case): the case row's POST gets a 500 (its record
    stored a second late) while the invoice row's is stored at once, its 201 slow. The case
    row's read-back must not take the invoice row's record: each row has its own."""
    server = serve(Variant(lose_when={CASE: ["late"], "INV-7": ["slow"]}, late_seconds=1.0,
                           resolve={"INV-7": CASE}))
    by_case = body(500.0, ref=None)
    by_invoice = {k: v for k, v in by_case.items() if k != "case"} | {"invoice_number": "INV-7"}
    out = post(server, tmp_path, [row(by_case, 2), row(by_invoice, 3)], settle=1.5)
    time.sleep(1.2)  # a late store of the lost POST would show by now
    assert [o.status for o in out] == ["completed", "completed"], [o.message for o in out]
    assert out[0].amili_id != out[1].amili_id
    assert len(server.records) == 2


def test_the_201s_process_status_is_not_taken_for_amilis_status(
        serve: Any, tmp_path: Path) -> None:
    """The docs' 201 says _payment_status 'completed'; the record says error (a closed case)
    but cannot be read: the row is stored with its status unknown, not 'completed'. The next
    run, able to read, reports the error."""
    server = serve(Variant(answer="doc", status="error", fail_gets=503))
    rows = [row(body(100.0), 2)]
    [first] = post(server, tmp_path, rows)
    assert (first.status, first.reason) == ("warning", "status_unknown")
    assert "_payment_status 'completed'" in first.message
    server.state.variant.fail_gets = 0
    [again] = post(server, tmp_path, rows, run_id="r2")
    assert (again.status, again.reason, server.posts) == ("error", "already_posted", 1)


def test_a_burst_of_lost_posts_that_later_posts_outlive_does_not_stop_the_run(
        serve: Any, tmp_path: Path) -> None:
    """Three POSTs answered 500 without storing at the start, while later POSTs to another
    case are stored: the API is handling POSTs, so the run goes on; the three are posted
    again once settled (those answers slow, so the three are all found lost first), and
    every row is stored once."""
    cases = [f"{n:024x}" for n in range(1, 5)]
    server = serve(Variant(lose_when={c: ["late", "slow"] for c in cases[:3]},
                           late_seconds=3600, slow_seconds=1.0))
    rows = [row({**body(10.0 + n, ref=f"L-{n}"), "case": c}, n + 2)
            for n, c in enumerate(cases[:3])]
    rows += [row({**body(20.0 + n, ref=f"S-{n}"), "case": cases[3]}, n + 10) for n in range(5)]
    out = post(server, tmp_path, rows, settle=1.0, concurrency=4)
    assert [o.status for o in out] == ["completed"] * 8, [o.message for o in out]
    assert server.posts == 11 and len(server.records) == 8


def test_a_row_waiting_out_its_settle_time_lets_other_cases_go_on(
        serve: Any, tmp_path: Path) -> None:
    """Concurrency 1: the first row's answer is lost (nothing stored) and it waits out the
    settle time without its slot; the other case's rows are posted meanwhile, never two
    requests at once; then the first row is read back and posted again."""
    first, other = "0" * 23 + "1", "0" * 23 + "2"
    server = serve(Variant(lose_when={first: ["late"]}, late_seconds=3600))
    rows = [row({**body(10.0, ref="A"), "case": first}, 2)]
    rows += [row({**body(20.0 + n, ref=f"B-{n}"), "case": other}, n + 3) for n in range(4)]
    lock = threading.Lock()
    flying = [0, 0]  # now, peak

    class Counting(ApiClient):
        def post(self, kind: Any, body: dict[str, Any], on_send: Any = None) -> Any:
            with lock:
                flying[0] += 1
                flying[1] = max(flying)
            try:
                return super().post(kind, body, on_send)
            finally:
                with lock:
                    flying[0] -= 1

    out = post(server, tmp_path, rows, settle=1.0, concurrency=1, client_class=Counting)
    assert [o.status for o in out] == ["completed"] * 5, [o.message for o in out]
    assert [r["creditor_payment_reference"] for r in server.records] == [
        "B-0", "B-1", "B-2", "B-3", "A"]
    assert server.posts == 6 and flying[1] == 1


def test_a_look_alike_waiting_behind_a_settle_wait_does_not_block_the_run(
        serve: Any, tmp_path: Path) -> None:
    """Concurrency 1: a row by unresolved invoice number (posted alone among its look-alikes)
    loses its answer and waits out the settle time; the spare worker takes the slot and meets
    the look-alike row by case id, which must wait for it: it gives the slot back while it
    waits, so the first row can come back, and both are posted."""
    server = serve(Variant(lose_when={"INV-9": ["late"]}, late_seconds=3600,
                           resolve={"INV-9": CASE}))
    by_case = body(300.0, ref=None)
    by_invoice = {k: v for k, v in by_case.items() if k != "case"} | {"invoice_number": "INV-9"}
    done: list[list[Outcome]] = []
    worker = threading.Thread(target=lambda: done.append(post(
        server, tmp_path, [row(by_invoice, 2), row(by_case, 3)], settle=1.0, concurrency=1)),
        daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert done, "the run did not finish: a worker waiting for a look-alike held the slot"
    [out] = done
    assert [o.status for o in out] == ["completed", "completed"], [o.message for o in out]
    assert out[0].amili_id != out[1].amili_id and len(server.records) == 2


def test_a_row_without_a_reference_never_takes_a_referenced_look_alikes_record(
        serve: Any, tmp_path: Path) -> None:
    """The row by case id carries a reference, its look-alike by unresolved invoice number
    none (so its read-back matches any reference): still never in flight together."""
    server = serve(Variant(lose_when={CASE: ["slow"], "INV-9": ["late"]}, late_seconds=3600,
                           slow_seconds=1.0, resolve={"INV-9": CASE}))
    by_case = body(300.0, ref="P1")
    by_invoice = {k: v for k, v in body(300.0, ref=None).items() if k != "case"}
    by_invoice["invoice_number"] = "INV-9"
    out = post(server, tmp_path, [row(by_case, 2), row(by_invoice, 3)], settle=1.0,
               concurrency=2)
    assert [o.status for o in out] == ["completed", "completed"], [o.message for o in out]
    assert out[0].amili_id != out[1].amili_id and len(server.records) == 2


def test_a_stop_while_waiting_for_a_look_alike_posts_nothing_new(
        serve: Any, tmp_path: Path) -> None:
    """The row by invoice loses its answer and waits out the settle time holding its key;
    its look-alike by case id waits for the key. A stop then: the first is left unknown and
    the second is not posted at all."""
    server = serve(Variant(lose_when={"INV-9": ["late"]}, late_seconds=3600))
    by_case = body(300.0, ref=None)
    by_invoice = {k: v for k, v in by_case.items() if k != "case"} | {"invoice_number": "INV-9"}
    stop = threading.Event()
    threading.Timer(0.7, stop.set).start()
    out = post(server, tmp_path, [row(by_invoice, 2), row(by_case, 3)], settle=60.0,
               stop=stop, concurrency=2)
    assert [(o.reason, o.retryable) for o in out] == [("outcome_unknown", True),
                                                      ("not_posted", True)]
    assert server.posts == 1


def test_posts_lost_together_at_the_start_do_not_stop_a_healthy_run(
        serve: Any, tmp_path: Path) -> None:
    """Four cases' first POSTs are all lost together (nothing stored), then the API is fine:
    the POSTs sent after the losses were proven are handled (slowly, so every loss is proven
    before the first of them is answered), so the run goes on."""
    cases = [f"{n:024x}" for n in range(1, 5)]
    server = serve(Variant(lose_when={c: ["late", "slow"] for c in cases}, late_seconds=3600,
                           slow_seconds=1.0))
    rows = [row({**body(10.0 + n + 0.01 * k, ref=f"R-{n}-{k}"), "case": c}, 2 + 2 * n + k)
            for n, c in enumerate(cases) for k in range(2)]
    out = post(server, tmp_path, rows, settle=0.5, concurrency=4)
    assert [o.status for o in out] == ["completed"] * 8, [o.message for o in out]
    assert server.posts == 12 and len(server.records) == 8


def test_look_alike_rows_named_one_way_post_in_parallel(serve: Any, tmp_path: Path) -> None:
    """Rows that look alike but all name their case by invoice number cannot take each
    other's records (their read-backs filter by their own invoice): no holding, they go out
    in parallel."""
    invoices = [f"INV-{n}" for n in range(4)]
    server = serve(Variant(lose_when={i: ["slow"] for i in invoices}, slow_seconds=0.8))
    rows = [row({k: v for k, v in body(50.0, ref=None).items() if k != "case"}
                | {"invoice_number": i}, n + 2) for n, i in enumerate(invoices)]
    started = time.monotonic()
    out = post(server, tmp_path, rows, concurrency=4)
    assert [o.status for o in out] == ["completed"] * 4
    assert time.monotonic() - started < 2.5  # one at a time would take 3.2 s


def test_a_list_without_dates_cannot_pass_another_days_payment_for_this_one(
        serve: Any, tmp_path: Path) -> None:
    """The list leaves the bank date out. The row by case id (4 Jul) answers slowly; its
    namesake by unresolved invoice (3 Jul, same amount) loses its answer. The invoice row's
    read-back must read the candidate whole, see the other date, and not take it."""
    server = serve(Variant(lose_when={CASE: ["slow"], "INV-9": ["late"]}, late_seconds=3600,
                           slow_seconds=1.0, resolve={"INV-9": CASE},
                           projection=("creditor", "case", "amount", "invoice_number",
                                       "case_invoice_number")))
    by_case = body(300.0, ref=None)
    by_invoice = {k: v for k, v in by_case.items() if k != "case"} | {
        "invoice_number": "INV-9", "bank_transaction_date": "Thu, 03 Jul 2025 16:20:41 GMT"}
    out = post(server, tmp_path, [row(by_case, 2), row(by_invoice, 3)], settle=1.0,
               concurrency=2)
    assert [o.status for o in out] == ["completed", "completed"], [o.message for o in out]
    assert out[0].amili_id != out[1].amili_id and len(server.records) == 2
