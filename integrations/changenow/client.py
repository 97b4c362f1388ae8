"""ChangeNOW v2 client: quotes, exchanges, address validation, the partner list, and the
recovery actions (refund, continue) of an exchange that failed after its deposit.

Authentication is the ``x-changenow-api-key`` header; the base URL is the API root (the
client appends ``/v2/...``). GET calls are retried by the HTTP wrapper on 429/5xx/timeouts;
POST calls (``create_exchange``, ``request_refund``, ``request_continue``) are never retried
here: ChangeNOW has no idempotency key, so whether to ask again after a timeout is the
caller's decision (an unfunded duplicate exchange is harmless; a refund or continue asked
twice is refused the second time with ``action_not_available``, so re-read ``get_actions``
or ``get_exchange`` first).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import requests

from integrations.assets import AmountError, to_decimal
from integrations.changenow.types import (
    DIRECT,
    FIXED_RATE,
    FLOWS,
    REVERSE,
    STANDARD,
    TYPES,
    AddressValidation,
    AmountRange,
    CreatedExchange,
    Currency,
    Estimate,
    Exchange,
    ExchangeActions,
    ExchangeLeg,
    ExchangeList,
    PartnerExchange,
)
from integrations.errors import ChangeNowError, ProviderError
from integrations.http import DEFAULT_TIMEOUT, HttpClient, HttpResponse, RetryPolicy

API_KEY_HEADER = "x-changenow-api-key"

# Error codes ChangeNOW answers with in {"error": code, "message": text}. Any 4xx is
# permanent whatever its code (unknown codes are kept as sent); these are the ones the
# engine is expected to tell apart.
ERROR_CODES = frozenset(
    {
        "not_valid_params",
        "out_of_range",
        "deposit_too_small",
        "max_amount_exceeded",
        "pair_is_inactive",
        "fixed_rate_not_enabled",
        "not_valid_fixed_rate_pair",
        "rate_id_not_found_or_expired",
        "not_valid_address",
        "not_valid_refund_address",
        "not_valid_extra_id",
        "not_valid_refund_extra_id",
        "unauthorized",
        "forbidden",
        "not_found",
        "action_not_available",  # refund / continue asked for when ChangeNOW offers none
    }
)


class ChangeNowClient:
    def __init__(
        self,
        api_url: str,
        api_key: str,
        *,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        session: requests.Session | None = None,
    ) -> None:
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        self.http = HttpClient(
            api_url,
            headers=headers,
            timeout=timeout,
            retry=retry,
            session=session,
            error_class=ChangeNowError,
        )

    @classmethod
    def from_settings(cls, **overrides: Any) -> ChangeNowClient:
        from django.conf import settings

        return cls(settings.CHANGENOW_API_URL, settings.CHANGENOW_API_KEY, **overrides)

    # -- transport ---------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        what = f"{method} {path}"
        response = self.http.request(method, path, params=params, json_body=body)
        if response.status >= 400:
            raise self._error(response, what)
        if response.data is None:
            raise ChangeNowError(
                f"{what}: answer is not JSON: {response.text[:200]!r}",
                "bad_response",
                False,
                status=response.status,
            )
        return response.data

    @staticmethod
    def _error(response: HttpResponse, what: str) -> ChangeNowError:
        status = response.status
        body = response.data if isinstance(response.data, dict) else {}
        code = body.get("error") if isinstance(body.get("error"), str) else None
        message = body.get("message") if isinstance(body.get("message"), str) else None
        message = message or response.text[:300] or f"HTTP {status}"
        if status == 429:
            return ChangeNowError(
                f"{what}: {message}",
                "rate_limited",
                False,
                response.retry_after,
                status=status,
                data=response.data,
            )
        if status >= 500:
            # The body's code (if any) stays in data; a 5xx is transient whatever it says.
            return ChangeNowError(
                f"{what}: {message}",
                "server_error",
                False,
                response.retry_after,
                status=status,
                data=response.data,
            )
        default = {401: "unauthorized", 403: "forbidden", 404: "not_found"}.get(
            status, f"http_{status}"
        )
        return ChangeNowError(
            f"{what}: {message}", code or default, True, status=status, data=response.data
        )

    # -- endpoints ---------------------------------------------------------------------

    def get_currencies(
        self,
        *,
        active: bool | None = True,
        flow: str | None = None,
        buy: bool | None = None,
        sell: bool | None = None,
    ) -> list[Currency]:
        """GET /v2/exchange/currencies."""
        if flow is not None:
            _check_flow(flow)
        data = self._call(
            "GET",
            "/v2/exchange/currencies",
            params={"active": active, "flow": flow, "buy": buy, "sell": sell},
        )
        if not isinstance(data, list):
            raise _bad("currencies is not a list", data)
        return [_currency(item) for item in data]

    def get_min_amount(
        self,
        from_currency: str,
        to_currency: str,
        *,
        from_network: str | None = None,
        to_network: str | None = None,
        flow: str = STANDARD,
    ) -> Decimal:
        """GET /v2/exchange/min-amount: the smallest fromAmount ChangeNOW accepts."""
        _check_flow(flow)
        data = self._call(
            "GET",
            "/v2/exchange/min-amount",
            params=_pair(from_currency, to_currency, from_network, to_network, flow),
        )
        amount = _amount(_obj(data), "minAmount")
        if amount is None:
            raise _bad("min-amount without minAmount", data)
        return amount

    def get_range(
        self,
        from_currency: str,
        to_currency: str,
        *,
        from_network: str | None = None,
        to_network: str | None = None,
        flow: str = STANDARD,
    ) -> AmountRange:
        """GET /v2/exchange/range: min and (possibly null) max fromAmount."""
        _check_flow(flow)
        data = _obj(
            self._call(
                "GET",
                "/v2/exchange/range",
                params=_pair(from_currency, to_currency, from_network, to_network, flow),
            )
        )
        return AmountRange(
            from_currency=_s(data, "fromCurrency") or from_currency,
            to_currency=_s(data, "toCurrency") or to_currency,
            from_network=_s(data, "fromNetwork") or from_network,
            to_network=_s(data, "toNetwork") or to_network,
            flow=_s(data, "flow") or flow,
            min_amount=_amount(data, "minAmount"),
            max_amount=_amount(data, "maxAmount"),
            raw=data,
        )

    def get_estimate(
        self,
        from_currency: str,
        to_currency: str,
        *,
        from_amount: Decimal | None = None,
        to_amount: Decimal | None = None,
        from_network: str | None = None,
        to_network: str | None = None,
        flow: str = STANDARD,
        type: str = DIRECT,  # noqa: A002 - ChangeNOW's own parameter name
        use_rate_id: bool | None = None,
    ) -> Estimate:
        """GET /v2/exchange/estimated-amount.

        ``type="direct"`` quotes what ``from_amount`` buys; ``"reverse"`` quotes what must be
        sent for ``to_amount`` to arrive. A fixed-rate quote asks for a ``rateId`` by default.
        """
        _check_flow(flow)
        from_amount, to_amount = _direction(type, from_amount, to_amount)
        if use_rate_id is None:
            use_rate_id = flow == FIXED_RATE
        params = _pair(from_currency, to_currency, from_network, to_network, flow)
        params.update(
            {
                "fromAmount": from_amount,
                "toAmount": to_amount,
                "type": type,
                "useRateId": use_rate_id if flow == FIXED_RATE else None,
            }
        )
        data = _obj(self._call("GET", "/v2/exchange/estimated-amount", params=params))
        return Estimate(
            from_currency=_s(data, "fromCurrency") or from_currency,
            to_currency=_s(data, "toCurrency") or to_currency,
            from_network=_s(data, "fromNetwork") or from_network,
            to_network=_s(data, "toNetwork") or to_network,
            flow=_s(data, "flow") or flow,
            type=_s(data, "type") or type,
            from_amount=_amount(data, "fromAmount"),
            to_amount=_amount(data, "toAmount"),
            rate_id=_s(data, "rateId"),
            valid_until=_dt(data, "validUntil"),
            deposit_fee=_amount(data, "depositFee"),
            withdrawal_fee=_amount(data, "withdrawalFee"),
            transaction_speed_forecast=_s(data, "transactionSpeedForecast"),
            warning_message=_s(data, "warningMessage"),
            raw=data,
        )

    def create_exchange(
        self,
        *,
        from_currency: str,
        to_currency: str,
        address: str,
        from_amount: Decimal | None = None,
        to_amount: Decimal | None = None,
        from_network: str | None = None,
        to_network: str | None = None,
        extra_id: str | None = None,
        refund_address: str | None = None,
        refund_extra_id: str | None = None,
        flow: str = STANDARD,
        type: str = DIRECT,  # noqa: A002 - ChangeNOW's own parameter name
        rate_id: str | None = None,
        user_id: str | None = None,
        payload: Mapping[str, Any] | None = None,
        contact_email: str | None = None,
    ) -> CreatedExchange:
        """POST /v2/exchange. Not retried on any failure (see the module docstring)."""
        _check_flow(flow)
        from_amount, to_amount = _direction(type, from_amount, to_amount)
        if flow == FIXED_RATE and not rate_id:
            raise ValueError("a fixed-rate exchange needs the rate_id of a fixed-rate estimate")
        if not address:
            raise ValueError("address is required")
        body: dict[str, Any] = {
            "fromCurrency": from_currency,
            "toCurrency": to_currency,
            "fromNetwork": from_network,
            "toNetwork": to_network,
            # Amounts travel as decimal strings: never a float, never exponent notation.
            "fromAmount": _amount_text(from_amount),
            "toAmount": _amount_text(to_amount),
            "address": address,
            "extraId": extra_id,
            "refundAddress": refund_address,
            "refundExtraId": refund_extra_id,
            "flow": flow,
            "type": type,
            "rateId": rate_id,
            "userId": user_id,
            "payload": dict(payload) if payload is not None else None,
            "contactEmail": contact_email,
        }
        body = {key: value for key, value in body.items() if value is not None}
        data = _obj(self._call("POST", "/v2/exchange", body=body))
        exchange_id = _s(data, "id")
        payin_address = _s(data, "payinAddress")
        if not exchange_id or not payin_address:
            # The exchange may exist at ChangeNOW all the same: the caller must treat this
            # like a timeout, never like "not created".
            raise _bad("created exchange without id or payinAddress", data)
        return CreatedExchange(
            id=exchange_id,
            payin_address=payin_address,
            payin_extra_id=_s(data, "payinExtraId"),
            payout_address=_s(data, "payoutAddress") or address,
            payout_extra_id=_s(data, "payoutExtraId"),
            refund_address=_s(data, "refundAddress"),
            refund_extra_id=_s(data, "refundExtraId"),
            from_currency=_s(data, "fromCurrency") or from_currency,
            to_currency=_s(data, "toCurrency") or to_currency,
            from_network=_s(data, "fromNetwork") or from_network,
            to_network=_s(data, "toNetwork") or to_network,
            from_amount=_amount(data, "fromAmount"),
            to_amount=_amount(data, "toAmount"),
            flow=_s(data, "flow"),
            type=_s(data, "type"),
            rate_id=_s(data, "rateId"),
            valid_until=_dt(data, "validUntil"),
            raw=data,
        )

    def get_exchange(self, exchange_id: str) -> Exchange:
        """GET /v2/exchange/by-id?id=...: status and amounts of one exchange."""
        if not exchange_id:
            raise ValueError("exchange_id is required")
        data = _obj(self._call("GET", "/v2/exchange/by-id", params={"id": exchange_id}))
        return parse_exchange(data, exchange_id)

    def get_actions(self, exchange_id: str) -> ExchangeActions:
        """GET /v2/exchange/actions?id=...: can a refund or a continue be asked for?

        ChangeNOW documents ``{"refund": {"available": bool, "amount", "address": {"address",
        "extraId"}}, "continue": {"available": bool, "currentEstimate"}}``. Plain booleans
        (``"refund": true``) and a list of names (``"actions": ["refund"]``) are read too.
        An answer that says nothing about either action is ``bad_response`` (transient),
        never read as "nothing offered".
        """
        if not exchange_id:
            raise ValueError("exchange_id is required")
        data = _obj(self._call("GET", "/v2/exchange/actions", params={"id": exchange_id}))
        _raise_body_error(data, "GET /v2/exchange/actions")
        listed: frozenset[str] | None = None
        if data.get("actions") is not None:
            names = data["actions"]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise _bad("actions is not a list of names", data)
            listed = frozenset(n.lower() for n in names)
        if listed is None and data.get("refund") is None and data.get("continue") is None:
            raise _bad("actions answer without refund, continue or actions", data)
        refund, refund_info = _action(data, "refund", listed)
        carry_on, continue_info = _action(data, "continue", listed)
        address = refund_info.get("address")
        if isinstance(address, Mapping):
            refund_address, refund_extra_id = _s(address, "address"), _s(address, "extraId")
        else:
            refund_address, refund_extra_id = _s(refund_info, "address"), None
        return ExchangeActions(
            refund=refund,
            continue_=carry_on,
            refund_amount=_amount(refund_info, "amount"),
            refund_address=refund_address,
            refund_extra_id=refund_extra_id,
            continue_estimate=_amount(continue_info, "currentEstimate"),
            raw=data,
        )

    def request_refund(
        self, exchange_id: str, *, address: str, extra_id: str | None = None
    ) -> None:
        """POST /v2/exchange/refund: ask ChangeNOW to send the deposit back to ``address``.

        Never retried by the transport. Returns once ChangeNOW accepted the request; the
        refund itself shows later in ``get_exchange`` (``refunded``, ``refundHash``,
        ``refundAmount``), and only the chain proves it arrived.
        """
        if not exchange_id:
            raise ValueError("exchange_id is required")
        if not address:
            raise ValueError("address is required")
        body: dict[str, Any] = {"id": exchange_id, "address": address}
        if extra_id:
            body["extraId"] = extra_id
        data = self._call("POST", "/v2/exchange/refund", body=body)
        _accepted(data, "POST /v2/exchange/refund")

    def request_continue(self, exchange_id: str) -> None:
        """POST /v2/exchange/continue: ask ChangeNOW to carry the exchange on.

        Never retried by the transport. Success is ``{"result": true}`` or, as ChangeNOW
        documents it, ``{"result": {"result": true, "data": {"estimate": ...}}}``.
        """
        if not exchange_id:
            raise ValueError("exchange_id is required")
        data = self._call("POST", "/v2/exchange/continue", body={"id": exchange_id})
        _accepted(data, "POST /v2/exchange/continue")

    def validate_address(self, currency: str, address: str) -> AddressValidation:
        """GET /v2/validate/address. ``currency`` is ChangeNOW's ticker for the network."""
        data = _obj(
            self._call(
                "GET", "/v2/validate/address", params={"currency": currency, "address": address}
            )
        )
        result = data.get("result")
        if not isinstance(result, bool):
            raise _bad("validate/address without a boolean result", data)
        active = data.get("isActivated")
        return AddressValidation(
            result=result,
            message=_s(data, "message"),
            is_activated=active if isinstance(active, bool) else None,
            raw=data,
        )

    def address_validator(self) -> Callable[[str, str, str | None], bool]:
        """A fallback for ``integrations.addresses.validate_address`` backed by ChangeNOW."""

        def fallback(network: str, address: str, extra_id: str | None) -> bool:
            from integrations.addresses import AddressError

            try:
                verdict = self.validate_address(network, address)
            except ProviderError as exc:
                raise AddressError(
                    f"{network} address could not be checked with ChangeNOW: {exc.message}",
                    network=network,
                    unverified=True,
                ) from exc
            if not verdict.result:
                raise AddressError(
                    f"ChangeNOW rejects this {network} address"
                    + (f": {verdict.message}" if verdict.message else ""),
                    network=network,
                )
            return True

        return fallback

    def list_exchanges(
        self,
        *,
        limit: int = 100,
        offset: int = 0,
        sort_direction: str | None = None,
        sort_field: str | None = None,
        date_field: str | None = None,
        date_from: datetime | str | None = None,
        date_to: datetime | str | None = None,
        request_id: str | None = None,
        user_id: str | None = None,
        payout_address: str | None = None,
        statuses: Sequence[str] | None = None,
    ) -> ExchangeList:
        """GET /v2/exchanges: the partner's exchanges, for reconciliation."""
        params = {
            "limit": limit,
            "offset": offset,
            "sortDirection": sort_direction,
            "sortField": sort_field,
            "dateField": date_field,
            "dateFrom": _iso(date_from),
            "dateTo": _iso(date_to),
            "requestId": request_id,
            "userId": user_id,
            "payoutAddress": payout_address,
            "statuses": ",".join(statuses) if statuses else None,
        }
        data = _obj(self._call("GET", "/v2/exchanges", params=params))
        rows = data.get("exchanges")
        if not isinstance(rows, list):
            raise _bad("exchanges list without 'exchanges'", data)
        count = data.get("count")
        return ExchangeList(
            count=count if isinstance(count, int) and not isinstance(count, bool) else None,
            exchanges=[_partner_exchange(_obj(row)) for row in rows],
        )


