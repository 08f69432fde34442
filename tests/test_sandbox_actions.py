"""The creditor actions over HTTP: 201 shapes, Eve validation (422) and the business rules."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from fixtures_sandbox import (
    ACCOUNT,
    CANCELLED_CASE,
    CLOSED_CASE,
    COSTS_CASE,
    CREDITOR,
    OPEN_CASE,
    OTHER_CASE,
    OTHER_CREDITOR,
    cancellation_body,
    crediting_body,
    payment_body,
)

from importer.sandbox.server import RunningSandbox

PAYMENTS, CREDITINGS, CANCELLATIONS = ("creditor--payments", "creditor--creditings",
                                       "creditor--cancellations")
INSERTION_FAILURE = {"code": 422, "message": "Insertion failure: 1 document(s) contain(s) error(s)"}


def post(sb: RunningSandbox, resource: str, body: Any) -> requests.Response:
    return requests.post(f"{sb.url}/{resource}", json=body, headers=sb.headers, timeout=10)


def issues_of(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["_status"] == "ERR"
    assert body["_error"] == INSERTION_FAILURE
    assert set(body) == {"_status", "_issues", "_error"}
    return dict(body["_issues"])


# -- 201 shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("resource", "body", "status_field"), [
    (PAYMENTS, payment_body(), "_payment_status"),
    (CREDITINGS, crediting_body(), "_payment_status"),
    (CANCELLATIONS, cancellation_body(), "_cancellation_status"),
])
def test_201_has_exactly_the_documented_fields(sandbox: RunningSandbox, resource: str,
                                               body: dict[str, Any], status_field: str) -> None:
    """A 201 carries exactly _updated, _created, _etag, _id, _status and the kind's status."""
    response = post(sandbox, resource, body)
    assert response.status_code == 201, response.text
    answer = response.json()
    assert set(answer) == {"_updated", "_created", "_etag", "_id", "_status", status_field}
    assert answer["_status"] == "OK"
    assert answer[status_field] == "completed"
    assert len(answer["_id"]) == 24 and int(answer["_id"], 16) >= 0
    assert answer["_created"].endswith(" GMT")


def test_return_status_fields_option_adds_the_status_fields(make_sandbox: Any) -> None:
    """With return_status_fields the 201 also has status, locale, settled and case numbers."""
    sb = make_sandbox(return_status_fields=True)
    answer = post(sb, PAYMENTS, payment_body(OPEN_CASE, 100.0)).json()
    assert answer["status"] == "completed"
    assert answer["status_reason_locale"] == "creditor_payment.payment_settled"
    assert answer["settled_amount"] == 100.0
    assert answer["case_invoice_number"] == OPEN_CASE.invoice_number
    assert answer["case_reference_number"] == OPEN_CASE.reference_number
    cancel = post(sb, CANCELLATIONS, cancellation_body(COSTS_CASE)).json()
    assert "settled_amount" not in cancel and cancel["status"] == "completed"


def test_stored_payment_keeps_posted_fields_and_adds_status_fields(
        sandbox: RunningSandbox) -> None:
    """GET /creditor--payments/{id} returns the posted fields, resolved case and status fields."""
    body = payment_body(OPEN_CASE, 100.0, creditor_payment_reference="PAY-1")
    del body["case"]
    body["invoice_number"] = OPEN_CASE.invoice_number
    record_id = post(sandbox, PAYMENTS, body).json()["_id"]
    record = requests.get(f"{sandbox.url}/{PAYMENTS}/{record_id}", headers=sandbox.headers,
                          timeout=10).json()
    assert {k: record[k] for k in body} == body
    assert record["case"] == OPEN_CASE.id
    assert record["account"] == ACCOUNT
    assert record["status"] == "completed"
    assert record["status_reason_locale"] == "creditor_payment.payment_settled"
    assert record["settled_amount"] == 100.0
    assert record["case_invoice_number"] == OPEN_CASE.invoice_number
    assert record["case_reference_number"] == OPEN_CASE.reference_number
    assert record["booking_date"].endswith(" GMT")
    assert record["client_registration_date"].endswith(" GMT")
    assert record["_payment_status"] == "completed"


