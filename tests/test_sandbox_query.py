"""GET of collections and records: the Eve envelope, where, sort, pagination, projection, 404."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from fixtures_sandbox import CREDITOR, OPEN_CASE, OTHER_CREDITOR, SEED_CASES, payment_body

from importer.sandbox.server import RunningSandbox

PAYMENTS = "creditor--payments"
NOT_FOUND = {"_status": "ERR", "_error": {
    "code": 404, "message": "The requested URL was not found on the server. If you entered the "
                            "URL manually please check your spelling and try again."}}


def get(sb: RunningSandbox, path: str, **params: Any) -> requests.Response:
    query = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in params.items()}
    return requests.get(f"{sb.url}{path}", params=query, headers=sb.headers, timeout=10)


def post_payments(sb: RunningSandbox, count: int) -> list[str]:
    ids = []
    with requests.Session() as session:
        for i in range(count):
            body = payment_body(OPEN_CASE, 1.0 + i, creditor_payment_reference=f"REF-{i:03d}")
            response = session.post(f"{sb.url}/{PAYMENTS}", json=body, headers=sb.headers,
                                    timeout=10)
            ids.append(response.json()["_id"])
    return ids


def test_list_envelope_without_links(sandbox: RunningSandbox) -> None:
    """A list answers _items and _meta {page, max_results, total}; HATEOAS off: no _links."""
    body = get(sandbox, "/cases").json()
    assert set(body) == {"_items", "_meta"}
    assert body["_meta"] == {"page": 1, "max_results": 25, "total": len(SEED_CASES)}
    assert [c["_id"] for c in body["_items"]] == [c.id for c in SEED_CASES]


def test_pagination_default_25_and_max_100(sandbox: RunningSandbox) -> None:
    """max_results defaults to 25 and is capped at 100; page walks the list without overlap."""
    ids = post_payments(sandbox, 30)
    first = get(sandbox, f"/{PAYMENTS}").json()
    assert len(first["_items"]) == 25 and first["_meta"]["total"] == 30
    second = get(sandbox, f"/{PAYMENTS}", page=2).json()
    assert [i["_id"] for i in first["_items"] + second["_items"]] == ids
    assert get(sandbox, f"/{PAYMENTS}", max_results=500).json()["_meta"]["max_results"] == 100
    small = get(sandbox, f"/{PAYMENTS}", max_results=7, page=5).json()
    assert [i["_id"] for i in small["_items"]] == ids[28:30]
    assert get(sandbox, f"/{PAYMENTS}", page=9).json()["_items"] == []


def test_where_equality_dot_notation_and_operators(sandbox: RunningSandbox) -> None:
    """where takes JSON equality, dot notation into nested fields and lists, and $in/$gt."""
    found = get(sandbox, "/cases", where={"debt.invoice_number": "INV-1002",
                                          "creditor": CREDITOR}).json()
    assert [c["debt"]["invoice_number"] for c in found["_items"]] == ["INV-1002"]
    assert found["_meta"]["total"] == 1
    other = get(sandbox, "/cases", where={"creditor": OTHER_CREDITOR}).json()["_items"]
    assert len(other) == 1
    post_payments(sandbox, 3)
    by_ref = get(sandbox, f"/{PAYMENTS}",
                 where={"creditor_payment_reference": "REF-001"}).json()["_items"]
    assert [p["amount"] for p in by_ref] == [2.0]
    some = get(sandbox, f"/{PAYMENTS}", where={"creditor_payment_reference": {
        "$in": ["REF-000", "REF-002"]}}).json()["_items"]
    assert len(some) == 2
    big = get(sandbox, f"/{PAYMENTS}", where={"amount": {"$gt": 1.5}}).json()["_items"]
    assert [p["amount"] for p in big] == [2.0, 3.0]
    with_costs = get(sandbox, "/cases", where={"transactions.type": "costs"}).json()["_items"]
    assert [c["debt"]["invoice_number"] for c in with_costs] == ["INV-1002"]
    assert get(sandbox, "/cases", where={"nope": 1}).json()["_items"] == []


@pytest.mark.parametrize(("name", "value"), [
    ("where", "{not json"), ("where", '{"a": {"$regex": "x"}}'), ("sort", "-"),
    ("projection", '{"a": 2}'),
])
def test_bad_query_arguments_are_400(sandbox: RunningSandbox, name: str, value: str) -> None:
    """An argument the sandbox cannot honour is Eve's 400, never a silently empty list."""
    response = requests.get(f"{sandbox.url}/cases", params={name: value},
                            headers=sandbox.headers, timeout=10)
    assert response.status_code == 400
    assert response.json()["_error"]["code"] == 400


@pytest.mark.parametrize(("args", "page", "max_results"), [
    ({"page": "0"}, 1, 25), ({"page": "-2"}, 2, 25), ({"page": "abc"}, 1, 25),
    ({"max_results": "0"}, 1, 25), ({"max_results": "-1"}, 1, 25),
    ({"max_results": "2.5"}, 1, 2), ({"max_results": "ten"}, 1, 25),
    ({"max_results": "1000"}, 1, 100),
])
def test_paging_arguments_are_read_as_eve_reads_them(sandbox: RunningSandbox,
                                                     args: dict[str, str], page: int,
                                                     max_results: int) -> None:
    """Eve never answers 400 to page/max_results: abs(int(page)) or 1; int(float(max)) when
    above 0, else the default 25; at most 100."""
    meta = get(sandbox, "/cases", **args).json()["_meta"]
    assert (meta["page"], meta["max_results"]) == (page, max_results)


