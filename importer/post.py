"""The posting engine: per-case order, concurrency, reconciliation of unknown outcomes.

Amili's POST endpoints have no idempotency key, so "exactly once" is built here, on top of the
journal (``importer.journal``):

1. **Reconcile first.** Rows that an earlier run left ``in_flight`` (it was killed between
   sending and recording the answer) or ``unknown`` (the answer was lost and the read-back
   failed) are read back from the API before anything is sent: found → their outcome is
   recorded with the Amili id; provably absent → ``failed`` (safe to post again).
2. **Never twice.** Before a row is posted, the journal is asked about its fingerprint:
   done from the same source (file sha256, sheet, row) → the earlier outcome is reported;
   done from another source → the same, unless ``allow_duplicates`` (then each distinct
   source may post it once); pending anywhere → not posted (reported retryable). A row is
   also known by its place alone (same file content, sheet, row, kind: ``prior_source``),
   whatever values it is read with now: done there → reported ``already_posted`` as a
   warning naming what differs, never posted again.
3. **Write-ahead.** ``in_flight`` is committed before the POST, the outcome after it.
4. **Lost answers are read back**, never blindly re-sent: a POST is repeated only after the
   read-back shows that nothing was stored, at most ``Tuning.extra_posts`` times. Whatever the
   read-back cannot read (a list without ``_items``, an amount or date in a form not
   understood, a record it cannot fetch whole) leaves the outcome unknown: never "absent".
   A 2xx is proof of storage even when its answer names no record: such a row is never sent
   again (its id is looked for by read-back; not found, ``stored_without_id``).
5. **Status.** From the 201 when it carries ``status``; otherwise the id and the 201's
   provisional status are journaled at once and the status is read back by id after the
   posting (in parallel; up to 100 ids per ``where={"_id": {"$in": [...]}}`` query, any id
   it does not return by ``GET /<resource>/{_id}``), so the read-backs do not halve the
   posting rate.

Ordering and concurrency: rows with the same ``case_key`` are posted one at a time in the order
given (a payment that closes a case must land before the next one for that case); different
cases run in parallel, up to ``config.concurrency`` workers, each taking one row at a time
from the case first in line and putting that case back at the end of the line.

Why 8 workers by default (``Config.concurrency``): Amili publishes no rate limits, so we stay
polite; with a typical 20-50 ms round trip, 8 requests in flight give 160-400 rows/s, which
imports a large nightly file in minutes; the HTTP pool is sized to match; and the journal's two
commits per row (WAL, synchronous=NORMAL) cost far less than one round trip. Raise it (e.g. 16)
for big backfills when Amili agrees; ``--rate-limit`` caps requests per second independently.

Report statuses and reasons written back per row (:class:`Outcome`):

``completed``  Amili applied it (``reason`` None, or ``already_posted``: skipped, this very
               row was posted before)
``warning``    Amili stored it with status warning (``api_warning``), or gave a status value
               we do not know / none at all (``status_unknown``), or answered 2xx without
               naming the record, which the read-back then did not find (``stored_without_id``),
               or ``already_posted``: an identical row (of another file, or another row of a
               file of that name) was posted, this one never was
``error``      ``api_error`` (stored with status error), ``api_rejected`` (422/404, nothing
               stored), and the retryable ones: ``retry_exhausted``, ``outcome_unknown``,
               ``not_posted`` (the run stopped first), ``api_unusable`` (login failed),
               ``held_back`` (an earlier row of its case ended retryable: not overtaken)

The journal rows of earlier runs settled by reconciliation get ``not_stored`` (absent: safe to
post again) or the found record's status.
"""

from __future__ import annotations

import itertools
import re
import signal
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import structlog

from importer.answers import id_text, parse_instant, record_id
from importer.errors import ApiError, TransientApiError
from importer.journal import (
    COMPLETED,
    ERROR,
    FAILED,
    PENDING_STATES,
    SKIPPED,
    UNKNOWN,
    WARNING,
    Journal,
    RowRecord,
    RowRef,
    Settlement,
)
from importer.journal import (
    now as journal_now,
)
from importer.kinds import KINDS, READ_ONLY_FIELDS, Kind

if TYPE_CHECKING:
    from importer.client import ApiClient, PostResult
    from importer.config import Config

KNOWN_STATUSES = (COMPLETED, WARNING, ERROR)
# Ids per status read-back query: Eve's max_results ceiling, so one page normally holds them.
STATUS_BATCH = 100
# Pauses (seconds) before this run's own statuses still unknown after the read-back are read
# again (see _Engine._read_statuses): 7 s at most, and only when some are unknown.
STATUS_REREAD_PAUSES = (1.0, 2.0, 4.0)
# Pages a read-back follows (up to 20 000 records at 100 a page, 5 000 where pages are capped at
# 25): a case with many payments without a reference must still be read whole, or the row
# would stay "unknown" run after run. Reading stops at the last page, so this costs only there.
READBACK_PAGES = 200
# POSTs in a row (in the order they were sent, with none the API handled in between) whose
# answer was lost and that proved, once settled, to have stored nothing: then the API is
# failing every POST (a broken deploy answering 500), and each further row would wait out the
# settle time in vain: the run stops, as when the API cannot be reached. Only POSTs sent after
# the first such loss was proven count: a burst of POSTs lost together (a backend restart) is
# outlived by the POSTs sent after it.
LOST_IN_A_ROW = 3
# Ids compare case-insensitively (Mongo ObjectIds are hex).
ID_FIELDS = ("creditor", "case")


@dataclass(frozen=True)
class PlannedRow:
    """One valid row, ready to post.

    Attributes:
        index: the row's position in the caller's report frame (where its outcome goes).
        file_name: the input file's base name, for messages.
        file_sha256: the input file's content hash; with sheet and row, the row's source.
        sheet: the worksheet name; None for CSV.
        row: the row number as the user sees it in the spreadsheet.
        kind: the record kind (endpoint).
        payload: the JSON body to send (``validate.payload``); never holds the token.
        fingerprint: ``validate.fingerprint``: kind, creditor, case/invoice, amount, dates,
            reference. Rows with equal fingerprints are the same event.
        case_key: ``case:<id>`` or ``invoice:<creditor>:<number>`` (see :func:`case_key`);
            rows with the same key are posted one at a time, in the order given.
    """

    index: int
    file_name: str
    file_sha256: str
    sheet: str | None
    row: int
    kind: Kind
    payload: dict[str, Any]
    fingerprint: str
    case_key: str

    @property
    def ref(self) -> RowRef:
        """The row's source as the journal records it."""
        return RowRef(self.file_name, self.file_sha256, self.sheet, self.row)

    @classmethod
    def from_record(cls, record: RowRecord, index: int) -> PlannedRow:
        """The same row again, from its journal entry (for ``amili-import retry``).

        Args:
            record: a journal row (e.g. from ``journal.rows(run_id, [FAILED, UNKNOWN])``).
            index: its position in the new report.
        """
        return cls(index=index, file_name=record.ref.file_name,
                   file_sha256=record.ref.file_sha256, sheet=record.ref.sheet,
                   row=record.ref.row, kind=KINDS[record.kind], payload=record.payload,
                   fingerprint=record.fingerprint, case_key=record.case_key)


@dataclass
class Outcome:
    """What became of one planned row, for the report frame.

    Attributes:
        index: ``PlannedRow.index``.
        status: ``completed`` | ``warning`` | ``error``.
        reason: a short code (see the module docstring), or None.
        message: human text (the API's message, or which earlier row covers this one).
        retryable: whether ``amili-import retry`` may post it again.
        amili_id: the record's ``_id`` in Amili, when it exists.
        settled_amount: the amount Amili applied, as a decimal string, when given.
        case_reference_number: the case's reference number, when given.
        status_reason_locale: Amili's locale key for the status, as given.
        http_status: the last HTTP status of this run's POST, None when none was sent.
        attempts: HTTP attempts of this run's POSTs (0 when nothing was sent).
        posted: whether this run's POST of the row is known to have reached Amili: stored,
            or answered with a verdict (a 422 rejection). A row left ``failed`` (nothing
            stored: the API was unreachable, busy until the retries ran out, or read back as
            absent) is not, nor one whose outcome is unknown.
        journal_id: the row's journal entry in this run.
    """

    index: int
    status: str
    reason: str | None
    message: str
    retryable: bool = False
    amili_id: str | None = None
    settled_amount: str | None = None
    case_reference_number: str | None = None
    status_reason_locale: str | None = None
    http_status: int | None = None
    attempts: int = 0
    posted: bool = False
    journal_id: int | None = None


@dataclass(frozen=True)
class Tuning:
    """Knobs of the engine that are not user configuration.

    Attributes:
        readback_delays: seconds to wait before each read-back try after a lost answer,
            to find a record stored a moment late without waiting for the full settle time
            (``Config.settle_seconds``), which "not stored" always waits for.
        extra_posts: how many times a row may be POSTed again after a read-back proved
            that the earlier POST stored nothing.
    """

    readback_delays: tuple[float, ...] = (0.0, 0.5, 1.5)
    extra_posts: int = 2


def case_key(payload: dict[str, Any]) -> str:
    """The key that serialises rows touching the same case.

    Args:
        payload: a row's body.

    Returns:
        ``case:<id>`` when the row names the case, else ``invoice:<creditor>:<number>``.
        (A case named once by id and once by invoice number cannot be told apart without
        asking the API; such rows are ordered only within each key.)
    """
    if payload.get("case"):
        return f"case:{str(payload['case']).lower()}"
    return f"invoice:{str(payload.get('creditor', '')).lower()}:{payload.get('invoice_number', '')}"


