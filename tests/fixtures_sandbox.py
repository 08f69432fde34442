"""Sandbox fixtures: a real local Amili API on 127.0.0.1 (port 0) for every test that needs one.

``sandbox`` (function-scoped): seeded with ``SEED_CASES``, fixed token ``TOKEN``, API code
``API_CODE`` (creditor ``CREDITOR``), no faults. It is a
:class:`importer.sandbox.server.RunningSandbox`:

- ``sandbox.url`` (``http://127.0.0.1:PORT``), ``sandbox.token``, ``sandbox.headers``
  (``{"X-API-Key": TOKEN}``);
- ``sandbox.state``: the in-memory store: ``.records("creditor--payments")`` (copies),
  ``.count(resource)``, ``.case(case_id)``, ``.snapshot()`` (counts, requests, faults);
- ``sandbox.set_faults(fail_503=1.0, retry_after=2, seed=7, ...)`` (knobs of
  :class:`importer.sandbox.faults.Faults`), ``sandbox.reset()``, ``sandbox.expire_tokens()``.

``make_sandbox(**options)``: a factory for custom sandboxes, stopped at teardown. Options are
:class:`importer.sandbox.server.SandboxOptions` fields (``token_lifetime=1``,
``public_keys=[pem]``, ``return_status_fields=True``, ``cases=[...]``, ``token=None``) and/or
fault knobs given flat (``fail_429=0.5, seed=3``).

``payment_body(case, amount)``, ``crediting_body(...)``, ``cancellation_body(...)`` build valid
POST bodies for a seeded case.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import pytest

from importer.sandbox.faults import Faults
from importer.sandbox.server import RunningSandbox, SandboxOptions, start

CREDITOR = "674dbeb208847b9501cc9138"
OTHER_CREDITOR = "674dbeb208847b9501cc9999"
ACCOUNT = "674dbeaf08847b9501cc9132"
TOKEN = "sandbox-test-token"  # not a secret: the sandbox's fixed token in tests
API_CODE = "sandbox-test-api-code"
BANK_DATE = "Wed, 03 Sep 2025 08:00:00 GMT"


@dataclass(frozen=True)
class SeedCase:
    """One seeded case as the tests know it."""

    id: str
    creditor: str
    invoice_number: str
    reference_number: str
    capital: float
    interest: float
    costs: float
    status: str  # debt_collection | closed | cancelled

    @property
    def remaining(self) -> float:
        """Capital + interest + costs still owed (0 for closed cases)."""
        return 0.0 if self.status == "closed" else self.capital + self.interest + self.costs

    def as_seed(self) -> dict[str, Any]:
        """The entry of the cases file for this case."""
        return {"_id": self.id, "creditor": self.creditor, "account": ACCOUNT,
                "invoice_number": self.invoice_number, "reference_number": self.reference_number,
                "capital": self.capital, "interest": self.interest, "costs": self.costs,
                "status": self.status}


OPEN_CASE = SeedCase("68b7f49c7b02934caddab092", CREDITOR, "INV-1001", "48640",
                     2000.0, 14.0, 0.0, "debt_collection")
COSTS_CASE = SeedCase("68b7f49c7b02934caddab093", CREDITOR, "INV-1002", "48641",
                      500.0, 10.0, 60.0, "debt_collection")
CLOSED_CASE = SeedCase("68b7f49c7b02934caddab094", CREDITOR, "INV-1003", "48642",
                       750.0, 0.0, 0.0, "closed")
CANCELLED_CASE = SeedCase("68b7f49c7b02934caddab095", CREDITOR, "INV-1004", "48643",
                          300.0, 0.0, 0.0, "cancelled")
OTHER_CASE = SeedCase("68b7f49c7b02934caddab096", OTHER_CREDITOR, "INV-2001", "48644",
                      1000.0, 0.0, 0.0, "debt_collection")
SEED_CASES = (OPEN_CASE, COSTS_CASE, CLOSED_CASE, CANCELLED_CASE, OTHER_CASE)


def seed_document() -> dict[str, Any]:
    """The seeds in the cases-file format (``--cases``)."""
    return {"cases": [c.as_seed() for c in SEED_CASES], "api_codes": {API_CODE: CREDITOR}}


def payment_body(seed: SeedCase = OPEN_CASE, amount: float = 100.0, /, **extra: Any
                 ) -> dict[str, Any]:
    """A valid ``POST /creditor--payments`` body for a seeded case (by id); extra overrides."""
    return {"creditor": seed.creditor, "case": seed.id, "currency": "SEK", "amount": amount,
            "bank_transaction_date": BANK_DATE, "origin": "creditor_system", **extra}


def crediting_body(seed: SeedCase = OPEN_CASE, amount: float = 100.0, /, **extra: Any
                   ) -> dict[str, Any]:
    """A valid ``POST /creditor--creditings`` body for a seeded case; extra overrides."""
    return {"creditor": seed.creditor, "case": seed.id, "currency": "SEK", "amount": amount,
            "origin": "creditor_system", **extra}


def cancellation_body(seed: SeedCase = OPEN_CASE, /, **extra: Any) -> dict[str, Any]:
    """A valid ``POST /creditor--cancellations`` body for a seeded case; extra overrides."""
    return {"creditor": seed.creditor, "case": seed.id, "origin": "creditor_system", **extra}


_FAULT_KNOBS = {f.name for f in fields(Faults)}


def sandbox_options(**options: Any) -> SandboxOptions:
    """SandboxOptions with the test defaults (port 0, seeds, TOKEN, API_CODE) overridden."""
    knobs = {k: options.pop(k) for k in list(options) if k in _FAULT_KNOBS}
    settings: dict[str, Any] = {"port": 0, "token": TOKEN,
                                "cases": [c.as_seed() for c in SEED_CASES],
                                "api_codes": {API_CODE: CREDITOR}}
    settings.update(options)
    if knobs:
        settings["faults"] = settings.get("faults", Faults()).updated(knobs)
    return SandboxOptions(**settings)


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., RunningSandbox]]:
    """Start sandboxes with custom options; all are stopped at teardown."""
    started: list[RunningSandbox] = []

    def make(**options: Any) -> RunningSandbox:
        running = start(sandbox_options(**options))
        started.append(running)
        return running

    try:
        yield make
    finally:
        for running in started:
            running.stop()


@pytest.fixture
def sandbox(make_sandbox: Callable[..., RunningSandbox]) -> RunningSandbox:
    """A seeded sandbox with the fixed token and no faults."""
    return make_sandbox()
