"""A ChangeNOW v2 look-alike: quotes, exchanges that move on a clock, scripted outcomes.

An exchange waits until the sandbox chain reports a transfer of its from-asset to its payin
address (ETH natively, USDT as an ERC-20 transfer on the configured contract), then moves
confirming → exchanging → sending → finished, one step every ``step_seconds``. The realised
``amountTo`` differs from the estimate (jitter), as it does at ChangeNOW. A script set per
exchange replaces the happy path: failed, refunded (with a refund amount), expired, stuck at
a status, or an unknown status.

A refund is a real transaction on the sandbox chain, sent from ChangeNOW's hot wallet (an
account our signer does not manage) to the refund address when the exchange becomes
``refunded``: ETH as a value transfer, USDT as an ERC-20 ``transfer``. Its hash is the
exchange's ``refundHash``. A payout on the sandbox chain (USDT or ETH on network eth) is
likewise a real transaction from the hot wallet to the payout address once the exchange is
``sending``; its hash is the ``payoutHash``. An exchange that failed or expired after its
deposit offers the recovery actions (``GET /v2/exchange/actions``): a refund to an address
the caller names, or a continue that carries it on to ``finished``.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_UP, Context, Decimal, InvalidOperation
from typing import Any

from eth_utils import keccak, to_checksum_address

from integrations.addresses import (
    EVM_NETWORKS,
    RIPPLE_ALPHABET,
    AddressError,
    b58check_encode,
    b58encode,
    segwit_encode,
    validate_address,
    xmr_b58encode,
)
from integrations.assets import decimals_of, quantize_down, to_base_units
from integrations.changenow.types import KNOWN_STATUSES
from integrations.sandbox.chain import RpcError, Transfer
from integrations.sandbox.config import SandboxConfig

# (ticker, network, name, has extra id, supports fixed rate)
CURRENCIES: list[tuple[str, str, str, bool, bool]] = [
    ("eth", "eth", "Ethereum", False, True),
    ("usdt", "eth", "Tether (ERC20)", False, True),
    ("usdt", "trx", "Tether (TRC20)", False, True),
    ("usdt", "bsc", "Tether (BEP20)", False, True),
    ("usdc", "eth", "USD Coin (ERC20)", False, True),
    ("btc", "btc", "Bitcoin", False, True),
    ("ltc", "ltc", "Litecoin", False, True),
    ("doge", "doge", "Dogecoin", False, True),
    ("xmr", "xmr", "Monero", False, False),
    ("trx", "trx", "TRON", False, True),
    ("sol", "sol", "Solana", False, True),
    ("xrp", "xrp", "Ripple", True, True),
    ("bnb", "bsc", "BNB (BEP20)", False, True),
    ("matic", "matic", "Polygon", False, True),
    ("xlm", "xlm", "Stellar", True, True),
    ("ton", "ton", "Toncoin", True, False),
    ("bch", "bch", "Bitcoin Cash", False, True),
    ("usd", "usd", "US Dollar", False, False),
    ("eur", "eur", "Euro", False, False),
]
FIAT = frozenset({"usd", "eur"})  # listed (isFiat), never a chain payout
SCRIPT_OUTCOMES = frozenset({"finished", "failed", "refunded", "expired", "stuck", "unknown"})
STUCK_STATUSES = ("waiting", "confirming", "exchanging", "sending")
# Statuses after which, with a deposit received, a refund or a continue can be asked for.
ACTIONABLE_STATUSES = ("failed", "expired")
# Assets the sandbox chain carries: only these deposits are seen, only these are refunded.
CHAIN_ASSETS = ("eth", "usdt")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class SimExchange:
    id: str
    flow: str
    type: str
    from_currency: str
    from_network: str
    to_currency: str
    to_network: str
    expected_from: Decimal | None
    expected_to: Decimal | None
    rate: Decimal  # to-units per from-unit, after ChangeNOW's fee
    payin_address: str
    payout_address: str
    payout_extra_id: str | None
    refund_address: str | None
    refund_extra_id: str | None
    rate_id: str | None
    valid_until: float | None
    created_at: float
    user_id: str | None = None
    payload: Any = None
    script: dict[str, Any] = field(default_factory=dict)
    deposit_amount: Decimal | None = None
    deposit_hash: str | None = None
    deposit_at: float | None = None
    amount_to: Decimal | None = None
    payout_hash: str | None = None
    payout_credited: bool = False  # the payout transaction was sent (chain assets only)
    deposit_sender: str | None = None  # where a refund goes when there is no refund address
    refund_amount: Decimal | None = None
    refund_hash: str | None = None  # the refund transaction's hash, once it was sent
    refund_credited: bool = False  # the refund transaction was sent (it may still be pending)
    # A recovery action asked for: {"kind": "refund" | "continue", "at": clock, ...}; a
    # refund also holds "address", "extra_id" and "amount".
    action: dict[str, Any] | None = None


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ChangeNowSim:
    def __init__(
        self,
        config: SandboxConfig,
        clock: Callable[[], float],
        rng: random.Random,
        pay: Callable[[str, str, str, int], str],
        pay_settled: Callable[[str, str, str, int], str] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.rng = rng
        # (sender, recipient, asset, units) -> transaction hash: a payment on the sandbox
        # chain from an account the signer does not manage (the hot wallet). Payouts use
        # `pay_settled` (mined at once): ChangeNOW reports "sending" once it is on chain.
        self.pay = pay
        self.pay_settled = pay_settled or pay
        self.exchanges: dict[str, SimExchange] = {}
        # What `tick` still has to look at, and deposits' addresses: under a sustained run
        # there are thousands of settled exchanges, and every request ticks.
        self._unsettled: dict[str, SimExchange] = {}
        self._by_payin: dict[str, SimExchange] = {}
        self.rate_ids: dict[str, dict[str, Any]] = {}
        self.deposits: list[dict[str, Any]] = []

    # -- currencies and pricing --------------------------------------------------------

    def _resolve(self, ticker: Any, network: Any, side: str) -> tuple[str, str]:
        if not isinstance(ticker, str) or not ticker:
            raise ApiError(400, "not_valid_params", f"{side}Currency is required")
        ticker = ticker.lower()
        options = [c for c in CURRENCIES if c[0] == ticker]
        if not options:
            raise ApiError(400, "pair_is_inactive", f"Currency {ticker} is not supported")
        if network:
            net = str(network).lower()
            if not any(c[1] == net for c in options):
                raise ApiError(
                    400, "pair_is_inactive", f"Currency {ticker} on network {net} is not supported"
                )
        else:
            net = options[0][1]
        if not self.is_active(ticker, net):
            raise ApiError(400, "pair_is_inactive", f"Currency {ticker} on {net} is inactive")
        return ticker, net

    def is_active(self, ticker: str, network: str) -> bool:
        off = {item.lower() for item in self.config.inactive_currencies}
        return ticker not in off and f"{ticker}:{network}" not in off

    def _pair(self, params: Mapping[str, Any]) -> tuple[str, str, str, str, str]:
        from_c, from_n = self._resolve(
            params.get("fromCurrency"), params.get("fromNetwork"), "from"
        )
        to_c, to_n = self._resolve(params.get("toCurrency"), params.get("toNetwork"), "to")
        if (from_c, from_n) == (to_c, to_n):
            raise ApiError(400, "pair_is_inactive", "Pair is inactive: same currency")
        flow = params.get("flow") or "standard"
        if flow not in ("standard", "fixed-rate"):
            raise ApiError(400, "not_valid_params", f"flow must be standard or fixed-rate: {flow}")
        if flow == "fixed-rate" and not (_fixed(from_c, from_n) and _fixed(to_c, to_n)):
            raise ApiError(400, "not_valid_fixed_rate_pair", "Fixed rate is not available")
        return from_c, from_n, to_c, to_n, flow

    def _price(self, ticker: str) -> Decimal:
        return self.config.prices_usd[ticker]

    def _rate(self, from_c: str, to_c: str) -> Decimal:
        fee = Decimal(1) - self.config.fee_percent / 100
        return self._price(from_c) / self._price(to_c) * fee

    def min_amount(self, from_c: str) -> Decimal:
        if from_c in self.config.min_amounts:
            return self.config.min_amounts[from_c]
        return _round_up_significant(self.config.min_usd / self._price(from_c))

    def max_amount(self, from_c: str, flow: str) -> Decimal | None:
        if flow != "fixed-rate":
            return self.config.max_amounts.get(from_c)
        return _round_up_significant(Decimal(50_000) / self._price(from_c))

    def echo(self, amount: Decimal | None) -> Decimal | None:
        """An amount as ChangeNOW echoes it: exact, or carried through a double."""
        error = self.config.echo_relative_error
        if amount is None or not error:
            return amount
        # What a double holds, printed with its 16 significant digits.
        return Context(prec=16).plus(amount * (1 + error)).normalize()

    # -- endpoints ---------------------------------------------------------------------

    def currencies(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        flow = params.get("flow")
        only_active = str(params.get("active", "")).lower() == "true"
        rows = []
        for ticker, network, name, extra, fixed in CURRENCIES:
            if flow == "fixed-rate" and not fixed:
                continue
            if only_active and not self.is_active(ticker, network):
                continue
            token = None
            if ticker == "usdt" and network == "eth":
                token = to_checksum_address(self.config.usdt_contract)
            rows.append(
                {
                    "ticker": ticker,
                    "name": name,
                    "image": f"https://sandbox.invalid/coins/{ticker}.svg",
                    "hasExternalId": extra,
                    "isExtraIdSupported": extra,
                    "isFiat": ticker in FIAT,
                    "featured": ticker in ("btc", "eth", "usdt"),
                    "isStable": ticker in ("usdt", "usdc"),
                    "supportsFixedRate": fixed,
                    "network": network,
                    "tokenContract": token,
                    "buy": True,
                    "sell": True,
                    "legacyTicker": ticker if ticker == network else f"{ticker}{network}",
                }
            )
        return rows

    def min_amount_endpoint(self, params: Mapping[str, Any]) -> dict[str, Any]:
        from_c, from_n, to_c, to_n, flow = self._pair(params)
        return {
            "fromCurrency": from_c,
            "fromNetwork": from_n,
            "toCurrency": to_c,
            "toNetwork": to_n,
            "flow": flow,
            "minAmount": self.min_amount(from_c),
        }

    def range_endpoint(self, params: Mapping[str, Any]) -> dict[str, Any]:
        body = self.min_amount_endpoint(params)
        body["maxAmount"] = self.max_amount(body["fromCurrency"], body["flow"])
        return body

    def _quote(
        self, params: Mapping[str, Any]
    ) -> tuple[str, str, str, str, str, str, Decimal, Decimal, Decimal]:
        from_c, from_n, to_c, to_n, flow = self._pair(params)
        kind = params.get("type") or "direct"
        if kind not in ("direct", "reverse"):
            raise ApiError(400, "not_valid_params", f"type must be direct or reverse: {kind}")
        rate = self._rate(from_c, to_c)
        if kind == "direct":
            from_amount = _positive(params.get("fromAmount"), "fromAmount")
            to_amount = quantize_down(from_amount * rate, to_c)
        else:
            to_amount = _positive(params.get("toAmount"), "toAmount")
            places = Decimal(1).scaleb(-decimals_of(from_c))
            from_amount = (to_amount / rate).quantize(places, rounding=ROUND_UP)
        return from_c, from_n, to_c, to_n, flow, kind, from_amount, to_amount, rate

    def _check_range(self, from_c: str, flow: str, amount: Decimal, code_below: str) -> None:
        minimum = self.min_amount(from_c)
        if amount < minimum:
            raise ApiError(400, code_below, f"Amount is less than minimal: {minimum} {from_c}")
        maximum = self.max_amount(from_c, flow)
        if maximum is not None and amount > maximum:
            raise ApiError(400, "out_of_range", f"Amount is more than maximal: {maximum} {from_c}")

    def estimate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        from_c, from_n, to_c, to_n, flow, kind, from_amount, to_amount, rate = self._quote(params)
        self._check_range(from_c, flow, from_amount, "deposit_too_small")
        rate_id = valid_until = None
        if flow == "fixed-rate" and str(params.get("useRateId", "")).lower() == "true":
            rate_id = secrets.token_hex(16)
            valid_until = self.clock() + self.config.fixed_rate_seconds
            self.rate_ids[rate_id] = {
                "pair": (from_c, from_n, to_c, to_n),
                "rate": rate,
                "valid_until": valid_until,
            }
        return {
            "fromCurrency": from_c,
            "fromNetwork": from_n,
            "toCurrency": to_c,
            "toNetwork": to_n,
            "flow": flow,
            "type": kind,
            "rateId": rate_id,
            "validUntil": _iso(valid_until),
            "transactionSpeedForecast": "10-60",
            "warningMessage": None,
            "depositFee": Decimal(0),
            "withdrawalFee": Decimal(0),
            "userId": None,
            "fromAmount": from_amount,
            "toAmount": to_amount,
        }

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise ApiError(400, "not_valid_params", "body must be a JSON object")
        from_c, from_n, to_c, to_n, flow, kind, from_amount, to_amount, rate = self._quote(body)
        address = body.get("address")
        if not isinstance(address, str) or not address:
            raise ApiError(400, "not_valid_params", "address is required")
        extra_id = body.get("extraId") or None
        try:
            validate_address(to_n, address, str(extra_id) if extra_id is not None else None)
        except AddressError as exc:
            raise ApiError(400, "not_valid_address", f"Invalid address: {exc.message}") from None
        refund = body.get("refundAddress") or None
        refund_extra = body.get("refundExtraId") or None
        if refund is not None:
            try:
                validate_address(from_n, str(refund), str(refund_extra) if refund_extra else None)
            except AddressError as exc:
                raise ApiError(
                    400, "not_valid_refund_address", f"Invalid refund address: {exc.message}"
                ) from None
        rate_id = body.get("rateId") or None
        valid_until = None
        now = self.clock()
        if flow == "fixed-rate":
            quote = self.rate_ids.get(str(rate_id)) if rate_id else None
            if (
                quote is None
                or quote["valid_until"] < now
                or quote["pair"] != (from_c, from_n, to_c, to_n)
            ):
                raise ApiError(400, "rate_id_not_found_or_expired", "Rate id not found or expired")
            rate = quote["rate"]
            valid_until = quote["valid_until"]
            if kind == "direct":
                to_amount = quantize_down(from_amount * rate, to_c)
        self._check_range(from_c, flow, from_amount, "out_of_range")
        exchange = SimExchange(
            id=self._new_id(),
            flow=flow,
            type=kind,
            from_currency=from_c,
            from_network=from_n,
            to_currency=to_c,
            to_network=to_n,
            expected_from=from_amount,
            expected_to=to_amount,
            rate=rate,
            payin_address=self._payin_address(from_n),
            payout_address=address,
            payout_extra_id=str(extra_id) if extra_id is not None else None,
            refund_address=str(refund) if refund else None,
            refund_extra_id=str(refund_extra) if refund_extra else None,
            rate_id=str(rate_id) if rate_id else None,
            valid_until=valid_until,
            created_at=now,
            user_id=str(body["userId"]) if body.get("userId") else None,
            payload=body.get("payload"),
        )
        self.exchanges[exchange.id] = exchange
        self._by_payin.setdefault(exchange.payin_address.lower(), exchange)
        self._watch(exchange)
        return {
            "id": exchange.id,
            "fromAmount": self.echo(from_amount),
            "toAmount": to_amount,
            "flow": flow,
            "type": kind,
            "payinAddress": exchange.payin_address,
            "payoutAddress": address,
            "payinExtraId": None,
            "payoutExtraId": exchange.payout_extra_id,
            "payoutExtraIdName": "Destination tag" if to_n == "xrp" else None,
            "fromCurrency": from_c,
            "fromNetwork": from_n,
            "toCurrency": to_c,
            "toNetwork": to_n,
            "refundAddress": exchange.refund_address,
            "refundExtraId": exchange.refund_extra_id,
            "rateId": exchange.rate_id,
            "validUntil": _iso(valid_until),
        }

    def by_id(self, exchange_id: str | None) -> dict[str, Any]:
        if not exchange_id:
            raise ApiError(400, "not_valid_params", "id is required")
        exchange = self.exchanges.get(exchange_id)
        if exchange is None:
            raise ApiError(404, "not_found", "Exchange not found")
        return self.render(exchange)

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        currency = params.get("currency")
        address = params.get("address")
        if not currency or not address:
            raise ApiError(400, "not_valid_params", "currency and address are required")
        try:
            validate_address(str(currency), str(address))
        except AddressError as exc:
            return {"result": False, "message": exc.message, "isActivated": None}
        return {"result": True, "message": None, "isActivated": None}

    def partner_list(self, params: Mapping[str, Any]) -> dict[str, Any]:
        rows = [self._partner_row(e) for e in self.exchanges.values()]
        statuses = params.get("statuses")
        if statuses:
            wanted = {s.strip() for s in str(statuses).split(",") if s.strip()}
            rows = [row for row in rows if row["status"] in wanted]
        if params.get("requestId"):
            rows = [row for row in rows if row["requestId"] == params["requestId"]]
        descending = str(params.get("sortDirection", "DESC")).upper() != "ASC"
        rows.sort(key=lambda row: row["createdAt"], reverse=descending)
        try:
            limit = int(params.get("limit", 10))
            offset = int(params.get("offset", 0))
        except ValueError:
            raise ApiError(400, "not_valid_params", "limit and offset are integers") from None
        if not 1 <= limit <= 100 or offset < 0:
            raise ApiError(400, "not_valid_params", "limit must be 1..100, offset >= 0")
        return {"count": len(rows), "exchanges": rows[offset : offset + limit]}

    # -- recovery actions --------------------------------------------------------------

    def _get(self, exchange_id: Any) -> SimExchange:
        if not exchange_id or not isinstance(exchange_id, str):
            raise ApiError(400, "not_valid_params", "id is required")
        exchange = self.exchanges.get(exchange_id)
        if exchange is None:
            raise ApiError(404, "not_found", "Exchange not found")
        return exchange

    def available_actions(self, exchange: SimExchange) -> tuple[bool, bool]:
        """(refund, continue): both once an exchange failed or expired holding a deposit
        and nothing was asked for yet; neither otherwise (waiting, in progress, finished,
        refunded, stuck, unknown statuses)."""
        if exchange.deposit_amount is None or exchange.action is not None:
            return False, False
        status, _ = self.status_of(exchange)
        offered = status in ACTIONABLE_STATUSES
        return offered, offered

    def _refund_offer(self, exchange: SimExchange) -> Decimal | None:
        """What a requested refund would move: the deposit less ``refund_fee``."""
        if exchange.deposit_amount is None:
            return None
        amount = quantize_down(
            exchange.deposit_amount - self.config.refund_fee, exchange.from_currency
        )
        return amount.normalize() if amount > 0 else None

    def actions(self, exchange_id: Any) -> dict[str, Any]:
        """GET /v2/exchange/actions?id=: ChangeNOW's documented shape, plus the id."""
        exchange = self._get(exchange_id)
        refund, carry_on = self.available_actions(exchange)
        address = exchange.refund_address or (
            to_checksum_address(exchange.deposit_sender) if exchange.deposit_sender else None
        )
        return {
            "id": exchange.id,
            "error": None,
            "refund": {
                "available": refund,
                "amount": self._refund_offer(exchange) if refund else None,
                "address": (
                    {"address": address, "extraId": exchange.refund_extra_id}
                    if refund and address
                    else None
                ),
                "additionalAddressList": [],
            },
            "continue": {
                "available": carry_on,
                "currentEstimate": exchange.amount_to if carry_on else None,
            },
        }

    def request_refund(self, body: Any) -> dict[str, Any]:
        """POST /v2/exchange/refund {"id", "address", "extraId"?}: refunded at once; the
        refund transaction goes out from the hot wallet (``tick``)."""
        if not isinstance(body, Mapping):
            raise ApiError(400, "not_valid_params", "body must be a JSON object")
        exchange = self._get(body.get("id"))
        if not self.available_actions(exchange)[0]:
            raise ApiError(400, "action_not_available", "Refund is not available")
        address = body.get("address") or exchange.refund_address or exchange.deposit_sender
        extra_id = body.get("extraId") or None
        if not isinstance(address, str):
            raise ApiError(400, "not_valid_params", "address is required")
        try:
            validate_address(
                exchange.from_network, address, str(extra_id) if extra_id is not None else None
            )
        except AddressError as exc:
            raise ApiError(
                400, "not_valid_refund_address", f"Invalid refund address: {exc.message}"
            ) from None
        amount = self._refund_offer(exchange)
        if amount is None:
            raise ApiError(400, "not_valid_params", "The deposit does not cover the refund fee")
        exchange.action = {
            "kind": "refund",
            "at": self.clock(),
            "address": address,
            "extra_id": str(extra_id) if extra_id is not None else None,
            "amount": amount,
        }
        exchange.refund_amount = amount
        self._watch(exchange)
        self.tick()
        return {"result": True}

    def request_continue(self, body: Any) -> dict[str, Any]:
        """POST /v2/exchange/continue {"id"}: exchanging now, then sending and finished one
        ``step_seconds`` apart. Answers ChangeNOW's documented shape with the estimate."""
        if not isinstance(body, Mapping):
            raise ApiError(400, "not_valid_params", "body must be a JSON object")
        exchange = self._get(body.get("id"))
        if not self.available_actions(exchange)[1]:
            raise ApiError(400, "action_not_available", "Continue is not available")
        exchange.action = {"kind": "continue", "at": self.clock()}
        self._watch(exchange)
        return {
            "result": {
                "result": True,
                "data": {
                    "estimate": {
                        "amount": exchange.amount_to,
                        "currency": exchange.to_currency,
                        "network": exchange.to_network,
                    }
                },
            }
        }

    # -- scripts and deposits ----------------------------------------------------------

    def set_script(self, exchange_id: str, script: Mapping[str, Any]) -> dict[str, Any]:
        exchange = self.exchanges.get(exchange_id)
        if exchange is None:
            raise ApiError(404, "not_found", "Exchange not found")
        outcome = script.get("outcome")
        if outcome not in SCRIPT_OUTCOMES:
            raise ApiError(
                400, "not_valid_params", f"outcome must be one of {sorted(SCRIPT_OUTCOMES)}"
            )
        clean: dict[str, Any] = {"outcome": outcome, "at": self.clock()}
        if outcome == "stuck":
            status = script.get("status", "exchanging")
            if status not in STUCK_STATUSES:
                raise ApiError(
                    400, "not_valid_params", f"stuck status must be one of {STUCK_STATUSES}"
                )
            clean["status"] = status
        if outcome == "unknown":
            status = script.get("status", "on_hold")
            if not isinstance(status, str) or not status or status in KNOWN_STATUSES:
                raise ApiError(
                    400, "not_valid_params", "unknown needs a status ChangeNOW does not use"
                )
            clean["status"] = status
        for key in ("amount_to", "refund_amount"):
            if script.get(key) is not None:
                clean[key] = _positive(script[key], key)
        exchange.script = clean
        self._watch(exchange)
        if exchange.deposit_at is not None:
            self._settle_amounts(exchange)
        self.tick()  # a refund due now is sent before the answer shows it
        return self.render(exchange)

    def on_transfer(self, transfer: Transfer) -> None:
        """A mined transfer: a deposit if it pays an exchange's payin address in its asset.

        Transfers from ChangeNOW's own hot wallet (payouts, refunds) are its payments, not
        deposits; NOWPayments' payments to the host wallet are not ChangeNOW's business.
        """
        if transfer.sender.lower() in (
            self.config.changenow_hot_wallet.lower(),
            self.config.nowpayments_wallet.lower(),
        ):
            return  # ChangeNOW's own payments, or NOWPayments paying the host wallet
        record = {
            "tx_hash": transfer.tx_hash,
            "asset": transfer.asset,
            "from": to_checksum_address(transfer.sender),
            "to": to_checksum_address(transfer.recipient),
            "amount": str(transfer.amount),
            "at": _iso(transfer.at),
            "exchange_id": None,
            "note": None,
        }
        exchange = self._by_payin.get(transfer.recipient.lower())
        if exchange is not None:
            self._watch(exchange)
            if exchange.from_network != "eth" or exchange.from_currency != transfer.asset:
                record["note"] = f"wrong asset for exchange {exchange.id}: funds not credited"
            elif exchange.deposit_at is not None:
                record["note"] = f"second deposit to exchange {exchange.id}: not credited"
            else:
                record["exchange_id"] = exchange.id
                # As ChangeNOW shows it (0.05, not 0.050000000000000000); same value.
                exchange.deposit_amount = transfer.amount.normalize()
                exchange.deposit_hash = transfer.tx_hash
                exchange.deposit_at = transfer.at
                exchange.deposit_sender = transfer.sender
                self._settle_amounts(exchange)
        self.deposits.append(record)

    def on_revert(self, transfer: Transfer) -> None:
        """A reorg un-mined a transfer: forget it as a deposit, as if it never arrived.

        Only the linkage is undone. A refund already sent keeps its hash and amount: it is
        a transaction of its own, which the reorg handles like any other (re-queued, or
        dropped). An action asked for stays recorded but counts only while the exchange
        is again failed or expired (``timeline``), so it is never sent twice.
        """
        self.deposits = [
            d
            for d in self.deposits
            if not (d["tx_hash"] == transfer.tx_hash and d["asset"] == transfer.asset)
        ]
        for exchange in self.exchanges.values():
            if exchange.deposit_hash != transfer.tx_hash:
                continue
            self._watch(exchange)
            exchange.deposit_amount = exchange.deposit_at = exchange.deposit_hash = None
            exchange.deposit_sender = None
            exchange.amount_to = None
            if not exchange.refund_credited:
                exchange.refund_amount = None
            if exchange.script.get("reason") == "deposit below minimum":
                exchange.script = {}  # set by that deposit, not by a person
            break

    def _settle_amounts(self, exchange: SimExchange) -> None:
        """Fix what will be paid out or refunded, once the deposit is known."""
        deposit = exchange.deposit_amount
        if deposit is None:
            return
        script = exchange.script
        if "amount_to" in script:
            exchange.amount_to = quantize_down(script["amount_to"], exchange.to_currency)
        elif (
            exchange.flow == "fixed-rate"
            and exchange.expected_to is not None
            and deposit == exchange.expected_from
        ):
            exchange.amount_to = exchange.expected_to  # the rate was locked
        else:
            # Integer micro-steps keep the simulated amount free of binary floating point.
            low = int(self.config.payout_jitter_min.scaleb(6))
            high = int(self.config.payout_jitter_max.scaleb(6))
            jitter = Decimal(self.rng.randint(min(low, high), max(low, high))).scaleb(-6)
            amount = quantize_down(deposit * exchange.rate * (1 + jitter), exchange.to_currency)
            estimate = quantize_down(deposit * exchange.rate, exchange.to_currency)
            if amount == estimate:  # never exactly the estimate: callers must read amountTo
                amount -= Decimal(1).scaleb(-decimals_of(exchange.to_currency))
            exchange.amount_to = max(amount, Decimal(0))
        exchange.payout_hash = exchange.payout_hash or self._tx_hash(exchange.to_network)
        action = exchange.action
        if exchange.refund_credited:
            pass  # what the refund transaction moved is fixed
        elif action is not None and action["kind"] == "refund":
            exchange.refund_amount = action["amount"]
        else:
            refund = script.get("refund_amount")
            exchange.refund_amount = (
                refund
                if refund is not None
                else quantize_down(deposit * Decimal("0.99"), exchange.from_currency)
            )
        if deposit < self.min_amount(exchange.from_currency) and not script:
            exchange.script = {
                "outcome": "refunded",
                "at": self.clock(),
                "reason": "deposit below minimum",
            }

    # -- status over time --------------------------------------------------------------

    def timeline(self, exchange: SimExchange) -> list[tuple[float, str]]:
        """Statuses and when each begins: the scripted course, then an action asked for.

        An action counts only while the scripted course ends failed or expired with the
        deposit in: a reorg that takes the deposit away takes the action's effect with it.
        It starts no earlier than the status it recovers from.
        """
        steps = self._scripted_timeline(exchange)
        action = exchange.action
        last_at, last = steps[-1]
        if action is None or exchange.deposit_at is None or last not in ACTIONABLE_STATUSES:
            return steps
        start = max(float(action["at"]), last_at)
        if action["kind"] == "refund":
            return [*steps, (start, "refunded")]
        s = self.config.step_seconds
        return [*steps, (start, "exchanging"), (start + s, "sending"), (start + 2 * s, "finished")]

    def _scripted_timeline(self, exchange: SimExchange) -> list[tuple[float, str]]:
        script = exchange.script
        outcome = script.get("outcome", "finished")
        steps: list[tuple[float, str]] = [(exchange.created_at, "waiting")]
        expiry = (
            exchange.valid_until
            if exchange.flow == "fixed-rate"
            else exchange.created_at + self.config.waiting_expiry_seconds
        )
        # Scripted before any deposit, "expired" and "failed" end the exchange at once.
        scripted_expiry = script["at"] if outcome in ("expired", "failed") else None
        if outcome == "stuck" and script.get("status") == "waiting":
            return steps  # the deposit is never noticed
        deposit_at = exchange.deposit_at
        if (
            deposit_at is None
            or (scripted_expiry is not None and scripted_expiry <= deposit_at)
            or (expiry is not None and expiry <= deposit_at)
        ):
            end = (
                min(t for t in (scripted_expiry, expiry) if t is not None)
                if (scripted_expiry is not None or expiry is not None)
                else None
            )
            if end is not None:
                failed = outcome == "failed" and end == scripted_expiry
                steps.append((end, "failed" if failed else "expired"))
            return steps
        s = self.config.step_seconds
        happy = [
            (deposit_at, "confirming"),
            (deposit_at + s, "exchanging"),
            (deposit_at + 2 * s, "sending"),
            (deposit_at + 3 * s, "finished"),
        ]
        if outcome == "finished":
            return steps + happy
        if outcome == "stuck":
            index = [status for _, status in happy].index(script["status"])
            return steps + happy[: index + 1]
        if outcome in ("failed", "refunded"):
            return steps + happy[:2] + [(deposit_at + 2 * s, outcome)]
        if outcome == "expired":  # scripted after the deposit arrived
            return steps + happy[:1] + [(deposit_at + s, "expired")]
        return steps + happy[:1] + [(deposit_at + s, script["status"])]  # unknown

    def status_of(self, exchange: SimExchange) -> tuple[str, float]:
        now = self.clock()
        current = ("waiting", exchange.created_at)
        for at, status in self.timeline(exchange):
            if at <= now:
                current = (status, at)
        return current

    def tick(self) -> None:
        """Side effects of time passing: a payout due is sent, once, from the hot wallet to
        the payout address; a refund due is sent, once, as a transaction from the hot wallet
        to the address asked for, else the refund address, else the deposit's sender
        (ChangeNOW refunds "to the refund or original address")."""
        for exchange in list(self._unsettled.values()):
            self._send_payout(exchange)
            if self._settled(exchange):
                del self._unsettled[exchange.id]
                continue
            if exchange.refund_credited or exchange.refund_amount is None:
                continue
            if exchange.from_network != "eth" or exchange.from_currency not in CHAIN_ASSETS:
                continue  # only deposits on the sandbox chain are ever seen
            status, _ = self.status_of(exchange)
            if status != "refunded":
                continue
            action = exchange.action
            recipient = (
                action["address"]
                if action is not None and action["kind"] == "refund"
                else exchange.refund_address or exchange.deposit_sender
            )
            if recipient is None:
                continue
            asset = exchange.from_currency
            amount = quantize_down(exchange.refund_amount, asset)
            units = to_base_units(amount, asset)
            tx_hash = None
            if units > 0:
                try:
                    tx_hash = self.pay(self.config.changenow_hot_wallet, recipient, asset, units)
                except RpcError:
                    continue  # the node refused it (e.g. base fee above its cap): next tick
            exchange.refund_credited = True
            exchange.refund_hash = tx_hash
            exchange.refund_amount = amount.normalize()  # exactly what the transaction moves

    def _watch(self, exchange: SimExchange) -> None:
        """Something about the exchange changed: `tick` looks at it again."""
        self._unsettled[exchange.id] = exchange

    def _settled(self, exchange: SimExchange) -> bool:
        """Nothing will ever be sent for it again unless a request changes it (`_watch`)."""
        if exchange.payout_credited or exchange.refund_credited:
            return True
        status, _ = self.status_of(exchange)
        if status not in ("finished", "failed", "refunded", "expired"):
            return False
        payout_on_chain = exchange.to_network == "eth" and exchange.to_currency in CHAIN_ASSETS
        return not payout_on_chain and exchange.refund_amount is None

    def _send_payout(self, exchange: SimExchange) -> None:
        if exchange.payout_credited or not exchange.amount_to:
            return
        if exchange.to_network != "eth" or exchange.to_currency not in CHAIN_ASSETS:
            return  # paid on another chain: only its hash is shown
        if self.status_of(exchange)[0] not in ("sending", "finished"):
            return
        units = to_base_units(exchange.amount_to, exchange.to_currency)
        try:
            tx_hash = self.pay_settled(
                self.config.changenow_hot_wallet,
                exchange.payout_address,
                exchange.to_currency,
                units,
            )
        except RpcError:
            return  # the node refused it (e.g. base fee above its cap): next tick
        exchange.payout_credited = True
        exchange.payout_hash = tx_hash

    def render(self, exchange: SimExchange) -> dict[str, Any]:
        status, updated = self.status_of(exchange)
        seen = exchange.deposit_at is not None and status != "waiting"
        sending = status in ("sending", "finished")
        refunded = status == "refunded"
        return {
            "id": exchange.id,
            "status": status,
            "actionsAvailable": any(self.available_actions(exchange)),
            "flow": exchange.flow,
            "type": exchange.type,
            "fromCurrency": exchange.from_currency,
            "fromNetwork": exchange.from_network,
            "toCurrency": exchange.to_currency,
            "toNetwork": exchange.to_network,
            "expectedAmountFrom": self.echo(exchange.expected_from),
            "expectedAmountTo": exchange.expected_to,
            "amountFrom": self.echo(exchange.deposit_amount) if seen else None,
            "amountTo": exchange.amount_to if sending else None,
            "payinAddress": exchange.payin_address,
            "payoutAddress": exchange.payout_address,
            "payinExtraId": None,
            "payoutExtraId": exchange.payout_extra_id,
            "refundAddress": exchange.refund_address,
            "refundExtraId": exchange.refund_extra_id,
            "createdAt": _iso(exchange.created_at),
            "updatedAt": _iso(updated),
            "validUntil": _iso(exchange.valid_until),
            "depositReceivedAt": _iso(exchange.deposit_at) if seen else None,
            "payinHash": exchange.deposit_hash if seen else None,
            "payoutHash": exchange.payout_hash if sending else None,
            "refundHash": exchange.refund_hash if refunded else None,
            # Known once the refund went out (a refund due is sent before any answer).
            "refundAmount": exchange.refund_amount
            if refunded and exchange.refund_credited
            else None,
            "fromLegacyTicker": exchange.from_currency,
            "toLegacyTicker": exchange.to_currency,
            "userId": exchange.user_id,
            "payload": exchange.payload,
        }

    def _partner_row(self, exchange: SimExchange) -> dict[str, Any]:
        full = self.render(exchange)
        return {
            "createdAt": full["createdAt"],
            "updatedAt": full["updatedAt"],
            "exchangeId": exchange.id,
            "requestId": exchange.id,
            "status": full["status"],
            "validUntil": full["validUntil"],
            "flow": exchange.flow,
            "payin": {
                "currency": exchange.from_currency,
                "network": exchange.from_network,
                "amount": full["amountFrom"],
                "expectedAmount": exchange.expected_from,
                "address": exchange.payin_address,
                "extraId": None,
                "hash": full["payinHash"],
            },
            "payout": {
                "currency": exchange.to_currency,
                "network": exchange.to_network,
                "amount": full["amountTo"],
                "expectedAmount": exchange.expected_to,
                "address": exchange.payout_address,
                "extraId": exchange.payout_extra_id,
                "hash": full["payoutHash"],
            },
        }

    def snapshot(self) -> dict[str, Any]:
        return {
            "exchanges": [
                {
                    **self.render(e),
                    "script": e.script or None,
                    "action": e.action,
                    "refundCredited": e.refund_credited,
                }
                for e in self.exchanges.values()
            ],
            "deposits": list(self.deposits),
        }

    # -- ids and addresses -------------------------------------------------------------

    def _rand(self, size: int) -> bytes:
        return bytes(self.rng.getrandbits(8) for _ in range(size))

    def _new_id(self) -> str:
        while True:
            ident = self._rand(7).hex()  # ChangeNOW ids are 14 hex characters
            if ident not in self.exchanges:
                return ident

    def _tx_hash(self, network: str) -> str:
        digest = self._rand(32).hex()
        return "0x" + digest if network in EVM_NETWORKS else digest

    def _payin_address(self, network: str) -> str:
        if network in EVM_NETWORKS:
            return to_checksum_address("0x" + self._rand(20).hex())
        if network == "btc":
            return segwit_encode("bc", 0, self._rand(20))
        if network == "ltc":
            return segwit_encode("ltc", 0, self._rand(20))
        if network == "doge":
            return b58check_encode(b"\x1e" + self._rand(20))
        if network == "trx":
            return b58check_encode(b"\x41" + self._rand(20))
        if network == "xrp":
            return b58check_encode(b"\x00" + self._rand(20), RIPPLE_ALPHABET)
        if network == "sol":
            return b58encode(b"\x01" + self._rand(31))
        if network == "xmr":
            body = bytes([18]) + self._rand(64)
            return xmr_b58encode(body + keccak(body)[:4])
        raise ApiError(400, "pair_is_inactive", f"no payin addresses on {network}")


def _fixed(ticker: str, network: str) -> bool:
    return any(c[0] == ticker and c[1] == network and c[4] for c in CURRENCIES)


def _positive(value: Any, name: str) -> Decimal:
    if value is None or value == "" or isinstance(value, bool | float):
        raise ApiError(400, "not_valid_params", f"{name} is required and must be a decimal")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ApiError(400, "not_valid_params", f"{name} is not a number: {value!r}") from None
    if not amount.is_finite() or amount <= 0:
        raise ApiError(400, "not_valid_params", f"{name} must be positive")
    return amount


def _round_up_significant(value: Decimal, digits: int = 3) -> Decimal:
    exponent = value.adjusted() - digits + 1
    return value.quantize(Decimal(1).scaleb(exponent), rounding=ROUND_UP).normalize()
