"""The sandbox's in-memory state and Amili's business rules (as documented in README.md here).

Everything lives in dicts guarded by one lock: uvicorn runs the handlers on one event loop and
they never await while holding it, so each POST is applied atomically; the lock only protects
test threads that read ``RunningSandbox.state`` while the server works.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any

from importer.sandbox.query import list_page, projector
from importer.sandbox.validation import (
    INSERTION_FAILURE,
    OBJECT_ID,
    RESOURCES,
    Resource,
    amount_problem,
    unprocessable,
    validate,
)

CASES = "cases"
REGISTRATIONS = "case--registrations"
COLLECTIONS = (CASES, REGISTRATIONS, *RESOURCES)
CLOSED_STATUSES = ("closed", "cancelled")  # a case in either takes no more actions
SEED_STATUSES = ("debt_collection", "closed", "cancelled")
PARTS = ("capital", "interest", "costs")  # the order a payment or crediting is applied in
CENT = Decimal("0.01")
SEED_KEYS = {"_id", "creditor", "account", "invoice_number", "reference_number", "capital",
             "interest", "costs", "status", "closed_reason", "creditor_name", "debtor_name",
             "debt_description", "invoice_date"}


class CasesFileError(ValueError):
    """The seed cases file (or document) is unusable; the message names the place."""


def rfc1123(moment: float | datetime) -> str:
    """Format a time as Eve does: ``Fri, 04 Jul 2025 16:20:41 GMT``.

    Args:
        moment: a UTC datetime or a ``time.time()`` value.

    Returns:
        The RFC 1123 text.
    """
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    return format_datetime(moment.astimezone(UTC).replace(microsecond=0), usegmt=True)


_counter = itertools.count(random.SystemRandom().randrange(1 << 24))
_process_bytes = os.urandom(5)
_etags = itertools.count(random.SystemRandom().randrange(1 << 32))


def object_id() -> str:
    """A new MongoDB-style ObjectId: 4 bytes of time, 5 per process, 3 of a counter."""
    count = next(_counter) & 0xFFFFFF
    raw = int(time.time()).to_bytes(4, "big") + _process_bytes + count.to_bytes(3, "big")
    return raw.hex()


def etag(doc: Mapping[str, Any]) -> str:
    """A new entity tag for a changed document.

    Eve hashes the whole document; hashing the id and a change counter is as good a validator
    and keeps a payment O(1) however many transactions a case has collected. Cases get 32 hex
    digits and records 40, as in the guide's examples.
    """
    seed = f"{doc['_id']}:{next(_etags)}".encode()
    if "transactions" in doc:
        return hashlib.md5(seed, usedforsecurity=False).hexdigest()
    return hashlib.sha1(seed, usedforsecurity=False).hexdigest()


def _dec(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(CENT)


def _num(value: Decimal) -> float:
    return float(value)


# -- seeds ------------------------------------------------------------------------------------


def load_cases_file(path: Path) -> tuple[list[dict[str, Any]], dict[str, str | None]]:
    """Read a seed cases file ``{"cases": [...], "api_codes": {code: creditor}}``.

    Args:
        path: the JSON file.

    Returns:
        The checked seed cases and the API codes.

    Raises:
        CasesFileError: unreadable, not JSON, or a case is wrong (the message names it).
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CasesFileError(f"{path}: cannot read the cases file ({exc.strerror})") from None
    except ValueError as exc:
        raise CasesFileError(f"{path}: not valid JSON ({exc})") from None
    return parse_cases_document(document, str(path))