# -- parsing helpers -------------------------------------------------------------------


def parse_exchange(data: Mapping[str, Any], exchange_id: str | None = None) -> Exchange:
    """Parse a by-id answer. Exposed for callers that stored a raw answer to re-read."""
    status = _s(data, "status")
    ident = _s(data, "id") or exchange_id
    if not status or not ident:
        raise _bad("exchange without id or status", data)
    actions = data.get("actionsAvailable")
    return Exchange(
        id=ident,
        status=status,
        actions_available=actions if isinstance(actions, bool) else None,
        flow=_s(data, "flow"),
        from_currency=_s(data, "fromCurrency") or "",
        to_currency=_s(data, "toCurrency") or "",
        from_network=_s(data, "fromNetwork"),
        to_network=_s(data, "toNetwork"),
        expected_amount_from=_amount(data, "expectedAmountFrom"),
        expected_amount_to=_amount(data, "expectedAmountTo"),
        amount_from=_amount(data, "amountFrom"),
        amount_to=_amount(data, "amountTo"),
        payin_address=_s(data, "payinAddress"),
        payin_extra_id=_s(data, "payinExtraId"),
        payout_address=_s(data, "payoutAddress"),
        payout_extra_id=_s(data, "payoutExtraId"),
        refund_address=_s(data, "refundAddress"),
        refund_extra_id=_s(data, "refundExtraId"),
        payin_hash=_s(data, "payinHash"),
        payout_hash=_s(data, "payoutHash"),
        refund_hash=_s(data, "refundHash"),
        refund_amount=_amount(data, "refundAmount"),
        created_at=_dt(data, "createdAt"),
        updated_at=_dt(data, "updatedAt"),
        deposit_received_at=_dt(data, "depositReceivedAt"),
        valid_until=_dt(data, "validUntil"),
        raw=data,
    )


