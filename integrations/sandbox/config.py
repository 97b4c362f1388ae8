"""Sandbox knobs: defaults, environment variables (``SANDBOX_*``), run-time updates."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from decimal import Decimal
from typing import Any

from eth_utils import is_address

# anvil's first default account: a familiar development address (the sandbox holds no key).
DEFAULT_HOST_WALLET = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
DEFAULT_USDT_CONTRACT = "0xdAC17F958D2ee523a2206206994597C13D831ec7"
# ChangeNOW's hot wallet on the sandbox chain: refunds are sent from it. An address nobody
# holds a key for (keccak-256 of "sandbox changenow hot wallet"), so our signer can never sign
# for it and nothing but the simulated exchange can move its funds.
DEFAULT_CHANGENOW_HOT_WALLET = "0x060d6787198f2dDeAc2604fd03dE808a9A9f885B"
# NOWPayments' payout wallet: a finished payment's outcome reaches the host wallet from it
# (POST /_sandbox/pay) before its IPN is sent. keccak-256 of "sandbox nowpayments wallet".
DEFAULT_NOWPAYMENTS_WALLET = "0x245dc71AF3Aa85058D558F7a78da8ED0DC87D9Fe"

# USD prices the sandbox quotes with. Rates move only through the per-exchange jitter.
DEFAULT_PRICES_USD: dict[str, Decimal] = {
    "eth": Decimal("3000"),
    "usdt": Decimal("1"),
    "usdc": Decimal("1"),
    "btc": Decimal("60000"),
    "ltc": Decimal("80"),
    "xmr": Decimal("150"),
    "trx": Decimal("0.12"),
    "sol": Decimal("150"),
    "xrp": Decimal("0.6"),
    "bnb": Decimal("600"),
    "matic": Decimal("0.7"),
    "doge": Decimal("0.15"),
    "xlm": Decimal("0.1"),
    "ton": Decimal("5"),
    "bch": Decimal("400"),
    "usd": Decimal("1"),
    "eur": Decimal("1.08"),
}


@dataclass
class SandboxConfig:
    # ChangeNOW side
    api_key: str = ""  # when set, /v2 requires x-changenow-api-key to equal it
    latency_ms: int = 0  # added to every /v2 and /rpc answer
    error_rate: float = 0.0  # share of /v2 requests answered 5xx
    rate_limit_rate: float = 0.0  # share of /v2 requests answered 429
    retry_after: int = 1  # Retry-After sent with injected 429/503
    rpc_error_rate: float = 0.0  # share of /rpc requests answered HTTP 502
    step_seconds: float = 2.0  # time between confirming/exchanging/sending/finished
    create_delay: float = 0.0  # POST /v2/exchange creates, then waits this long to answer
    min_usd: Decimal = Decimal("10")  # default minimum deposit, in USD worth
    min_amounts: dict[str, Decimal] = field(default_factory=dict)  # per from-ticker override
    # Standard-flow maximum fromAmount per from-ticker (none by default, as ChangeNOW's
    # eth->usdt); fixed-rate exchanges keep their own maximum worth 50,000 USD.
    max_amounts: dict[str, Decimal] = field(default_factory=dict)
    # ChangeNOW computes some amounts in doubles: a relative error added to the fromAmount it
    # echoes (create, expectedAmountFrom, amountFrom), printed with 16 significant digits.
    echo_relative_error: Decimal = Decimal("0")
    # "ticker" or "ticker:network" entries ChangeNOW no longer offers: left out of
    # /currencies?active=true, and a pair using one is refused as pair_is_inactive.
    inactive_currencies: list[str] = field(default_factory=list)
    fee_percent: Decimal = Decimal("0.5")  # ChangeNOW's cut in quotes
    payout_jitter_min: Decimal = Decimal("-0.02")  # realised amountTo vs the estimate
    payout_jitter_max: Decimal = Decimal("0.005")
    fixed_rate_seconds: int = 600  # lifetime of a fixed-rate quote and exchange
    waiting_expiry_seconds: int = 7 * 24 * 3600  # a standard exchange with no deposit expires
    prices_usd: dict[str, Decimal] = field(default_factory=lambda: dict(DEFAULT_PRICES_USD))
    # What ChangeNOW keeps from a refund an operator asks for (POST /v2/exchange/refund), in
    # the refunded asset: the refund is the full deposit less this.
    refund_fee: Decimal = Decimal("0")
    # The account refunds are sent from, and what it holds at start: generous, so a refund
    # never fails for want of funds (the sandbox also tops it up if a test drained it).
    changenow_hot_wallet: str = DEFAULT_CHANGENOW_HOT_WALLET
    nowpayments_wallet: str = DEFAULT_NOWPAYMENTS_WALLET
    hot_wallet_eth: Decimal = Decimal("1000000")
    hot_wallet_usdt: Decimal = Decimal("1000000000")
    # Chain / signer side
    chain_id: int = 1337
    # True: each broadcast transaction is mined in its own block once block_time has
    # passed (today's behaviour). False: a mempool; nothing is mined until /_sandbox/mine.
    auto_mine: bool = True
    block_time: float = 0.0  # with auto_mine: seconds a broadcast transaction stays pending
    # geth's --txpool.pricebump: a same-nonce replacement must raise both fee caps this much.
    price_bump_percent: int = 10
    base_fee_gwei: Decimal = Decimal("1")
    priority_fee_gwei: Decimal = Decimal("1")
    host_wallet: str = DEFAULT_HOST_WALLET
    extra_accounts: list[str] = field(default_factory=list)  # more signer-managed accounts
    usdt_contract: str = DEFAULT_USDT_CONTRACT
    eth_balance: Decimal = Decimal("100")  # of the host wallet at start
    usdt_balance: Decimal = Decimal("100000")
    sign_format: str = "raw"  # "raw" (anvil, Web3Signer) or "geth" ({raw, tx})
    seed: int | None = None  # fixes random choices (jitter, ids) for reproducible runs

    def update(self, values: Mapping[str, Any]) -> None:
        """Apply a partial update (JSON from the control endpoint); unknown keys refused."""
        known = {f.name: f for f in fields(self)}
        for key, value in values.items():
            if key not in known:
                raise ValueError(f"unknown sandbox setting {key!r}")
            setattr(self, key, _coerce(getattr(self, key), value, key))
        if self.sign_format not in ("raw", "geth"):
            raise ValueError("sign_format must be 'raw' or 'geth'")
        for name in ("error_rate", "rate_limit_rate", "rpc_error_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.price_bump_percent < 0:
            raise ValueError("price_bump_percent must not be negative")
        if self.base_fee_gwei < 0 or self.priority_fee_gwei < 0:
            raise ValueError("fees must not be negative")
        if self.refund_fee < 0 or self.hot_wallet_eth < 0 or self.hot_wallet_usdt < 0:
            raise ValueError("refund_fee and the hot wallet's balances must not be negative")
        if not is_address(self.changenow_hot_wallet):
            raise ValueError(f"changenow_hot_wallet is not an address: {self.changenow_hot_wallet}")
        signed_for = {a.lower() for a in [self.host_wallet, *self.extra_accounts]}
        if self.changenow_hot_wallet.lower() in signed_for:
            # The hot wallet is ChangeNOW's: if our signer could sign for it, a refund would
            # not prove that money came back from outside.
            raise ValueError("changenow_hot_wallet must not be an account the signer manages")

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **defaults: Any) -> SandboxConfig:
        """Defaults, then ``defaults`` (from settings), then SANDBOX_<NAME> variables."""
        environ = os.environ if environ is None else environ
        config = cls()
        config.update({k: v for k, v in defaults.items() if v not in (None, "")})
        overrides: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(f"SANDBOX_{f.name.upper()}")
            if raw is not None and raw != "":
                overrides[f.name] = raw
        config.update(overrides)
        return config


def _coerce(current: Any, value: Any, key: str) -> Any:
    """Convert env strings and JSON values to the type of the current setting."""
    if isinstance(value, float):
        value = Decimal(str(value))  # from JSON parsed without parse_float: keep it exact
    try:
        if isinstance(current, bool):
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if isinstance(current, Decimal):
            return Decimal(str(value))
        if isinstance(current, float):
            return float(value)
        if isinstance(current, int) and not isinstance(current, bool):
            return int(value)
        if current is None and key == "seed":
            return None if value in (None, "") else int(value)
        if isinstance(current, dict):
            # Merge: {"eth": "0.01"} keeps the others; {"eth": null} removes eth's entry.
            if isinstance(value, Mapping):
                dropped = {str(k).lower() for k, v in value.items() if v is None}
                value = {k: v for k, v in value.items() if v is not None}
            else:
                dropped = set()
            merged = {**current, **_decimal_map(value)}
            return {k: v for k, v in merged.items() if k not in dropped}
        if isinstance(current, list):
            if isinstance(value, str):
                return [item.strip() for item in value.split(",") if item.strip()]
            return [str(item) for item in value]
        return str(value)
    except (ValueError, ArithmeticError, TypeError) as exc:
        raise ValueError(f"bad value for {key}: {value!r} ({exc})") from None


def _decimal_map(value: Any) -> dict[str, Decimal]:
    """``{"eth": "0.01"}`` or the env form ``eth=0.01,usdt=5``."""
    if isinstance(value, str):
        pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError("expected name=value pairs separated by commas")
        return {name.strip().lower(): Decimal(amount.strip()) for name, amount in pairs}
    if isinstance(value, Mapping):
        return {str(k).lower(): Decimal(str(v)) for k, v in value.items()}
    raise ValueError("expected a mapping")
