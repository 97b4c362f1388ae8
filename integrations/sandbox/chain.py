"""An in-memory Ethereum chain with a JSON-RPC signer, enough for the host wallet's flows.

Accounts hold ETH; one ERC-20 (the configured USDT contract, 6 decimals) holds balances.
The signer signs for its managed accounts and refuses what they cannot cover; signatures
are fake but the raw bytes are real RLP envelopes (legacy or EIP-1559) whose keccak-256 is
the transaction hash, so clients can decode and check them. Broadcast transactions are
mined after ``block_time`` seconds (instantly by default), one block per transaction.
Every successful transfer is reported to a listener: that is how a deposit to a payin
address reaches the simulated ChangeNOW.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from eth_utils import is_address, keccak, to_checksum_address

from integrations.assets import from_base_units, to_base_units
from integrations.sandbox.config import SandboxConfig
from integrations.wallet import abi
from integrations.wallet.rlp import (
    DecodedTx,
    decode_transaction,
    encode_eip1559,
    encode_legacy,
    tx_hash,
)

GWEI = 10**9
TRANSFER_TOPIC = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
TOKEN_TRANSFER_GAS = 45_000
TOKEN_TRANSFER_ESTIMATE = 52_000
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


@dataclass(frozen=True)
class Transfer:
    """A successful movement of value on the sandbox chain."""

    asset: str  # "eth" or the token's asset name ("usdt")
    token: str | None  # contract address for tokens
    sender: str
    recipient: str
    units: int
    tx_hash: str
    at: float

    @property
    def amount(self) -> Decimal:
        return from_base_units(self.units, self.asset)


@dataclass
class ChainTx:
    hash: str
    raw: str
    sender: str
    decoded: DecodedTx
    sent_at: float
    block_number: int | None = None
    block_hash: str | None = None
    mined_at: float | None = None
    status: int | None = None
    gas_used: int = 0
    effective_gas_price: int = 0
    logs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Block:
    number: int
    hash: str
    timestamp: int
    transactions: list[str]
    base_fee: int


def _lower(address: str) -> str:
    return address.lower()


def _q(value: int) -> str:
    return hex(value)


class Chain:
    def __init__(
        self,
        config: SandboxConfig,
        clock: Callable[[], float],
        rng: random.Random,
        on_transfer: Callable[[Transfer], None],
    ) -> None:
        self.config = config
        self.clock = clock
        self.rng = rng
        self.on_transfer = on_transfer
        self.balances: dict[str, int] = {}
        self.nonces: dict[str, int] = {}
        self.token_balances: dict[str, int] = {}  # holder -> units of the USDT contract
        self.managed: set[str] = set()
        self.signed: dict[str, str] = {}  # tx hash -> sender, for every signature we made
        self.txs: dict[str, ChainTx] = {}
        self.pending: list[str] = []
        now = int(self.clock())
        self.blocks: list[Block] = [Block(0, _block_hash(0, []), now, [], self.base_fee)]
        for address in [config.host_wallet, *config.extra_accounts]:
            self.managed.add(_lower(address))
            self.balances[_lower(address)] = to_base_units(config.eth_balance, "eth")
        self.token_balances[_lower(config.host_wallet)] = to_base_units(config.usdt_balance, "usdt")

    # -- facts -------------------------------------------------------------------------

    @property
    def token(self) -> str:
        return _lower(self.config.usdt_contract)

    @property
    def base_fee(self) -> int:
        return int(self.config.base_fee_gwei * GWEI)

    @property
    def priority_fee(self) -> int:
        return int(self.config.priority_fee_gwei * GWEI)

    def nonce(self, address: str) -> int:
        return self.nonces.get(_lower(address), 0)

    def pending_nonce(self, address: str) -> int:
        sender = _lower(address)
        return self.nonce(sender) + sum(1 for h in self.pending if self.txs[h].sender == sender)

    def fund(
        self, address: str, *, eth: Decimal | None = None, usdt: Decimal | None = None
    ) -> None:
        """Set (not add to) an account's balances."""
        key = _lower(address)
        if eth is not None:
            self.balances[key] = to_base_units(eth, "eth")
        if usdt is not None:
            self.token_balances[key] = to_base_units(usdt, "usdt")

    def credit(self, address: str, asset: str, units: int) -> None:
        """Money arriving from outside the chain (a ChangeNOW refund or payout)."""
        key = _lower(address)
        if asset == "eth":
            self.balances[key] = self.balances.get(key, 0) + units
        else:
            self.token_balances[key] = self.token_balances.get(key, 0) + units

    # -- mining ------------------------------------------------------------------------

    def tick(self) -> None:
        """Mine every pending transaction whose block time has come."""
        now = self.clock()
        for tx_id in list(self.pending):
            if self.txs[tx_id].sent_at + self.config.block_time <= now:
                self.mine(tx_id)

    def mine_all(self) -> int:
        count = len(self.pending)
        for tx_id in list(self.pending):
            self.mine(tx_id)
        return count

    def mine(self, tx_id: str) -> None:
        tx = self.txs[tx_id]
        self.pending.remove(tx_id)
        decoded = tx.decoded
        base = self.base_fee
        if decoded.gas_price is not None:
            price = decoded.gas_price
        else:
            price = min(
                decoded.max_fee_per_gas or 0, base + (decoded.max_priority_fee_per_gas or 0)
            )
        sender, recipient = tx.sender, (decoded.to or "")
        needed = _intrinsic_gas(decoded.data)
        transfer = abi.decode_transfer(decoded.data) if recipient == self.token else None
        if recipient == self.token:
            needed = TOKEN_TRANSFER_GAS
        status = 1
        if decoded.gas < needed:
            status, gas_used = 0, decoded.gas  # out of gas
        else:
            gas_used = needed
        self.balances[sender] = self.balances.get(sender, 0) - gas_used * price
        self.nonces[sender] = self.nonce(sender) + 1
        events: list[Transfer] = []
        logs: list[dict[str, Any]] = []
        now = self.clock()
        if status == 1 and recipient == self.token:
            held = self.token_balances.get(sender, 0)
            if transfer is None or transfer[1] > held:
                status = 0  # the token reverts: bad call data or not enough tokens
            else:
                to, units = transfer[0].lower(), transfer[1]
                self.token_balances[sender] = held - units
                self.token_balances[to] = self.token_balances.get(to, 0) + units
                events.append(Transfer("usdt", self.token, sender, to, units, tx_id, now))
                logs.append(
                    {
                        "address": to_checksum_address(self.token),
                        "topics": [TRANSFER_TOPIC, _topic(sender), _topic(to)],
                        "data": "0x" + units.to_bytes(32, "big").hex(),
                        "logIndex": "0x0",
                        "removed": False,
                    }
                )
        if status == 1 and decoded.value:
            self.balances[sender] -= decoded.value
            self.balances[recipient] = self.balances.get(recipient, 0) + decoded.value
            events.append(Transfer("eth", None, sender, recipient, decoded.value, tx_id, now))
        number = len(self.blocks)
        block = Block(number, _block_hash(number, [tx_id]), int(now), [tx_id], base)
        self.blocks.append(block)
        tx.block_number, tx.block_hash, tx.mined_at = number, block.hash, now
        tx.status, tx.gas_used, tx.effective_gas_price = status, gas_used, price
        for log in logs:
            log.update(
                blockNumber=_q(number),
                blockHash=block.hash,
                transactionHash=tx_id,
                transactionIndex="0x0",
            )
        tx.logs = logs
        for event in events:
            self.on_transfer(event)

    # -- JSON-RPC ----------------------------------------------------------------------

    def handle(self, method: str, params: list[Any]) -> Any:
        self.tick()
        handler = getattr(self, "rpc_" + method, None)
        if handler is None:
            raise RpcError(-32601, f"the method {method} does not exist/is not available")
        return handler(*params)

    def rpc_web3_clientVersion(self) -> str:  # noqa: N802 - JSON-RPC method names
        return "payout-backoffice-sandbox/1.0"

    def rpc_eth_chainId(self) -> str:  # noqa: N802
        return _q(self.config.chain_id)

    def rpc_net_version(self) -> str:
        return str(self.config.chain_id)

    def rpc_eth_blockNumber(self) -> str:  # noqa: N802
        return _q(len(self.blocks) - 1)

    def rpc_eth_accounts(self) -> list[str]:
        return [to_checksum_address(a) for a in sorted(self.managed)]

    def rpc_eth_gasPrice(self) -> str:  # noqa: N802
        return _q(self.base_fee + self.priority_fee)

    def rpc_eth_maxPriorityFeePerGas(self) -> str:  # noqa: N802
        return _q(self.priority_fee)

    def rpc_eth_getBlockByNumber(self, tag: str = "latest", full: bool = False) -> Any:  # noqa: N802
        if tag in ("latest", "pending", "safe", "finalized"):
            block = self.blocks[-1]
        elif tag == "earliest":
            block = self.blocks[0]
        else:
            number = _parse_quantity(tag, "block number")
            if number >= len(self.blocks):
                return None
            block = self.blocks[number]
        return {
            "number": _q(block.number),
            "hash": block.hash,
            "parentHash": self.blocks[block.number - 1].hash if block.number else "0x" + "00" * 32,
            "timestamp": _q(block.timestamp),
            "baseFeePerGas": _q(block.base_fee),
            "gasLimit": _q(30_000_000),
            "gasUsed": _q(sum(self.txs[h].gas_used for h in block.transactions)),
            "transactions": (
                [self._tx_json(self.txs[h]) for h in block.transactions]
                if full
                else list(block.transactions)
            ),
        }

    def rpc_eth_getBalance(self, address: str, tag: str = "latest") -> str:  # noqa: N802
        return _q(self.balances.get(_address(address), 0))

    def rpc_eth_getTransactionCount(self, address: str, tag: str = "latest") -> str:  # noqa: N802
        key = _address(address)
        return _q(self.pending_nonce(key) if tag == "pending" else self.nonce(key))

    def rpc_eth_estimateGas(self, call: Mapping[str, Any], tag: str = "latest") -> str:  # noqa: N802
        to = _address(call.get("to")) if call.get("to") else None
        if to is None:
            raise RpcError(-32602, "the sandbox chain does not deploy contracts")
        data = _call_data(call)
        value = _parse_quantity(call.get("value", "0x0"), "value")
        sender = _address(call["from"]) if call.get("from") else None
        if sender is not None and value > self.balances.get(sender, 0):
            raise RpcError(-32000, "insufficient funds for transfer")
        if to == self.token:
            transfer = abi.decode_transfer(data)
            if transfer is None:
                raise RpcError(3, "execution reverted")
            if sender is not None and transfer[1] > self.token_balances.get(sender, 0):
                raise RpcError(3, "execution reverted: ERC20: transfer amount exceeds balance")
            return _q(TOKEN_TRANSFER_ESTIMATE)
        return _q(_intrinsic_gas(data))

    def rpc_eth_call(self, call: Mapping[str, Any], tag: str = "latest") -> str:  # noqa: N802
        to = _address(call.get("to"))
        data = _call_data(call)
        if to != self.token:
            return "0x"
        selector = data[:4]
        if selector == abi.BALANCE_OF_SELECTOR and len(data) == 36:
            owner = "0x" + data[16:36].hex()
            return "0x" + self.token_balances.get(owner, 0).to_bytes(32, "big").hex()
        if selector == abi.DECIMALS_SELECTOR:
            return "0x" + (6).to_bytes(32, "big").hex()
        raise RpcError(3, "execution reverted")

    def rpc_eth_signTransaction(self, request: Mapping[str, Any]) -> Any:  # noqa: N802
        if not isinstance(request, Mapping):
            raise RpcError(-32602, "expected a transaction object")
        if not request.get("from"):
            raise RpcError(-32602, "missing from")
        sender = _address(request["from"])
        if sender not in self.managed:
            raise RpcError(-32000, f"unknown account {to_checksum_address(sender)}")
        if not request.get("to"):
            raise RpcError(-32602, "the sandbox signer does not sign contract creations")
        to = _address(request["to"])
        chain_id = request.get("chainId")
        if chain_id is not None and _parse_quantity(chain_id, "chainId") != self.config.chain_id:
            raise RpcError(-32000, f"invalid chain id: the signer is on {self.config.chain_id}")
        data = _call_data(request)
        value = _parse_quantity(request.get("value", "0x0"), "value")
        nonce = (
            _parse_quantity(request["nonce"], "nonce")
            if request.get("nonce") is not None
            else self.pending_nonce(sender)
        )
        gas = (
            _parse_quantity(request["gas"], "gas")
            if request.get("gas") is not None
            else int(
                self.rpc_eth_estimateGas(
                    {"from": sender, "to": to, "value": hex(value), "data": "0x" + data.hex()}
                ),
                16,
            )
        )
        legacy = request.get("gasPrice") is not None
        if legacy:
            gas_price = _parse_quantity(request["gasPrice"], "gasPrice")
            max_price = gas_price
        else:
            tip = _parse_quantity(
                request.get("maxPriorityFeePerGas", _q(self.priority_fee)), "maxPriorityFeePerGas"
            )
            max_fee = _parse_quantity(
                request.get("maxFeePerGas", _q(2 * self.base_fee + tip)), "maxFeePerGas"
            )
            max_price = max_fee
        # The signer refuses what the wallet cannot cover, counting its pending spends.
        cost = value + gas * max_price
        available = self._available_wei(sender)
        if cost > available:
            raise RpcError(
                -32000,
                f"insufficient funds for gas * price + value: balance {available}, tx cost {cost}",
            )
        if to == self.token:
            transfer = abi.decode_transfer(data)
            if transfer is not None and transfer[1] > self._available_units(sender):
                raise RpcError(
                    -32000,
                    f"insufficient funds: token balance {self._available_units(sender)}, "
                    f"transfer {transfer[1]}",
                )
        seed = keccak(
            b"sandbox-signature"
            + bytes.fromhex(sender[2:])
            + repr(
                (self.config.chain_id, nonce, gas, to, value, data.hex(), legacy, max_price)
            ).encode()
        )
        r = int.from_bytes(seed, "big") % (_SECP256K1_N - 1) + 1
        s = int.from_bytes(keccak(seed), "big") % (_SECP256K1_N // 2 - 1) + 1
        if legacy:
            raw = encode_legacy(
                chain_id=self.config.chain_id,
                nonce=nonce,
                gas_price=gas_price,
                gas=gas,
                to=to,
                value=value,
                data=data,
                recovery=0,
                r=r,
                s=s,
            )
        else:
            raw = encode_eip1559(
                chain_id=self.config.chain_id,
                nonce=nonce,
                max_priority_fee_per_gas=tip,
                max_fee_per_gas=max_fee,
                gas=gas,
                to=to,
                value=value,
                data=data,
                y_parity=0,
                r=r,
                s=s,
            )
        digest = tx_hash(raw)
        self.signed[digest] = sender
        raw_hex = "0x" + raw.hex()
        if self.config.sign_format == "geth":
            decoded = decode_transaction(raw)
            tx = ChainTx(digest, raw_hex, sender, decoded, self.clock())
            return {"raw": raw_hex, "tx": self._tx_json(tx)}
        return raw_hex

    def rpc_eth_sendRawTransaction(self, raw_hex: str) -> str:  # noqa: N802
        if not isinstance(raw_hex, str) or not raw_hex.startswith("0x"):
            raise RpcError(-32602, "raw transaction must be 0x-prefixed hex")
        try:
            raw = bytes.fromhex(raw_hex[2:])
            decoded = decode_transaction(raw)
        except ValueError as exc:
            raise RpcError(-32602, f"invalid raw transaction: {exc}") from None
        digest = decoded.hash
        if digest in self.txs:
            if self.txs[digest].block_number is None:
                raise RpcError(-32000, "already known")
            raise RpcError(-32000, "nonce too low")  # what geth says for a mined tx
        sender = self.signed.get(digest)
        if sender is None:
            raise RpcError(-32000, "invalid sender")  # we only accept our own signatures
        if decoded.chain_id is not None and decoded.chain_id != self.config.chain_id:
            raise RpcError(-32000, "invalid chain id")
        current = self.nonce(sender)
        if decoded.nonce < current:
            raise RpcError(-32000, f"nonce too low: next nonce {current}, tx nonce {decoded.nonce}")
        for other in self.pending:
            pending_tx = self.txs[other]
            if pending_tx.sender == sender and pending_tx.decoded.nonce == decoded.nonce:
                raise RpcError(-32000, "replacement transaction underpriced")
        if decoded.nonce > self.pending_nonce(sender):
            raise RpcError(-32000, "nonce too high: the sandbox does not queue nonce gaps")
        max_price = decoded.gas_price if decoded.gas_price is not None else decoded.max_fee_per_gas
        if decoded.gas_price is not None and decoded.gas_price < self.base_fee:
            raise RpcError(-32000, "transaction underpriced")
        if decoded.max_fee_per_gas is not None and decoded.max_fee_per_gas < self.base_fee:
            raise RpcError(
                -32000,
                f"max fee per gas less than block base fee: maxFeePerGas: "
                f"{decoded.max_fee_per_gas}, baseFee: {self.base_fee}",
            )
        if decoded.gas < _intrinsic_gas(decoded.data):
            raise RpcError(-32000, "intrinsic gas too low")
        cost = decoded.value + decoded.gas * (max_price or 0)
        if cost > self._available_wei(sender):
            raise RpcError(-32000, "insufficient funds for gas * price + value")
        self.txs[digest] = ChainTx(digest, "0x" + raw.hex(), sender, decoded, self.clock())
        self.pending.append(digest)
        if self.config.block_time <= 0:
            self.mine(digest)
        return digest

    def rpc_eth_getTransactionReceipt(self, digest: str) -> Any:  # noqa: N802
        tx = self.txs.get(str(digest).lower())
        if tx is None or tx.block_number is None:
            return None
        return {
            "transactionHash": tx.hash,
            "transactionIndex": "0x0",
            "blockHash": tx.block_hash,
            "blockNumber": _q(tx.block_number),
            "from": to_checksum_address(tx.sender),
            "to": to_checksum_address(tx.decoded.to) if tx.decoded.to else None,
            "cumulativeGasUsed": _q(tx.gas_used),
            "gasUsed": _q(tx.gas_used),
            "effectiveGasPrice": _q(tx.effective_gas_price),
            "contractAddress": None,
            "logs": tx.logs,
            "logsBloom": "0x" + "00" * 256,
            "status": _q(tx.status or 0),
            "type": _q(tx.decoded.type),
        }

    def rpc_eth_getTransactionByHash(self, digest: str) -> Any:  # noqa: N802
        tx = self.txs.get(str(digest).lower())
        return None if tx is None else self._tx_json(tx)

    # -- helpers -----------------------------------------------------------------------

    def _available_wei(self, sender: str) -> int:
        reserved = 0
        for h in self.pending:
            tx = self.txs[h]
            if tx.sender == sender:
                price = tx.decoded.gas_price or tx.decoded.max_fee_per_gas or 0
                reserved += tx.decoded.value + tx.decoded.gas * price
        return self.balances.get(sender, 0) - reserved

    def _available_units(self, sender: str) -> int:
        reserved = 0
        for h in self.pending:
            tx = self.txs[h]
            if tx.sender == sender and tx.decoded.to == self.token:
                transfer = abi.decode_transfer(tx.decoded.data)
                reserved += transfer[1] if transfer else 0
        return self.token_balances.get(sender, 0) - reserved

    def _tx_json(self, tx: ChainTx) -> dict[str, Any]:
        d = tx.decoded
        out: dict[str, Any] = {
            "hash": tx.hash,
            "from": to_checksum_address(tx.sender),
            "to": to_checksum_address(d.to) if d.to else None,
            "nonce": _q(d.nonce),
            "gas": _q(d.gas),
            "value": _q(d.value),
            "input": "0x" + d.data.hex(),
            "type": _q(d.type),
            "chainId": _q(d.chain_id) if d.chain_id is not None else None,
            "blockNumber": _q(tx.block_number) if tx.block_number is not None else None,
            "blockHash": tx.block_hash,
        }
        if d.gas_price is not None:
            out["gasPrice"] = _q(d.gas_price)
        else:
            out["maxFeePerGas"] = _q(d.max_fee_per_gas or 0)
            out["maxPriorityFeePerGas"] = _q(d.max_priority_fee_per_gas or 0)
        return out

    def snapshot(self) -> dict[str, Any]:
        """Balances and transactions for GET /_sandbox/state."""
        holders = set(self.balances) | set(self.token_balances)
        balances = {
            to_checksum_address(a): {
                "eth": str(from_base_units(self.balances.get(a, 0), "eth")),
                "usdt": str(from_base_units(self.token_balances.get(a, 0), "usdt")),
                "nonce": self.nonce(a),
            }
            for a in sorted(holders)
        }
        transactions = []
        for tx in self.txs.values():
            d = tx.decoded
            transfer = abi.decode_transfer(d.data) if d.to == self.token else None
            transactions.append(
                {
                    "hash": tx.hash,
                    "from": to_checksum_address(tx.sender),
                    "to": to_checksum_address(d.to) if d.to else None,
                    "nonce": d.nonce,
                    "eth": str(from_base_units(d.value, "eth")),
                    "token_recipient": transfer[0] if transfer else None,
                    "usdt": str(from_base_units(transfer[1], "usdt")) if transfer else None,
                    "pending": tx.block_number is None,
                    "block": tx.block_number,
                    "status": tx.status,
                }
            )
        return {
            "chain_id": self.config.chain_id,
            "block_number": len(self.blocks) - 1,
            "accounts": [to_checksum_address(a) for a in sorted(self.managed)],
            "usdt_contract": to_checksum_address(self.token),
            "balances": balances,
            "transactions": transactions,
        }


def _block_hash(number: int, txs: list[str]) -> str:
    return "0x" + keccak(text=f"sandbox-block-{number}-{','.join(txs)}").hex()


def _topic(address: str) -> str:
    return "0x" + "00" * 12 + address.lower()[2:]


def _intrinsic_gas(data: bytes) -> int:
    return 21_000 + sum(16 if byte else 4 for byte in data)


def _address(value: Any) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise RpcError(-32602, f"invalid address {value!r}")
    return value.lower()


def _parse_quantity(value: Any, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise RpcError(-32602, f"invalid {what}: {value!r}")


def _call_data(call: Mapping[str, Any]) -> bytes:
    given = [call.get(key) for key in ("input", "data") if call.get(key) not in (None, "")]
    if len(given) == 2 and given[0] != given[1]:
        raise RpcError(-32602, "both input and data are set and differ")
    if not given:
        return b""
    value = given[0]
    if not isinstance(value, str) or not value.startswith("0x"):
        raise RpcError(-32602, "call data must be 0x-prefixed hex")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise RpcError(-32602, "call data is not hex") from None
