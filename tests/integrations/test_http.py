"""The HTTP wrapper over real sockets (the sandbox's fault injection): retries, backoff,
Retry-After, timeouts; and its JSON rules (Decimal in, strings out, floats refused)."""

from __future__ import annotations

import socket
import time
from decimal import Decimal

import pytest

from integrations.changenow.client import ChangeNowClient
from integrations.errors import ChangeNowError, ProviderError
from integrations.http import HttpClient, RetryPolicy, dumps, loads, parse_retry_after
from integrations.sandbox import SandboxServer
from tests.conftest import Control

FAST_RETRY = RetryPolicy(retries=2, backoff_factor=0, backoff_jitter=0)
MIN_AMOUNT = "/v2/exchange/min-amount"


def _client(
    sandbox: SandboxServer, retry: RetryPolicy = FAST_RETRY, read: float = 5
) -> ChangeNowClient:
    return ChangeNowClient(sandbox.url, "k", timeout=(2, read), retry=retry)


def test_it_retries_a_get_through_injected_5xx(sandbox: SandboxServer, control: Control) -> None:
    control.fail(path=MIN_AMOUNT, status=503, count=2)
    assert _client(sandbox).get_min_amount("eth", "usdt") > 0
    assert control.state()["fail_rules"] == []  # both failures were consumed by retries


def test_it_stops_retrying_when_the_budget_is_spent(
    sandbox: SandboxServer, control: Control
) -> None:
    control.fail(path=MIN_AMOUNT, status=500, count=5)
    with pytest.raises(ChangeNowError) as caught:
        _client(sandbox).get_min_amount("eth", "usdt")
    assert caught.value.code == "server_error" and caught.value.transient
    assert control.state()["fail_rules"][0]["count"] == 2  # 1 try + 2 retries used 3 of 5


def test_it_honours_a_short_retry_after(sandbox: SandboxServer, control: Control) -> None:
    control.fail(path=MIN_AMOUNT, status=429, retry_after=1, count=1)
    started = time.monotonic()
    assert _client(sandbox).get_min_amount("eth", "usdt") > 0
    assert time.monotonic() - started >= 0.9


def test_it_hands_back_a_long_retry_after_instead_of_sleeping(
    sandbox: SandboxServer, control: Control
) -> None:
    control.fail(path=MIN_AMOUNT, status=429, retry_after=3600, count=1)
    started = time.monotonic()
    with pytest.raises(ChangeNowError) as caught:
        _client(sandbox).get_min_amount("eth", "usdt")
    assert time.monotonic() - started < 5
    assert caught.value.code == "rate_limited"
    assert caught.value.retry_after == 3600


def test_it_ignores_a_garbled_retry_after(sandbox: SandboxServer, control: Control) -> None:
    control.fail(path=MIN_AMOUNT, status=503, retry_after="soon", count=1)
    assert _client(sandbox).get_min_amount("eth", "usdt") > 0


def test_it_retries_a_get_that_timed_out(sandbox: SandboxServer, control: Control) -> None:
    control.fail(path=MIN_AMOUNT, status=503, delay=1.0, count=1)
    assert _client(sandbox, read=0.3).get_min_amount("eth", "usdt") > 0


def test_it_reports_a_get_that_keeps_timing_out(sandbox: SandboxServer, control: Control) -> None:
    control.fail(path=MIN_AMOUNT, status=503, delay=0.6, count=3)
    with pytest.raises(ChangeNowError) as caught:
        _client(
            sandbox, retry=RetryPolicy(retries=1, backoff_factor=0, backoff_jitter=0), read=0.2
        ).get_min_amount("eth", "usdt")
    assert caught.value.code in ("timeout", "connection_error")
    assert caught.value.transient


def test_it_never_retries_a_post_that_timed_out(sandbox: SandboxServer, control: Control) -> None:
    control.config(create_delay=1.0)
    client = _client(sandbox, read=0.3)
    with pytest.raises(ChangeNowError) as caught:
        client.create_exchange(
            from_currency="eth",
            to_currency="usdt",
            from_network="eth",
            to_network="eth",
            from_amount=Decimal("0.1"),
            address="0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        )
    assert caught.value.code == "timeout" and caught.value.transient
    time.sleep(0.8)  # let the slow answer finish server-side
    # The exchange exists although the caller saw a timeout, and exactly once: no auto-retry.
    assert len(control.state()["exchanges"]) == 1


def test_it_maps_a_refused_connection_to_a_transient_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = ChangeNowClient(f"http://127.0.0.1:{port}", "k", timeout=(1, 1), retry=FAST_RETRY)
    with pytest.raises(ChangeNowError) as caught:
        client.get_min_amount("eth", "usdt")
    assert caught.value.code == "connection_error" and caught.value.transient


def test_it_parses_numbers_as_decimal_never_float() -> None:
    data = loads('{"a": 0.1, "b": 1e-7, "c": 10, "d": [0.30000000000000004]}')
    assert data == {
        "a": Decimal("0.1"),
        "b": Decimal("1e-7"),
        "c": 10,
        "d": [Decimal("0.30000000000000004")],
    }
    assert all(not isinstance(v, float) for v in (data["a"], data["b"], data["d"][0]))


def test_it_refuses_floats_in_request_bodies_and_writes_decimals_plainly() -> None:
    with pytest.raises(TypeError, match="float"):
        dumps({"amount": 0.1})
    with pytest.raises(TypeError, match="float"):
        dumps({"nested": [{"amount": 1.5}]})
    assert dumps({"amount": Decimal("1E-7")}) == '{"amount":"0.0000001"}'
    with pytest.raises(TypeError):
        dumps({"amount": Decimal("NaN")})


def test_it_refuses_floats_in_query_parameters() -> None:
    client = HttpClient("http://127.0.0.1:9", retry=RetryPolicy(retries=0))
    with pytest.raises(TypeError, match="float"):
        client.request("GET", "/x", params={"amount": 0.5})


def test_it_reads_retry_after_as_seconds_or_http_date() -> None:
    assert parse_retry_after("12") == 12
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past
    future = parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT")
    assert future is not None and future > 10**9


def test_it_keeps_a_json_rpc_url_exactly_as_configured() -> None:
    client = HttpClient("https://node.example/v3/KEY", retry=RetryPolicy(retries=0))
    assert client.url("") == "https://node.example/v3/KEY"
    assert client.url("/v2/x") == "https://node.example/v3/KEY/v2/x"


def test_provider_error_renders_its_facts() -> None:
    error = ProviderError("boom", "server_error", False, 3.0, status=503)
    assert "server_error" in str(error) and "503" in str(error)
    assert error.transient and error.retry_after == 3.0