def test_null_matches_a_missing_field_and_projections_reach_inside(
        sandbox: RunningSandbox) -> None:
    """`{"closed": null}` finds the cases without a `closed` too (MongoDB); a dotted projection
    keeps that sub-field; a single record is projected as list items are."""
    cases = get(sandbox, "/cases").json()["_items"]
    open_ones = [c["_id"] for c in cases if c.get("closed") is None]
    found = get(sandbox, "/cases", where={"closed": None}).json()["_items"]
    assert open_ones and [c["_id"] for c in found] == open_ones
    [first] = get(sandbox, "/cases", max_results="1",
                  projection='{"debt.invoice_number": 1}').json()["_items"]
    assert set(first) - {"_id", "_created", "_updated", "_etag"} == {"debt"}
    assert first["debt"] == {"invoice_number": cases[0]["debt"]["invoice_number"]}
    [without] = get(sandbox, "/cases", max_results="1",
                    projection='{"debt.invoice_number": 0}').json()["_items"]
    assert "invoice_number" not in without["debt"] and "capital_to_claim" in without["debt"]
    assert set(without) == set(cases[0])
    one = requests.get(f"{sandbox.url}/cases/{cases[0]['_id']}", timeout=10,
                       params={"projection": '{"status": 1}'}, headers=sandbox.headers).json()
    assert set(one) - {"_id", "_created", "_updated", "_etag"} == {"status"}


def test_sort_descending_and_by_amount(sandbox: RunningSandbox) -> None:
    """sort=-field reverses; sort=field orders ascending; Eve's list syntax works too."""
    post_payments(sandbox, 4)
    down = get(sandbox, f"/{PAYMENTS}", sort="-amount").json()["_items"]
    assert [p["amount"] for p in down] == [4.0, 3.0, 2.0, 1.0]
    up = get(sandbox, f"/{PAYMENTS}", sort='[("amount", 1)]').json()["_items"]
    assert [p["amount"] for p in up] == [1.0, 2.0, 3.0, 4.0]
    newest = get(sandbox, f"/{PAYMENTS}", sort="-_created,-amount").json()["_items"]
    assert len(newest) == 4


def test_projection_keeps_meta_fields(sandbox: RunningSandbox) -> None:
    """projection={"status": 1} returns status plus Eve's meta fields."""
    item = get(sandbox, "/cases", projection={"status": 1}, max_results=1).json()["_items"][0]
    assert set(item) == {"_id", "_created", "_updated", "_etag", "status"}


def test_get_by_id_and_eve_404(sandbox: RunningSandbox) -> None:
    """GET /{resource}/{id} returns the record, or Eve's 404 body when there is none."""
    payment_id = post_payments(sandbox, 1)[0]
    assert get(sandbox, f"/{PAYMENTS}/{payment_id}").json()["_id"] == payment_id
    assert get(sandbox, f"/cases/{OPEN_CASE.id}").json()["reference_number"] == "48640"
    for path in (f"/{PAYMENTS}/ffffffffffffffffffffffff", "/cases/nope", "/no-such-resource"):
        response = get(sandbox, path)
        assert response.status_code == 404
        assert response.json() == NOT_FOUND


def test_wrong_method_is_eve_405(sandbox: RunningSandbox) -> None:
    """Methods the resources do not allow (DELETE, PATCH) are Eve's 405."""
    response = requests.delete(f"{sandbox.url}/{PAYMENTS}", headers=sandbox.headers, timeout=10)
    assert response.status_code == 405
    assert response.json()["_error"]["code"] == 405
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


def test_in_by_ids_returns_exactly_those(sandbox: RunningSandbox) -> None:
    """`{"_id": {"$in": [...]}}` (the batched status read-back) finds exactly the ids named,
    and `$nin` the others."""
    ids = post_payments(sandbox, 30)
    wanted = ids[::3] + ["65f0c0ffee0000000000dead"]
    body = get(sandbox, f"/{PAYMENTS}", where={"_id": {"$in": wanted}}, max_results=100).json()
    assert [i["_id"] for i in body["_items"]] == ids[::3] and body["_meta"]["total"] == 10
    rest = get(sandbox, f"/{PAYMENTS}", where={"_id": {"$nin": wanted}}, max_results=100).json()
    assert [i["_id"] for i in rest["_items"]] == [i for i in ids if i not in ids[::3]]


def test_in_compares_like_equality() -> None:
    """`$in` of plain values matches as equality does: dates as instants, True is not 1,
    list fields by any element."""
    from importer.sandbox.query import matches, prepare

    def check(doc: dict[str, Any], values: list[Any]) -> tuple[bool, bool]:
        where = {"f": {"$in": values}}
        return matches(doc, prepare(where)), matches(doc, where)

    day = "Wed, 03 Sep 2025 08:00:00 GMT"
    assert check({"f": "Wed, 3 Sep 2025 08:00:00 GMT"}, [day]) == (True, True)
    assert check({"f": 1}, [True]) == (False, False)
    assert check({"f": True}, [1, "x"]) == (False, False)
    assert check({"f": 2.0}, [2]) == (True, True)
    assert check({"f": ["a", "b"]}, ["b"]) == (True, True)
    assert check({"f": None}, [None]) == (True, True)
    assert check({}, [None]) == (True, True)  # MongoDB: a missing field is null
    assert check({}, ["x"]) == (False, False)
    assert check({"f": {"k": 1}}, [1]) == (False, False)