def parse_cases_document(document: Any, source: str = "cases"
                         ) -> tuple[list[dict[str, Any]], dict[str, str | None]]:
    """Check a seed document (the parsed cases file) and fill defaults.

    Args:
        document: ``{"cases": [...], "api_codes": {...}}`` (both keys optional).
        source: the file name for messages.

    Returns:
        The seed cases (defaults filled) and the API codes.

    Raises:
        CasesFileError: a wrong key or value, naming ``cases[i].field``.
    """
    if not isinstance(document, dict):
        raise CasesFileError(f"{source}: the top level must be an object with 'cases'")
    raw_cases = document.get("cases", [])
    codes = document.get("api_codes", {})
    if not isinstance(raw_cases, list):
        raise CasesFileError(f"{source}: 'cases' must be a list")
    if not isinstance(codes, dict) or not all(
            isinstance(c, str) and (v is None or _is_id(v)) for c, v in codes.items()):
        raise CasesFileError(f"{source}: 'api_codes' must map codes to creditor ids (24 hex)")
    seeds: list[dict[str, Any]] = []
    seen_ids: set[str] = set()
    seen_invoices: set[tuple[str, str]] = set()
    for index, raw in enumerate(raw_cases):
        seed = _check_seed(raw, f"{source}: cases[{index}]")
        where = f"{source}: cases[{index}]"
        if seed["_id"] in seen_ids:
            raise CasesFileError(f"{where}._id: {seed['_id']} appears twice")
        key = (seed["creditor"], seed["invoice_number"])
        if key in seen_invoices:
            raise CasesFileError(f"{where}.invoice_number: {key[1]!r} appears twice for "
                                 f"creditor {key[0]}")
        seen_ids.add(seed["_id"])
        seen_invoices.add(key)
        seeds.append(seed)
    return seeds, {c: (v.lower() if v else None) for c, v in codes.items()}


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and bool(OBJECT_ID.match(value))


