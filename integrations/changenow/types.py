"""Typed results of the ChangeNOW v2 API.

Every amount is a ``Decimal`` or ``None``. ``None`` means ChangeNOW does not know it yet
(``amountTo`` before the payout is sent, ``amountFrom`` before the deposit is seen); it is
never read as zero. Statuses are kept as the strings ChangeNOW sent, unknown ones included:
deciding what an unknown status means is the order engine's job, not the client's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

# The statuses ChangeNOW documents for an exchange, grouped by what they mean for funds.
WAITING_STATUSES = frozenset({"new", "waiting"})
IN_PROGRESS_STATUSES = frozenset({"confirming", "exchanging", "sending", "verifying"})
SUCCESS_STATUSES = frozenset({"finished"})
FAILURE_STATUSES = frozenset({"failed", "refunded", "expired"})
KNOWN_STATUSES = WAITING_STATUSES | IN_PROGRESS_STATUSES | SUCCESS_STATUSES | FAILURE_STATUSES
TERMINAL_STATUSES = SUCCESS_STATUSES | FAILURE_STATUSES

STANDARD = "standard"
FIXED_RATE = "fixed-rate"
FLOWS = frozenset({STANDARD, FIXED_RATE})
DIRECT = "direct"
REVERSE = "reverse"
TYPES = frozenset({DIRECT, REVERSE})


@dataclass(frozen=True)
class Currency:
    ticker: str
    network: str
    name: str
    legacy_ticker: str | None
    token_contract: str | None
    has_external_id: bool
    is_extra_id_supported: bool
    is_fiat: bool
    is_stable: bool
    featured: bool
    supports_fixed_rate: bool
    buy: bool | None
    sell: bool | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class AmountRange:
    from_currency: str
    to_currency: str
    from_network: str | None
    to_network: str | None
    flow: str
    min_amount: Decimal | None
    max_amount: Decimal | None  # None: ChangeNOW sets no maximum
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Estimate:
    from_currency: str
    to_currency: str
    from_network: str | None
    to_network: str | None
    flow: str
    type: str
    from_amount: Decimal | None
    to_amount: Decimal | None
    rate_id: str | None  # fixed-rate only: pass to create_exchange to lock the rate
    valid_until: datetime | None
    deposit_fee: Decimal | None
    withdrawal_fee: Decimal | None
    transaction_speed_forecast: str | None
    warning_message: str | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class CreatedExchange:
    id: str
    payin_address: str
    payin_extra_id: str | None
    payout_address: str
    payout_extra_id: str | None
    refund_address: str | None
    refund_extra_id: str | None
    from_currency: str
    to_currency: str
    from_network: str | None
    to_network: str | None
    from_amount: Decimal | None
    to_amount: Decimal | None  # ChangeNOW's estimate at creation, not what will arrive
    flow: str | None
    type: str | None
    rate_id: str | None
    valid_until: datetime | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Exchange:
    """GET /v2/exchange/by-id: the truth about one exchange."""

    id: str
    status: str
    actions_available: bool | None
    flow: str | None
    from_currency: str
    to_currency: str
    from_network: str | None
    to_network: str | None
    expected_amount_from: Decimal | None
    expected_amount_to: Decimal | None
    amount_from: Decimal | None  # what ChangeNOW received; None until the deposit is seen
    amount_to: Decimal | None  # what ChangeNOW sent; None until it is known
    payin_address: str | None
    payin_extra_id: str | None
    payout_address: str | None
    payout_extra_id: str | None
    refund_address: str | None
    refund_extra_id: str | None
    payin_hash: str | None
    payout_hash: str | None
    refund_hash: str | None
    refund_amount: Decimal | None
    created_at: datetime | None
    updated_at: datetime | None
    deposit_received_at: datetime | None
    valid_until: datetime | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def is_known_status(self) -> bool:
        return self.status in KNOWN_STATUSES

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class ExchangeActions:
    """GET /v2/exchange/actions: the recovery ChangeNOW offers for one exchange.

    ``continue_`` carries a trailing underscore because ``continue`` is a keyword. The
    optional fields are what ChangeNOW says about the offer, when it says it: the refund it
    would send and where, and what a continue would now pay out.
    """

    refund: bool
    continue_: bool
    refund_amount: Decimal | None = None
    refund_address: str | None = None
    refund_extra_id: str | None = None
    continue_estimate: Decimal | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def available(self) -> bool:
        return self.refund or self.continue_


@dataclass(frozen=True)
class AddressValidation:
    result: bool
    message: str | None
    is_activated: bool | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class ExchangeLeg:
    """One side (payin or payout) of an exchange in the partner list."""

    currency: str | None
    network: str | None
    amount: Decimal | None
    expected_amount: Decimal | None
    address: str | None
    extra_id: str | None
    hash: str | None


@dataclass(frozen=True)
class PartnerExchange:
    """One row of GET /v2/exchanges. ``request_id`` is the id the other endpoints take."""

    exchange_id: str | None
    request_id: str | None
    status: str
    flow: str | None
    created_at: datetime | None
    updated_at: datetime | None
    valid_until: datetime | None
    payin: ExchangeLeg
    payout: ExchangeLeg
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def id(self) -> str | None:
        return self.request_id or self.exchange_id


@dataclass(frozen=True)
class ExchangeList:
    count: int | None
    exchanges: list[PartnerExchange]