def _action(
    data: Mapping[str, Any], name: str, listed: frozenset[str] | None
) -> tuple[bool, Mapping[str, Any]]:
    """(offered, details) of one action in an actions answer."""
    value = data.get(name)
    if isinstance(value, bool):
        return value, {}
    if isinstance(value, Mapping):
        available = value.get("available")
        if not isinstance(available, bool):
            raise _bad(f"{name} without a boolean available", data)
        return available, value
    if value is None:
        # Not mentioned: offered only if a list of names says so.
        return (listed is not None and name in listed), {}
    raise _bad(f"{name} is neither a boolean nor an object", data)


def _raise_body_error(data: Mapping[str, Any], what: str) -> None:
    """A 2xx whose body names an error is that error (permanent, like a 4xx)."""
    code = data.get("error")
    if isinstance(code, str) and code:
        message = data.get("message") if isinstance(data.get("message"), str) else code
        raise ChangeNowError(f"{what}: {message}", code, True, data=data)


def _accepted(data: Any, what: str) -> None:
    """Check a refund / continue answer said yes; a no is permanent, a garble transient."""
    body = _obj(data)
    _raise_body_error(body, what)
    result = body.get("result")
    if isinstance(result, Mapping):
        result = result.get("result")
    if result is True:
        return
    if result is False:
        raise ChangeNowError(f"{what}: ChangeNOW refused", "action_refused", True, data=data)
    raise _bad(f"{what}: answer without a boolean result", data)