# -- validation ---------------------------------------------------------------------------------


def test_unknown_and_read_only_fields_are_422(sandbox: RunningSandbox) -> None:
    """Unknown fields say 'unknown field'; file_import_report is read-only."""
    issues = issues_of(post(sandbox, PAYMENTS, payment_body(
        account="not-an-id", file_import_report="x", colour="blue")))
    assert issues == {"account": "must be of objectid type",
                      "file_import_report": "field is read-only", "colour": "unknown field"}
    assert sandbox.state.count(PAYMENTS) == 0


@pytest.mark.parametrize("resource", [PAYMENTS, CREDITINGS])
def test_account_may_be_sent_as_the_seeds_examples_do(sandbox: RunningSandbox,
                                                      resource: str) -> None:
    """The seeds' example payment and crediting send `account` (the older doc generation
    required it; the newer sets it from the case): taken, and the record carries the case's."""
    body = payment_body(account=ACCOUNT) if resource == PAYMENTS else crediting_body(
        account=ACCOUNT)
    answer = post(sandbox, resource, body)
    assert answer.status_code == 201, answer.text
    record = requests.get(f"{sandbox.url}/{resource}/{answer.json()['_id']}",
                          headers=sandbox.headers, timeout=10).json()
    assert record["account"] == ACCOUNT


def test_amounts_beyond_any_claim_are_422_not_a_crash(sandbox: RunningSandbox) -> None:
    """Amounts too large to keep exact (1e30, a 30-digit integer, inf) are refused."""
    for amount in ("1e30", "123456789012345678901234567890", "1e400", "1" + "0" * 400):
        body = json.dumps(payment_body()).replace('"amount": 100.0', f'"amount": {amount}')
        answer = requests.post(f"{sandbox.url}/{PAYMENTS}", data=body, timeout=10, headers={
            **sandbox.headers, "Content-Type": "application/json"})
        assert answer.status_code == 422, (amount, answer.status_code, answer.text)
    assert sandbox.state.count(PAYMENTS) == 0


def test_any_string_sent_can_be_read_back(sandbox: RunningSandbox) -> None:
    """A lone surrogate (valid JSON escape) is stored and written back escaped, as Eve does; the
    collection stays readable."""
    answer = requests.post(
        f"{sandbox.url}/{PAYMENTS}", headers={**sandbox.headers, "Content-Type":
                                               "application/json"},
        data=json.dumps(payment_body(creditor_payment_reference="\ud800")).replace(
            "\\\\ud800", "\\ud800"), timeout=10)
    assert answer.status_code == 201, answer.text
    listing = requests.get(f"{sandbox.url}/{PAYMENTS}", headers=sandbox.headers, timeout=10)
    assert listing.status_code == 200 and b"\\ud800" in listing.content
    assert listing.content.isascii()


def test_a_post_that_is_not_json_by_its_content_type_is_400(sandbox: RunningSandbox) -> None:
    """Eve reads a body only with Content-Type application/json."""
    for headers in ({"Content-Type": "text/plain"}, {}):
        answer = requests.post(f"{sandbox.url}/{PAYMENTS}", headers={**sandbox.headers,
                                                                     **headers},
                               data=json.dumps(payment_body()), timeout=10)
        assert answer.status_code == 400
        assert answer.json()["_error"]["message"] == "Unknown or no Content-Type header supplied"
    assert sandbox.state.count(PAYMENTS) == 0


def test_cancellation_has_no_account_field(sandbox: RunningSandbox) -> None:
    """The cancellation table lists no account, so Eve calls it unknown."""
    issues = issues_of(post(sandbox, CANCELLATIONS, cancellation_body(account=ACCOUNT)))
    assert issues == {"account": "unknown field"}


