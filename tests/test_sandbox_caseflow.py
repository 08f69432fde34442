"""The seeds' case-flow example, step by step, against the sandbox."""

from __future__ import annotations

from typing import Any

import requests

from importer.sandbox.server import RunningSandbox

# Verbatim from seeds/case-flow-example.txt, steps 1 and 4 (the case id is ours).
CASE_DATA: dict[str, Any] = {
    "account": "674dbeaf08847b9501cc9132",
    "creditor": "674dbeb208847b9501cc9138",
    "first_action": "debt_collection",
    "currency": "SEK",
    "customer": {
        "name": "ACME Inc.", "id_number": "5560269986", "is_company": True,
        "address": {"address_line_1": "Storgatan 42", "zip_code": "12345",
                    "city": "Stockholm", "country": "SE"},
    },
    "debts": [{
        "invoice_number": "INV-2025-003", "debt_description": "Services",
        "invoice_date": "Mon, 07 Jul 2025 00:00:00 GMT", "capital_to_claim": 2000.0,
        "invoice_due_days_after_invoice_date": 31,
    }],
}
# The keys of the guide's answers to steps 3 (GET /cases/{id}) and 5 (the same, closed).
CASE_KEYS = {
    "_created", "_etag", "_id", "_updated", "account", "agreement_version", "case_registration",
    "case_settings", "creditor", "creditor_name", "currency", "customer", "customer_id_number",
    "customer_name", "customer_status", "debt", "debt_collection", "debtor", "debtor_id_number",
    "debtor_name", "event_listeners", "latest_state_date", "limitation", "next_flow_item",
    "original_invoice", "reference_number", "services", "state", "state_history", "status",
    "status_history", "transactions",
    *(f"{scope}_{kind}_{part}_amount" for scope in ("local", "total")
      for kind in ("added", "remaining") for part in ("capital", "costs", "interest",
                                                      "transaction")),
}
DEBT_KEYS = {"capital_to_claim", "debt_description", "interest_days_after_invoice_date",
             "invoice_date", "invoice_due_days_after_invoice_date", "invoice_number",
             "payout_reference"}
CLOSED_CASE_KEYS = CASE_KEYS - {"event_listeners", "next_flow_item"} | {
    "closed", "next_flow_item_on_close"}
PAYMENT_DATA: dict[str, Any] = {
    "account": "674dbeaf08847b9501cc9132",
    "creditor": "674dbeb208847b9501cc9138",
    "currency": "SEK",
    "amount": 2000.0,
    "bank_transaction_date": "Wed, 03 Sep 2025 08:00:00 GMT",
    "creditor_payment_reference": "PAY-REF-001",
    "origin": "creditor_system",
}


