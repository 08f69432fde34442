"""Posting benchmark: `amili-import run` against the sandbox with 20 ms added latency, at
concurrency 16, journal on, against the seeds' naive loop on the same sandbox in the same run.

- Ours: `amili-import run FILE --api-url URL --concurrency 16 --state-dir DIR --report-dir DIR`
  with `AMILI_ACCESS_TOKEN` set, in a fresh process. Two rates: end to end (process start to
  exit: imports, validation, journal, report included) and the posting phase (first to last
  record stored, from the sandbox's own counter sampled every 20 ms). Client CPU per row is the
  child's user+sys CPU (from `os.wait4`) over the rows.
- Little's bound: at most `concurrency / latency` = 16 / 0.020 s = 800 rows/s can be in flight.
- Baseline: the seeds' naive loop, one `requests.post(url, json=..., headers=...)` per row (a new
  connection each time), sequential, in its own process, timed over the loop alone.
- Reference (not a goal): what `requests` itself reaches here, 16 threads sharing one Session
  (pool of 16), bodies built from the CSV, no journal, no validation, no report; and the round
  trip of one request at a time on a kept-alive connection, which says how far above the added
  20 ms this machine's answers come back (the bound that can really be reached is
  16 / that round trip).
- Afterwards the sandbox must hold exactly N more payments, each reference once.

    python -m bench.post_bench naive URL FILE    # the baseline alone (token from the env)
    python -m bench.post_bench ceiling URL FILE  # the bare requests client alone
"""

from __future__ import annotations

import csv
import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import gen
from bench.run import Proc, Skipped, goal, run_process, tool

ROWS = 4000
NAIVE_ROWS = 300
QUICK_ROWS, QUICK_NAIVE_ROWS = 400, 40
PROBES = 100  # sequential requests timing the round trip
CASES = 1000
CONCURRENCY = 16
LATENCY_MS = 20.0
CREDITOR = "65f0c0ffee00000000000b0c"
PAYMENTS = "creditor--payments"


def start_sandbox(cases: list[dict[str, Any]], latency_ms: float) -> Any:
    """Start the sandbox in this process on a free port, seeded with `cases`.

    Args:
        cases: seed cases (see `gen.sandbox_cases`).
        latency_ms: latency added to every API request.

    Returns:
        The running sandbox (`.url`, `.token`, `.state`, `.stop()`).
    """
    import secrets

    try:
        from importer.sandbox.faults import Faults
        from importer.sandbox.server import SandboxOptions, start
    except ImportError as exc:
        raise Skipped(f"the sandbox is not there yet ({exc})") from None
    # A fresh random token for this run only; it is never printed or stored.
    return start(SandboxOptions(port=0, cases=cases, token=secrets.token_urlsafe(24),
                                faults=Faults(latency_ms=latency_ms)))


class Sampler(threading.Thread):
    """Samples the sandbox's stored-payments count every 20 ms (read in-process, no HTTP)."""

    def __init__(self, sandbox: Any) -> None:
        super().__init__(daemon=True)
        self.sandbox = sandbox
        self.samples: list[tuple[float, int]] = []
        self.halt = threading.Event()

    def count(self) -> int:
        """Payments stored in the sandbox right now."""
        return int(self.sandbox.state.count(PAYMENTS))

    def run(self) -> None:
        """Sample until told to stop."""
        while not self.halt.is_set():
            self.samples.append((time.perf_counter(), self.count()))
            self.halt.wait(0.02)

    def window(self, before: int, rows: int) -> float | None:
        """Seconds from the first record stored to the last (`None` if not all were seen)."""
        first = next((t for t, n in self.samples if n > before), None)
        last = next((t for t, n in self.samples if n >= before + rows), None)
        if first is None or last is None or last <= first:
            return None
        # The first sample above `before` already holds some rows: count from the sample
        # before it, so the window is never shorter than the truth.
        earlier = [t for t, n in self.samples if t < first]
        return last - (earlier[-1] if earlier else first)