def _partner_exchange(data: Mapping[str, Any]) -> PartnerExchange:
    return PartnerExchange(
        exchange_id=_s(data, "exchangeId"),
        request_id=_s(data, "requestId"),
        status=_s(data, "status") or "",
        flow=_s(data, "flow"),
        created_at=_dt(data, "createdAt"),
        updated_at=_dt(data, "updatedAt"),
        valid_until=_dt(data, "validUntil"),
        payin=_leg(data.get("payin")),
        payout=_leg(data.get("payout")),
        raw=data,
    )


def _leg(value: Any) -> ExchangeLeg:
    data = value if isinstance(value, Mapping) else {}
    return ExchangeLeg(
        currency=_s(data, "currency"),
        network=_s(data, "network"),
        amount=_amount(data, "amount"),
        expected_amount=_amount(data, "expectedAmount"),
        address=_s(data, "address"),
        extra_id=_s(data, "extraId"),
        hash=_s(data, "hash"),
    )


def _currency(value: Any) -> Currency:
    data = _obj(value)
    ticker = _s(data, "ticker")
    if not ticker:
        raise _bad("currency without ticker", data)
    return Currency(
        ticker=ticker,
        network=_s(data, "network") or ticker,
        name=_s(data, "name") or ticker,
        legacy_ticker=_s(data, "legacyTicker"),
        token_contract=_s(data, "tokenContract"),
        has_external_id=bool(data.get("hasExternalId")),
        is_extra_id_supported=bool(data.get("isExtraIdSupported")),
        is_fiat=bool(data.get("isFiat")),
        is_stable=bool(data.get("isStable")),
        featured=bool(data.get("featured")),
        supports_fixed_rate=bool(data.get("supportsFixedRate")),
        buy=data.get("buy") if isinstance(data.get("buy"), bool) else None,
        sell=data.get("sell") if isinstance(data.get("sell"), bool) else None,
        raw=data,
    )


