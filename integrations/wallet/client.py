"""Host-wallet client: Ethereum JSON-RPC to a signer that holds the keys.

The app never holds a private key. It builds a transaction (native ETH or an ERC-20
``transfer``), asks the signer to sign it (``eth_signTransaction``), checks that the signed
bytes are exactly what it asked for, and broadcasts those bytes. A retry re-broadcasts the
same bytes (``broadcast`` treats "already known" as success), so one intent can never become
two transactions.

Signers answer ``eth_signTransaction`` either with the raw transaction as hex (anvil,
Web3Signer) or with Geth/Clef's ``{"raw": ..., "tx": {...}}``; the hash is keccak-256 of
the raw bytes in both cases. JSON-RPC calls are POSTs and are never retried by the
transport: the caller decides, and every call here is safe to repeat.

A stuck transaction is replaced, never abandoned: the same request re-signed at the same
nonce with both fee caps raised (``bump_fees``, ``TxRequest.with_fees``), or a cancel
(``build_cancel``: nothing to ourselves at that nonce). Whichever mines, the others at
that nonce are dead. A receipt is final only ``confirmations`` blocks deep
(``Receipt.confirmations``), and an ERC-20 transfer only with its ``Transfer`` log
(``erc20_transfer_logged``), not on ``status == 1`` alone.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any, NamedTuple

import requests
from eth_utils import is_address, to_checksum_address

from integrations.assets import AmountError, from_base_units, to_base_units
from integrations.errors import ProviderError, WalletError, WalletErrorKind
from integrations.http import DEFAULT_TIMEOUT, HttpClient, RetryPolicy
from integrations.wallet import abi
from integrations.wallet.rlp import DecodedTx, decode_transaction, tx_hash

GWEI = 10**9
ETH_TRANSFER_GAS = 21_000
DEFAULT_PRIORITY_FEE = 1 * GWEI  # when the node has no eth_maxPriorityFeePerGas
GAS_MARGIN_PERCENT = 25  # headroom over eth_estimateGas for contract calls
# What we raise both fee caps by to replace a stuck transaction. geth (and most nodes)
# want at least 10 % (--txpool.pricebump); 12.5 % leaves room for rounding and for nodes
# configured stricter, and is what the design asks.
REPLACEMENT_BUMP_PERCENT = Decimal("12.5")

# JSON-RPC error messages differ per node and signer; these patterns cover geth, anvil,
# Nethermind, Erigon, Besu, Web3Signer and Clef wording. Order matters: first match wins.
_ERROR_PATTERNS: list[tuple[WalletErrorKind, re.Pattern[str]]] = [
    # First: a revert reason is free text chosen by a contract and may contain any words.
    (WalletErrorKind.REVERTED, re.compile(r"^(execution )?reverted|\brevert")),
    (
        WalletErrorKind.ALREADY_KNOWN,
        re.compile(
            r"already known|known transaction|already imported|alreadyknown|"
            r"already in (the )?(mempool|pool)|transaction already exists"
        ),
    ),
    (
        WalletErrorKind.NONCE_TOO_LOW,
        re.compile(r"nonce too low|nonce is too low|oldnonce|nonce has already been used"),
    ),
    (WalletErrorKind.NONCE_TOO_HIGH, re.compile(r"nonce too high|nonce gap|noncegap")),
    (
        WalletErrorKind.INSUFFICIENT_FUNDS,
        re.compile(r"insufficient funds|insufficientfunds|insufficient balance"),
    ),
    (
        WalletErrorKind.UNDERPRICED,
        re.compile(
            r"underpriced|fee ?too ?low|less than block base fee|fee ?cap (is )?less|"
            r"feecaptoolow|gas price too low|tip too low|max fee per gas less"
        ),
    ),
    (
        WalletErrorKind.GAS_TOO_LOW,
        re.compile(r"intrinsic gas too low|gas too low|out of gas|exceeds block gas limit"),
    ),
    (
        WalletErrorKind.SIGNER_UNAVAILABLE,
        re.compile(
            r"no signer|unknown account|account not found|authentication needed|"
            r"account is locked|locked account|request denied|signer|no key for"
        ),
    ),
]


def classify_rpc_error(code: int | None, message: str) -> WalletErrorKind:
    text = message.lower()
    for kind, pattern in _ERROR_PATTERNS:
        if pattern.search(text):
            return kind
    if code == 3:
        return WalletErrorKind.REVERTED
    if code == -32601:
        return WalletErrorKind.METHOD_NOT_FOUND
    if code == -32602:
        return WalletErrorKind.INVALID_PARAMS
    return WalletErrorKind.RPC_ERROR


@dataclass(frozen=True)
class Fees:
    """Either EIP-1559 fields or a legacy gas price, never both."""

    max_fee_per_gas: int | None = None
    max_priority_fee_per_gas: int | None = None
    gas_price: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_fee_per_gas", "max_priority_fee_per_gas", "gas_price"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise ValueError(f"{name} must be a non-negative integer of wei, not {value!r}")
        eip1559 = self.max_fee_per_gas is not None or self.max_priority_fee_per_gas is not None
        if eip1559 == (self.gas_price is not None):
            raise ValueError("give max_fee_per_gas + max_priority_fee_per_gas, or gas_price")
        if eip1559 and (self.max_fee_per_gas is None or self.max_priority_fee_per_gas is None):
            raise ValueError("EIP-1559 fees need both max_fee_per_gas and max_priority_fee")
        if eip1559 and self.max_priority_fee_per_gas > self.max_fee_per_gas:  # type: ignore[operator]
            raise ValueError("max_priority_fee_per_gas exceeds max_fee_per_gas")

    @property
    def max_price(self) -> int:
        """The most one unit of gas can cost: what the balance must cover."""
        return self.gas_price if self.gas_price is not None else self.max_fee_per_gas  # type: ignore[return-value]

    @property
    def tip(self) -> int:
        """The priority fee cap; a legacy gas price is all tip (how nodes compare them)."""
        return self.gas_price if self.gas_price is not None else self.max_priority_fee_per_gas  # type: ignore[return-value]


@dataclass(frozen=True)
class TxRequest:
    """An unsigned transaction, as handed to the signer."""

    from_address: str
    to: str
    value: int  # wei
    data: bytes
    nonce: int
    gas: int
    chain_id: int
    fees: Fees
    # What the transaction moves, for logs and checks: ("eth", wei) or ("usdt", units).
    asset: str = "eth"
    units: int = 0
    recipient: str = ""

    def to_rpc(self) -> dict[str, str]:
        tx = {
            "from": self.from_address,
            "to": self.to,
            "value": hex(self.value),
            "nonce": hex(self.nonce),
            "gas": hex(self.gas),
            "chainId": hex(self.chain_id),
        }
        if self.data:
            # Both names: geth and anvil read "input", Web3Signer and older nodes "data".
            tx["data"] = tx["input"] = "0x" + self.data.hex()
        if self.fees.gas_price is not None:
            tx["gasPrice"] = hex(self.fees.gas_price)
        else:
            tx["maxFeePerGas"] = hex(self.fees.max_fee_per_gas)  # type: ignore[arg-type]
            tx["maxPriorityFeePerGas"] = hex(self.fees.max_priority_fee_per_gas)  # type: ignore[arg-type]
        return tx

    @property
    def max_cost_wei(self) -> int:
        return self.value + self.gas * self.fees.max_price

    @property
    def max_fee_per_gas(self) -> int | None:
        return self.fees.max_fee_per_gas

    @property
    def max_priority_fee_per_gas(self) -> int | None:
        return self.fees.max_priority_fee_per_gas

    @property
    def gas_price(self) -> int | None:
        return self.fees.gas_price

    @property
    def is_cancel(self) -> bool:
        """A zero-value, no-data transfer to the sender: fills a nonce, moves nothing."""
        return self.value == 0 and not self.data and self.to.lower() == self.from_address.lower()

    def with_fees(self, fees: Fees) -> TxRequest:
        """The same transaction (nonce, recipient, value, data, gas) at other fees."""
        return dataclasses.replace(self, fees=fees)

    @classmethod
    def from_signed(cls, raw: str | bytes, from_address: str, *, asset: str = "usdt") -> TxRequest:
        """The request behind stored signed bytes, to re-sign it at raised fees.

        The sender is not recovered from the signature (we hold no crypto for that): the
        caller says whose transaction it is, and the signer refuses it if that is wrong.
        ERC-20 transfer call data is read back as units of ``asset``.
        """
        data = raw if isinstance(raw, bytes) else _hex_bytes(raw, "raw transaction")
        decoded = decode_transaction(data)
        if decoded.to is None or decoded.chain_id is None:
            raise ValueError("not a transfer this client builds (no recipient or no chain id)")
        fees = (
            Fees(gas_price=decoded.gas_price)
            if decoded.gas_price is not None
            else Fees(
                max_fee_per_gas=decoded.max_fee_per_gas,
                max_priority_fee_per_gas=decoded.max_priority_fee_per_gas,
            )
        )
        to = to_checksum_address(decoded.to)
        transfer = abi.decode_transfer(decoded.data) if decoded.value == 0 else None
        if transfer is not None:
            kind, units, recipient = asset.lower(), transfer[1], transfer[0]
        else:
            kind, units, recipient = "eth", decoded.value, to
        return cls(
            from_address=_address(from_address, "from_address"),
            to=to,
            value=decoded.value,
            data=decoded.data,
            nonce=decoded.nonce,
            gas=decoded.gas,
            chain_id=decoded.chain_id,
            fees=fees,
            asset=kind,
            units=units,
            recipient=recipient,
        )


@dataclass(frozen=True)
class SignedTx:
    raw: str  # 0x-prefixed hex of the signed bytes: store this, re-broadcast this
    hash: str  # 0x-prefixed keccak-256 of the raw bytes
    request: TxRequest | None = None
    decoded: DecodedTx | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Receipt:
    tx_hash: str
    status: int | None  # 1 success, 0 reverted; None for pre-Byzantium receipts
    block_number: int
    block_hash: str | None
    gas_used: int
    effective_gas_price: int | None
    from_address: str | None
    to: str | None
    logs: Sequence[Mapping[str, Any]]
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def succeeded(self) -> bool:
        return self.status == 1

    @property
    def fee_wei(self) -> int | None:
        """Gas paid: gasUsed × effectiveGasPrice (None from nodes that omit the price)."""
        if self.effective_gas_price is None:
            return None
        return self.gas_used * self.effective_gas_price

    def confirmations(self, head: int) -> int:
        """Blocks deep at chain head ``head``: 1 in the head block itself, 0 if the head
        is below it (a reorg shortened the chain; re-read the receipt)."""
        return max(0, head - self.block_number + 1)


class BumpedFees(NamedTuple):
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    capped: bool  # the ceiling held a cap below what the rule or the suggestion asked

    @property
    def fees(self) -> Fees:
        return Fees(
            max_fee_per_gas=self.max_fee_per_gas,
            max_priority_fee_per_gas=self.max_priority_fee_per_gas,
        )


def bump_fees(
    old_max_fee: int,
    old_tip: int,
    suggested: Fees | None,
    *,
    percent: Decimal | int | str = REPLACEMENT_BUMP_PERCENT,
    ceiling_wei: int,
) -> BumpedFees:
    """EIP-1559 fee caps for a same-nonce replacement of a transaction paying
    (``old_max_fee``, ``old_tip``).

    Each cap is raised by at least ``percent`` (rounded up to the wei, and by at least one
    wei: nodes want strictly higher caps), or to the node's current ``suggested`` fees when
    those are higher (a legacy suggestion counts for both caps). The fee cap is at least
    the tip. Nothing goes above ``ceiling_wei``: when the ceiling bites, ``capped`` is true
    and the result may be too low for a node to accept as a replacement (at or below the
    old caps, or under the node's own bump); the caller alerts rather than overpays.
    """
    for name, value in (
        ("old_max_fee", old_max_fee),
        ("old_tip", old_tip),
        ("ceiling_wei", ceiling_wei),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer of wei, not {value!r}")
    if old_tip > old_max_fee:
        raise ValueError("old_tip exceeds old_max_fee")
    try:
        factor = 1 + Fraction(Decimal(str(percent))) / 100
    except (ArithmeticError, ValueError):
        raise ValueError(f"percent must be a number, not {percent!r}") from None
    if factor <= 1:
        raise ValueError("percent must be positive")

    def raised(value: int) -> int:
        return max(math.ceil(value * factor), value + 1)

    max_fee, tip = raised(old_max_fee), raised(old_tip)
    if suggested is not None:
        max_fee = max(max_fee, suggested.max_price)
        tip = max(tip, suggested.tip)
    max_fee = max(max_fee, tip)
    capped = max_fee > ceiling_wei
    if capped:
        max_fee = ceiling_wei
        tip = min(tip, max_fee)
    return BumpedFees(max_fee, tip, capped)


def erc20_transfer_logged(receipt: Receipt, token: str, sender: str, to: str, units: int) -> bool:
    """Did this mined receipt move exactly ``units`` of ``token`` from ``sender`` to ``to``?

    Only a ``Transfer(sender, to, units)`` log emitted by the token contract itself counts:
    ``status == 1`` alone does not (a token that returns false, a proxy that did nothing,
    a look-alike contract), nor the same event from another contract.
    """
    if not receipt.succeeded:
        return False
    wanted = (token.lower(), sender.lower(), to.lower(), units)
    return any(abi.decode_transfer_log(log) == wanted for log in receipt.logs)


class WalletClient:
    def __init__(
        self,
        rpc_url: str,
        *,
        host_address: str | None = None,
        usdt_contract: str | None = None,
        expected_chain_id: int | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        session: requests.Session | None = None,
    ) -> None:
        # JSON-RPC is POST: the policy's GET-only retries never fire; kept for uniformity.
        self.http = HttpClient(
            rpc_url,
            timeout=timeout,
            retry=RetryPolicy(retries=0),
            session=session,
            error_class=WalletError,
        )
        self.rpc_url = rpc_url
        self.host_address = _address(host_address, "host_address") if host_address else None
        self.usdt_contract = _address(usdt_contract, "usdt_contract") if usdt_contract else None
        self.expected_chain_id = expected_chain_id
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._chain_id: int | None = None

    @classmethod
    def from_settings(cls, **overrides: Any) -> WalletClient:
        from django.conf import settings

        options: dict[str, Any] = {
            "host_address": settings.HOST_WALLET_ADDRESS or None,
            "usdt_contract": settings.USDT_CONTRACT_ADDRESS or None,
        }
        options.update(overrides)
        return cls(settings.WALLET_RPC_URL, **options)

    # -- JSON-RPC ----------------------------------------------------------------------

    def rpc(self, method: str, params: Sequence[Any] = ()) -> Any:
        """One JSON-RPC call; errors become WalletError with a distinguishable kind."""
        with self._lock:
            request_id = next(self._ids)
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}
        try:
            response = self.http.request("POST", "", json_body=body)
        except WalletError as exc:
            kind = (
                WalletErrorKind.TIMEOUT
                if exc.code == "timeout"
                else WalletErrorKind.CONNECTION_ERROR
            )
            raise WalletError(f"{method}: {exc.message}", kind) from exc
        data = response.data
        if isinstance(data, Mapping) and isinstance(data.get("error"), Mapping):
            error = data["error"]
            code = error.get("code")
            message = str(error.get("message") or "")
            rpc_code = code if isinstance(code, int) and not isinstance(code, bool) else None
            kind = classify_rpc_error(rpc_code, message)
            if response.status >= 500 and kind == WalletErrorKind.RPC_ERROR:
                kind = WalletErrorKind.SERVER_ERROR
            raise WalletError(
                f"{method}: {message}",
                kind,
                retry_after=response.retry_after,
                status=response.status,
                data=error.get("data"),
                rpc_code=rpc_code,
            )
        if response.status == 429:
            raise WalletError(
                f"{method}: rate limited",
                WalletErrorKind.RATE_LIMITED,
                retry_after=response.retry_after,
                status=response.status,
            )
        if response.status >= 500:
            raise WalletError(
                f"{method}: HTTP {response.status} {response.text[:200]}",
                WalletErrorKind.SERVER_ERROR,
                retry_after=response.retry_after,
                status=response.status,
            )
        if response.status in (401, 403):
            raise WalletError(
                f"{method}: the signer refused our credentials (HTTP {response.status})",
                WalletErrorKind.SIGNER_UNAVAILABLE,
                status=response.status,
            )
        if response.status >= 400 or not isinstance(data, Mapping) or "result" not in data:
            raise WalletError(
                f"{method}: not a JSON-RPC answer (HTTP {response.status}): "
                f"{response.text[:200]!r}",
                WalletErrorKind.BAD_RESPONSE,
                status=response.status,
            )
        return data["result"]

    # -- chain facts -------------------------------------------------------------------

    def chain_id(self) -> int:
        if self._chain_id is None:
            chain_id = _quantity(self.rpc("eth_chainId"), "eth_chainId")
            if self.expected_chain_id is not None and chain_id != self.expected_chain_id:
                raise WalletError(
                    f"signer is on chain {chain_id}, expected {self.expected_chain_id}",
                    WalletErrorKind.WRONG_CHAIN,
                )
            self._chain_id = chain_id
        return self._chain_id

    def get_nonce(self, address: str | None = None, block: str = "pending") -> int:
        """eth_getTransactionCount: "pending" counts transactions still in the mempool;
        "latest" is the confirmed count (every nonce below it is used on chain)."""
        owner = self._owner(address)
        return _quantity(self.rpc("eth_getTransactionCount", [owner, block]), "nonce")

    def get_confirmed_nonce(self, address: str | None = None) -> int:
        """The number of mined transactions of ``address`` (its next nonce on chain)."""
        return self.get_nonce(address, "latest")

    def get_block_number(self) -> int:
        """eth_blockNumber: the chain head, for confirmation depth."""
        return _quantity(self.rpc("eth_blockNumber"), "eth_blockNumber")

    def gas_price(self) -> int:
        return _quantity(self.rpc("eth_gasPrice"), "eth_gasPrice")

    def suggest_fees(self) -> Fees:
        """EIP-1559 fees (2 × base fee + tip) when the chain has a base fee, else gasPrice."""
        block = self.rpc("eth_getBlockByNumber", ["latest", False])
        base_fee = block.get("baseFeePerGas") if isinstance(block, Mapping) else None
        if base_fee is None:
            return Fees(gas_price=self.gas_price())
        base = _quantity(base_fee, "baseFeePerGas")
        try:
            tip = _quantity(self.rpc("eth_maxPriorityFeePerGas"), "eth_maxPriorityFeePerGas")
        except WalletError as exc:
            if exc.code not in (WalletErrorKind.METHOD_NOT_FOUND, WalletErrorKind.INVALID_PARAMS):
                raise
            tip = DEFAULT_PRIORITY_FEE
        return Fees(max_fee_per_gas=2 * base + tip, max_priority_fee_per_gas=tip)

    def estimate_gas(
        self, *, to: str, value: int = 0, data: bytes = b"", from_address: str | None = None
    ) -> int:
        call: dict[str, str] = {"from": self._owner(from_address), "to": _address(to, "to")}
        if value:
            call["value"] = hex(value)
        if data:
            call["data"] = call["input"] = "0x" + data.hex()
        return _quantity(self.rpc("eth_estimateGas", [call]), "eth_estimateGas")

    def call(self, to: str, data: bytes, block: str = "latest") -> bytes:
        call = {"to": _address(to, "to"), "data": "0x" + data.hex(), "input": "0x" + data.hex()}
        return _hex_bytes(self.rpc("eth_call", [call, block]), "eth_call")

    # -- balances ----------------------------------------------------------------------

    def get_balance_wei(self, address: str | None = None, block: str = "latest") -> int:
        return _quantity(self.rpc("eth_getBalance", [self._owner(address), block]), "balance")

    def get_balance(self, address: str | None = None) -> Decimal:
        """ETH balance as a Decimal of ETH."""
        return from_base_units(self.get_balance_wei(address), "eth")

    def get_token_balance_units(
        self, address: str | None = None, *, token: str | None = None
    ) -> int:
        result = self.call(self._token(token), abi.encode_balance_of(self._owner(address)))
        try:
            return abi.decode_uint256(result)
        except ValueError as exc:
            raise WalletError(f"balanceOf: {exc}", WalletErrorKind.BAD_RESPONSE) from exc

    def get_token_balance(
        self, address: str | None = None, *, token: str | None = None, asset: str = "usdt"
    ) -> Decimal:
        """ERC-20 balance (eth_call balanceOf) as a Decimal of ``asset``."""
        return from_base_units(self.get_token_balance_units(address, token=token), asset)

    # -- building ----------------------------------------------------------------------

    def build_eth_transfer(
        self,
        to: str,
        amount: Decimal,
        *,
        nonce: int,
        from_address: str | None = None,
        gas: int | None = None,
        fees: Fees | None = None,
        check_balance: bool = True,
        max_fee_per_gas: int | None = None,
        max_priority_fee_per_gas: int | None = None,
    ) -> TxRequest:
        """A native ETH transfer of exactly ``amount`` ETH (refused if not exact in wei).

        Fees: ``fees``, or ``max_fee_per_gas`` + ``max_priority_fee_per_gas`` (wei), else
        the node's suggestion.
        """
        fees = _explicit_fees(fees, max_fee_per_gas, max_priority_fee_per_gas)
        wei = _units(amount, "eth")
        sender = self._owner(from_address)
        recipient = _address(to, "to")
        if gas is None:
            gas = self.estimate_gas(to=recipient, value=wei, from_address=sender)
            if gas != ETH_TRANSFER_GAS:  # the recipient is a contract: leave headroom
                gas = gas * (100 + GAS_MARGIN_PERCENT) // 100
        tx = TxRequest(
            from_address=sender,
            to=recipient,
            value=wei,
            data=b"",
            nonce=_nonce(nonce),
            gas=gas,
            chain_id=self.chain_id(),
            fees=fees or self.suggest_fees(),
            asset="eth",
            units=wei,
            recipient=recipient,
        )
        if check_balance:
            balance = self.get_balance_wei(sender)
            if balance < tx.max_cost_wei:
                raise WalletError(
                    f"host wallet has {from_base_units(balance, 'eth')} ETH, the transfer "
                    f"needs up to {from_base_units(tx.max_cost_wei, 'eth')} ETH with gas",
                    WalletErrorKind.INSUFFICIENT_FUNDS,
                )
        return tx

    def build_erc20_transfer(
        self,
        to: str,
        amount: Decimal,
        *,
        nonce: int,
        token: str | None = None,
        asset: str = "usdt",
        from_address: str | None = None,
        gas: int | None = None,
        fees: Fees | None = None,
        check_balance: bool = True,
        max_fee_per_gas: int | None = None,
        max_priority_fee_per_gas: int | None = None,
    ) -> TxRequest:
        """An ERC-20 ``transfer(to, units)`` of exactly ``amount`` ``asset`` (default USDT).

        Fees as for ``build_eth_transfer``.
        """
        fees = _explicit_fees(fees, max_fee_per_gas, max_priority_fee_per_gas)
        units = _units(amount, asset)
        sender = self._owner(from_address)
        contract = self._token(token)
        recipient = _address(to, "to")
        data = abi.encode_transfer(recipient, units)
        if check_balance:
            held = self.get_token_balance_units(sender, token=contract)
            if held < units:
                raise WalletError(
                    f"host wallet holds {from_base_units(held, asset)} {asset.upper()}, "
                    f"the transfer needs {amount}",
                    WalletErrorKind.INSUFFICIENT_FUNDS,
                )
        if gas is None:
            estimate = self.estimate_gas(to=contract, data=data, from_address=sender)
            gas = estimate * (100 + GAS_MARGIN_PERCENT) // 100
        tx = TxRequest(
            from_address=sender,
            to=contract,
            value=0,
            data=data,
            nonce=_nonce(nonce),
            gas=gas,
            chain_id=self.chain_id(),
            fees=fees or self.suggest_fees(),
            asset=asset.lower(),
            units=units,
            recipient=recipient,
        )
        if check_balance:
            balance = self.get_balance_wei(sender)
            if balance < tx.max_cost_wei:
                raise WalletError(
                    f"host wallet has {from_base_units(balance, 'eth')} ETH, not enough for "
                    f"gas up to {from_base_units(tx.max_cost_wei, 'eth')} ETH",
                    WalletErrorKind.INSUFFICIENT_FUNDS,
                )
        return tx

    def build_cancel(
        self,
        *,
        nonce: int,
        from_address: str | None = None,
        fees: Fees | None = None,
        max_fee_per_gas: int | None = None,
        max_priority_fee_per_gas: int | None = None,
        check_balance: bool = True,
    ) -> TxRequest:
        """A cancel: 0 ETH from the wallet to itself at ``nonce``, plain 21,000 gas.

        Mined, it uses the nonce and moves nothing but gas, so whatever else was signed at
        that nonce can never mine. To replace a pending transaction its fees must beat
        that transaction's (``bump_fees``).
        """
        fees = _explicit_fees(fees, max_fee_per_gas, max_priority_fee_per_gas)
        sender = self._owner(from_address)
        tx = TxRequest(
            from_address=sender,
            to=sender,
            value=0,
            data=b"",
            nonce=_nonce(nonce),
            gas=ETH_TRANSFER_GAS,
            chain_id=self.chain_id(),
            fees=fees or self.suggest_fees(),
            asset="eth",
            units=0,
            recipient=sender,
        )
        if check_balance:
            balance = self.get_balance_wei(sender)
            if balance < tx.max_cost_wei:
                raise WalletError(
                    f"host wallet has {from_base_units(balance, 'eth')} ETH, not enough for "
                    f"the cancel's gas up to {from_base_units(tx.max_cost_wei, 'eth')} ETH",
                    WalletErrorKind.INSUFFICIENT_FUNDS,
                )
        return tx

    # -- signing and sending -----------------------------------------------------------

    def sign(self, tx: TxRequest) -> SignedTx:
        """eth_signTransaction, then prove the signed bytes are the transaction we asked for."""
        result = self.rpc("eth_signTransaction", [tx.to_rpc()])
        reported_hash = None
        if isinstance(result, Mapping):  # Geth / Clef: {"raw": "0x..", "tx": {...}}
            raw_hex = result.get("raw")
            inner = result.get("tx")
            if isinstance(inner, Mapping) and isinstance(inner.get("hash"), str):
                reported_hash = inner["hash"].lower()
        else:
            raw_hex = result
        raw = _hex_bytes(raw_hex, "eth_signTransaction")
        if not raw:
            raise WalletError(
                "eth_signTransaction: empty raw transaction", WalletErrorKind.BAD_RESPONSE
            )
        try:
            decoded = decode_transaction(raw)
        except ValueError as exc:
            raise WalletError(
                f"eth_signTransaction: raw transaction does not decode: {exc}",
                WalletErrorKind.BAD_RESPONSE,
            ) from exc
        _check_signed(tx, decoded)
        digest = tx_hash(raw)
        if reported_hash is not None and reported_hash != digest:
            raise WalletError(
                f"signer reports hash {reported_hash}, the raw bytes hash to {digest}",
                WalletErrorKind.SIGNER_MISMATCH,
            )
        return SignedTx(raw="0x" + raw.hex(), hash=digest, request=tx, decoded=decoded)

    def send_raw(self, raw: str) -> str:
        """eth_sendRawTransaction; returns the hash the node reports."""
        result = self.rpc("eth_sendRawTransaction", [raw])
        if not isinstance(result, str) or not re.fullmatch(r"0x[0-9a-fA-F]{64}", result):
            raise WalletError(
                f"eth_sendRawTransaction: not a transaction hash: {result!r}",
                WalletErrorKind.BAD_RESPONSE,
            )
        return result.lower()

    def broadcast(self, signed: SignedTx | str) -> str:
        """Broadcast stored signed bytes; safe to call again with the same bytes.

        "Already known" and "nonce too low" for a transaction the node already has (mined
        or pending) are success: the hash is returned. Any other failure raises.
        """
        raw = signed.raw if isinstance(signed, SignedTx) else signed
        expected = tx_hash(_hex_bytes(raw, "raw transaction"))
        try:
            reported = self.send_raw(raw)
        except WalletError as exc:
            if exc.code == WalletErrorKind.ALREADY_KNOWN:
                return expected
            if exc.code == WalletErrorKind.NONCE_TOO_LOW and self._node_has(expected):
                return expected
            raise
        if reported != expected:
            raise WalletError(
                f"node reports hash {reported} for bytes that hash to {expected}",
                WalletErrorKind.BAD_RESPONSE,
            )
        return expected

    def get_transaction(self, tx_hash_: str) -> Mapping[str, Any] | None:
        result = self.rpc("eth_getTransactionByHash", [tx_hash_])
        return result if isinstance(result, Mapping) else None

    def get_receipt(self, tx_hash_: str) -> Receipt | None:
        """eth_getTransactionReceipt; None while the transaction is not mined."""
        data = self.rpc("eth_getTransactionReceipt", [tx_hash_])
        if data is None:
            return None
        if not isinstance(data, Mapping):
            raise WalletError(f"receipt is not an object: {data!r}", WalletErrorKind.BAD_RESPONSE)
        if data.get("blockNumber") is None:
            return None  # some nodes answer pending receipts with a null block
        status = data.get("status")
        price = data.get("effectiveGasPrice")
        logs = data.get("logs")
        return Receipt(
            tx_hash=str(data.get("transactionHash") or tx_hash_).lower(),
            status=_quantity(status, "status") if status is not None else None,
            block_number=_quantity(data.get("blockNumber"), "blockNumber"),
            block_hash=data.get("blockHash"),
            gas_used=_quantity(data.get("gasUsed", "0x0"), "gasUsed"),
            effective_gas_price=_quantity(price, "effectiveGasPrice")
            if price is not None
            else None,
            from_address=data.get("from"),
            to=data.get("to"),
            logs=list(logs) if isinstance(logs, list) else [],
            raw=data,
        )

    # -- helpers -----------------------------------------------------------------------

    def _node_has(self, tx_hash_: str) -> bool:
        """Does the node know this transaction (pending or mined)? Unsure counts as no."""
        for lookup in (self.get_transaction, self.get_receipt):
            try:
                if lookup(tx_hash_) is not None:
                    return True
            except ProviderError:
                continue  # e.g. a node without eth_getTransactionByHash: try the receipt
        return False

    def _owner(self, address: str | None) -> str:
        if address:
            return _address(address, "address")
        if not self.host_address:
            raise ValueError("no address given and no host wallet address configured")
        return self.host_address

    def _token(self, token: str | None) -> str:
        if token:
            return _address(token, "token")
        if not self.usdt_contract:
            raise ValueError("no token given and no USDT contract address configured")
        return self.usdt_contract


def _check_signed(tx: TxRequest, decoded: DecodedTx) -> None:
    """The signer must sign exactly our transaction: recipient, value, data, nonce, chain."""
    problems = []
    if decoded.to != tx.to.lower():
        problems.append(f"to {decoded.to} != {tx.to}")
    if decoded.value != tx.value:
        problems.append(f"value {decoded.value} != {tx.value}")
    if decoded.data != tx.data:
        problems.append("call data differs")
    if decoded.nonce != tx.nonce:
        problems.append(f"nonce {decoded.nonce} != {tx.nonce}")
    if decoded.chain_id is None:
        problems.append("no chain id: the signature could be replayed on any chain")
    elif decoded.chain_id != tx.chain_id:
        problems.append(f"chain {decoded.chain_id} != {tx.chain_id}")
    if decoded.gas != tx.gas:
        problems.append(f"gas {decoded.gas} != {tx.gas}")
    max_price = decoded.gas_price if decoded.gas_price is not None else decoded.max_fee_per_gas
    if max_price is not None and max_price > tx.fees.max_price:
        problems.append(f"gas price {max_price} above the {tx.fees.max_price} we allowed")
    if problems:
        raise WalletError(
            "signer signed a different transaction: " + "; ".join(problems),
            WalletErrorKind.SIGNER_MISMATCH,
        )


def _explicit_fees(
    fees: Fees | None, max_fee_per_gas: int | None, max_priority_fee_per_gas: int | None
) -> Fees | None:
    if max_fee_per_gas is None and max_priority_fee_per_gas is None:
        return fees
    if fees is not None:
        raise ValueError("give fees or max_fee_per_gas + max_priority_fee_per_gas, not both")
    return Fees(max_fee_per_gas=max_fee_per_gas, max_priority_fee_per_gas=max_priority_fee_per_gas)


def _units(amount: Decimal, asset: str) -> int:
    if not isinstance(amount, Decimal):
        raise TypeError(f"amounts are Decimal, not {type(amount).__name__}")
    if not amount.is_finite() or amount <= 0:
        raise AmountError(f"transfer amount must be positive, not {amount}")
    return to_base_units(amount, asset)  # raises AmountError rather than truncate


def _nonce(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"nonce must be a non-negative integer, not {value!r}")
    return value


def _address(value: str | None, what: str) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise ValueError(f"{what} is not an Ethereum address: {value!r}")
    return to_checksum_address(value)


def _quantity(value: Any, what: str) -> int:
    if isinstance(value, str) and re.fullmatch(r"0x[0-9a-fA-F]+", value):
        return int(value, 16)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise WalletError(f"{what}: not a hex quantity: {value!r}", WalletErrorKind.BAD_RESPONSE)


def _hex_bytes(value: Any, what: str) -> bytes:
    if isinstance(value, str) and re.fullmatch(r"0x([0-9a-fA-F]{2})*", value):
        return bytes.fromhex(value[2:])
    raise WalletError(f"{what}: not hex data: {str(value)[:80]!r}", WalletErrorKind.BAD_RESPONSE)