def _check_seed(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise CasesFileError(f"{where}: must be an object")
    seed = dict(raw)
    for key in ("_id", "creditor", "account"):
        if key in seed and not _is_id(seed[key]):
            raise CasesFileError(f"{where}.{key}: {seed[key]!r} is not a 24-hex id")
    if "creditor" not in seed:
        raise CasesFileError(f"{where}.creditor: missing")
    if not isinstance(seed.get("invoice_number"), str) or not seed["invoice_number"]:
        raise CasesFileError(f"{where}.invoice_number: missing or not a string")
    for key in PARTS:
        value = seed.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise CasesFileError(f"{where}.{key}: {value!r} is not an amount >= 0")
        seed[key] = float(value)
    status = seed.setdefault("status", "debt_collection")
    if status not in SEED_STATUSES:
        raise CasesFileError(f"{where}.status: {status!r} is not one of "
                             f"{', '.join(SEED_STATUSES)}")
    if "reference_number" in seed and not isinstance(seed["reference_number"], str):
        raise CasesFileError(f"{where}.reference_number: must be a string")
    seed["_id"] = seed.get("_id", object_id()).lower()
    seed["creditor"] = seed["creditor"].lower()
    return seed


def _account_for(creditor: str) -> str:
    # Stable per creditor, so reseeding gives the same account ids.
    return hashlib.sha1(f"account:{creditor}".encode()).hexdigest()[:24]


# -- the store ---------------------------------------------------------------------------------


@dataclass
class PostOutcome:
    """What a POST of a creditor action came to."""

    status_code: int  # 201 or 422
    body: dict[str, Any]
    stored: bool


class Store:
    """All sandbox state: cases, records, counters.

    Args:
        seeds: checked seed cases (see :func:`parse_cases_document`).
        api_codes: accepted API codes → creditor (their creditors count as known).
        return_status_fields: also return the record's status fields in the 201.
        registration_interest: share of the capital added as interest when a case is
            registered (0.007 reproduces the case-flow guide's 14.0 on 2000).
    """

    def __init__(self, seeds: Iterable[Mapping[str, Any]] = (),
                 api_codes: Mapping[str, str | None] | None = None,
                 return_status_fields: bool = False,
                 registration_interest: float = 0.007) -> None:
        self._seeds = [dict(s) for s in seeds]
        self._code_creditors = {c for c in (api_codes or {}).values() if c}
        self.return_status_fields = return_status_fields
        self.registration_interest = Decimal(str(registration_interest))
        self.lock = threading.RLock()
        self.requests: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.reset()

    def reset(self) -> None:
        """Back to the seeds: records cleared, cases rebuilt, counters zeroed."""
        with self.lock:
            self.collections: dict[str, dict[str, dict[str, Any]]] = {c: {} for c in COLLECTIONS}
            self._by_invoice: dict[tuple[str, str], str] = {}
            self.creditors: set[str] = set(self._code_creditors)
            self._reference = itertools.count(48640)
            self.requests.clear()
            self.faults.clear()
            now = rfc1123(time.time())
            for seed in self._seeds:
                self._add_case(self._case_from_seed(seed, now))

    # -- reading (thread-safe copies, for tests) ---------------------------------------------

    def records(self, resource: str) -> list[dict[str, Any]]:
        """Copies of every record of a collection, in insertion order."""
        with self.lock:
            return copy.deepcopy(list(self.collections[resource].values()))

    def count(self, resource: str) -> int:
        """How many records a collection holds."""
        with self.lock:
            return len(self.collections[resource])

    def case(self, case_id: str) -> dict[str, Any] | None:
        """A copy of one case, or None."""
        with self.lock:
            found = self.collections[CASES].get(case_id.lower())
            return copy.deepcopy(found) if found else None

    def snapshot(self) -> dict[str, Any]:
        """Counts for ``GET /_sandbox/state``."""
        with self.lock:
            return {"records": {c: len(d) for c, d in self.collections.items()},
                    "requests": dict(self.requests), "requests_total": sum(self.requests.values()),
                    "faults": dict(self.faults)}

    def note_fault(self, name: str) -> None:
        """Count one injected fault (shown by ``GET /_sandbox/state``)."""
        with self.lock:
            self.faults[name] += 1

    # -- the API's reads ----------------------------------------------------------------------

    def get(self, resource: str, record_id: str, projection: str | None = None
            ) -> dict[str, Any] | None:
        """One record, projected as a list item would be (not copied: the caller serialises
        it at once; raises QueryError for a bad projection)."""
        project = projector(projection)
        with self.lock:
            found = self.collections[resource].get(record_id.lower())
            return None if found is None else project(found)

    def find(self, resource: str, args: dict[str, str]) -> dict[str, Any]:
        """One page of a collection (raises QueryError for a bad query)."""
        with self.lock:
            return list_page(self.collections[resource].values(), args)

    # -- creditor actions ---------------------------------------------------------------------

    def post_action(self, resource: Resource, doc: Any) -> PostOutcome:
        """Validate, resolve the case, apply the business rules and store one action.

        Args:
            resource: the collection posted to.
            doc: the parsed JSON body.

        Returns:
            201 with the documented fields, or 422 with Eve's body (nothing stored).
        """
        with self.lock:
            case, issues = self._check(resource, doc)
            if case is None:
                return PostOutcome(422, unprocessable(issues), False)
            return PostOutcome(201, self._apply(resource, doc, case), True)

    def post_actions(self, resource: Resource, docs: list[Any]) -> PostOutcome:
        """Eve's bulk insert: every document valid, or none stored.

        Args:
            resource: the collection posted to.
            docs: the parsed JSON list.

        Returns:
            201 ``{"_status": "OK", "_items": [...]}`` or 422 with per-item ``_issues``.
        """
        with self.lock:
            checked = [self._check(resource, doc) for doc in docs]
            failed = sum(1 for case, _ in checked if case is None)
            if failed:
                items = [{"_status": "ERR", "_issues": issues} if case is None
                         else {"_status": "OK"} for case, issues in checked]
                return PostOutcome(422, {"_status": "ERR", "_items": items, "_error": {
                    "code": 422, "message": INSERTION_FAILURE.format(n=failed)}}, False)
            items = [self._apply(resource, doc, case)
                     for doc, (case, _) in zip(docs, checked, strict=True) if case is not None]
            return PostOutcome(201, {"_status": "OK", "_items": items}, True)

    def _check(self, resource: Resource, doc: Any
               ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        issues = validate(resource, doc)
        if issues:
            return None, issues
        return self._resolve(doc)

    def _apply(self, resource: Resource, doc: dict[str, Any], case: dict[str, Any]
               ) -> dict[str, Any]:
        now = rfc1123(time.time())
        record = self._new_record(resource, doc, case, now)
        if resource.amount:
            touched = self._settle(resource, record, case, now)
        else:
            touched = self._cancel(record, case, now)
        record[resource.status_field] = record["status"]
        record["_etag"] = etag(record)
        self.collections[resource.name][record["_id"]] = record
        if touched:
            case["_updated"] = now
            case["_etag"] = etag(case)
        return self._answer(resource, record)

    def _resolve(self, doc: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, str]]:
        creditor = doc["creditor"].lower()
        if creditor not in self.creditors:
            return None, {"creditor": f"value '{doc['creditor']}' must exist in resource "
                                      "'creditors', field '_id'."}
        if "case" in doc:
            case = self.collections[CASES].get(doc["case"].lower())
            if case is None:
                return None, {"case": f"value '{doc['case']}' must exist in resource 'cases', "
                                      "field '_id'."}
            if case["creditor"] != creditor:
                return None, {"case": f"value '{doc['case']}' is a case of another creditor "
                                      f"than '{doc['creditor']}'"}
            return case, {}
        case_id = self._by_invoice.get((creditor, doc["invoice_number"]))
        if case_id is None:
            return None, {"invoice_number": f"value '{doc['invoice_number']}' must exist in "
                                            "resource 'cases', field 'debt.invoice_number', "
                                            f"for creditor '{doc['creditor']}'."}
        return self.collections[CASES][case_id], {}

    def _new_record(self, resource: Resource, doc: dict[str, Any], case: dict[str, Any],
                    now: str) -> dict[str, Any]:
        record = dict(doc)
        record["creditor"] = case["creditor"]
        record["case"] = case["_id"]
        if resource.amount:
            # Read-only on the way in, set by Amili "from case/creditor".
            record["account"] = case["account"]
            record.setdefault("client_registration_date", now)
        record.update({"_id": object_id(), "_created": now, "_updated": now,
                       "case_invoice_number": case["debt"]["invoice_number"],
                       "case_reference_number": case["reference_number"]})
        return record

    def _settle(self, resource: Resource, record: dict[str, Any], case: dict[str, Any],
                now: str) -> bool:
        """Apply a payment or crediting; True when the case changed."""
        prefix = resource.locale
        is_payment = resource.name == "creditor--payments"
        if case["status"] in CLOSED_STATUSES:
            record.update(status="error", status_reason_locale=f"{prefix}.case_closed",
                          settled_amount=0.0)
            return False
        amount = _dec(record["amount"])
        remaining = {p: _dec(case[f"total_remaining_{p}_amount"]) for p in PARTS}
        total = sum(remaining.values(), Decimal(0))
        left = min(amount, total)
        applied: dict[str, Decimal] = {}
        for part in PARTS:
            take = min(left, remaining[part])
            if take > 0:
                applied[part] = take
                remaining[part] -= take
                left -= take
        settled = sum(applied.values(), Decimal(0))
        action = "payment" if is_payment else "crediting"
        bank_date = record.get("bank_transaction_date") or record["client_registration_date"]
        for part, take in applied.items():
            case["transactions"].append({
                "bank_transaction_date": bank_date, "registration_date": now,
                "origin": "creditor_system", "type": part,
                "description_locale_tag": f"{prefix}.{action}_settled",
                "amount": _num(-take), "payment_method": prefix, prefix: record["_id"]})
        overpaid = amount > total
        record.update(
            status="warning" if overpaid else "completed",
            status_reason_locale=f"{prefix}.over{action}" if overpaid
            else f"{prefix}.{action}_settled",
            settled_amount=_num(settled))
        if is_payment and settled > 0:
            record["booking_date"] = now
        reason = "fully_paid" if is_payment else "fully_credited"
        if applied.get("capital") and remaining["capital"] == 0 and sum(remaining.values()) > 0:
            # As in the case-flow guide: once the capital is paid, what remains of interest
            # and costs is written off by Amili and the case closes.
            for part in ("interest", "costs"):
                if remaining[part] > 0:
                    case["transactions"].append({
                        "bank_transaction_date": now, "registration_date": now,
                        "origin": "solicitor_system", "type": part,
                        "description_locale_tag": "api.transaction.depreciated",
                        "amount": _num(-remaining[part])})
                    remaining[part] = Decimal(0)
            reason += "_depreciation"
        self._set_remaining(case, remaining)
        if sum(remaining.values()) == 0:
            self._close(case, "closed", reason, now)
        return True

    def _cancel(self, record: dict[str, Any], case: dict[str, Any], now: str) -> bool:
        """Apply a cancellation; True when the case changed."""
        if case["status"] in CLOSED_STATUSES:
            record.update(status="warning",
                          status_reason_locale="creditor_cancellation.case_already_closed")
            return False
        record.update(status="completed",
                      status_reason_locale="creditor_cancellation.case_cancelled")
        self._close(case, "cancelled", "creditor_cancellation", now)
        return True

    @staticmethod
    def _set_remaining(case: dict[str, Any], remaining: dict[str, Decimal]) -> None:
        for scope in ("total", "local"):
            for part in PARTS:
                case[f"{scope}_remaining_{part}_amount"] = _num(remaining[part])
            case[f"{scope}_remaining_transaction_amount"] = _num(
                sum(remaining.values(), Decimal(0)))

    @staticmethod
    def _close(case: dict[str, Any], status: str, reason: str, now: str) -> None:
        case["status"] = status
        case["status_history"].append({"status": status, "status_date": now})
        case["closed"] = {"close_date": now, "reason": reason}
        if "next_flow_item" in case:
            case["next_flow_item_on_close"] = case.pop("next_flow_item")
        case.pop("event_listeners", None)  # the guide's closed case has none

    def _answer(self, resource: Resource, record: dict[str, Any]) -> dict[str, Any]:
        body = {k: record[k] for k in ("_updated", "_created", "_etag", "_id")}
        body["_status"] = "OK"
        body[resource.status_field] = record[resource.status_field]
        if self.return_status_fields:
            for key in ("status", "status_reason_locale", "settled_amount",
                        "case_invoice_number", "case_reference_number"):
                if key in record:
                    body[key] = record[key]
        return body

    # -- cases --------------------------------------------------------------------------------

    def register_case(self, doc: Any) -> PostOutcome:
        """``POST /case--registrations``: one case per debt, answered as in the case-flow guide.

        Args:
            doc: the parsed JSON body.

        Returns:
            201 with ``_cases``, ``_ocr_numbers``, ``_ocr_numbers_ocr``, or 422.
        """
        issues = _registration_issues(doc)
        with self.lock:
            if not issues:
                creditor = doc["creditor"].lower()
                for i, debt in enumerate(doc["debts"]):
                    if (creditor, debt["invoice_number"]) in self._by_invoice:
                        issues.setdefault("debts", {})[str(i)] = {
                            "invoice_number": f"value '{debt['invoice_number']}' is not unique"}
            if issues:
                return PostOutcome(422, unprocessable(issues), False)
            now = rfc1123(time.time())
            registration = dict(doc)
            registration.update({"_id": object_id(), "_created": now, "_updated": now})
            cases, ocr_ids, ocrs = [], [], []
            for debt in doc["debts"]:
                case = self._case_from_registration(doc, debt, registration["_id"], now)
                self._add_case(case)
                cases.append(case["_id"])
                ocr_ids.append(object_id())
                ocrs.append("".join(random.choice("0123456789") for _ in range(20)))
            registration.update(_cases=cases, _ocr_numbers=ocr_ids, _ocr_numbers_ocr=ocrs)
            registration["_etag"] = etag(registration)
            self.collections[REGISTRATIONS][registration["_id"]] = registration
            body = {k: registration[k] for k in ("_updated", "_created", "_etag", "_id")}
            body.update(_status="OK", _cases=cases, _ocr_numbers=ocr_ids, _ocr_numbers_ocr=ocrs)
            return PostOutcome(201, body, True)

    def attach_media(self, case_id: str, filename: str, content_type: str, size: int
                     ) -> str | None:
        """Record an uploaded original invoice on a case; None when the case is unknown."""
        with self.lock:
            case = self.collections[CASES].get(case_id.lower())
            if case is None:
                return None
            media_id = os.urandom(16).hex()
            case["original_invoice"] = {"id": media_id, "filename": filename,
                                        "content_type": content_type, "size": size}
            case["_updated"] = rfc1123(time.time())
            case["_etag"] = etag(case)
            return f"{case['_id']}-{media_id}"

    def _add_case(self, case: dict[str, Any]) -> None:
        self.collections[CASES][case["_id"]] = case
        self._by_invoice[(case["creditor"], case["debt"]["invoice_number"])] = case["_id"]
        self.creditors.add(case["creditor"])

    def _case_from_seed(self, seed: Mapping[str, Any], now: str) -> dict[str, Any]:
        amounts = {p: _dec(seed[p]) for p in PARTS}
        case = _case_document(
            case_id=seed["_id"], creditor=seed["creditor"],
            account=seed.get("account", _account_for(seed["creditor"])).lower(),
            invoice_number=seed["invoice_number"],
            reference_number=seed.get("reference_number") or str(next(self._reference)),
            amounts=amounts, now=now, invoice_date=seed.get("invoice_date", now),
            description=seed.get("debt_description", "Services"),
            debtor=seed.get("debtor_name", "ACME Inc."),
            creditor_name=seed.get("creditor_name", "Sandbox Creditor"))
        case.update({k: copy.deepcopy(v) for k, v in seed.items() if k not in SEED_KEYS})
        if seed["status"] == "closed":
            self._set_remaining(case, {p: Decimal(0) for p in PARTS})
            self._close(case, "closed", seed.get("closed_reason", "fully_paid"), now)
        elif seed["status"] == "cancelled":
            self._close(case, "cancelled", seed.get("closed_reason", "creditor_cancellation"),
                        now)
        case["_etag"] = etag(case)
        return case

    def _case_from_registration(self, doc: dict[str, Any], debt: dict[str, Any],
                                registration_id: str, now: str) -> dict[str, Any]:
        capital = _dec(debt["capital_to_claim"])
        interest = (capital * self.registration_interest).quantize(CENT)
        customer: dict[str, Any] = doc["customer"] if isinstance(doc.get("customer"), dict) \
            else {}
        creditor = doc["creditor"].lower()
        case = _case_document(
            case_id=object_id(), creditor=creditor,
            account=str(doc.get("account") or _account_for(creditor)).lower(),
            invoice_number=debt["invoice_number"], reference_number=str(next(self._reference)),
            amounts={"capital": capital, "interest": interest, "costs": Decimal(0)},
            now=now, invoice_date=debt.get("invoice_date", now),
            description=debt.get("debt_description", ""),
            debtor=str(customer.get("name", "")), creditor_name="Sandbox Creditor")
        for key in ("invoice_due_days_after_invoice_date", "interest_days_after_invoice_date"):
            if key in debt:
                case["debt"][key] = debt[key]
        case["case_registration"] = registration_id
        case["customer_id_number"] = case["debtor_id_number"] = customer.get("id_number", "")
        first_action = doc.get("first_action") or "debt_collection"
        case["state"] = case["status"] = first_action
        case["services"][0]["service"] = first_action
        case["_etag"] = etag(case)
        return case


def _years_later(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:  # 29 February
        return moment.replace(year=moment.year + years, day=28)


def _derived_id(*parts: str) -> str:
    """A stable 24-hex id for things the sandbox does not model (agreements, debtors, flows)."""
    return hashlib.sha1(":".join(parts).encode()).hexdigest()[:24]


def _case_document(*, case_id: str, creditor: str, account: str, invoice_number: str,
                   reference_number: str, amounts: dict[str, Decimal], now: str,
                   invoice_date: str, description: str, debtor: str,
                   creditor_name: str) -> dict[str, Any]:
    """A case shaped like the case-flow guide's ``GET /cases/{id}`` answer."""
    total = sum(amounts.values(), Decimal(0))
    today = parsedate_to_datetime(now)
    flow = {"item": "case--debt-collections__debt_statement",
            "schedule_to_execute": rfc1123(today.replace(hour=0, minute=0, second=0)
                                           + timedelta(days=16)),
            "flow_config": _derived_id("flow_config"), "is_failed": False,
            "waiting_for": "api.wait.waiting_for_debt_collection_payment",
            "moved_to_next_state": True, "flow_config_name_locale": "api.flow_config.default"}
    case: dict[str, Any] = {
        "_id": case_id, "_created": now, "_updated": now,
        "debt": {"invoice_date": invoice_date, "invoice_due_days_after_invoice_date": 30,
                 "capital_to_claim": _num(amounts["capital"]),
                 "debt_description": description, "invoice_number": invoice_number,
                 "payout_reference": invoice_number, "interest_days_after_invoice_date": 30},
        "creditor": creditor, "account": account,
        "agreement_version": _derived_id("agreement", creditor),
        "case_settings": {"interest_rate": {"reference_rate": True}},
        "creditor_name": creditor_name, "currency": "SEK",
        "customer": _derived_id("customer", creditor, debtor), "customer_id_number": "",
        "customer_name": debtor, "customer_status": "initialized",
        "debtor": _derived_id("debtor", debtor), "debtor_id_number": "", "debtor_name": debtor,
        "latest_state_date": now, "state": "debt_collection",
        "state_history": [{"state": "initializing", "state_date": now},
                          {"state": "debt_collection", "state_date": now}],
        "status": "debt_collection",
        "status_history": [{"status": "initializing", "status_date": now},
                           {"status": "initialized", "status_date": now},
                           {"status": "debt_collection", "status_date": now}],
        "reference_number": reference_number,
        "transactions": [],
        # The rest of the guide's answer: the flow the case is in (moved to
        # next_flow_item_on_close when it closes), its service and limitation.
        "next_flow_item": flow,
        "debt_collection": _derived_id("debt_collection", case_id),
        "services": [{"service": "debt_collection", "service_date": now}],
        "limitation": {"break_date": now, "limitation_date": rfc1123(_years_later(today, 10)),
                       "locale_annotation": "api.log_messages.letter_sent_debt_collection"},
        "event_listeners": {},
    }
    for scope in ("total", "local"):
        for kind in ("added", "remaining"):
            for part in PARTS:
                case[f"{scope}_{kind}_{part}_amount"] = _num(amounts[part])
            case[f"{scope}_{kind}_transaction_amount"] = _num(total)
    tags = {"capital": ("creditor_system", "api.transaction.case_registration"),
            "interest": ("solicitor_system", "api.transaction.case_flow"),
            "costs": ("solicitor_system", "api.transaction.case_flow")}
    for part in PARTS:
        if amounts[part] > 0:
            origin, tag = tags[part]
            case["transactions"].append({
                "bank_transaction_date": invoice_date if part == "capital" else now,
                "registration_date": now, "origin": origin, "type": part,
                "description_locale_tag": tag, "amount": _num(amounts[part])})
    return case


def _registration_issues(doc: Any) -> dict[str, Any]:
    """The few checks the sandbox makes on a case registration (Amili's schema is larger)."""
    if not isinstance(doc, dict):
        return {"_schema": "must be of dict type"}
    issues: dict[str, Any] = {}
    if "creditor" not in doc:
        issues["creditor"] = "required field"
    elif not _is_id(doc["creditor"]):
        issues["creditor"] = "must be of objectid type"
    if "account" in doc and not _is_id(doc["account"]):
        issues["account"] = "must be of objectid type"
    if "currency" in doc and doc["currency"] != "SEK":
        issues["currency"] = f"unallowed value {doc['currency']}"
    debts = doc.get("debts")
    if debts is None:
        issues["debts"] = "required field"
    elif not isinstance(debts, list) or not debts:
        issues["debts"] = "must be a non-empty list"
    else:
        for i, debt in enumerate(debts):
            problems: dict[str, str] = {}
            if not isinstance(debt, dict):
                issues.setdefault("debts", {})[str(i)] = "must be of dict type"
                continue
            if not isinstance(debt.get("invoice_number"), str) or not debt["invoice_number"]:
                problems["invoice_number"] = "required field"
            capital_problem = amount_problem(debt.get("capital_to_claim"))
            if capital_problem:
                problems["capital_to_claim"] = capital_problem
            if problems:
                issues.setdefault("debts", {})[str(i)] = problems
    return issues