def post_rows(
    rows: list[PlannedRow],
    client: ApiClient,
    journal: Journal,
    run_id: str,
    config: Config,
    log: Any = None,
    progress: Callable[[Outcome], None] | None = None,
    *,
    stop: threading.Event | None = None,
    tuning: Tuning | None = None,
    handle_signals: bool = True,
    earlier: list[Learned] | None = None,
) -> list[Outcome]:
    """Post planned rows exactly once; return one outcome per row, in the order given.

    Reconciles pending rows of earlier runs first, and reads again the statuses earlier runs
    could not read. A stop (``stop`` set, SIGTERM, or Ctrl-C
    when called from the main thread) lets requests in flight finish and starts no new ones;
    rows not reached get ``error``/``not_posted`` (retryable). A second Ctrl-C raises
    KeyboardInterrupt at once (rows in flight are then reconciled by the next run).

    Args:
        rows: planned rows, in file order.
        client: the API client (shared by all workers).
        journal: the journal; the run must have been started (``journal.start_run``).
        run_id: the current run.
        config: concurrency and allow_duplicates are read from it.
        log: a structlog logger; every event carries run_id, file, sheet and row.
        progress: called once per settled row (under a lock: need not be thread-safe).
        stop: an event the caller may set to stop the run; set here when a signal stops it.
        tuning: engine knobs (read-back spacing, extra posts).
        handle_signals: install SIGINT/SIGTERM handlers for the duration (main thread only).
        earlier: when given, extended with the rows of earlier runs that this run's report
            does not show and whose fate this run learned (reconciled, or their status read);
            the caller writes the statuses read to the journal (``Learned.commit``) once its
            report is written.

    Returns:
        One :class:`Outcome` per row, ``outcomes[i]`` for ``rows[i]``.
    """
    engine = _Engine(client, journal, run_id, config, log, progress, stop, tuning)
    guard = _stop_on_signals(engine.stop) if handle_signals else _nothing()
    with guard:
        reconciled = engine.reconcile()
        shown = _shown_by(rows)
        unread = journal.status_unread(exclude_run=run_id)
        # Statuses this run's report shows (its rows' `already_posted`) are read before the
        # posting; the others after it, so that they never delay it.
        engine.queue_statuses([r for r in unread if shown(r)], held=False)
        engine._read_statuses()
        engine.queue_statuses([r for r in unread if not shown(r)], held=True)
        outcomes = engine.post_all(rows)
        if earlier is not None:
            # Handed over: reconciled rows of other files (a row of these files found absent
            # is posted now, one found is reported), statuses read after the posting
            # (journaled later), and statuses read before it that no row of this run's
            # report ended up naming (`ref_row`: another done row with the fingerprint was
            # named, or the row was not reached): journaled already, no later run reads them.
            found = {r.id: Learned(r) for r in reconciled if not shown(r)}
            named = journal.referenced(run_id)
            found.update((rec.id, Learned(rec)) for row_id, outcome in engine.read_early
                         if outcome.reason != "status_unknown" and row_id not in named
                         and (rec := journal.row(row_id)) is not None)
            found.update((item.record.id, item) for item in engine.learned)
            earlier.extend(found.values())
        return outcomes


def not_sent(rows: list[PlannedRow], journal: Journal, run_id: str, config: Config,
             reason: str, message: str) -> list[Outcome]:
    """Journal and report rows a run could not send at all (e.g. the login failed): see
    ``_Engine.unsent``."""
    engine = _Engine(None, journal, run_id, config, structlog.get_logger(), None, None, None)
    return [engine.unsent(row, reason, message) for row in rows]


def preview(rows: list[PlannedRow], journal: Journal, config: Config) -> list[Outcome | None]:
    """What a run would do with each row, without posting or writing anything (dry run).

    Args:
        rows: planned rows, in file order.
        journal: the journal (only read).
        config: allow_duplicates is read from it.

    Returns:
        Per row: None when it would be posted; otherwise the outcome it would get without
        posting (``already_posted`` with the earlier outcome, or ``outcome_unknown`` while
        an identical row awaits reconciliation). Rows left in flight by crashed runs are
        read back only by a real run, so their fate here is the pending one.
    """
    engine = _Engine(None, journal, "dry-run", config, structlog.get_logger(), None, None, None)
    seen: dict[str, PlannedRow] = {}
    out: list[Outcome | None] = []
    for row in rows:
        early = engine._decide(row)
        twin = seen.get(row.fingerprint)
        # (the real run skips the twin too when --allow-duplicates lets rows of other files
        # through but the twin's file is this row's: two files of one name in one run)
        if early is None and twin is not None and (not config.allow_duplicates or _same_file(
                twin.file_sha256, twin.file_name, row.file_sha256, row.file_name)):
            early = (Settlement(SKIPPED), Outcome(
                index=row.index, status=WARNING, reason="already_posted",
                message=f"identical to {twin.ref.describe()} of this run, which would be "
                f"posted first; not posted twice. {_separate_hint(row.kind.name)}"))
        seen.setdefault(row.fingerprint, row)
        out.append(early[1] if early is not None else None)
    return out


# --- the engine ----------------------------------------------------------------------------


@dataclass
class _Provisional(Settlement):
    """A 201 without ``status``: recorded now (the id above all), its status read later."""

    body: dict[str, Any] = field(default_factory=dict)


@dataclass
class _StatusTodo:
    """A created row whose 201 carried no ``status``: read back after the posting.

    ``earlier``: a row an earlier run stored (``status_unknown``), read again; its journal
    entry changes only when the record is read, and it is judged as a record read back.
    ``held``: that row is not shown in this run's report, so its status goes to
    ``_Engine.learned`` and is written to the journal only once the report that lists it is
    written (``Learned.commit``): a run killed before that leaves it unread for the next.
    """

    kind: Kind
    amili_id: str
    journal_id: int
    body: dict[str, Any]
    outcome: Outcome
    log: Any
    earlier: bool = False
    held: RowRecord | None = None


@dataclass(frozen=True)
class Learned:
    """A row of an earlier run, not shown in this run's report, whose fate this run learned.

    Attributes:
        record: the row as it is now known (state, reason, message, Amili id).
        pending: the status read, still to be written to the journal once this run's report
            (which lists the row) is written; None when the journal already has it.
    """

    record: RowRecord
    pending: Settlement | None = None

    def commit(self, journal: Journal) -> None:
        """Write the status read to the journal (after the report that lists it)."""
        if self.pending is not None:
            journal.finish(self.record.id, self.pending)