def test_required_fields_are_named(sandbox: RunningSandbox) -> None:
    """Each missing required field is named; case/invoice_number both when neither is sent."""
    issues = issues_of(post(sandbox, PAYMENTS, {}))
    assert issues == {f: "required field" for f in (
        "creditor", "currency", "amount", "bank_transaction_date", "origin", "case",
        "invoice_number")}
    assert set(issues_of(post(sandbox, CREDITINGS, {}))) == {
        "creditor", "currency", "amount", "origin", "case", "invoice_number"}
    assert set(issues_of(post(sandbox, CANCELLATIONS, {}))) == {
        "creditor", "origin", "case", "invoice_number"}


def test_case_and_invoice_number_are_exclusive(sandbox: RunningSandbox) -> None:
    """Sending both case and invoice_number is a 422 on both fields."""
    issues = issues_of(post(sandbox, PAYMENTS, payment_body(invoice_number="INV-1001")))
    assert issues == {"case": "'invoice_number' must not be present with 'case'",
                      "invoice_number": "'case' must not be present with 'invoice_number'"}


@pytest.mark.parametrize(("field", "value", "message"), [
    ("currency", "EUR", "unallowed value EUR"),
    ("origin", "excel", "unallowed value excel"),
    ("amount", "100.0", "must be of number type"),
    ("amount", True, "must be of number type"),
    ("amount", 0, "must be a number greater than 0"),
    ("amount", -5.5, "must be a number greater than 0"),
    ("bank_transaction_date", "2025-09-03", "must be of datetime type"),
    ("bank_transaction_date", "Wed, 03 Sep 2025 08:00:00 +0000", "must be of datetime type"),
    ("client_registration_date", "03/09/2025", "must be of datetime type"),
    ("creditor", "ACME", "must be of objectid type"),
    ("case", 12345, "must be of objectid type"),
    ("creditor_payment_reference", 17, "must be of string type"),
    ("creditor_payment_reference", None, "null value not allowed"),
])
def test_field_types_and_values_are_checked(sandbox: RunningSandbox, field: str, value: Any,
                                            message: str) -> None:
    """Wrong types, currencies, origins, dates and amounts give Cerberus' messages."""
    assert issues_of(post(sandbox, PAYMENTS, payment_body(**{field: value}))) == {field: message}


def test_unknown_case_is_422_naming_cases(sandbox: RunningSandbox) -> None:
    """A case id that does not exist reads like Eve's data_relation message."""
    missing = "0123456789abcdef01234567"
    issues = issues_of(post(sandbox, PAYMENTS, payment_body(case=missing)))
    assert issues == {"case": f"value '{missing}' must exist in resource 'cases', field '_id'."}


def test_unknown_invoice_number_is_422_naming_invoice_number(sandbox: RunningSandbox) -> None:
    """An invoice number without a case for that creditor is a 422 on invoice_number."""
    body = cancellation_body()
    del body["case"]
    body["invoice_number"] = OTHER_CASE.invoice_number  # exists, but for another creditor
    issues = issues_of(post(sandbox, CANCELLATIONS, body))
    assert list(issues) == ["invoice_number"]
    assert "INV-2001" in issues["invoice_number"]


def test_case_of_another_creditor_is_422(sandbox: RunningSandbox) -> None:
    """The case's creditor must match the request's creditor (422 on case)."""
    issues = issues_of(post(sandbox, PAYMENTS, payment_body(OTHER_CASE, creditor=CREDITOR)))
    assert list(issues) == ["case"]
    assert "another creditor" in issues["case"]


def test_unknown_creditor_is_422(sandbox: RunningSandbox) -> None:
    """A creditor the sandbox does not know is a 422 naming the creditors resource."""
    stranger = "ffffffffffffffffffffffff"
    issues = issues_of(post(sandbox, PAYMENTS, payment_body(creditor=stranger)))
    assert issues == {"creditor": f"value '{stranger}' must exist in resource 'creditors', "
                                  "field '_id'."}