def test_case_flow_example_runs_step_by_step(sandbox: RunningSandbox) -> None:
    """Register a case, upload its invoice, read it, pay it in full, read it closed."""
    url, headers = sandbox.url, sandbox.headers
    with requests.Session() as http:
        # 1. Register a case.
        registered = http.post(f"{url}/case--registrations", json=CASE_DATA, headers=headers,
                               timeout=10)
        assert registered.status_code == 201, registered.text
        result = registered.json()
        assert set(result) == {"_updated", "_created", "_etag", "_id", "_status", "_cases",
                               "_ocr_numbers", "_ocr_numbers_ocr"}
        assert result["_status"] == "OK"
        case_id = result["_cases"][0]
        assert len(result["_ocr_numbers_ocr"][0]) == 20

        # 2. Upload the original invoice (multipart, as in the guide).
        files = {"file": ("original_invoice.pdf", b"%PDF-1.4 fake", "application/pdf")}
        data = {"domain": "cases", "dotted_path": "original_invoice"}
        uploaded = http.post(f"{url}/media--upload/{case_id}", files=files, data=data,
                             headers=headers, timeout=10)
        assert uploaded.status_code == 200
        assert uploaded.json()["url"].startswith("http")

        # 3. Check the case status.
        case = http.get(f"{url}/cases/{case_id}", headers=headers, timeout=10).json()
        assert set(case) == CASE_KEYS and set(case["debt"]) == DEBT_KEYS
        assert case["status"] == "debt_collection"
        assert case["debt"]["invoice_number"] == "INV-2025-003"
        assert case["creditor"] == CASE_DATA["creditor"]
        assert case["reference_number"]
        assert case["total_remaining_capital_amount"] == 2000
        assert case["total_remaining_interest_amount"] == 14.0
        assert case["local_remaining_transaction_amount"] == 2014.0
        assert case["original_invoice"] == {
            "id": case["original_invoice"]["id"], "filename": "original_invoice.pdf",
            "content_type": "application/pdf", "size": len(b"%PDF-1.4 fake")}
        before = len(case["transactions"])
        assert [s["status"] for s in case["status_history"]][-1] == "debt_collection"

        # 4. Register the creditor payment.
        paid = http.post(f"{url}/creditor--payments", json={**PAYMENT_DATA, "case": case_id},
                         headers=headers, timeout=10)
        assert paid.status_code == 201, paid.text
        payment = paid.json()
        assert set(payment) == {"_updated", "_created", "_etag", "_id", "_status",
                                "_payment_status"}
        assert payment["_payment_status"] == "completed"

        # 5. Final case status: closed.
        final = http.get(f"{url}/cases/{case_id}", headers=headers, timeout=10).json()
    assert final["status"] == "closed"
    assert set(final) == CLOSED_CASE_KEYS
    assert final["next_flow_item_on_close"] == case["next_flow_item"]
    assert final["status_history"][-1]["status"] == "closed"
    assert set(final["closed"]) == {"close_date", "reason"}
    assert final["closed"]["reason"] == "fully_paid_depreciation"
    assert final["total_remaining_transaction_amount"] == 0.0
    assert final["local_remaining_interest_amount"] == 0.0
    appended = final["transactions"][before:]
    assert appended[0] == {
        "bank_transaction_date": "Wed, 03 Sep 2025 08:00:00 GMT",
        "registration_date": appended[0]["registration_date"], "origin": "creditor_system",
        "type": "capital", "description_locale_tag": "creditor_payment.payment_settled",
        "amount": -2000.0, "payment_method": "creditor_payment",
        "creditor_payment": payment["_id"]}
    assert appended[1]["description_locale_tag"] == "api.transaction.depreciated"
    assert appended[1]["amount"] == -14.0
    assert final["_etag"] != case["_etag"]


def test_registration_is_validated_and_invoice_numbers_are_unique(
        sandbox: RunningSandbox) -> None:
    """A registration without debts is 422; the same invoice number twice is 422."""
    url, headers = sandbox.url, sandbox.headers
    missing = requests.post(f"{url}/case--registrations", json={"creditor": CASE_DATA["creditor"]},
                            headers=headers, timeout=10)
    assert missing.status_code == 422
    assert missing.json()["_issues"] == {"debts": "required field"}
    assert requests.post(f"{url}/case--registrations", json=CASE_DATA, headers=headers,
                         timeout=10).status_code == 201
    again = requests.post(f"{url}/case--registrations", json=CASE_DATA, headers=headers,
                          timeout=10)
    assert again.status_code == 422
    assert again.json()["_issues"] == {
        "debts": {"0": {"invoice_number": "value 'INV-2025-003' is not unique"}}}


def test_registered_case_is_found_by_invoice_number(sandbox: RunningSandbox) -> None:
    """A payment by invoice_number reaches a freshly registered case of that creditor."""
    url, headers = sandbox.url, sandbox.headers
    case_id = requests.post(f"{url}/case--registrations", json=CASE_DATA, headers=headers,
                            timeout=10).json()["_cases"][0]
    body = {**PAYMENT_DATA, "invoice_number": "INV-2025-003", "amount": 100.0}
    assert requests.post(f"{url}/creditor--payments", json=body, headers=headers,
                         timeout=10).status_code == 201
    assert sandbox.state.records("creditor--payments")[0]["case"] == case_id


def test_media_upload_for_unknown_case_is_404(sandbox: RunningSandbox) -> None:
    """Uploading to a case that does not exist is Eve's 404."""
    response = requests.post(f"{sandbox.url}/media--upload/ffffffffffffffffffffffff",
                             files={"file": ("a.pdf", b"x")}, headers=sandbox.headers,
                             timeout=10)
    assert response.status_code == 404