class _Engine:
    def __init__(self, client: Any, journal: Journal, run_id: str, config: Config,
                 log: Any, progress: Callable[[Outcome], None] | None,
                 stop: threading.Event | None, tuning: Tuning | None) -> None:
        self.client = client
        self.journal = journal
        self.run_id = run_id
        self.config = config
        self.log = (log if log is not None else structlog.get_logger()).bind(run_id=run_id)
        self.progress = progress
        self.stop = stop if stop is not None else threading.Event()
        self.tuning = tuning or Tuning()
        self.fatal: str | None = None  # why the run stopped, when the API became unusable
        self._progress_lock = threading.Lock()
        self._status_todo: list[_StatusTodo] = []  # created rows whose 201 had no status
        self.learned: list[Learned] = []  # held status reads (see _StatusTodo.held)
        # Rows skipped for another row (see _follow): judged again after the status reads.
        self._followers: list[tuple[PlannedRow, Outcome]] = []
        self.read_early: list[tuple[int, Outcome]] = []  # earlier rows read before posting
        self._learned_lock = threading.Lock()
        self._batch_reads = True  # False once the API refused an "$in" read-back
        self._reads_down: str | None = None  # why status reads stopped (the API went away)
        # See LOST_IN_A_ROW: attempts are numbered as they go out; the last one the API
        # handled (stored or refused), and the lost ones found not stored after it.
        self._sends = itertools.count(1)
        self._sent = 0  # the number of the last attempt that went out
        self._last_handled = 0
        self._lost_unstored: set[int] = set()
        self._proven_at: int | None = None  # _sent when the first loss since then was proven
        self._alike = _LookAlikes()
        self._contested: set[str] = set()  # look-alike keys that need holding (post_all)
        self._slots = _Slots(0)  # the posting's concurrency, set by post_all

    # -- reconciliation ---------------------------------------------------------------------

    def reconcile(self) -> list[RowRecord]:
        pending = self.journal.pending(exclude_run=self.run_id)
        if not pending:
            return []
        self.log.info("reconcile.start", rows=len(pending))
        # Rows that look alike (one fingerprint, or the same payment naming its case once by
        # id and once by invoice number) go one after another, so two of them can never claim
        # the same Amili record; the others are read back in parallel.
        groups: dict[str, list[RowRecord]] = {}
        for rec in pending:
            kind = KINDS.get(rec.kind)
            key = look_alike(kind, rec.payload) if kind else rec.fingerprint
            groups.setdefault(key, []).append(rec)
        done: list[RowRecord] = []
        workers = max(1, min(self.config.concurrency, len(groups)))
        with ThreadPoolExecutor(workers, thread_name_prefix="reconcile") as pool:
            for settled in pool.map(self._reconcile_group, groups.values()):
                done.extend(settled)
        states = [r.state for r in done]
        self.log.info("reconcile.done", rows=len(done), found=sum(
            s in KNOWN_STATUSES for s in states), absent=states.count(FAILED),
            unresolved=states.count(UNKNOWN))
        return done

    def _reconcile_group(self, group: list[RowRecord]) -> list[RowRecord]:
        out = []
        for rec in group:
            kind = KINDS.get(rec.kind)
            rlog = self.log.bind(file=rec.ref.file_name, sheet=rec.ref.sheet, row=rec.ref.row,
                                 kind=rec.kind, earlier_run=rec.run_id, journal_id=rec.id)
            if kind is None:
                rlog.error("reconcile.unknown_kind")
                continue
            delays = self.tuning.readback_delays
            if _age_seconds(rec.updated) > self.config.settle_seconds:
                delays = (0.0,)  # its request is long over: one look is enough
            # rec.updated: when it was last POSTed (or found unknown), rec.created: the first.
            record, conclusive, why = self._read_back_settled(
                kind, rec.payload, rec.case_key, delays, sent_after=rec.created,
                last_sent=rec.updated, rlog=rlog)
            where = f"row left {rec.state.replace('_', ' ')} by run {rec.run_id}"
            if record is not None:
                settled = self._from_record(kind, record, written=False,
                                            attempts=rec.attempts, http_status=rec.http_status)
                settled.message = _join(f"{where}: found in Amili by read-back in run "
                                        f"{self.run_id}", settled.message)
                rlog.info("reconcile.found", amili_id=settled.amili_id, state=settled.state)
            elif conclusive:
                settled = Settlement(FAILED, retryable=True, reason="not_stored",
                                     attempts=rec.attempts, http_status=rec.http_status,
                                     message=f"{where}: not found in Amili by read-back in run "
                                     f"{self.run_id}; nothing was stored, safe to post again")
                rlog.info("reconcile.absent")
            else:
                settled = Settlement(UNKNOWN, retryable=True, reason="outcome_unknown",
                                     attempts=rec.attempts, http_status=rec.http_status,
                                     message=f"{where}: read-back failed in run {self.run_id} "
                                     f"({why}); it is tried again on the next run")
                rlog.warning("reconcile.unresolved", error=why)
            self.journal.finish(rec.id, settled)
            now = self.journal.row(rec.id)
            if now is not None:
                out.append(now)
        return out

    def queue_statuses(self, records: list[RowRecord], *, held: bool) -> None:
        """Queue rows an earlier run stored without learning their status
        (``status_unknown``) for reading again (``_read_statuses``).

        Args:
            records: the rows (from ``Journal.status_unread``).
            held: they are not shown in this run's report: what is read goes to
                ``learned`` and reaches the journal only after the report (``Learned``).
        """
        for rec in records:
            kind = KINDS.get(rec.kind)
            if kind is None or not rec.amili_id:
                continue
            rlog = self.log.bind(file=rec.ref.file_name, sheet=rec.ref.sheet, row=rec.ref.row,
                                 kind=rec.kind, earlier_run=rec.run_id, journal_id=rec.id)
            outcome = Outcome(index=-1, status=WARNING, reason="status_unknown", message="",
                              attempts=rec.attempts, http_status=rec.http_status)
            self._status_todo.append(_StatusTodo(kind, rec.amili_id, rec.id, {}, outcome, rlog,
                                                 earlier=True, held=rec if held else None))
            if not held:
                self.read_early.append((rec.id, outcome))
        if records:
            self.log.info("post.refresh_statuses", rows=len(records),
                          when="after the posting" if held else "now")

    # -- posting ----------------------------------------------------------------------------

    def post_all(self, rows: list[PlannedRow]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(rows)
        queues: dict[str, list[int]] = {}
        for position, planned in enumerate(rows):
            queues.setdefault(planned.case_key, []).append(position)
        slots = max(1, min(self.config.concurrency, len(queues)))
        # Twice as many workers as slots: a worker waiting out a lost answer's settle time
        # gives its slot up, and a spare worker keeps the other cases going meanwhile.
        workers = max(1, min(2 * self.config.concurrency, len(queues)))
        self._slots = _Slots(slots)
        self.log.info("post.start", rows=len(rows), cases=len(queues), workers=slots)

        # A fixed set of workers (one future per worker, not per case: a file with 100 000
        # cases must not mean 100 000 futures) takes one row at a time from the case first in
        # line, then puts that case back at the end of the line: a case's rows go one at a
        # time in file order, and every case with rows left can be worked on until the end,
        # so the last rows are not left to a few workers while the others stand idle. A
        # worker posts only while it holds one of the `slots` (the concurrency).
        line = deque(deque(positions) for positions in queues.values())
        take = threading.Lock()
        # Look-alike keys held by rows of both ways of naming a case (see look_alike).
        keys = [look_alike(r.kind, r.payload) for r in rows]
        by_id = {k for k, r in zip(keys, rows, strict=True) if r.case_key.startswith("case:")}
        self._contested = {k for k, r in zip(keys, rows, strict=True)
                           if not r.case_key.startswith("case:")} & by_id

        def worker() -> None:
            with self._slots.held():
                while not self.stop.is_set():
                    self._slots.let_resume()
                    with take:
                        # The cases left are all in other workers' hands, or a stop came
                        # while this worker waited for a slot.
                        if not line or self.stop.is_set():
                            return
                        case = line.popleft()
                    position = case.popleft()
                    outcome = self._post_one(rows[position], keys[position])
                    outcomes[position] = outcome
                    self._report(outcome)
                    if case and outcome is not None and outcome.retryable \
                            and not self.stop.is_set():  # (a stop reports them not_posted)
                        # Its fate is open (or it is still to be sent): the case's later
                        # rows must not overtake it (a payment that closes the case, then
                        # one more, must reach Amili in that order).
                        for later in case:
                            outcomes[later] = self._held(rows[later], rows[position], outcome)
                            self._report(outcomes[later])
                        case.clear()
                    if case:
                        with take:
                            line.append(case)

        pool = ThreadPoolExecutor(workers, thread_name_prefix="post")
        told = False
        try:
            futures: set[Future[None]] = {pool.submit(worker) for _ in range(workers)}
            while futures:
                # A timed wait keeps the main thread responsive to signals.
                finished, futures = wait(futures, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()  # a bug in a worker: stop everything, let it surface
                if self.stop.is_set() and not told:
                    told = True
                    self.log.warning("run.stopping", reason=self.fatal or "stop requested",
                                     detail="finishing the requests in flight, starting no new "
                                     "ones; stop again to abort at once")
        except BaseException:
            self.stop.set()
            raise
        finally:
            # Requests in flight finish; rows not started are reported not_posted below.
            pool.shutdown(wait=True)
        self._read_statuses()
        final: list[Outcome] = []
        for position, outcome in enumerate(outcomes):
            if outcome is None:
                outcome = self._not_reached(rows[position])
                self._report(outcome)
            final.append(outcome)
        self.log.info("post.finish", rows=len(rows), stopped=self.stop.is_set(),
                      posted=sum(o.posted for o in final))
        return final

    def _report(self, outcome: Outcome | None) -> None:
        if self.progress is not None and outcome is not None:
            with self._progress_lock:
                self.progress(outcome)

    def _post_one(self, row: PlannedRow, key: str) -> Outcome | None:
        """Post one row (``key``: its look-alike key); None when a stop came while it waited
        (it is reported not posted)."""
        if key not in self._contested:
            return self._post_alone(row)
        # A row whose case is known is in its case's line: only a look-alike row whose case
        # could not be told (an invoice number the plan could not look up) could take its
        # record, so that row posts alone among its look-alikes; the others share the key.
        alone = not row.case_key.startswith("case:")
        with self._alike.hold(key, alone, self._slots):
            if self.stop.is_set():
                return None
            return self._post_alone(row)

    def _post_alone(self, row: PlannedRow) -> Outcome:
        rlog = self.log.bind(file=row.file_name, sheet=row.sheet, row=row.row, kind=row.kind.name)
        # The check and the write-ahead are one transaction: no other thread or process can
        # begin the same fingerprint in between. The usual case (no earlier row with this
        # fingerprint) is one statement; otherwise the full decision below.
        early = None
        claimed = self.journal.claim(self.run_id, row.ref, row.kind.name, row.fingerprint,
                                     row.case_key, row.payload)
        if claimed is not None:
            journal_id = claimed
        else:
            with self.journal.transaction():
                early = self._decide(row)
                if early is not None:
                    settlement, outcome = early
                    outcome.journal_id = self.journal.record(
                        self.run_id, row.ref, row.kind.name, row.fingerprint, row.case_key,
                        row.payload, settlement)
                    self._follow(row, settlement, outcome)
                else:
                    journal_id = self.journal.begin(self.run_id, row.ref, row.kind.name,
                                                    row.fingerprint, row.case_key, row.payload)
        if early is not None:
            rlog.info("row.not_posted", status=outcome.status, reason=outcome.reason,
                      detail=outcome.message)
            return outcome
        settlement = self._send(row, journal_id, rlog)
        self.journal.finish(journal_id, settlement)
        outcome = _outcome(row.index, settlement, journal_id=journal_id)
        if isinstance(settlement, _Provisional) and settlement.amili_id:
            with self._progress_lock:
                self._status_todo.append(_StatusTodo(row.kind, settlement.amili_id, journal_id,
                                                     settlement.body, outcome, rlog))
            # Its status comes with the read-back after the posting (a row.status line).
            rlog.info("row.stored", amili_id=outcome.amili_id, http_status=outcome.http_status,
                      attempts=outcome.attempts)
            return outcome
        event = "row.done" if outcome.status != ERROR else "row.error"
        rlog.info(event, status=outcome.status, reason=outcome.reason, amili_id=outcome.amili_id,
                  http_status=outcome.http_status, attempts=outcome.attempts,
                  detail=outcome.message or None)
        return outcome

    def _decide(self, row: PlannedRow) -> tuple[Settlement, Outcome] | None:
        """None: post it. Otherwise what to record and report instead."""
        prior = self.journal.prior(row.fingerprint)
        # This row of this file was posted before, or judged already posted (skipped for a
        # done row of another file): so it stays, --allow-duplicates or not.
        same = [p for p in prior if _covers(p, row) and (p.done or self._for_same_values(p))]
        if same:
            earlier = same[-1]
            if not earlier.done and earlier.ref_row is not None:  # skipped: its covering row
                earlier = self.journal.row(earlier.ref_row) or earlier
            if not _same_row(earlier, row):
                return self._skip(row, earlier, _identical(earlier), _separate_hint(earlier.kind))
            return self._skip(row, earlier, f"already posted in run {earlier.run_id}, "
                                            f"{earlier.ref.describe()}")
        if not same:
            # The same row of the same file, read with other values now (another version of
            # amili-import, or another configuration): it is that row all the same.
            moved = [p for p in self.journal.prior_source(row.ref, row.kind.name)
                     if p.fingerprint != row.fingerprint]
            # (the row here, the done row that stands for it: itself, or the row of another
            # file it was skipped for)
            pairs = [(p, q) for p in moved if (q := self.journal.row(p.ref_row) if
                     p.state == SKIPPED and p.ref_row is not None else p) is not None and q.done]
            # (skipped here: this very row was judged already posted, flag or not)
            itself = [(p, q) for p, q in pairs
                      if p.state == SKIPPED or _covers(q, row) or q.ref == row.ref]
            if itself or (pairs and not self.config.allow_duplicates):
                return self._read_differently(row, *(itself or pairs)[-1])
            pending_there = [p for p in moved if p.state in PENDING_STATES]
            if pending_there:
                p = pending_there[-1]
                return _awaiting(row, p, f"this same row of this same file, read with other "
                                         f"values in run {p.run_id},")
        pending = [p for p in prior if p.state in PENDING_STATES]
        if pending:
            p = pending[-1]
            return _awaiting(row, p, f"an identical row of run {p.run_id} ({p.ref.describe()})")
        done = [p for p in prior if p.done]
        if done and not self.config.allow_duplicates:
            return self._skip(row, done[-1], _identical(done[-1]), _separate_hint(row.kind.name))
        return None

    def _read_differently(self, row: PlannedRow, here: RowRecord,
                          earlier: RowRecord) -> tuple[Settlement, Outcome]:
        """This row of this file (``here``, in the journal) was read before with other values
        (as an older version of amili-import, or another configuration, read it), and
        ``earlier`` stands for it in Amili: not posted again, and a warning, since Amili holds
        what was sent then."""
        via = "" if here.id == earlier.id else (
            f", and skipped there as already posted in run {earlier.run_id}, "
            f"{earlier.ref.describe()}")
        recorded, outcome = self._skip(row, earlier, (
            f"already posted: this same row of this same file was read with other values in "
            f"run {here.run_id}{via} ({_differences(here.payload, row.payload)}); Amili holds "
            "what was sent then: check it in Amili"))
        if outcome.status == COMPLETED:
            outcome.status = WARNING
        return recorded, outcome

    def _for_same_values(self, skipped: RowRecord) -> bool:
        """Whether a skipped row was skipped for a done row with its values (one skipped
        because it was read differently after an upgrade is left to the check by place,
        which names what differs)."""
        target = self.journal.row(skipped.ref_row or 0)
        return target is not None and target.fingerprint == skipped.fingerprint

    def _skip(self, row: PlannedRow, earlier: RowRecord, text: str,
              hint: str = "") -> tuple[Settlement, Outcome]:
        """Not sent: ``earlier`` (done) stands for it. Its outcome is this row's when it is
        this very row (:func:`_same_row`); any other row was judged identical by its values
        alone, and this one never reached Amili: a warning, so that a person sees it (an error
        stays an error)."""
        if earlier.amili_id:
            text += f" (Amili id {earlier.amili_id})"
        if earlier.state != COMPLETED and earlier.message:
            text += f"; then: {earlier.message}"
        if hint:
            text += f". {hint}"
        status = earlier.state if earlier.state == ERROR or _same_row(earlier, row) else WARNING
        recorded = Settlement(SKIPPED, reason="already_posted", message=text, ref_row=earlier.id)
        outcome = Outcome(
            index=row.index, status=status, reason="already_posted", message=text,
            amili_id=earlier.amili_id, settled_amount=earlier.settled_amount,
            case_reference_number=earlier.case_reference_number,
            status_reason_locale=earlier.status_reason_locale)
        return recorded, outcome

    def _not_reached(self, row: PlannedRow) -> Outcome:
        why = f"the run stopped before this row was posted{_paren(self.fatal)}; nothing was sent"
        return self.unsent(row, "not_posted", why)

    def _held(self, row: PlannedRow, first: PlannedRow, why: Outcome) -> Outcome:
        """A row held back behind an earlier row of its case whose fate is open."""
        text = (f"not posted: {first.ref.describe()}, earlier in the same case, is not "
                f"settled ({why.reason}); this row goes after it, with `retry` or the next "
                "run, so that the case's rows reach Amili in file order")
        return self.unsent(row, "held_back", text)

    def unsent(self, row: PlannedRow, reason: str, message: str) -> Outcome:
        """Journal and report a row this run does not send (retryable), unless the journal
        knows it better: a row an earlier run settled is reported with that outcome (never
        "nothing was sent" for a row Amili has), one in flight elsewhere as such."""
        with self.journal.transaction():
            early = self._decide(row)
            settlement = early[0] if early is not None else Settlement(
                FAILED, retryable=True, reason=reason, message=message)
            journal_id = self.journal.record(self.run_id, row.ref, row.kind.name,
                                             row.fingerprint, row.case_key, row.payload,
                                             settlement)
        if early is not None:
            outcome = early[1]
            outcome.journal_id = journal_id
            self._follow(row, settlement, outcome)
        else:
            outcome = _outcome(row.index, settlement, journal_id=journal_id)
        self.log.info("row.not_posted", file=row.file_name, sheet=row.sheet, row=row.row,
                      kind=row.kind.name, status=outcome.status, reason=outcome.reason,
                      detail=outcome.message)
        return outcome

    def _send(self, row: PlannedRow, journal_id: int, rlog: Any) -> Settlement:
        """POST (again only after a read-back proved nothing was stored); the settlement."""
        attempts = 0
        posts_left = 1 + self.tuning.extra_posts
        lost: list[str] = []
        sent_at = journal_now()  # the journal's clock: in_flight was committed just before
        noted = [time.monotonic()]  # when the journal's `updated` was last moved on
        send_no = [0]  # the number of the attempt that went out last (see LOST_IN_A_ROW)

        def sending() -> None:
            send_no[0] = next(self._sends)
            with self._progress_lock:
                self._sent = max(self._sent, send_no[0])
            # A send held up (rate limit, retries after 503/429) moves `updated` on, so a
            # reconcile after a crash counts the settle time from the last send.
            if time.monotonic() - noted[0] > 1.0:
                self.journal.touch(journal_id)
                noted[0] = time.monotonic()

        while True:
            posts_left -= 1
            try:
                result = self.client.post(row.kind, row.payload, on_send=sending)
            except ApiError as exc:
                # The client raises only when the API cannot be used at all (login refused,
                # TLS); the request was not stored. No point in sending the other rows.
                self.fatal = str(exc)
                self.stop.set()
                rlog.error("run.api_unusable", error=str(exc))
                return Settlement(FAILED, retryable=True, reason="api_unusable",
                                  attempts=attempts, message=f"not stored: {exc}")
            except Exception as exc:  # a bug: we cannot tell what was sent
                rlog.exception("row.post_crashed")
                return Settlement(UNKNOWN, retryable=True, reason="outcome_unknown",
                                  attempts=attempts, message=f"unexpected error while posting "
                                  f"({type(exc).__name__}: {exc}); read back on the next run")
            attempts += result.attempts
            if result.outcome in ("created", "rejected"):
                self._handled(send_no[0])
            if result.outcome == "created":
                if result.body is not None and record_id(result.body):
                    return self._created(row.kind, result, attempts)
                return self._stored_without_id(row, result, attempts, sent_at, rlog)
            if result.outcome == "rejected":
                return Settlement(ERROR, reason="api_rejected", http_status=result.http_status,
                                  attempts=attempts, message=f"rejected by Amili: "
                                  f"{result.message}")
            if result.outcome == "failed":
                return Settlement(FAILED, retryable=True, reason="retry_exhausted",
                                  http_status=result.http_status, attempts=attempts,
                                  message=result.message)
            # unknown (or an outcome this engine does not know: treated as unknown)
            last_sent = journal_now()  # the lost attempt went out before this, never after
            lost.append(result.message)
            rlog.warning("row.outcome_unknown", http_status=result.http_status,
                         detail=result.message)
            record, conclusive, why = self._read_back_settled(
                row.kind, row.payload, row.case_key, self.tuning.readback_delays,
                sent_after=sent_at, last_sent=last_sent, rlog=rlog)
            if record is not None:
                self._handled(send_no[0])
                settled = self._from_record(row.kind, record, written=False, attempts=attempts,
                                            http_status=result.http_status)
                settled.message = _join("the answer was lost; found in Amili by read-back",
                                        settled.message)
                rlog.info("row.read_back_found", amili_id=settled.amili_id)
                return settled
            if not conclusive:
                return Settlement(UNKNOWN, retryable=True, reason="outcome_unknown",
                                  http_status=result.http_status, attempts=attempts,
                                  message=f"{result.message}; not settled by read-back ({why}); "
                                  "it is read back again on the next run or retry")
            if self._lost_unhandled(send_no[0]) >= LOST_IN_A_ROW:
                self.fatal = (f"{LOST_IN_A_ROW} POSTs in a row lost their answer ({lost[-1]}) "
                              "and stored nothing")
                self.stop.set()
                rlog.error("run.api_unusable", error=self.fatal)
                return Settlement(FAILED, retryable=True, reason="api_unusable",
                                  http_status=result.http_status, attempts=attempts,
                                  message=f"not stored (read back): {self.fatal}; the run "
                                  "stopped, the next run posts what it did not reach")
            if posts_left <= 0 or self.stop.is_set():
                return Settlement(FAILED, retryable=True, reason="retry_exhausted",
                                  http_status=result.http_status, attempts=attempts,
                                  message=f"the answer was lost {len(lost)} time(s) "
                                  f"({lost[-1]}); read back: nothing was stored, safe to retry")
            rlog.info("row.repost", posts_done=len(lost))
            self.journal.repost(journal_id)
            noted[0] = time.monotonic()

    def _handled(self, send_no: int) -> None:
        """The API handled the POST that went out as attempt ``send_no``."""
        with self._progress_lock:
            self._last_handled = max(self._last_handled, send_no)
            self._lost_unstored = {n for n in self._lost_unstored if n > self._last_handled}
            if self._proven_at is not None and self._proven_at < self._last_handled:
                self._proven_at = None  # a POST sent after the proof was handled

    def _lost_unhandled(self, send_no: int) -> int:
        """Count attempt ``send_no`` as lost and not stored; how many such attempts went out
        after the last one the API handled, and after the first such loss was proven."""
        with self._progress_lock:
            if send_no > self._last_handled:
                self._lost_unstored.add(send_no)
            if self._proven_at is None:
                self._proven_at = self._sent
            return sum(n > self._proven_at for n in self._lost_unstored)

    def _stored_without_id(self, row: PlannedRow, result: PostResult, attempts: int,
                           sent_at: str, rlog: Any) -> Settlement:
        """A 2xx whose answer names no record: stored, so never sent again; its id and status
        are looked for by read-back. Not found, the row stays done (warning, or error as the
        answer said) with the HTTP status that proves it was stored."""
        body = result.body or {}
        record, _, why = self._read_back(row.kind, row.payload, row.case_key,
                                         self.tuning.readback_delays, sent_after=sent_at)
        if record is not None:
            settled = self._from_record(row.kind, {**body, **record}, written=False,
                                        attempts=attempts, http_status=result.http_status)
            settled.message = _join(f"{result.message} naming no record; found in Amili by "
                                    "read-back", settled.message)
            rlog.info("row.read_back_found", amili_id=settled.amili_id)
            return settled
        settled = self._from_record(row.kind, body, written=True, attempts=attempts,
                                    http_status=result.http_status)
        said = settled.message if settled.reason != "status_unknown" else None
        if settled.state != ERROR:  # an error stays one (a 2xx keeps it done in the journal)
            settled.state, settled.reason = WARNING, "stored_without_id"
        looked = f"it could not be read back ({why})" if why else "the read-back did not find it"
        settled.message = _join(f"Amili answered {result.message}: stored, but the answer names "
                                f"no record and {looked}; not sent again: check it in Amili",
                                said)
        rlog.warning("row.stored_without_id", http_status=result.http_status, detail=why or None)
        return settled

    def _created(self, kind: Kind, result: PostResult, attempts: int) -> Settlement:
        """The settlement for a 201: final when it carries ``status``; otherwise marked for
        the status read-back, and journaled ``status_unknown`` until then (a run killed before
        the read leaves that, which the next run of the file reads again)."""
        body = result.body or {}
        settled = self._from_record(kind, body, written=True, attempts=attempts,
                                    http_status=result.http_status)
        if body.get("status") is None and settled.amili_id:
            settled.state, settled.reason = WARNING, "status_unknown"
            settled.message = "stored; Amili's status is read back after the posting"
            return _Provisional(**settled.__dict__, body=body)
        return settled

    def _follow(self, row: PlannedRow, settlement: Settlement, outcome: Outcome) -> None:
        """Keep a row skipped for another row (of this run, maybe) to be judged again once
        the statuses are read (see :meth:`_judge_followers`)."""
        if settlement.state == SKIPPED and settlement.ref_row is not None:
            with self._progress_lock:
                self._followers.append((row, outcome))

    def _judge_followers(self) -> None:
        """Judge again, as the journal now stands, the rows skipped for another row: that
        row's status may have been read back since (an error makes its twins errors, not
        warnings that it was already posted); report and journal say the same."""
        with self._progress_lock:
            followers, self._followers = self._followers, []
        for row, outcome in followers:
            journal_id = outcome.journal_id
            if journal_id is None:
                continue
            again = self._decide(row)
            if again is None or (again[1].status, again[1].message) == (outcome.status,
                                                                         outcome.message):
                continue
            settlement, judged = again
            self.journal.finish(journal_id, settlement)
            outcome.__dict__.update(replace(judged, journal_id=journal_id,
                                            index=outcome.index).__dict__)

    def _read_statuses(self) -> None:
        """Read back the statuses the 201s did not give, then judge the rows skipped for
        another row again (:meth:`_judge_followers`)."""
        self._read_all_statuses()
        self._judge_followers()

    def _read_all_statuses(self) -> None:
        """Read back the status of rows whose 201 had none, by id.

        Done after the posting, in parallel, so that the read-backs do not halve the posting
        rate (the next row of a case needs its predecessor stored, not its status). Until
        then the journal holds the id and the provisional status of the 201. Up to
        ``STATUS_BATCH`` ids go in one ``GET /<resource>?where={"_id": {"$in": [...]}}``;
        an id that query does not return (or a query that is refused or fails) is read alone
        with ``GET /<resource>/{_id}``. Records are taken by their exact ``_id`` only.
        """
        todo = self._status_todo
        self._status_todo = []
        self._reads_down = None  # the API may be back since the last round of reads
        if self.stop.is_set():
            # Stopping (SIGTERM: a service manager waits only so long): earlier runs' rows
            # stay unread for the next run; this run's own are still read.
            todo = [item for item in todo if item.held is None]
        if not todo:
            return
        self.log.info("post.statuses_read", rows=len(todo), queries=self._read_round(todo))
        # This run's own rows whose status is still unknown (a backend that sets it a moment
        # after storing, or whose reads lag its writes) are read again after short pauses,
        # so that an error shows tonight, not at the next run: at most STATUS_REREAD_PAUSES
        # in all, and never longer than settle_seconds.
        waited = 0.0
        for pause in STATUS_REREAD_PAUSES:
            pause = min(pause, self.config.settle_seconds - waited)
            again = [item for item in todo if item.held is None and not item.earlier
                     and item.outcome.reason == "status_unknown"]
            if not again or pause <= 0 or self._reads_down is not None \
                    or self.stop.wait(pause):
                return
            waited += pause
            self.log.info("post.statuses_read_again", rows=len(again), after_seconds=waited,
                          queries=self._read_round(again))

    def _read_round(self, todo: list[_StatusTodo]) -> int:
        """Read the statuses of ``todo`` once, in parallel batches; returns the queries."""
        by_kind: dict[str, list[_StatusTodo]] = {}
        for item in todo:
            by_kind.setdefault(item.kind.name, []).append(item)
        batches = [items[i:i + STATUS_BATCH] for items in by_kind.values()
                   for i in range(0, len(items), STATUS_BATCH)]
        workers = max(1, min(self.config.concurrency, len(batches)))
        with ThreadPoolExecutor(workers, thread_name_prefix="status") as pool:
            for future in [pool.submit(self._read_status_batch, batch) for batch in batches]:
                future.result()
        return len(batches)

    def _read_status_batch(self, batch: list[_StatusTodo]) -> None:
        found: dict[str, dict[str, Any]] = {}
        if len(batch) > 1 and self._batch_reads and self._reads_down is None:
            ids = [item.amili_id for item in batch]
            try:
                # At most 4 pages: a server that caps pages at 25 still answers in full, one
                # that ignores the filter is given up on quickly (the ids are read one by one).
                # One page more than the ids fill: a server that gives no total ends with an
                # empty page.
                records = self.client.find(batch[0].kind, {"_id": {"$in": ids}},
                                           max_pages=-(-len(ids) // 25) + 1)
            except Exception as exc:  # the single reads below still settle every row
                if isinstance(exc, ApiError) and not isinstance(exc, TransientApiError):
                    self._batch_reads = False  # refused: no point in asking again
                # A transient failure (retries ran out, or the query timed out) may be this
                # query's alone: the first single read below tells. If it fails too, the API
                # is down and the rest are not tried (see _read_status).
                self.log.info("post.status_batch_failed", rows=len(ids), error=str(exc))
            else:
                wanted = {i.lower() for i in ids}
                for record in records:
                    key = _id_lower(record)
                    if key in wanted:
                        found.setdefault(key, record)
        for item in batch:
            record = found.get(item.amili_id.lower())
            if record is not None:
                self._settle_status(item, record, None)
            else:
                self._read_status(item)

    def _read_status(self, item: _StatusTodo) -> None:
        note = None
        record: dict[str, Any] | None = None
        if self._reads_down is not None:
            # Each read would wait through its own retries: the rows keep the 201's status,
            # and the next run that meets them reads them again.
            self._settle_status(item, None, "not read back, the API stopped answering "
                                f"({self._reads_down})")
            return
        try:
            record = self.client.get(item.kind, item.amili_id)
        except Exception as exc:  # the record exists; its status stays provisional
            note = f"reading the record back failed: {exc}"
            item.log.warning("row.get_failed", amili_id=item.amili_id, error=str(exc))
            if isinstance(exc, TransientApiError):
                self._reads_down = str(exc)
        if record is None and note is None:
            note = "the record could not be read back (404)"
        self._settle_status(item, record, note)

    def _settle_status(self, item: _StatusTodo, record: dict[str, Any] | None,
                       note: str | None) -> None:
        if item.earlier and record is None:
            # Not read again: the journal keeps what it knew (the id above all).
            item.log.info("row.status_still_unknown", amili_id=item.amili_id, detail=note)
            return
        # The record read now is fresher than the 201: its fields win; the 201 still gives
        # what a record read by GET does not carry (Eve's _status, the id).
        info = {**item.body, **{k: v for k, v in (record or {}).items() if v is not None}}
        # A 201's "process status" is not Amili's processing status (a payment to a closed
        # case is stored 'completed' and settled as an error): unread, it is not known.
        unread_completed = record is None and item.body.get(item.kind.status_field) == COMPLETED
        if unread_completed:
            del info[item.kind.status_field]
        settled = self._from_record(item.kind, info, written=not item.earlier,
                                    attempts=item.outcome.attempts,
                                    http_status=item.outcome.http_status)
        if unread_completed:
            settled.message = (f"stored (Amili answered {item.kind.status_field} "
                               "'completed'), but its processing status could not be read")
        settled.message = _join(settled.message, note)
        if item.earlier:
            settled.message = _join(settled.message, f"status read in run {self.run_id}")
        if item.held is not None:
            if settled.reason != "status_unknown":  # learned: journaled after the report
                with self._learned_lock:
                    self.learned.append(Learned(replace(
                        item.held, state=settled.state, reason=settled.reason,
                        message=settled.message, amili_id=settled.amili_id or item.amili_id),
                        settled))
            item.log.info("row.status", status=settled.state, reason=settled.reason,
                          amili_id=item.amili_id, detail=settled.message or None)
            return
        self.journal.finish(item.journal_id, settled)
        final = _outcome(item.outcome.index, settled, journal_id=item.journal_id)
        item.outcome.__dict__.update(final.__dict__)
        item.log.info("row.status", status=final.status, reason=final.reason,
                      amili_id=final.amili_id, detail=final.message or None)

    def _from_record(self, kind: Kind, info: dict[str, Any], *, written: bool, attempts: int,
                     http_status: int | None) -> Settlement:
        """The settlement for a record that exists in Amili, from its status fields.

        ``written``: info includes a write answer (whose ``_status`` must say OK before a
        bare ``_payment_status: completed`` is believed).
        """
        status = info.get("status")
        locale = info.get("status_reason_locale")
        kind_status = info.get(kind.status_field)
        reason: str | None
        if status in KNOWN_STATUSES:
            state = str(status)
            reason = {COMPLETED: None, WARNING: "api_warning", ERROR: "api_error"}[state]
            message = f"Amili: {state}{_paren(locale)}" if state != COMPLETED else ""
        elif status is not None:
            state, reason = WARNING, "status_unknown"
            message = (f"Amili stored the record but gave the status {status!r}{_paren(locale)}, "
                       "which amili-import does not know; check it in Amili")
        elif kind_status in KNOWN_STATUSES and (
                kind_status != COMPLETED or not written or info.get("_status") == "OK"):
            state = str(kind_status)
            reason = {COMPLETED: None, WARNING: "api_warning", ERROR: "api_error"}[state]
            message = (f"Amili: {kind.status_field} {state}{_paren(locale)}; no processing "
                       "status given")
        else:
            state, reason = WARNING, "status_unknown"
            message = ("Amili stored the record but gave no processing status "
                       f"(_status {info.get('_status')!r}, {kind.status_field} {kind_status!r}); "
                       "check it in Amili")
        return Settlement(
            state, reason=reason, http_status=http_status, attempts=attempts,
            amili_id=record_id(info),
            settled_amount=_decimal_text(info.get("settled_amount")),
            case_reference_number=_text(info.get("case_reference_number")),
            status_reason_locale=_text(locale), message=message)

    # -- read-back ----------------------------------------------------------------------------

    def _read_back_settled(self, kind: Kind, payload: dict[str, Any], key: str,
                           delays: tuple[float, ...], *, sent_after: str, last_sent: str,
                           rlog: Any) -> tuple[dict[str, Any] | None, bool, str]:
        """:meth:`_read_back`; when it finds nothing, once more when the last POST is
        ``settle_seconds`` old: only then is "not stored" concluded (a backend may still store
        a request whose answer was lost). A stop during the wait leaves it inconclusive."""
        found = self._read_back(kind, payload, key, delays, sent_after=sent_after)
        record, conclusive, _ = found
        wait = self.config.settle_seconds - _age_seconds(last_sent)
        if record is not None or not conclusive or wait <= 0:
            return found
        rlog.info("row.settle_wait", seconds=round(wait, 1))
        with self._slots.given_up():  # no request of ours in flight meanwhile
            stopped = self.stop.wait(wait)
        if stopped:
            return None, False, "the run stopped before the request was old enough to be sure"
        return self._read_back(kind, payload, key, (0.0,), sent_after=sent_after)

    def _read_back(self, kind: Kind, payload: dict[str, Any], key: str,
                   delays: tuple[float, ...], sent_after: str | None = None
                   ) -> tuple[dict[str, Any] | None, bool, str]:
        """Look for the record a lost POST may have stored (see :func:`readback_filters`).

        Every try runs the filters in order until one finds a match the journal does not
        already own and that Amili created after the POST could have been sent
        (``sent_after``, the journal's time of the row, less :data:`CLOCK_SKEW` for the two
        clocks): an identical record entered earlier by other means is not ours to claim.
        The newest such record is taken. One created earlier than that is not claimed, but
        it is no proof of "not stored" either (this machine's clock may run fast). "Not
        stored" is concluded only when, on the last try, the main filter answered and no
        fallback filter failed for a transient reason.

        Returns:
            (record or None, conclusive, why): conclusive is True when "None" means "not
            stored"; why says what failed otherwise.
        """
        by_invoice = not payload.get("case")
        no_such_case = False
        if by_invoice and not key.startswith("case:"):
            key, no_such_case = self._case_of(payload, key)
        filters = readback_filters(kind, payload, key)
        why = ""  # set when a try fails or cannot tell; "" when it just found nothing
        conclusive = False
        for delay in delays or (0.0,):
            if delay:
                time.sleep(delay)
            conclusive = True
            for number, where in enumerate(filters):
                try:
                    records = self.client.find(kind, where, max_pages=READBACK_PAGES)
                except Exception as exc:
                    # A fallback filter the API refuses outright (e.g. a field it does not
                    # filter on) cannot find anything; anything else leaves the doubt. The
                    # case filter of a row named by invoice number is never a mere fallback.
                    refused = isinstance(exc, ApiError) and not isinstance(exc, TransientApiError)
                    if number == 0 or not refused or "case" in where:
                        why = str(exc) or type(exc).__name__
                        conclusive = False
                    continue
                candidates, unsure = self._compare(kind, payload, records,
                                                   key.removeprefix("case:")
                                                   if key.startswith("case:") else None)
                if candidates or unsure:
                    known = self.journal.known_ids(record_id(r) or "" for r in
                                                   candidates + unsure)
                    ahead = _clock_ahead(self.client)
                    fresh = [r for r in candidates if _id_lower(r) not in known
                             and _created_after(r, sent_after, ahead)]
                    if fresh:
                        return max(fresh, key=_created_key), True, ""
                    older = [r for r in candidates if _id_lower(r) not in known]
                    if older:
                        # Identical, nobody's in the journal, but created before this row was
                        # sent by our clock: entered by other means, or ours and this clock
                        # runs fast. Neither is "not stored": nothing is sent again.
                        created = older[-1].get("_created")
                        why = (f"Amili holds an identical record {record_id(older[-1])} created "
                               f"{created}, over an hour before this row was sent ({sent_after}"
                               f" by this machine's clock, {ahead:+.0f} s against Amili's): "
                               "not claimed, as it may have been entered by other means; check "
                               "it in Amili")
                        conclusive = False
                    if any(_id_lower(r) not in known and _created_after(r, sent_after, ahead)
                           for r in unsure):
                        # A record that may be this row's but cannot be compared: "not
                        # stored" cannot be concluded, and nothing is sent again.
                        why = (f"Amili holds record {record_id(unsure[0])} that may be this "
                               "row's, but it cannot be told apart: its amount, dates, case or "
                               "invoice number are missing or not understood; check it in "
                               "Amili")
                        conclusive = False
        if by_invoice and not key.startswith("case:") and not no_such_case:
            # The record may be stored without the invoice number (only its case): without
            # the case id, "not found" proves nothing.
            return None, False, f"the case of invoice {payload.get('invoice_number')!r} could " \
                                "not be looked up"
        return None, conclusive, why

    def _compare(self, kind: Kind, payload: dict[str, Any], records: list[dict[str, Any]],
                 case_id: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Split the records a filter found into (matching, cannot tell); the rest differ.

        A list answer may leave fields out (an Eve projection): such a record is read whole
        by its id before it is judged.
        """
        same: list[dict[str, Any]] = []
        unsure: list[dict[str, Any]] = []
        for record in records:
            rid = record_id(record)
            if rid is None:
                continue
            verdict = matches(kind, payload, record, case_id)
            if verdict is None:
                with suppress(Exception):  # unread, it stays "cannot tell"
                    record = self.client.get(kind, rid) or record
                verdict = matches(kind, payload, record, case_id)
            if verdict:
                same.append(record)
            elif verdict is None:
                unsure.append(record)
        return same, unsure

    def _case_of(self, payload: dict[str, Any], key: str) -> tuple[str, bool]:
        """Look up the case of a row named by invoice number (``GET /cases?where=...``).

        Returns:
            (case key, no such case): ``case:<id>`` when exactly one case matches; the key
            unchanged with True when none does (a POST for it cannot have been stored).
        """
        try:
            ids = self.client.case_ids_of_invoice(payload.get("creditor"),
                                                  payload.get("invoice_number"))
        except Exception:
            return key, False  # the lookup failed: "not found" later proves nothing
        if len(ids) == 1:
            return f"case:{ids[0].lower()}", False
        return key, not ids


CLOCK_SKEW = timedelta(hours=1)  # generous: a missed record would be posted twice
# The most this machine's clock may be off the API's for the read-back to allow for it (a
# clock kept in Swedish time but read as UTC: one or two hours); beyond it the read-back
# claims nothing created before the send by this clock, and leaves the row unknown.
MAX_CLOCK_OFFSET = 6 * 3600.0


def _clock_ahead(client: Any) -> float:
    """Seconds this machine's clock runs ahead of the API's: from the answers to POSTs (never
    cached), else from other answers that came from no cache (no ``Age``); 0 when none told,
    or when it is more than :data:`MAX_CLOCK_OFFSET` (then nothing is claimed for it)."""
    ahead = getattr(client, "clock_offset", None)
    if ahead is None:
        ahead = getattr(client, "read_clock_offset", None)
    return ahead if ahead is not None and abs(ahead) <= MAX_CLOCK_OFFSET else 0.0


def _created_after(record: dict[str, Any], sent_after: str | None, ahead: float = 0.0) -> bool:
    """Whether Amili created the record after our POST could have been sent (unknown: yes).

    ``ahead``: seconds this machine's clock runs ahead of the API's (``sent_after`` is by
    this machine's clock, ``_created`` by the API's)."""
    created = parse_instant(record.get("_created"))
    sent = parse_instant(sent_after)
    if created is None or sent is None:
        return True
    return created >= sent - CLOCK_SKEW - timedelta(seconds=ahead)


def _id_lower(record: dict[str, Any]) -> str:
    return (record_id(record) or "").lower()


def _created_key(record: dict[str, Any]) -> float:
    created = parse_instant(record.get("_created"))
    return created.timestamp() if created is not None else 0.0


def readback_filters(kind: Kind, payload: dict[str, Any], key: str = "") -> list[dict[str, Any]]:
    """The Eve ``where`` filters that find the records a row may have created, in order.

    The main one is ``{creditor, case or invoice_number, + the kind's reference when set}``.
    A row that names its case by invoice number may be stored without that field (Amili
    resolves it to the case and shows ``case_invoice_number``), so such rows also try
    ``case_invoice_number`` and, when the plan resolved the case (``key`` ``case:<id>``),
    the case id. Amounts and dates are matched client-side (:func:`matches`).

    Args:
        kind: the row's kind.
        payload: the row's body.
        key: the row's case key.

    Returns:
        One or more filters.
    """
    base: dict[str, Any] = {"creditor": payload.get("creditor")}
    if kind.reference and payload.get(kind.reference):
        base[kind.reference] = payload[kind.reference]
    if payload.get("case"):
        return [{**base, "case": payload["case"]}]
    filters = [{**base, "invoice_number": payload.get("invoice_number")},
               {**base, "case_invoice_number": payload.get("invoice_number")}]
    if key.startswith("case:"):
        filters.append({**base, "case": key.removeprefix("case:")})
    return filters


def _awaiting(row: PlannedRow, pending: RowRecord, which: str) -> tuple[Settlement, Outcome]:
    """Not posted while ``pending`` (a row that may be stored) awaits its read-back."""
    state = "in flight" if pending.state != UNKNOWN else "of unknown outcome"
    settlement = Settlement(FAILED, retryable=True, reason="outcome_unknown", ref_row=pending.id,
                            message=f"not posted: {which} is {state}; it is read back on the "
                                    "next run, then this row can be retried")
    return settlement, _outcome(row.index, settlement)


def _differences(before: dict[str, Any], now: dict[str, Any]) -> str:
    """Which fields a row sends differently now: ``amount 10 then, 10.5 now``."""
    changed = [f"{k} {before.get(k)!r} then, {now.get(k)!r} now"
               for k in dict.fromkeys([*before, *now]) if before.get(k) != now.get(k)]
    return "; ".join(changed) or "the same values"


def _shown_by(rows: list[PlannedRow]) -> Callable[[RowRecord], bool]:
    """Whether a row of an earlier run may be shown in this run's report: a row of this run
    from the same place of the same file, or with its fingerprint, may be reported
    ``already_posted`` with its outcome (see ``_decide``). Its status is then read before the
    posting; one that no row ends up naming (``--allow-duplicates`` posted the row anew, or
    another done row was named) is handed over as an earlier row all the same."""
    fingerprints = {row.fingerprint for row in rows}
    places = {(row.file_sha256, row.sheet, row.row, row.kind.name) for row in rows}

    def shown(rec: RowRecord) -> bool:
        return rec.fingerprint in fingerprints or (
            rec.ref.file_sha256, rec.ref.sheet, rec.ref.row, rec.kind) in places

    return shown


def _same_file(sha_a: str, name_a: str, sha_b: str, name_b: str) -> bool:
    """The same content, or the same file name (see :func:`_same_name`)."""
    return sha_a == sha_b or _same_name(name_a, name_b)


def _same_name(name_a: str, name_b: str) -> bool:
    """The same file name, the drop folder's archive prefix aside, and however its letters are
    composed (a Mac writes "å" as "a" and a ring: NFD; Windows as one character: NFC)."""
    return _name_key(name_a) == _name_key(name_b)


def _name_key(name: str) -> str:
    return unicodedata.normalize("NFC", _ARCHIVED.sub("", name))


def _from_here(earlier: RowRecord, row: PlannedRow) -> bool:
    """Whether a journal row comes from the same file as ``row``: the same content, or the same
    file name (the file was edited and run again, and rows below an edit moved), also as the
    drop folder archives it (``20261122T010203Z--name``). A failed-rows file is a file of its
    own: its rows are other rows (a duplicate refused in the first file may be a second
    payment, which the failed-rows file run with --allow-duplicates posts)."""
    return _same_file(earlier.ref.file_sha256, earlier.ref.file_name, row.file_sha256,
                      row.file_name)


def _same_row(earlier: RowRecord, row: PlannedRow) -> bool:
    """Whether a journal row is this very row: the same file content, or the same file name
    (as :func:`_from_here`) and the same sheet and row. Another row of the same name (a fixed
    name exported every night, an edit that moved rows) is only identical by its values."""
    return earlier.ref.file_sha256 == row.file_sha256 or (
        _from_here(earlier, row) and (earlier.ref.sheet, earlier.ref.row) == (row.sheet, row.row))


_ARCHIVED = re.compile(r"^\d{8}T\d{6}Z(?:-\d+)?--")


def _covers(earlier: RowRecord, row: PlannedRow) -> bool:
    """Whether an earlier journal row with the same fingerprint already stands for this row.

    It does when it is done and comes from the same file (:func:`_from_here`), or was skipped
    in a file of the same name because another done row covers it (that file run again:
    its rows judged already posted stay so). ``--allow-duplicates`` never re-posts such a
    row: it only lets through an identical row of a file of another name (a row copied alone
    into a new file; two identical rows in one file are a duplicate validation refuses).
    """
    if earlier.done:
        return _from_here(earlier, row)
    return (earlier.state == SKIPPED and earlier.ref_row is not None
            and _same_name(earlier.ref.file_name, row.file_name))


def _identical(earlier: RowRecord) -> str:
    """The message of a row not sent because a done row of another file has its values."""
    return (f"identical to a row already posted in run {earlier.run_id}, "
            f"{earlier.ref.describe()}, not sent again")


def _separate_hint(kind_name: str) -> str:
    """What to do about a row not sent because an identical one was posted: nothing, for a
    repeated row; a separate event is told apart by the kind's reference (no flag that would
    let other rows through)."""
    reference = KINDS[kind_name].reference
    if reference is None:
        return "Nothing to do: a case is cancelled once"
    return ("Nothing to do if this file repeats rows already sent (an overlapping export, a "
            "corrected copy). Only if it really is a separate event with the same values, give "
            f"it a {reference} that tells it apart (the bank's or the ledger's own id) and run "
            "it again")


class _Slots:
    """The posting's concurrency: a worker posts only while it holds a slot. One waiting out a
    settle time gives its slot up (a spare worker takes it); coming back, it goes before the
    workers that would take a free slot, and a worker between two rows lets it in."""

    def __init__(self, count: int) -> None:
        self._cond = threading.Condition()
        self._free = count
        self._resuming = 0
        self._local = threading.local()

    def _take(self, resuming: bool) -> None:
        with self._cond:
            self._resuming += resuming
            self._cond.wait_for(lambda: self._free > 0 and (resuming or not self._resuming))
            self._resuming -= resuming
            self._free -= 1

    def _give(self) -> None:
        with self._cond:
            self._free += 1
            self._cond.notify_all()

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold a slot for a worker's whole life."""
        self._take(resuming=False)
        self._local.held = True
        try:
            yield
        finally:
            self._local.held = False
            self._give()

    @contextmanager
    def given_up(self) -> Iterator[None]:
        """Give this worker's slot up for a while (a no-op outside a posting worker)."""
        if not getattr(self._local, "held", False):
            yield
            return
        self._give()
        try:
            yield
        finally:
            self._take(resuming=True)

    def let_resume(self) -> None:
        """Between two rows: if a worker wants its slot back and none is free, hand ours
        over for a moment and queue behind it."""
        if self._resuming:  # read without the lock: a hint, checked again under it
            with self._cond:
                if not self._resuming or self._free:
                    return
            self._give()
            self._take(resuming=False)


class _LookAlikes:
    """Holds on look-alike keys (see :func:`look_alike`): shared by rows whose case is known,
    taken alone by a row whose case is not, so that a read-back after a lost answer can meet
    a look-alike row's record only once that row's outcome (and id) is in the journal. A row
    waiting to be alone goes before rows that would share, so it is not starved; a worker
    gives its posting slot up while it waits here (a holder may be waiting for a slot)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared: dict[str, int] = {}  # key -> rows holding it shared
        self._alone: set[str] = set()  # keys held alone
        self._waiting: dict[str, int] = {}  # key -> rows waiting to hold it alone

    def _free_for(self, key: str, alone: bool) -> bool:
        if key in self._alone:
            return False
        return key not in self._shared if alone else key not in self._waiting

    def _enter(self, key: str, alone: bool) -> None:
        if alone:
            self._alone.add(key)
        else:
            self._shared[key] = self._shared.get(key, 0) + 1

    @contextmanager
    def hold(self, key: str, alone: bool, slots: _Slots) -> Iterator[None]:
        with self._cond:
            entered = self._free_for(key, alone)
            if entered:
                self._enter(key, alone)
            elif alone:
                self._waiting[key] = self._waiting.get(key, 0) + 1
        if not entered:
            with slots.given_up(), self._cond:
                self._cond.wait_for(lambda: self._free_for(key, alone))
                if alone:
                    self._waiting[key] -= 1
                    if not self._waiting[key]:
                        del self._waiting[key]
                self._enter(key, alone)
        try:
            yield
        finally:
            with self._cond:
                if alone:
                    self._alone.discard(key)
                else:
                    self._shared[key] -= 1
                    if not self._shared[key]:
                        del self._shared[key]
                self._cond.notify_all()


# The fields every row of a kind sends, so every read-back compares them (an optional field a
# row leaves out, such as its reference, is not compared: that row matches any value of it).
_ALWAYS_COMPARED = ("creditor", "amount", "bank_transaction_date")


def look_alike(kind: Kind, payload: dict[str, Any]) -> str:
    """What a read-back always sees of a row, apart from how it names its case: the kind and
    the fields every row of it sends, compared as :func:`matches` compares them.

    Rows with different keys can never take each other's record. Rows with the same key
    might (a payment entered once by case id and once by invoice number, one without a
    reference): the engine never has two such rows in flight at once when one of them names
    its case by an invoice it could not look up, and reconciles them one after another.
    """
    parts = [kind.name]
    for name in _ALWAYS_COMPARED:
        value = payload.get(name)
        if value is None:
            continue
        if name == "amount":
            value = _decimal(value)
        elif name in kind.dates:
            instant = parse_instant(value)
            value = instant.timestamp() if instant is not None else value
        else:
            value = str(value).lower()
        parts.append(f"{name}={str(value).strip()}")
    return "\x1f".join(parts)


def matches(kind: Kind, payload: dict[str, Any], record: dict[str, Any],
            case_id: str | None = None) -> bool | None:
    """Whether a stored record is what this payload would have created.

    Every field sent must be equal where the record has it (amounts as decimals, dates as
    instants in RFC 1123 or ISO 8601, ids case-insensitively); amount kinds need the
    record's amount, and a row with a bank transaction date the record's (what tells two
    look-alike payments apart). The record must also show whose it is: its creditor, and
    its case (a row named by case id), or its invoice number, ``case_invoice_number`` or
    case (a row named by invoice number, whose case is ``case_id`` when the plan knows it).
    A server that ignores the read-back's filter answers with other cases' records too.

    Args:
        kind: the row's kind.
        payload: the row's body.
        record: one record from the API.
        case_id: the case of a row named by invoice number, when known.

    Returns:
        True when it matches, False when a field differs, None when it cannot be told (the
        amount or the record's case missing, or an amount or date the API wrote in a form
        not understood).
    """
    verdict: bool | None = True
    if record.get("creditor") is None:
        verdict = None
    if payload.get("case"):
        if record.get("case") is None:
            verdict = None
    elif payload.get("invoice_number"):
        shown = record.get("invoice_number") or record.get("case_invoice_number")
        if shown is not None:
            if str(shown).strip() != str(payload["invoice_number"]).strip():
                return False
        elif case_id and record.get("case") is not None:
            if (id_text(record["case"]) or "").lower() != case_id.lower():
                return False
        else:
            verdict = None
    if kind.amount and record.get("amount") is None:
        verdict = None
    if payload.get("bank_transaction_date") is not None and \
            record.get("bank_transaction_date") is None:
        verdict = None  # left out of a list answer: read the record whole before judging
    for name, sent in payload.items():
        if sent is None or name not in record or record[name] is None:
            continue
        if name in READ_ONLY_FIELDS:
            # Amili sets these itself (account from the case or creditor, whatever an older
            # API generation made us send): what it shows tells nothing about this row.
            continue
        stored = record[name]
        if name == "amount":
            theirs = _decimal(stored)
            if theirs is None:
                verdict = None
            elif _decimal(sent) != theirs:
                return False
        elif name in kind.dates:
            theirs_at = parse_instant(stored)
            if theirs_at is None:
                verdict = None
            elif parse_instant(sent) != theirs_at:
                return False
        elif name in ID_FIELDS:
            if (id_text(stored) or "").lower() != str(sent).lower():
                return False
        elif str(sent).strip() != str(stored).strip():
            return False
    return verdict


# --- helpers -----------------------------------------------------------------------------------


def report_status(state: str) -> str:
    """The report's status for a journal state: completed, warning or error (a row not
    stored, or of unknown outcome, is an error with its reason)."""
    return state if state in KNOWN_STATUSES else ERROR


def _outcome(index: int, s: Settlement, *, journal_id: int | None = None) -> Outcome:
    """The outcome of a row this run settled itself (posted, or journaled as not sent):
    ``posted`` follows from its state (see :class:`Outcome`)."""
    status = report_status(s.state)
    return Outcome(
        index=index, status=status, reason=s.reason, message=s.message or "",
        retryable=s.retryable, amili_id=s.amili_id, settled_amount=s.settled_amount,
        case_reference_number=s.case_reference_number,
        status_reason_locale=s.status_reason_locale, http_status=s.http_status,
        attempts=s.attempts, posted=s.state not in (FAILED, UNKNOWN), journal_id=journal_id)


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)).normalize()
    except (InvalidOperation, ValueError):
        return None


def _decimal_text(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None if value is None else str(value)
    number = _decimal(value)
    return format(number, "f") if number is not None else str(value)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _paren(text: str | None) -> str:
    return f" ({text})" if text else ""


def _join(*parts: str | None) -> str:
    return "; ".join(p for p in parts if p)


def _age_seconds(stamp: str) -> float:
    try:
        then = datetime.fromisoformat(stamp)
    except ValueError:
        return 0.0
    return (datetime.now(then.tzinfo) - then).total_seconds()


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` (in-flight requests finish); a second one raises at once.

    Only the main thread may install handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # A signal the process was started ignoring (nohup, a shell's background job) stays so.
    previous = {sig: old for sig in (signal.SIGINT, signal.SIGTERM)
                if (old := signal.getsignal(sig)) is not signal.SIG_IGN}

    def handler(signum: int, frame: Any) -> None:
        # No logging here: the main thread may hold the log's lock when the signal lands.
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
