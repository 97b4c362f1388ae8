"""ChangeNOW client at the HTTP seam (responses): error codes, parsing, request shapes."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import requests
import responses

from integrations.changenow.client import ChangeNowClient
from integrations.errors import ChangeNowError, ProviderError
from integrations.http import RetryPolicy

API = "https://cn.test"
ONE_TRY = RetryPolicy(retries=0)
FAST_RETRY = RetryPolicy(retries=3, backoff_factor=0, backoff_jitter=0)


@pytest.fixture
def client() -> ChangeNowClient:
    return ChangeNowClient(API, "secret-key", retry=ONE_TRY)


@pytest.mark.parametrize(
    ("status", "body", "code", "permanent"),
    [
        (
            400,
            {"error": "not_valid_params", "message": "fromCurrency is required"},
            "not_valid_params",
            True,
        ),
        (
            400,
            {"error": "out_of_range", "message": "Amount is less then minimal"},
            "out_of_range",
            True,
        ),
        (400, {"error": "deposit_too_small", "message": "too small"}, "deposit_too_small", True),
        (
            400,
            {"error": "pair_is_inactive", "message": "Pair is inactive"},
            "pair_is_inactive",
            True,
        ),
        (
            400,
            {"error": "not_valid_fixed_rate_pair", "message": "no"},
            "not_valid_fixed_rate_pair",
            True,
        ),
        (
            400,
            {"error": "rate_id_not_found_or_expired", "message": "expired"},
            "rate_id_not_found_or_expired",
            True,
        ),
        (
            400,
            {"error": "not_valid_address", "message": "Invalid address"},
            "not_valid_address",
            True,
        ),
        (400, {"error": "some_future_code", "message": "new"}, "some_future_code", True),
        (400, None, "http_400", True),
        (401, {"error": "unauthorized", "message": "Invalid api key"}, "unauthorized", True),
        (401, None, "unauthorized", True),
        (403, {"error": "forbidden", "message": "Access denied"}, "forbidden", True),
        (403, None, "forbidden", True),
        (404, {"error": "not_found", "message": "Exchange not found"}, "not_found", True),
        (404, None, "not_found", True),
        (429, {"error": "too_many_requests", "message": "slow down"}, "rate_limited", False),
        (500, {"error": "internal_error", "message": "oops"}, "server_error", False),
        (502, None, "server_error", False),
        (503, {"error": "not_valid_params", "message": "5xx wins"}, "server_error", False),
    ],
)
@responses.activate
def test_it_maps_every_error_answer_to_a_code_and_permanence(
    client: ChangeNowClient, status: int, body: object, code: str, permanent: bool
) -> None:
    responses.get(
        f"{API}/v2/exchange/by-id",
        status=status,
        body=json.dumps(body) if body is not None else "<html>gateway</html>",
        headers={"Retry-After": "7"} if status == 429 else {},
    )
    with pytest.raises(ChangeNowError) as caught:
        client.get_exchange("abc")
    error = caught.value
    assert error.code == code
    assert error.permanent is permanent
    assert error.status == status
    if isinstance(body, dict):
        assert body["message"] in error.message
    if status == 429:
        assert error.retry_after == 7


@responses.activate
def test_it_parses_an_exchange_with_exact_decimals_and_nulls_kept_as_none(
    client: ChangeNowClient,
) -> None:
    responses.get(
        f"{API}/v2/exchange/by-id",
        body="""{"id":"a1b2c3d4e5f607","status":"exchanging","actionsAvailable":false,
        "fromCurrency":"eth","fromNetwork":"eth","toCurrency":"usdt","toNetwork":"eth",
        "expectedAmountFrom":0.1,"expectedAmountTo":"298.5","amountFrom":0.100000000000000001,
        "amountTo":null,"payinAddress":"0xabc","payoutAddress":"0xdef","payinHash":"0x11",
        "payoutHash":null,"refundAmount":null,"createdAt":"2024-05-01T10:00:00.123Z",
        "updatedAt":"2024-05-01T10:01:00.000Z","depositReceivedAt":null,"validUntil":null}""",
    )
    exchange = client.get_exchange("a1b2c3d4e5f607")
    assert exchange.status == "exchanging"
    assert exchange.amount_from == Decimal("0.100000000000000001")  # float would lose this
    assert isinstance(exchange.expected_amount_from, Decimal)
    assert exchange.expected_amount_to == Decimal("298.5")
    assert exchange.amount_to is None  # unknown, never zero
    assert exchange.refund_amount is None
    assert exchange.created_at is not None and exchange.created_at.tzinfo is not None
    assert exchange.created_at.microsecond == 123000
    assert exchange.is_known_status and not exchange.is_terminal


@responses.activate
def test_it_returns_unknown_statuses_as_sent(client: ChangeNowClient) -> None:
    responses.get(f"{API}/v2/exchange/by-id", json={"id": "x1", "status": "on_hold"})
    exchange = client.get_exchange("x1")
    assert exchange.status == "on_hold"
    assert not exchange.is_known_status
    assert exchange.amount_to is None


@responses.activate
def test_it_rejects_a_negative_or_garbage_amount_as_bad_response(client: ChangeNowClient) -> None:
    responses.get(
        f"{API}/v2/exchange/by-id", json={"id": "x1", "status": "finished", "amountTo": "-1"}
    )
    with pytest.raises(ChangeNowError) as caught:
        client.get_exchange("x1")
    assert caught.value.code == "bad_response"
    responses.replace(
        responses.GET,
        f"{API}/v2/exchange/by-id",
        json={"id": "x1", "status": "finished", "amountTo": "lots"},
    )
    with pytest.raises(ChangeNowError, match="not a number"):
        client.get_exchange("x1")


@responses.activate
def test_it_rejects_a_non_json_success_as_transient_bad_response(client: ChangeNowClient) -> None:
    responses.get(f"{API}/v2/exchange/min-amount", body="<html>maintenance</html>")
    with pytest.raises(ChangeNowError) as caught:
        client.get_min_amount("eth", "usdt")
    assert caught.value.code == "bad_response"
    assert caught.value.transient


@responses.activate
def test_it_sends_create_with_amount_as_string_refund_address_and_api_key(
    client: ChangeNowClient,
) -> None:
    responses.post(
        f"{API}/v2/exchange",
        body='{"id": "e1", "payinAddress": "0xPAYIN", "payoutAddress": "0xOUT",'
        ' "fromAmount": 0.123456789012345678, "toAmount": 370.1, "flow": "standard"}',
    )
    created = client.create_exchange(
        from_currency="eth",
        to_currency="usdt",
        from_network="eth",
        to_network="eth",
        from_amount=Decimal("0.123456789012345678"),
        address="0xOUT",
        refund_address="0xREFUND",
    )
    request = responses.calls[0].request
    assert request.headers["x-changenow-api-key"] == "secret-key"
    sent = json.loads(request.body)
    assert sent["fromAmount"] == "0.123456789012345678"  # a string, every digit
    assert sent["refundAddress"] == "0xREFUND"
    assert sent["flow"] == "standard" and sent["type"] == "direct"
    assert "toAmount" not in sent and "extraId" not in sent  # None values are not sent
    assert created.id == "e1" and created.payin_address == "0xPAYIN"
    assert created.from_amount == Decimal("0.123456789012345678")


@responses.activate
def test_it_never_retries_create_by_itself() -> None:
    client = ChangeNowClient(API, "k", retry=FAST_RETRY)
    responses.post(f"{API}/v2/exchange", status=503, json={"error": "internal_error"})
    with pytest.raises(ChangeNowError) as caught:
        client.create_exchange(
            from_currency="eth", to_currency="usdt", from_amount=Decimal("1"), address="0xOUT"
        )
    assert caught.value.transient
    assert len(responses.calls) == 1


@responses.activate
def test_it_retries_a_get_on_5xx_then_succeeds() -> None:
    client = ChangeNowClient(API, "k", retry=FAST_RETRY)
    url = f"{API}/v2/exchange/min-amount"
    responses.get(url, status=502)
    responses.get(url, status=503)
    responses.get(url, json={"minAmount": 0.0042})
    assert client.get_min_amount("eth", "usdt") == Decimal("0.0042")
    assert len(responses.calls) == 3


@responses.activate
def test_it_gives_up_after_the_retry_budget_with_a_transient_error() -> None:
    client = ChangeNowClient(
        API, "k", retry=RetryPolicy(retries=2, backoff_factor=0, backoff_jitter=0)
    )
    responses.get(f"{API}/v2/exchange/range", status=500, json={"error": "internal_error"})
    with pytest.raises(ChangeNowError) as caught:
        client.get_range("eth", "usdt")
    assert caught.value.code == "server_error" and caught.value.transient
    assert len(responses.calls) == 3  # the first try and two retries


@responses.activate
def test_it_does_not_retry_a_permanent_4xx() -> None:
    client = ChangeNowClient(API, "k", retry=FAST_RETRY)
    responses.get(f"{API}/v2/exchange/range", status=400, json={"error": "pair_is_inactive"})
    with pytest.raises(ChangeNowError):
        client.get_range("eth", "usdt")
    assert len(responses.calls) == 1


@responses.activate
def test_it_maps_a_timeout_and_a_refused_connection_to_transient_errors(
    client: ChangeNowClient,
) -> None:
    responses.get(f"{API}/v2/exchange/by-id", body=requests.exceptions.ReadTimeout("slow"))
    with pytest.raises(ChangeNowError) as caught:
        client.get_exchange("x")
    assert caught.value.code == "timeout" and caught.value.transient
    responses.replace(
        responses.GET,
        f"{API}/v2/exchange/by-id",
        body=requests.exceptions.ConnectionError("refused"),
    )
    with pytest.raises(ChangeNowError) as caught:
        client.get_exchange("x")
    assert caught.value.code == "connection_error" and caught.value.transient


@responses.activate
def test_it_sends_quote_parameters_with_their_changenow_names(client: ChangeNowClient) -> None:
    responses.get(
        f"{API}/v2/exchange/estimated-amount",
        json={
            "fromCurrency": "usdt",
            "toCurrency": "btc",
            "flow": "fixed-rate",
            "type": "reverse",
            "fromAmount": "61.2",
            "toAmount": "0.001",
            "rateId": "r-1",
            "validUntil": "2030-01-01T00:00:00Z",
        },
    )
    estimate = client.get_estimate(
        "usdt",
        "btc",
        to_amount=Decimal("0.001"),
        from_network="eth",
        to_network="btc",
        flow="fixed-rate",
        type="reverse",
    )
    params = responses.calls[0].request.params
    assert params == {
        "fromCurrency": "usdt",
        "toCurrency": "btc",
        "fromNetwork": "eth",
        "toNetwork": "btc",
        "flow": "fixed-rate",
        "type": "reverse",
        "toAmount": "0.001",
        "useRateId": "true",
    }
    assert estimate.rate_id == "r-1" and estimate.from_amount == Decimal("61.2")


def test_it_refuses_floats_and_inconsistent_directions_before_calling(
    client: ChangeNowClient,
) -> None:
    with pytest.raises(TypeError):
        client.get_estimate("eth", "usdt", from_amount=0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="direct"):
        client.get_estimate("eth", "usdt", to_amount=Decimal("1"))
    with pytest.raises(ValueError, match="reverse"):
        client.get_estimate("eth", "usdt", from_amount=Decimal("1"), type="reverse")
    with pytest.raises(ValueError, match="rate_id"):
        client.create_exchange(
            from_currency="eth",
            to_currency="usdt",
            flow="fixed-rate",
            from_amount=Decimal("1"),
            address="0xOUT",
        )
    with pytest.raises(ValueError, match="flow"):
        client.get_min_amount("eth", "usdt", flow="floating")


@responses.activate
def test_it_treats_a_created_exchange_without_payin_address_as_unknown_outcome(
    client: ChangeNowClient,
) -> None:
    responses.post(f"{API}/v2/exchange", json={"id": "e1"})
    with pytest.raises(ProviderError) as caught:
        client.create_exchange(
            from_currency="eth", to_currency="usdt", from_amount=Decimal("1"), address="0xOUT"
        )
    assert caught.value.code == "bad_response" and caught.value.transient