def references(url: str, token: str) -> Counter[str]:
    """Every stored payment's `creditor_payment_reference`, counted, read through the API."""
    import requests

    seen: Counter[str] = Counter()
    with requests.Session() as session:
        page = 1
        while True:
            answer = session.get(f"{url}/{PAYMENTS}", params={"max_results": 100, "page": page},
                                 headers={"X-API-Key": token}, timeout=30)
            answer.raise_for_status()
            items = answer.json()["_items"]
            seen.update(str(i.get("creditor_payment_reference")) for i in items)
            if len(items) < 100:
                return seen
            page += 1


def _report_totals(report_dir: Path) -> dict[str, int] | None:
    path = report_dir / "report.json"
    if not path.exists():
        return None
    totals = json.loads(path.read_text()).get("totals")
    return {str(k): int(v) for k, v in totals.items()} if isinstance(totals, dict) else None


def run_ours(url: str, token: str, file: Path, work: Path) -> Proc:
    """`amili-import run` on `file` at concurrency 16 with a fresh state dir (journal on)."""
    state, report = work / "state", work / "report"
    # --state-dir and --log-format are options of the command group, so they go before `run`.
    proc = run_process([tool("amili-import"), "--log-format", "json", "--state-dir", str(state),
                        "run", str(file), "--api-url", url, "--concurrency", str(CONCURRENCY),
                        "--report-dir", str(report)],
                       work / "run.log", env={"AMILI_ACCESS_TOKEN": token})
    if proc.exit_code not in (0, 1):
        if any(s in proc.tail() for s in ("No such command", "No module named")):
            raise Skipped(f"amili-import run is not ready yet:\n{proc.tail(3)}")
        raise RuntimeError(f"amili-import run exited {proc.exit_code}:\n{proc.tail()}")
    return proc


def run_loop(which: str, url: str, token: str, file: Path,
             work: Path) -> tuple[Proc, dict[str, Any]]:
    """A reference loop (`naive` or `ceiling`) in its own process; the process and its report."""
    root = Path(__file__).resolve().parent.parent
    proc = run_process([sys.executable, "-m", "bench.post_bench", which, url, str(file)],
                       work / f"{which}.log", env={"AMILI_ACCESS_TOKEN": token}, cwd=root)
    if proc.exit_code != 0:
        raise RuntimeError(f"{which} loop failed (exit {proc.exit_code}):\n{proc.tail()}")
    return proc, json.loads(Path(proc.log).read_text().strip().splitlines()[-1])


