"""ChangeNOW recovery calls at the HTTP seam (responses): get_actions, request_refund,
request_continue; and the refund fields of by-id."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import responses

from integrations.changenow.client import ChangeNowClient, parse_exchange
from integrations.errors import ChangeNowError
from integrations.http import RetryPolicy

API = "https://cn.test"
ONE_TRY = RetryPolicy(retries=0)
FAST_RETRY = RetryPolicy(retries=3, backoff_factor=0, backoff_jitter=0)
ACTIONS = f"{API}/v2/exchange/actions"
REFUND = f"{API}/v2/exchange/refund"
CONTINUE = f"{API}/v2/exchange/continue"


@pytest.fixture
def client() -> ChangeNowClient:
    return ChangeNowClient(API, "secret-key", retry=ONE_TRY)


@responses.activate
def test_it_reads_the_documented_actions_shape_with_exact_amounts(
    client: ChangeNowClient,
) -> None:
    responses.get(
        ACTIONS,
        body="""{"error": null,
        "refund": {"available": true, "amount": 0.000122940000000001,
                   "address": {"address": "0xREFUND", "extraId": null},
                   "additionalAddressList": ["0xOTHER"]},
        "continue": {"available": false, "currentEstimate": "0.0277754"}}""",
    )
    actions = client.get_actions("54b1bfb3dc2320")
    assert responses.calls[0].request.params == {"id": "54b1bfb3dc2320"}
    assert responses.calls[0].request.headers["x-changenow-api-key"] == "secret-key"
    assert actions.refund is True and actions.continue_ is False and actions.available
    assert actions.refund_amount == Decimal("0.000122940000000001")  # a float would lose it
    assert actions.refund_address == "0xREFUND" and actions.refund_extra_id is None
    assert actions.continue_estimate == Decimal("0.0277754")
    assert actions.raw["refund"]["additionalAddressList"] == ["0xOTHER"]


@pytest.mark.parametrize(
    ("body", "refund", "carry_on"),
    [
        ({"id": "e1", "refund": True, "continue": False}, True, False),
        ({"id": "e1", "refund": False, "continue": True}, False, True),
        ({"id": "e1", "refund": False, "continue": False}, False, False),
        ({"id": "e1", "actions": ["continue"]}, False, True),
        ({"id": "e1", "actions": ["Refund", "continue"]}, True, True),
        ({"id": "e1", "actions": []}, False, False),
        ({"refund": {"available": True}}, True, False),  # continue not mentioned: not offered
    ],
)
@responses.activate
def test_it_accepts_booleans_and_a_list_of_action_names(
    client: ChangeNowClient, body: dict[str, object], refund: bool, carry_on: bool
) -> None:
    responses.get(ACTIONS, json=body)
    actions = client.get_actions("e1")
    assert (actions.refund, actions.continue_) == (refund, carry_on)
    assert actions.refund_amount is None and actions.continue_estimate is None


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"id": "e1"},
        {"refund": "yes"},
        {"refund": {"amount": "1"}},  # no "available"
        {"actions": "refund"},
        {"refund": {"available": True, "amount": "-1"}},
        [],
    ],
)
@responses.activate
def test_it_treats_an_unreadable_actions_answer_as_transient_never_as_none_offered(
    client: ChangeNowClient, body: object
) -> None:
    responses.get(ACTIONS, json=body)
    with pytest.raises(ChangeNowError) as caught:
        client.get_actions("e1")
    assert caught.value.code == "bad_response" and caught.value.transient


@pytest.mark.parametrize(
    ("status", "body", "code", "permanent"),
    [
        (404, {"error": "not_found", "message": "Exchange not found"}, "not_found", True),
        (400, {"error": "not_valid_params", "message": "id is required"}, "not_valid_params", True),
        (401, None, "unauthorized", True),
        (429, {"error": "too_many_requests"}, "rate_limited", False),
        (503, {"error": "internal_error"}, "server_error", False),
        (200, {"error": "not_found", "message": "no such exchange"}, "not_found", True),
    ],
)
@responses.activate
def test_it_maps_actions_errors_like_the_other_calls(
    client: ChangeNowClient, status: int, body: object, code: str, permanent: bool
) -> None:
    responses.get(ACTIONS, status=status, json=body)
    with pytest.raises(ChangeNowError) as caught:
        client.get_actions("e1")
    assert caught.value.code == code and caught.value.permanent is permanent


@responses.activate
def test_it_retries_a_get_of_actions_on_5xx() -> None:
    client = ChangeNowClient(API, "k", retry=FAST_RETRY)
    responses.get(ACTIONS, status=502)
    responses.get(ACTIONS, json={"refund": True, "continue": True})
    assert client.get_actions("e1").refund
    assert len(responses.calls) == 2


@responses.activate
def test_it_posts_a_refund_with_id_and_address_and_extra_id_only_when_given(
    client: ChangeNowClient,
) -> None:
    responses.post(REFUND, json={"result": True})
    assert client.request_refund("e1", address="0xHOST") is None
    assert json.loads(responses.calls[0].request.body) == {"id": "e1", "address": "0xHOST"}
    assert responses.calls[0].request.headers["Content-Type"] == "application/json"
    client.request_refund("e2", address="rHOST", extra_id="123")
    assert json.loads(responses.calls[1].request.body) == {
        "id": "e2",
        "address": "rHOST",
        "extraId": "123",
    }


@responses.activate
def test_it_posts_a_continue_and_accepts_both_success_shapes(client: ChangeNowClient) -> None:
    responses.post(CONTINUE, json={"result": True})
    responses.post(
        CONTINUE,
        json={
            "result": {"result": True, "data": {"estimate": {"amount": 48.4, "currency": "trx"}}}
        },
    )
    assert client.request_continue("e1") is None
    assert client.request_continue("e1") is None
    assert [json.loads(c.request.body) for c in responses.calls] == [{"id": "e1"}, {"id": "e1"}]


@pytest.mark.parametrize(
    ("status", "body", "code", "permanent"),
    [
        (
            400,
            {"error": "action_not_available", "message": "Refund is not available"},
            "action_not_available",
            True,
        ),
        (400, {"error": "not_valid_refund_address"}, "not_valid_refund_address", True),
        (404, {"error": "not_found", "message": "Exchange not found"}, "not_found", True),
        (403, None, "forbidden", True),
        (200, {"result": False}, "action_refused", True),
        (200, {"error": "action_not_available", "message": "no"}, "action_not_available", True),
        (200, {"ok": True}, "bad_response", False),
        (200, {"result": "yes"}, "bad_response", False),
        (429, {"error": "too_many_requests"}, "rate_limited", False),
        (500, {"error": "internal_error"}, "server_error", False),
    ],
)
@pytest.mark.parametrize("call", ["refund", "continue"])
@responses.activate
def test_it_maps_refund_and_continue_errors(
    client: ChangeNowClient, call: str, status: int, body: object, code: str, permanent: bool
) -> None:
    responses.post(REFUND if call == "refund" else CONTINUE, status=status, json=body)
    with pytest.raises(ChangeNowError) as caught:
        if call == "refund":
            client.request_refund("e1", address="0xHOST")
        else:
            client.request_continue("e1")
    assert caught.value.code == code and caught.value.permanent is permanent


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
@responses.activate
def test_it_never_retries_a_refund_or_a_continue_by_itself(status: int) -> None:
    client = ChangeNowClient(API, "k", retry=FAST_RETRY)
    responses.post(REFUND, status=status, json={"error": "internal_error"})
    responses.post(CONTINUE, status=status, json={"error": "internal_error"})
    with pytest.raises(ChangeNowError) as refund:
        client.request_refund("e1", address="0xHOST")
    with pytest.raises(ChangeNowError) as carry_on:
        client.request_continue("e1")
    assert refund.value.transient and carry_on.value.transient
    assert len(responses.calls) == 2  # one POST each, whatever the policy allows for GETs


def test_it_refuses_empty_ids_and_addresses_before_calling(client: ChangeNowClient) -> None:
    with pytest.raises(ValueError):
        client.get_actions("")
    with pytest.raises(ValueError):
        client.request_refund("", address="0xHOST")
    with pytest.raises(ValueError):
        client.request_refund("e1", address="")
    with pytest.raises(ValueError):
        client.request_continue("")


def test_by_id_refund_fields_are_read_exactly() -> None:
    exchange = parse_exchange(
        {
            "id": "e1",
            "status": "refunded",
            "actionsAvailable": False,
            "refundHash": "0xabc",
            "refundAmount": Decimal("0.098700000000000001"),
            "refundAddress": "0xHOST",
        }
    )
    assert exchange.refund_hash == "0xabc" and exchange.actions_available is False
    assert exchange.refund_amount == Decimal("0.098700000000000001")
    assert isinstance(exchange.refund_amount, Decimal)
    pending = parse_exchange({"id": "e1", "status": "failed", "actionsAvailable": True})
    assert pending.refund_hash is None and pending.refund_amount is None  # unknown, not 0
    assert pending.actions_available is True
