"""How many payment POSTs per second the sandbox sustains with no added latency.

    python -m bench.sandbox_load [--seconds 5] [--concurrency 16]

The sandbox runs in this process (a uvicorn thread) and `concurrency` client threads post valid
payments, each thread with its own `requests.Session` (keep-alive). Client and server share one
interpreter (and this machine's two cores), so the figure is a floor for what the sandbox alone
can do; a second pass with the lighter stdlib `http.client` shows how much of the time was the
client's. Later posting benchmarks need only know that the sandbox is not their bottleneck.
"""

from __future__ import annotations

import argparse
import http.client
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import requests

CREDITOR = "674dbeb208847b9501cc9138"
CASES = 64


def _cases() -> list[dict[str, Any]]:
    # Big capital so that every payment is `completed` and no case closes during the run.
    return [{"_id": f"{0xB0000000 + i:024x}", "creditor": CREDITOR,
             "invoice_number": f"LOAD-{i:04d}", "capital": 1_000_000_000.0}
            for i in range(CASES)]


def _payment(n: int) -> dict[str, Any]:
    return {"creditor": CREDITOR, "case": f"{0xB0000000 + n % CASES:024x}", "currency": "SEK",
            "amount": 1.0, "bank_transaction_date": "Wed, 03 Sep 2025 08:00:00 GMT",
            "creditor_payment_reference": f"LOAD-{n}", "origin": "creditor_system"}


def _requests_client(url: str, token: str) -> tuple[Callable[[int], int], Callable[[], None]]:
    session = requests.Session()
    session.headers["X-API-Key"] = token
    target = f"{url}/creditor--payments"

    def post(n: int) -> int:
        return session.post(target, json=_payment(n), timeout=30).status_code

    return post, session.close


def _light_client(url: str, token: str) -> tuple[Callable[[int], int], Callable[[], None]]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"X-API-Key": token, "Content-Type": "application/json"}

    def post(n: int) -> int:
        conn.request("POST", "/creditor--payments", body=json.dumps(_payment(n)),
                     headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status

    return post, conn.close


def _drive(sandbox: Any, token: str, seconds: float, concurrency: int,
           client: Callable[[str, str], tuple[Callable[[int], int], Callable[[], None]]]
           ) -> dict[str, Any]:
    """Post from `concurrency` threads for `seconds`; the rate is read from the sandbox."""
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    stop = threading.Event()
    go = threading.Barrier(concurrency + 1)

    def worker(index: int) -> None:
        seen: Counter[int] = Counter()
        post, close = client(sandbox.url, token)
        try:
            n = index
            go.wait()
            while not stop.is_set():
                seen[post(n)] += 1
                n += concurrency
        finally:
            close()
            with lock:
                statuses.update(seen)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    go.wait()
    time.sleep(0.5)  # warm-up: connections opened
    before = sandbox.state.count("creditor--payments")
    started = time.perf_counter()
    time.sleep(seconds)
    stored = sandbox.state.count("creditor--payments") - before
    elapsed = time.perf_counter() - started
    stop.set()
    for thread in threads:
        thread.join()
    return {"posts_per_second": round(stored / elapsed, 1), "seconds": round(elapsed, 2),
            "concurrency": concurrency,
            "statuses": {str(k): v for k, v in sorted(statuses.items())}}


def measure(seconds: float = 5.0, concurrency: int = 16) -> dict[str, Any]:
    """Post payments for `seconds` from `concurrency` threads and report the rate.

    Two clients in turn, each against a fresh sandbox in this process with no latency: a
    `requests.Session` per thread (what the importer uses; the figure asked for), then
    stdlib `http.client` on 2 connections (a lighter client, closer to the server's own limit).

    Args:
        seconds: how long each client posts (after a 0.5 s warm-up).
        concurrency: threads of the requests client, one keep-alive session each.

    Returns:
        ``posts_per_second`` (requests client), ``light_client_posts_per_second``,
        ``concurrency``, ``seconds``, ``statuses`` (answers by HTTP status, requests client),
        ``all_created`` (every answer was a 201).
    """
    from importer.sandbox.server import SandboxOptions, start

    token = secrets.token_urlsafe(24)  # for this run only; never printed
    options = SandboxOptions(port=0, token=token, cases=_cases())
    with start(options) as sandbox:
        heavy = _drive(sandbox, token, seconds, concurrency, _requests_client)
    with start(options) as sandbox:
        light = _drive(sandbox, token, seconds, 2, _light_client)
    return {"posts_per_second": heavy["posts_per_second"],
            "light_client_posts_per_second": light["posts_per_second"],
            "concurrency": concurrency, "seconds": heavy["seconds"],
            "statuses": heavy["statuses"],
            "all_created": set(heavy["statuses"]) | set(light["statuses"]) == {"201"}}


def main() -> None:
    """Command line: print the measurement as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    print(json.dumps(measure(args.seconds, args.concurrency), indent=2))


if __name__ == "__main__":
    main()