def _bad(message: str, data: Any) -> ChangeNowError:
    # Transient: a garbled answer is more likely a proxy or deploy glitch than a verdict.
    return ChangeNowError(message, "bad_response", False, data=data)


def _obj(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _bad(f"expected a JSON object, got {type(value).__name__}", value)
    return value


def _s(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | int | Decimal):
        return str(value)
    raise _bad(f"{key} is not a string", data)


def _amount(data: Mapping[str, Any], key: str) -> Decimal | None:
    """An amount: Decimal, or None when ChangeNOW does not know it (never 0 for null)."""
    value = data.get(key)
    if value is None or value == "":
        return None
    try:
        amount = to_decimal(value, field=key)
    except AmountError as exc:
        raise _bad(str(exc), data) from None
    if amount < 0:
        raise _bad(f"{key} is negative: {amount}", data)
    return amount


def _dt(data: Mapping[str, Any], key: str) -> datetime | None:
    value = data.get(key)
    if value in (None, ""):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        from datetime import UTC

        # Epoch milliseconds appear in some ChangeNOW answers.
        seconds = value / 1000 if value > 10**11 else value
        return datetime.fromtimestamp(seconds, UTC)
    if not isinstance(value, str):
        raise _bad(f"{key} is not a timestamp", data)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(f"{key} is not an ISO timestamp: {value!r}", data) from None
    if parsed.tzinfo is None:
        from datetime import UTC

        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _iso(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.isoformat()


def _check_flow(flow: str) -> None:
    if flow not in FLOWS:
        raise ValueError(f"flow must be one of {sorted(FLOWS)}, not {flow!r}")


def _pair(
    from_currency: str,
    to_currency: str,
    from_network: str | None,
    to_network: str | None,
    flow: str,
) -> dict[str, Any]:
    return {
        "fromCurrency": from_currency,
        "toCurrency": to_currency,
        "fromNetwork": from_network,
        "toNetwork": to_network,
        "flow": flow,
    }


def _direction(
    type_: str, from_amount: Decimal | None, to_amount: Decimal | None
) -> tuple[Decimal | None, Decimal | None]:
    if type_ not in TYPES:
        raise ValueError(f"type must be one of {sorted(TYPES)}, not {type_!r}")
    if type_ == DIRECT and (from_amount is None or to_amount is not None):
        raise ValueError("a direct quote or exchange takes from_amount only")
    if type_ == REVERSE and (to_amount is None or from_amount is not None):
        raise ValueError("a reverse quote or exchange takes to_amount only")
    for amount in (from_amount, to_amount):
        if amount is not None:
            if not isinstance(amount, Decimal):
                raise TypeError(f"amounts are Decimal, not {type(amount).__name__}")
            if not amount.is_finite() or amount <= 0:
                raise ValueError(f"amount must be positive, not {amount}")
    return from_amount, to_amount


def _amount_text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")