def test_body_that_is_not_json_is_400(sandbox: RunningSandbox) -> None:
    """A body that does not parse as JSON is Eve's 400, nothing stored."""
    response = requests.post(f"{sandbox.url}/{PAYMENTS}", data=b"amount=1", timeout=10,
                             headers={**sandbox.headers, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["_error"]["code"] == 400
    assert sandbox.state.count(PAYMENTS) == 0


def test_bulk_insert_is_all_or_nothing(sandbox: RunningSandbox) -> None:
    """A JSON list is Eve's bulk insert: one bad item rejects the list with per-item status."""
    bad = post(sandbox, PAYMENTS, [payment_body(), payment_body(currency="EUR")])
    assert bad.status_code == 422
    assert bad.json()["_items"] == [{"_status": "OK"},
                                    {"_status": "ERR", "_issues": {"currency":
                                                                   "unallowed value EUR"}}]
    assert sandbox.state.count(PAYMENTS) == 0
    good = post(sandbox, PAYMENTS, [payment_body(amount=1.0), payment_body(amount=2.0)])
    assert good.status_code == 201
    assert [i["_payment_status"] for i in good.json()["_items"]] == ["completed", "completed"]
    assert sandbox.state.count(PAYMENTS) == 2


# -- business rules -----------------------------------------------------------------------------


def test_partial_payment_reduces_capital_first(sandbox: RunningSandbox) -> None:
    """A partial payment settles in full, reduces capital and leaves the case open."""
    post(sandbox, PAYMENTS, payment_body(OPEN_CASE, 500.0))
    case = sandbox.state.case(OPEN_CASE.id)
    assert case is not None
    assert case["total_remaining_capital_amount"] == 1500.0
    assert case["total_remaining_interest_amount"] == 14.0
    assert case["local_remaining_transaction_amount"] == 1514.0
    assert case["status"] == "debt_collection" and "closed" not in case
    assert case["transactions"][-1]["amount"] == -500.0
    assert sandbox.state.records(PAYMENTS)[0]["settled_amount"] == 500.0


def test_paying_everything_closes_the_case_fully_paid(sandbox: RunningSandbox) -> None:
    """Paying capital, interest and costs exactly closes the case with reason fully_paid."""
    post(sandbox, PAYMENTS, payment_body(COSTS_CASE, COSTS_CASE.remaining))
    case = sandbox.state.case(COSTS_CASE.id)
    assert case is not None
    assert case["status"] == "closed"
    assert case["closed"]["reason"] == "fully_paid"
    assert case["status_history"][-1]["status"] == "closed"
    assert [t["type"] for t in case["transactions"][-3:]] == ["capital", "interest", "costs"]
    assert sum(t["amount"] for t in case["transactions"][-3:]) == -COSTS_CASE.remaining


def test_paying_the_capital_writes_off_the_rest_and_closes(sandbox: RunningSandbox) -> None:
    """As in the case-flow guide, paying the capital depreciates interest and closes the case."""
    record_id = post(sandbox, PAYMENTS, payment_body(OPEN_CASE, 2000.0)).json()["_id"]
    case = sandbox.state.case(OPEN_CASE.id)
    assert case is not None
    assert case["closed"]["reason"] == "fully_paid_depreciation"
    assert case["total_remaining_transaction_amount"] == 0.0
    paid, written_off = case["transactions"][-2:]
    assert paid["creditor_payment"] == record_id and paid["amount"] == -2000.0
    assert written_off["description_locale_tag"] == "api.transaction.depreciated"
    assert written_off["amount"] == -14.0


def test_overpayment_applies_what_remains_with_a_warning(make_sandbox: Any) -> None:
    """Paying more than remains settles the remainder only: status warning, case closed."""
    sb = make_sandbox(return_status_fields=True)
    answer = post(sb, PAYMENTS, payment_body(COSTS_CASE, 1000.0)).json()
    assert answer["_payment_status"] == "warning"
    assert answer["status"] == "warning"
    assert answer["status_reason_locale"] == "creditor_payment.overpayment"
    assert answer["settled_amount"] == COSTS_CASE.remaining
    case = sb.state.case(COSTS_CASE.id)
    assert case is not None and case["status"] == "closed"


@pytest.mark.parametrize("case", [CLOSED_CASE, CANCELLED_CASE])
def test_payment_to_a_closed_case_is_stored_as_error(make_sandbox: Any, case: Any) -> None:
    """A payment to a closed or cancelled case is 201 with status error and nothing settled."""
    sb = make_sandbox(return_status_fields=True)
    response = post(sb, PAYMENTS, payment_body(case, 10.0))
    assert response.status_code == 201
    assert response.json()["_payment_status"] == "error"
    record = sb.state.records(PAYMENTS)[0]
    assert record["status"] == "error"
    assert record["status_reason_locale"] == "creditor_payment.case_closed"
    assert record["settled_amount"] == 0.0
    assert "booking_date" not in record


def test_crediting_follows_the_same_rules_with_its_own_keys(make_sandbox: Any) -> None:
    """A crediting reduces the case like a payment, with creditor_crediting.* locale keys."""
    sb = make_sandbox(return_status_fields=True)
    first = post(sb, CREDITINGS, crediting_body(COSTS_CASE, 100.0)).json()
    assert first["status_reason_locale"] == "creditor_crediting.crediting_settled"
    over = post(sb, CREDITINGS, crediting_body(COSTS_CASE, 1000.0)).json()
    assert over["status"] == "warning"
    assert over["status_reason_locale"] == "creditor_crediting.overcrediting"
    assert over["settled_amount"] == COSTS_CASE.remaining - 100.0
    closed = post(sb, CREDITINGS, crediting_body(COSTS_CASE, 1.0)).json()
    assert closed["_payment_status"] == "error"
    assert closed["status_reason_locale"] == "creditor_crediting.case_closed"
    case = sb.state.case(COSTS_CASE.id)
    assert case is not None and case["closed"]["reason"] == "fully_credited"


def test_cancellation_cancels_an_open_case_and_warns_on_a_closed_one(make_sandbox: Any) -> None:
    """Cancelling an open case completes and closes it; again, or a closed case, is a warning."""
    sb = make_sandbox(return_status_fields=True)
    first = post(sb, CANCELLATIONS, cancellation_body(OPEN_CASE)).json()
    assert first["_cancellation_status"] == "completed"
    assert first["status_reason_locale"] == "creditor_cancellation.case_cancelled"
    case = sb.state.case(OPEN_CASE.id)
    assert case is not None
    assert case["status"] == "cancelled"
    assert case["closed"]["reason"] == "creditor_cancellation"
    again = post(sb, CANCELLATIONS, cancellation_body(OPEN_CASE)).json()
    assert again["_cancellation_status"] == "warning"
    assert again["status_reason_locale"] == "creditor_cancellation.case_already_closed"
    closed = post(sb, CANCELLATIONS, cancellation_body(CLOSED_CASE)).json()
    assert closed["_cancellation_status"] == "warning"


def test_amounts_are_exact_to_the_cent(sandbox: RunningSandbox) -> None:
    """Many small payments add up exactly (decimal arithmetic, not float drift)."""
    for _ in range(10):
        post(sandbox, PAYMENTS, payment_body(COSTS_CASE, 0.1))
    case = sandbox.state.case(COSTS_CASE.id)
    assert case is not None
    assert case["total_remaining_capital_amount"] == 499.0


def test_other_creditors_case_by_own_invoice_number(sandbox: RunningSandbox) -> None:
    """Invoice numbers resolve per creditor: the other creditor reaches its own case."""
    body = cancellation_body(OTHER_CASE)
    del body["case"]
    body["invoice_number"] = OTHER_CASE.invoice_number
    assert post(sandbox, CANCELLATIONS, body).status_code == 201
    record = sandbox.state.records(CANCELLATIONS)[0]
    assert record["case"] == OTHER_CASE.id and record["creditor"] == OTHER_CREDITOR