def run(out: Path, quick: bool = False) -> dict[str, Any]:
    """The posting benchmark.

    Args:
        out: the bench output folder (`out/post` holds files, state, reports, logs).
        quick: fewer rows, to check the harness.

    Returns:
        Result dict with `tables`, `goals`, `notes` (and `partial` when `run` is missing).
    """
    import shutil

    rows, naive_rows = (QUICK_ROWS, QUICK_NAIVE_ROWS) if quick else (ROWS, NAIVE_ROWS)
    work = out / "post"
    shutil.rmtree(work, ignore_errors=True)  # a fresh journal: nothing may count as done already
    work.mkdir(parents=True)
    cases = gen.sandbox_cases(CREDITOR, CASES)
    ids = [str(c["_id"]) for c in cases]
    ours_file = gen.posting_csv(work, "payments-post.csv", CREDITOR, ids, rows, seed=3)
    naive_file = gen.posting_csv(work, "payments-naive.csv", CREDITOR, ids, naive_rows, seed=4)
    ceiling_file = gen.posting_csv(work, "payments-ceiling.csv", CREDITOR, ids, rows + PROBES,
                                   seed=5)
    light_file = gen.posting_csv(work, "payments-urllib3.csv", CREDITOR, ids, rows + PROBES,
                                 seed=6)
    sandbox = start_sandbox(cases, LATENCY_MS)
    missing: str | None = None
    proc: Proc | None = None
    try:
        url, token = sandbox.url.rstrip("/"), sandbox.token
        sampler = Sampler(sandbox)
        before = sampler.count()
        requests_before = Counter(sandbox.state.snapshot()["requests"])
        # This process's CPU while ours runs is the sandbox's (the sampler's share is tiny):
        # it tells whether the sandbox, not the client, was the bottleneck.
        cpu_before = sum(os.times()[:2])
        sampler.start()
        try:
            proc = run_ours(url, token, ours_file.path, work)
        except Skipped as exc:  # still measure the naive loop, so the run is not wasted
            missing = str(exc)
        finally:
            sampler.halt.set()
            sampler.join()
        sandbox_cpu = sum(os.times()[:2]) - cpu_before
        requests_made = Counter(sandbox.state.snapshot()["requests"]) - requests_before
        stored = sampler.count() - before
        window = sampler.window(before, rows)
        naive_before = sampler.count()
        naive_proc, naive = run_loop("naive", url, token, naive_file.path, work)
        naive_stored = sampler.count() - naive_before
        ceiling_before = sampler.count()
        ceiling_proc, ceiling = run_loop("ceiling", url, token, ceiling_file.path, work)
        ceiling_stored = sampler.count() - ceiling_before
        light_before = sampler.count()
        light_proc, light = run_loop("ceiling-urllib3", url, token, light_file.path, work)
        light_stored = sampler.count() - light_before
        seen = references(url, token)
    finally:
        sandbox.stop()
    rtt_zero = _round_trip_without_latency(cases)
    bound = CONCURRENCY / (LATENCY_MS / 1000)
    naive_rate = naive["rows"] / naive["seconds"]
    table = [{
        "client": "naive loop (requests.post per row)", "rows": naive["rows"],
        "stored": naive_stored, "posting_rows_per_s": naive_rate,
        "end_to_end_rows_per_s": naive["rows"] / naive_proc.seconds, "wall_s": naive_proc.seconds,
        "cpu_ms_per_row": 1000 * (naive_proc.cpu_user + naive_proc.cpu_sys) / naive["rows"],
        "peak_rss_mb": naive_proc.peak_rss_mb, "exit": naive_proc.exit_code}]
    ceiling_rate = ceiling["rows"] / ceiling["seconds"]
    table.append({
        "client": f"bare requests (c={CONCURRENCY}, no journal)", "rows": ceiling["rows"],
        "stored": ceiling_stored - PROBES, "posting_rows_per_s": ceiling_rate,
        "end_to_end_rows_per_s": None,  # its wall time holds the one-at-a-time probes
        "wall_s": ceiling_proc.seconds,
        "cpu_ms_per_row": 1000 * (ceiling_proc.cpu_user + ceiling_proc.cpu_sys)
        / (ceiling["rows"] + PROBES),
        "peak_rss_mb": ceiling_proc.peak_rss_mb, "exit": ceiling_proc.exit_code})
    light_rate = light["rows"] / light["seconds"]
    table.append({
        "client": f"bare urllib3 (c={CONCURRENCY}, no journal)", "rows": light["rows"],
        "stored": light_stored - PROBES, "posting_rows_per_s": light_rate,
        "end_to_end_rows_per_s": None, "wall_s": light_proc.seconds,
        "cpu_ms_per_row": 1000 * (light_proc.cpu_user + light_proc.cpu_sys)
        / (light["rows"] + PROBES),
        "peak_rss_mb": light_proc.peak_rss_mb, "exit": light_proc.exit_code})
    checks = [{"check": "naive loop: HTTP statuses", "value": json.dumps(naive["statuses"]),
               "ok": naive["statuses"].get("201") == naive["rows"] == naive_stored},
              {"check": "bare requests: HTTP statuses", "value": json.dumps(ceiling["statuses"]),
               "ok": ceiling["statuses"].get("201") == ceiling["rows"] + PROBES
               == ceiling_stored},
              {"check": "bare urllib3: HTTP statuses", "value": json.dumps(light["statuses"]),
               "ok": light["statuses"].get("201") == light["rows"] + PROBES == light_stored}]
    rtt = ceiling["round_trip_ms"]
    reachable = CONCURRENCY / (rtt / 1000)
    notes = [f"Little's bound = {CONCURRENCY} / {LATENCY_MS / 1000} s = {bound:.0f} rows/s; "
             "posting rate = rows / (first to last record stored, sampled every 20 ms); "
             "end to end = process start to exit (start-up, validation, journal, report); "
             "naive: the loop alone",
             f"round trip of one request at a time here (median of {PROBES}, kept-alive "
             f"connection, 20 ms added): {rtt:.1f} ms, so at most {CONCURRENCY} / {rtt:.1f} ms "
             f"= {reachable:.0f} rows/s can be reached on this machine",
             f"the same round trip with no latency added: {rtt_zero:.2f} ms, so adding the "
             f"sandbox's 20 ms sleep adds {rtt - rtt_zero:.1f} ms to a round trip here",
             f"bare urllib3 (requests' own layers left out, a lighter client): "
             f"{light_rate:.0f} rows/s, {light_rate / ceiling_rate:.2f} of bare requests' "
             f"{ceiling_rate:.0f}"]
    goals = []
    if proc is not None:
        posting_rate = rows / window if window else None
        cpu = proc.cpu_user + proc.cpu_sys
        table.insert(0, {
            "client": f"amili-import run (c={CONCURRENCY}, journal)", "rows": rows,
            "stored": stored, "posting_rows_per_s": posting_rate,
            "end_to_end_rows_per_s": rows / proc.seconds, "wall_s": proc.seconds,
            "cpu_ms_per_row": 1000 * cpu / rows, "peak_rss_mb": proc.peak_rss_mb,
            "exit": proc.exit_code})
        ours_refs = [f"BENCH-3-{i:07d}" for i in range(rows)]
        twice = sum(1 for r in ours_refs if seen[r] > 1)
        lost = sum(1 for r in ours_refs if seen[r] == 0)
        totals = _report_totals(work / "report")
        checks[:0] = [
            {"check": f"sandbox stored exactly {rows} records from our run", "value": stored,
             "ok": stored == rows},
            {"check": "our references stored more than once", "value": twice, "ok": twice == 0},
            {"check": "our references not stored", "value": lost, "ok": lost == 0},
            {"check": f"report totals (expect completed = {rows})", "value": json.dumps(totals),
             "ok": (totals or {}).get("completed") == rows}]
        if posting_rate:
            notes.append(f"posting rows/s, ours / naive = {posting_rate / naive_rate:.1f}x; "
                         f"ours / bare requests = {posting_rate / ceiling_rate:.2f}; "
                         f"bare requests / Little's bound = {ceiling_rate / bound:.3f}")
        notes.append(f"end to end (process start to exit: start-up, validation, the status "
                     f"reads after the posting, reports) on {rows} rows: "
                     f"{rows / proc.seconds:.0f} rows/s = {rows / proc.seconds / bound:.3f} of "
                     "Little's bound; a reference: the goal is the posting rate, the rate "
                     "Little's bound is about")
        notes.append("requests our run made: " + ", ".join(
            f"{k} {v}" for k, v in sorted(requests_made.items())))
        notes.append(f"sandbox (this process) CPU during our run: {sandbox_cpu:.1f} s over "
                     f"{proc.seconds:.1f} s wall ({sandbox_cpu / proc.seconds:.0%} of one core); "
                     f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        goals = [
            goal("posting rows/s / Little's bound (800)",
                 posting_rate / bound if posting_rate else None, 0.85),
            goal("posting: every row stored exactly once, reported completed",
                 float(all(c["ok"] for c in checks[:4])), 1.0),
        ]
    if not all(c["ok"] for c in checks):
        notes.append(f"CHECK FAILED; see {work}/run.log, naive.log and report/")
    return {"tables": {"posting (20 ms added latency)": table, "checks": checks},
            "goals": goals, "notes": notes, "partial": missing}


def _round_trip_without_latency(cases: list[dict[str, Any]]) -> float:
    """Median ms of `PROBES` sequential POSTs to a fresh sandbox that adds no latency."""
    import statistics

    import requests

    sandbox = start_sandbox(cases, 0.0)
    trips = []
    try:
        with requests.Session() as session:
            for i in range(PROBES):
                body = {"creditor": CREDITOR, "case": str(cases[i % len(cases)]["_id"]),
                        "currency": "SEK", "amount": 1.5,
                        "bank_transaction_date": "Mon, 02 Nov 2026 10:00:00 GMT",
                        "creditor_payment_reference": f"PROBE-{i}", "origin": "creditor_system"}
                start = time.perf_counter()
                answer = session.post(f"{sandbox.url.rstrip('/')}/{PAYMENTS}", json=body,
                                      headers={"X-API-Key": sandbox.token}, timeout=30)
                trips.append(time.perf_counter() - start)
                answer.raise_for_status()
    finally:
        sandbox.stop()
    return 1000 * statistics.median(trips)


def naive_loop(url: str, file: Path, token: str) -> dict[str, Any]:
    """The seeds' way: for each row, `requests.post(..., json=row, headers={"X-API-Key": t})`.

    No session (a new connection per row), no retries, sequential: what the Amili guides show.

    Returns:
        Rows posted, the loop's seconds, and the count of each HTTP status.
    """
    import requests

    with file.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    statuses: Counter[str] = Counter()
    start = time.perf_counter()
    for row in rows:
        body: dict[str, Any] = {k: v for k, v in row.items() if v}
        body["amount"] = float(body["amount"])
        response = requests.post(f"{url}/{PAYMENTS}", json=body,
                                 headers={"X-API-Key": token}, timeout=30)
        statuses[str(response.status_code)] += 1
    return {"rows": len(rows), "seconds": time.perf_counter() - start, "statuses": statuses}


def ceiling_loop(url: str, file: Path, token: str, client: str = "requests") -> dict[str, Any]:
    """What an HTTP client alone reaches: after `PROBES` rows one at a time (their median round
    trip reported), the other rows from 16 threads sharing one pool of 16 connections; bodies
    built from the CSV, no journal, no validation, no report.

    Args:
        url: the sandbox.
        file: the rows.
        token: the access token.
        client: ``requests`` (one Session), or ``urllib3`` (one PoolManager: the library
            requests is built on, without requests' own layers; a lighter client).

    Returns:
        Rows posted by the threads, their seconds, the median round trip (ms), the statuses.
    """
    import statistics

    with file.open(newline="", encoding="utf-8") as fh:
        bodies = [json.dumps({**{k: v for k, v in row.items() if v},
                              "amount": float(row["amount"])})
                  for row in csv.DictReader(fh)]
    statuses: Counter[str] = Counter()
    headers = {"X-API-Key": token, "Content-Type": "application/json"}
    take = threading.Lock()
    send = _sender(client, f"{url}/{PAYMENTS}", headers)

    def post(body: str) -> None:
        status = send(body)
        with take:
            statuses[str(status)] += 1

    trips = []
    for body in bodies[:PROBES]:
        start = time.perf_counter()
        post(body)
        trips.append(time.perf_counter() - start)
    rest = iter(bodies[PROBES:])

    def worker() -> None:
        while True:
            with take:
                body = next(rest, None)
            if body is None:
                return
            post(body)

    threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    return {"rows": len(bodies) - PROBES, "seconds": seconds, "statuses": statuses,
            "round_trip_ms": 1000 * statistics.median(trips)}


def _sender(client: str, url: str, headers: dict[str, str]) -> Any:
    """A function POSTing one body with `client` (a pool of `CONCURRENCY`), giving the status."""
    if client == "urllib3":
        import urllib3

        pool = urllib3.PoolManager(maxsize=CONCURRENCY)
        timeout = urllib3.Timeout(connect=5, read=30)

        def send_urllib3(body: str) -> int:
            answer = pool.request("POST", url, body=body.encode(), headers=headers,
                                  timeout=timeout)
            json.loads(answer.data)
            return int(answer.status)

        return send_urllib3
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_maxsize=CONCURRENCY))

    def send_requests(body: str) -> int:
        answer = session.post(url, data=body, headers=headers, timeout=(5, 30))
        answer.json()
        return int(answer.status_code)

    return send_requests


def _main(argv: list[str]) -> int:
    token = os.environ.get("AMILI_ACCESS_TOKEN")
    loops = {"naive": naive_loop, "ceiling": ceiling_loop,
             "ceiling-urllib3": lambda u, f, t: ceiling_loop(u, f, t, client="urllib3")}
    if len(argv) != 3 or argv[0] not in loops or not token:
        print("usage: AMILI_ACCESS_TOKEN=... python -m bench.post_bench "
              f"{'|'.join(loops)} URL FILE", file=sys.stderr)
        return 2
    print(json.dumps(loops[argv[0]](argv[1].rstrip("/"), Path(argv[2]), token)))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
