"""An in-memory Ethereum chain with a JSON-RPC signer, enough for the host wallet's flows.

Accounts hold ETH; one ERC-20 (the configured USDT contract, 6 decimals) holds balances.
The signer signs for its managed accounts and refuses what they cannot cover; signatures
are fake but the raw bytes are real RLP envelopes (legacy or EIP-1559) whose keccak-256 is
the transaction hash, so clients can decode and check them.

Broadcast transactions wait in a mempool. With ``auto_mine`` (the default) each one is
mined in its own block after ``block_time`` seconds (at once by default); without it they
wait for ``POST /_sandbox/mine``, which puts every executable transaction in one block. A
transaction is executable when its nonce is its sender's next one and its fee cap covers
the current base fee, so raising ``base_fee_gwei`` makes transactions stuck. A pending
transaction is replaced by one with the same sender and nonce that raises both fee caps
by ``price_bump_percent`` (geth's rule). Every block keeps a journal of what it changed,
so a reorg can undo the last blocks exactly. Every successful transfer is reported to a
listener (and un-reported on a reorg): that is how a deposit to a payin address reaches
the simulated ChangeNOW.
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
TRANSFER_TOPIC = abi.TRANSFER_TOPIC
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
    index: int = 0  # position in its block
    cumulative_gas_used: int = 0
    mined_at: float | None = None
    status: int | None = None
    gas_used: int = 0
    effective_gas_price: int = 0
    logs: list[dict[str, Any]] = field(default_factory=list)
    # Why the node no longer knows it: "replaced", "evicted" or "reorg" (dropped with its
    # block). Kept so the state snapshot shows every transaction ever broadcast.
    dropped: str | None = None
    replaced_by: str | None = None


# (store name, key, value before the change; None when the key was absent)
JournalEntry = tuple[str, str, int | None]


@dataclass
class Block:
    number: int
    hash: str
    timestamp: int
    transactions: list[str]
    base_fee: int
    # What mining this block changed, in order, so a reorg can undo it exactly.
    journal: list[JournalEntry] = field(default_factory=list, repr=False)
    events: list[Transfer] = field(default_factory=list, repr=False)


def _lower(address: str) -> str:
    return address.lower()


def _q(value: int) -> str:
    return hex(value)


def fee_caps(decoded: DecodedTx) -> tuple[int, int]:
    """(fee cap, tip cap) as geth compares them; a legacy gas price is both."""
    if decoded.gas_price is not None:
        return decoded.gas_price, decoded.gas_price
    return decoded.max_fee_per_gas or 0, decoded.max_priority_fee_per_gas or 0


def replaces(old: DecodedTx, new: DecodedTx, bump_percent: int) -> bool:
    """geth's txpool rule: both caps strictly higher and each at least ``bump_percent`` up."""
    old_cap, old_tip = fee_caps(old)
    new_cap, new_tip = fee_caps(new)
    if new_cap <= old_cap or new_tip <= old_tip:
        return False
    return (
        new_cap >= old_cap * (100 + bump_percent) // 100
        and new_tip >= old_tip * (100 + bump_percent) // 100
    )


class Chain:
    def __init__(
        self,
        config: SandboxConfig,
        clock: Callable[[], float],
        rng: random.Random,
        on_transfer: Callable[[Transfer], None],
        on_revert: Callable[[Transfer], None] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.rng = rng
        self.on_transfer = on_transfer
        self.on_revert = on_revert
        self.balances: dict[str, int] = {}
        self.nonces: dict[str, int] = {}
        self.token_balances: dict[str, int] = {}  # holder -> units of the USDT contract
        self.managed: set[str] = set()
        self.signed: dict[str, str] = {}  # tx hash -> sender, for every signature we made
        self.txs: dict[str, ChainTx] = {}
        self.pending: list[str] = []  # the mempool, in arrival order
        self.forks = 0  # reorgs so far: a block re-mined after one gets a new hash
        now = int(self.clock())
        self.blocks: list[Block] = [Block(0, _block_hash(0, [], 0), now, [], self.base_fee)]
        for address in [config.host_wallet, *config.extra_accounts]:
            self.managed.add(_lower(address))
            self.balances[_lower(address)] = to_base_units(config.eth_balance, "eth")
        self.token_balances[_lower(config.host_wallet)] = to_base_units(config.usdt_balance, "usdt")
        # ChangeNOW's hot wallet: not managed (our signer refuses it), funded for refunds.
        hot = _lower(config.changenow_hot_wallet)
        self.balances[hot] = to_base_units(config.hot_wallet_eth, "eth")
        self.token_balances[hot] = to_base_units(config.hot_wallet_usdt, "usdt")

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

    @property
    def head(self) -> int:
        return len(self.blocks) - 1

    def nonce(self, address: str) -> int:
        """The confirmed transaction count ("latest")."""
        return self.nonces.get(_lower(address), 0)

    def pending_nonce(self, address: str) -> int:
        """The next nonce after the mempool's contiguous run ("pending"), as geth counts.

        A pending transaction above a hole (its predecessor was evicted or dropped by a
        reorg) does not count: the hole is the next nonce.
        """
        sender = _lower(address)
        held = {self.txs[h].decoded.nonce for h in self.pending if self.txs[h].sender == sender}
        nonce = self.nonce(sender)
        while nonce in held:
            nonce += 1
        return nonce

    def pending_at(self, sender: str, nonce: int) -> ChainTx | None:
        for h in self.pending:
            tx = self.txs[h]
            if tx.sender == sender and tx.decoded.nonce == nonce:
                return tx
        return None

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
        """Money arriving from outside the chain, in no block: only for topping up the
        ChangeNOW hot wallet (its treasury refills it), never for a payment to us."""
        key = _lower(address)
        if asset == "eth":
            self.balances[key] = self.balances.get(key, 0) + units
        else:
            self.token_balances[key] = self.token_balances.get(key, 0) + units

    def send_unmanaged(
        self, sender: str, to: str, *, value: int = 0, data: bytes = b"", tick: bool = True
    ) -> str:
        """Broadcast a transaction from an account the signer does not manage (ChangeNOW's
        hot wallet) and return its hash.

        It is signed like ours (same fake signature scheme) and then goes through
        ``eth_sendRawTransaction`` like any broadcast: the mempool, the nonce and fee-cap
        rules, mining, receipts, reorgs. Fees are the node's suggestion at this moment.
        If the sender cannot cover it, the shortfall is topped up first (an exchange's
        treasury refills its hot wallet; the sandbox's must never refuse a refund).
        """
        sender, to = _lower(sender), _lower(to)
        if sender in self.managed:
            raise ValueError("send_unmanaged is for accounts the signer does not manage")
        nonce = self.pending_nonce(sender)
        gas = TOKEN_TRANSFER_ESTIMATE if to == self.token else _intrinsic_gas(data)
        tip = self.priority_fee
        max_fee = 2 * self.base_fee + tip
        short_wei = value + gas * max_fee - self._available_wei(sender)
        if short_wei > 0:
            self.credit(sender, "eth", short_wei)
        transfer = abi.decode_transfer(data) if to == self.token else None
        if transfer is not None:
            short_units = transfer[1] - self._available_units(sender)
            if short_units > 0:
                self.credit(sender, "usdt", short_units)
        raw = self._envelope(
            sender, nonce=nonce, gas=gas, to=to, value=value, data=data, tip=tip, max_fee=max_fee
        )
        return self.rpc_eth_sendRawTransaction("0x" + raw.hex(), tick=tick)

    def pay(self, sender: str, recipient: str, asset: str, units: int, *, tick: bool = True) -> str:
        """``units`` of ``asset`` ("eth" or "usdt") from an unmanaged ``sender`` to
        ``recipient``: a value transfer, or an ERC-20 ``transfer`` on the USDT contract."""
        if units <= 0:
            raise ValueError("a payment moves a positive amount")
        if asset == "eth":
            return self.send_unmanaged(sender, recipient, value=units, tick=tick)
        if asset == "usdt":
            return self.send_unmanaged(
                sender, self.token, data=abi.encode_transfer(recipient, units), tick=tick
            )
        raise ValueError(f"the sandbox chain has no asset {asset!r}")

    def pay_settled(self, sender: str, recipient: str, asset: str, units: int) -> str:
        """``pay``, mined at once in a block of its own: a provider's payment that it reports
        only once it is on chain (NOWPayments' payout, ChangeNOW's ``finished``). Left in
        the mempool only if an earlier transaction of the sender blocks it."""
        # No auto-mining on the way: this runs inside the exchange simulator's own tick, and
        # mining other transactions from there would credit deposits re-entrantly.
        tx_hash = self.pay(sender, recipient, asset, units, tick=False)
        if tx_hash in self.pending and self.executable([tx_hash]) == [tx_hash]:
            self.mine_block([tx_hash])
        return tx_hash

    # -- mining ------------------------------------------------------------------------

    def executable(self, candidates: list[str] | None = None) -> list[str]:
        """Pending transactions a block could take now, in an order it could take them.

        Per sender, consecutive nonces from the confirmed one, each with a fee cap that
        covers the base fee: a stuck transaction holds back its sender's later ones.
        Otherwise arrival order.
        """
        remaining = list(self.pending if candidates is None else candidates)
        base = self.base_fee
        expected: dict[str, int] = {}
        chosen: list[str] = []
        progress = True
        while progress:
            progress = False
            for tx_id in list(remaining):
                tx = self.txs[tx_id]
                next_nonce = expected.get(tx.sender, self.nonce(tx.sender))
                if tx.decoded.nonce == next_nonce and fee_caps(tx.decoded)[0] >= base:
                    chosen.append(tx_id)
                    remaining.remove(tx_id)
                    expected[tx.sender] = next_nonce + 1
                    progress = True
        return chosen

    def tick(self) -> None:
        """Auto-mining: each executable transaction whose block time has come, one block each."""
        if not self.config.auto_mine:
            return
        now = self.clock()
        ready = [h for h in self.pending if self.txs[h].sent_at + self.config.block_time <= now]
        for tx_id in self.executable(ready):
            self.mine_block([tx_id])

    def mine(
        self, *, count: int = 1, hashes: list[str] | None = None, empty_blocks: int = 0
    ) -> list[Block]:
        """The control API's mining: ``count`` blocks of whatever is executable (or one
        block of exactly ``hashes``), then ``empty_blocks`` empty ones."""
        if count < 0 or empty_blocks < 0:
            raise ValueError("count and empty_blocks must not be negative")
        mined: list[Block] = []
        if hashes is not None:
            wanted = [str(h).lower() for h in hashes]
            unknown = [h for h in wanted if h not in self.pending]
            if unknown:
                raise ValueError(f"not in the mempool: {', '.join(unknown)}")
            order = self.executable(wanted)
            if len(order) != len(wanted):
                stuck = sorted(set(wanted) - set(order))
                raise ValueError(
                    "not executable now (an earlier nonce is missing or the fee cap is below "
                    f"the base fee): {', '.join(stuck)}"
                )
            mined.append(self.mine_block(order))
        else:
            for _ in range(count):
                mined.append(self.mine_block(self.executable()))
        for _ in range(empty_blocks):
            mined.append(self.mine_block([]))
        return mined

    def mine_block(self, tx_ids: list[str]) -> Block:
        """Append a block holding ``tx_ids`` (executable, in this order) and run them."""
        number = len(self.blocks)
        now = self.clock()
        block = Block(
            number, _block_hash(number, tx_ids, self.forks), int(now), list(tx_ids), self.base_fee
        )
        cumulative = 0
        for index, tx_id in enumerate(tx_ids):
            self.pending.remove(tx_id)
            cumulative = self._execute(self.txs[tx_id], block, index, cumulative, now)
        self.blocks.append(block)
        for event in block.events:
            self.on_transfer(event)
        return block

    def _set(self, block: Block, store: str, key: str, value: int) -> None:
        """Change a balance or nonce, remembering the old value in the block's journal."""
        table: dict[str, int] = getattr(self, store)
        block.journal.append((store, key, table.get(key)))
        table[key] = value

    def _execute(self, tx: ChainTx, block: Block, index: int, cumulative: int, now: float) -> int:
        decoded = tx.decoded
        base = block.base_fee
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
        self._set(block, "balances", sender, self.balances.get(sender, 0) - gas_used * price)
        self._set(block, "nonces", sender, self.nonce(sender) + 1)
        logs: list[dict[str, Any]] = []
        if status == 1 and recipient == self.token:
            held = self.token_balances.get(sender, 0)
            if transfer is None or transfer[1] > held:
                status = 0  # the token reverts: bad call data or not enough tokens
            else:
                to, units = transfer[0].lower(), transfer[1]
                self._set(block, "token_balances", sender, held - units)
                self._set(block, "token_balances", to, self.token_balances.get(to, 0) + units)
                block.events.append(Transfer("usdt", self.token, sender, to, units, tx.hash, now))
                logs.append(
                    {
                        "address": to_checksum_address(self.token),
                        "topics": [TRANSFER_TOPIC, _topic(sender), _topic(to)],
                        "data": "0x" + units.to_bytes(32, "big").hex(),
                        "logIndex": _q(index),  # one log per transaction at most
                        "removed": False,
                    }
                )
        if status == 1 and decoded.value:
            self._set(block, "balances", sender, self.balances[sender] - decoded.value)
            self._set(block, "balances", recipient, self.balances.get(recipient, 0) + decoded.value)
            block.events.append(
                Transfer("eth", None, sender, recipient, decoded.value, tx.hash, now)
            )
        tx.block_number, tx.block_hash, tx.mined_at = block.number, block.hash, now
        tx.index, tx.cumulative_gas_used = index, cumulative + gas_used
        tx.status, tx.gas_used, tx.effective_gas_price = status, gas_used, price
        for log in logs:
            log.update(
                blockNumber=_q(block.number),
                blockHash=block.hash,
                transactionHash=tx.hash,
                transactionIndex=_q(index),
            )
        tx.logs = logs
        return tx.cumulative_gas_used

    # -- faults: reorgs and a forgetful node -------------------------------------------

    def reorg(self, depth: int, *, drop: bool = False, new_blocks: int = 0) -> dict[str, Any]:
        """Undo the last ``depth`` blocks: balances, tokens, nonces and deposits roll back.

        Their transactions go back to the mempool (``drop`` false: a node re-queues what a
        reorg un-mined) or are forgotten (``drop``: only a re-broadcast of the stored bytes
        brings them back). ``new_blocks`` empty blocks then extend the new branch.
        """
        if not 1 <= depth <= self.head:
            raise ValueError(f"depth must be between 1 and {self.head} (the genesis stays)")
        if new_blocks < 0:
            raise ValueError("new_blocks must not be negative")
        undone: list[Block] = []
        for _ in range(depth):
            block = self.blocks.pop()
            for store, key, old in reversed(block.journal):
                table: dict[str, int] = getattr(self, store)
                if old is None:
                    table.pop(key, None)
                else:
                    table[key] = old
            if self.on_revert is not None:
                for event in reversed(block.events):
                    self.on_revert(event)
            undone.append(block)
        requeued: list[str] = []
        dropped: list[str] = []
        for block in reversed(undone):  # oldest first: the mempool keeps their order
            for tx_id in block.transactions:
                tx = self.txs[tx_id]
                tx.block_number = tx.block_hash = tx.mined_at = tx.status = None
                tx.index = tx.cumulative_gas_used = tx.gas_used = tx.effective_gas_price = 0
                tx.logs = []
                if drop:
                    tx.dropped = "reorg"
                    dropped.append(tx_id)
                else:
                    requeued.append(tx_id)
        self.pending = requeued + self.pending
        self.forks += 1
        for _ in range(new_blocks):
            self.mine_block([])
        return {
            "removed_blocks": [b.number for b in reversed(undone)],
            "requeued": requeued,
            "dropped": dropped,
            "block_number": self.head,
        }

    def evict(self, hashes: list[str] | None = None, address: str | None = None) -> list[str]:
        """Make the node forget pending transactions (all, some, or one sender's)."""
        if hashes is not None:
            wanted = [str(h).lower() for h in hashes]
            unknown = [h for h in wanted if h not in self.pending]
            if unknown:
                raise ValueError(f"not in the mempool: {', '.join(unknown)}")
        elif address is not None:
            if not is_address(address):
                raise ValueError(f"invalid address {address!r}")
            sender = _lower(address)
            wanted = [h for h in self.pending if self.txs[h].sender == sender]
        else:
            wanted = list(self.pending)
        for tx_id in wanted:
            self.pending.remove(tx_id)
            self.txs[tx_id].dropped = "evicted"
        return wanted

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
        return _q(self.head)

    def rpc_eth_accounts(self) -> list[str]:
        return [to_checksum_address(a) for a in sorted(self.managed)]

    def rpc_eth_gasPrice(self) -> str:  # noqa: N802
        return _q(self.base_fee + self.priority_fee)

    def rpc_eth_maxPriorityFeePerGas(self) -> str:  # noqa: N802
        return _q(self.priority_fee)

    def _block_at(self, tag: Any) -> Block | None:
        if tag in ("latest", "pending", "safe", "finalized"):
            return self.blocks[-1]
        if tag == "earliest":
            return self.blocks[0]
        number = _parse_quantity(tag, "block number")
        return self.blocks[number] if number < len(self.blocks) else None

    def rpc_eth_getBlockByNumber(self, tag: str = "latest", full: bool = False) -> Any:  # noqa: N802
        block = self._block_at(tag)
        if block is None:
            return None
        # The head reports the base fee in force now, so a base fee raised at run time
        # reaches fee suggestions at once (a real node shows it from the next block on).
        base_fee = self.base_fee if block is self.blocks[-1] else block.base_fee
        return {
            "number": _q(block.number),
            "hash": block.hash,
            "parentHash": self.blocks[block.number - 1].hash if block.number else "0x" + "00" * 32,
            "timestamp": _q(block.timestamp),
            "baseFeePerGas": _q(base_fee),
            "gasLimit": _q(30_000_000),
            "gasUsed": _q(sum(self.txs[h].gas_used for h in block.transactions)),
            "transactions": (
                [self._tx_json(self.txs[h]) for h in block.transactions]
                if full
                else list(block.transactions)
            ),
        }

    def rpc_eth_feeHistory(  # noqa: N802
        self, block_count: Any, newest: Any = "latest", percentiles: Any = None
    ) -> dict[str, Any]:
        count = (
            block_count
            if isinstance(block_count, int)
            else _parse_quantity(block_count, "blockCount")
        )
        newest_block = self._block_at(newest)
        if newest_block is None:
            raise RpcError(-32602, f"block {newest} is not known")
        last = newest_block.number
        window = self.blocks[max(0, last - max(count, 1) + 1) : last + 1] if count else []
        out: dict[str, Any] = {
            "oldestBlock": _q(window[0].number if window else last),
            # One more than the window: the next block's base fee, i.e. the current one.
            "baseFeePerGas": [_q(b.base_fee) for b in window] + [_q(self.base_fee)],
            "gasUsedRatio": [
                sum(self.txs[h].gas_used for h in b.transactions) / 30_000_000 for b in window
            ],
        }
        if percentiles:
            out["reward"] = [[_q(self.priority_fee) for _ in percentiles] for _ in window]
        return out

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
        # The signer refuses what the wallet cannot cover, counting its pending spends
        # (except a pending one at this nonce: this transaction would replace it).
        cost = value + gas * max_price
        available = self._available_wei(sender, replacing=nonce)
        if cost > available:
            raise RpcError(
                -32000,
                f"insufficient funds for gas * price + value: balance {available}, tx cost {cost}",
            )
        if to == self.token:
            transfer = abi.decode_transfer(data)
            held = self._available_units(sender, replacing=nonce)
            if transfer is not None and transfer[1] > held:
                raise RpcError(
                    -32000,
                    f"insufficient funds: token balance {held}, transfer {transfer[1]}",
                )
        raw = self._envelope(
            sender,
            nonce=nonce,
            gas=gas,
            to=to,
            value=value,
            data=data,
            gas_price=gas_price if legacy else None,
            tip=None if legacy else tip,
            max_fee=None if legacy else max_fee,
        )
        digest = tx_hash(raw)
        raw_hex = "0x" + raw.hex()
        if self.config.sign_format == "geth":
            decoded = decode_transaction(raw)
            tx = ChainTx(digest, raw_hex, sender, decoded, self.clock())
            return {"raw": raw_hex, "tx": self._tx_json(tx)}
        return raw_hex

    def rpc_eth_sendRawTransaction(self, raw_hex: str, *, tick: bool = True) -> str:  # noqa: N802
        if not isinstance(raw_hex, str) or not raw_hex.startswith("0x"):
            raise RpcError(-32602, "raw transaction must be 0x-prefixed hex")
        try:
            raw = bytes.fromhex(raw_hex[2:])
            decoded = decode_transaction(raw)
        except ValueError as exc:
            raise RpcError(-32602, f"invalid raw transaction: {exc}") from None
        digest = decoded.hash
        known = self.txs.get(digest)
        if known is not None and known.dropped is None:
            if known.block_number is None:
                raise RpcError(-32000, "already known")
            raise RpcError(-32000, "nonce too low")  # what geth says for a mined tx
        # A dropped transaction (replaced, evicted, un-mined by a reorg) is unknown to the
        # node: its bytes are checked again like a first broadcast.
        sender = self.signed.get(digest)
        if sender is None:
            raise RpcError(-32000, "invalid sender")  # we only accept our own signatures
        if decoded.chain_id is not None and decoded.chain_id != self.config.chain_id:
            raise RpcError(-32000, "invalid chain id")
        current = self.nonce(sender)
        if decoded.nonce < current:
            raise RpcError(-32000, f"nonce too low: next nonce {current}, tx nonce {decoded.nonce}")
        rival = self.pending_at(sender, decoded.nonce)
        next_nonce = self.pending_nonce(sender)
        if rival is None and decoded.nonce > next_nonce:
            raise RpcError(
                -32000,
                f"nonce too high: next nonce {next_nonce}, tx nonce {decoded.nonce} "
                "(the sandbox does not queue nonce gaps)",
            )
        max_price = fee_caps(decoded)[0]
        if decoded.gas_price is not None and decoded.gas_price < self.base_fee:
            raise RpcError(-32000, "transaction underpriced")
        if decoded.max_fee_per_gas is not None and decoded.max_fee_per_gas < self.base_fee:
            raise RpcError(
                -32000,
                f"max fee per gas less than block base fee: maxFeePerGas: "
                f"{decoded.max_fee_per_gas}, baseFee: {self.base_fee}",
            )
        if rival is not None and not replaces(
            rival.decoded, decoded, self.config.price_bump_percent
        ):
            raise RpcError(-32000, "replacement transaction underpriced")
        if decoded.gas < _intrinsic_gas(decoded.data):
            raise RpcError(-32000, "intrinsic gas too low")
        cost = decoded.value + decoded.gas * max_price
        if cost > self._available_wei(sender, replacing=decoded.nonce):
            raise RpcError(-32000, "insufficient funds for gas * price + value")
        if rival is not None:
            self.pending.remove(rival.hash)
            rival.dropped, rival.replaced_by = "replaced", digest
        if known is not None:  # back from the dead: same bytes, a fresh stay in the mempool
            known.dropped = known.replaced_by = None
            known.sent_at = self.clock()
        else:
            self.txs[digest] = ChainTx(digest, "0x" + raw.hex(), sender, decoded, self.clock())
        self.pending.append(digest)
        if tick:
            self.tick()
        return digest

    def rpc_eth_getTransactionReceipt(self, digest: str) -> Any:  # noqa: N802
        tx = self.txs.get(str(digest).lower())
        if tx is None or tx.block_number is None:
            return None
        return {
            "transactionHash": tx.hash,
            "transactionIndex": _q(tx.index),
            "blockHash": tx.block_hash,
            "blockNumber": _q(tx.block_number),
            "from": to_checksum_address(tx.sender),
            "to": to_checksum_address(tx.decoded.to) if tx.decoded.to else None,
            "cumulativeGasUsed": _q(tx.cumulative_gas_used),
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
        return None if tx is None or tx.dropped is not None else self._tx_json(tx)

    # -- helpers -----------------------------------------------------------------------

    def _envelope(
        self,
        sender: str,
        *,
        nonce: int,
        gas: int,
        to: str,
        value: int,
        data: bytes,
        gas_price: int | None = None,
        tip: int | None = None,
        max_fee: int | None = None,
    ) -> bytes:
        """Raw signed bytes (legacy when ``gas_price`` is given, else EIP-1559) with a fake,
        deterministic signature; remembered so that a broadcast of them is accepted."""
        legacy = gas_price is not None
        max_price = gas_price if legacy else max_fee
        seed = keccak(
            b"sandbox-signature"
            + bytes.fromhex(sender[2:])
            + repr(
                (self.config.chain_id, nonce, gas, to, value, data.hex(), legacy, max_price)
            ).encode()
        )
        r = int.from_bytes(seed, "big") % (_SECP256K1_N - 1) + 1
        s = int.from_bytes(keccak(seed), "big") % (_SECP256K1_N // 2 - 1) + 1
        if gas_price is not None:
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
                max_priority_fee_per_gas=tip or 0,
                max_fee_per_gas=max_fee or 0,
                gas=gas,
                to=to,
                value=value,
                data=data,
                y_parity=0,
                r=r,
                s=s,
            )
        self.signed[tx_hash(raw)] = sender
        return raw

    def _available_wei(self, sender: str, replacing: int | None = None) -> int:
        reserved = 0
        for h in self.pending:
            tx = self.txs[h]
            if tx.sender == sender and tx.decoded.nonce != replacing:
                reserved += tx.decoded.value + tx.decoded.gas * fee_caps(tx.decoded)[0]
        return self.balances.get(sender, 0) - reserved

    def _available_units(self, sender: str, replacing: int | None = None) -> int:
        reserved = 0
        for h in self.pending:
            tx = self.txs[h]
            if (
                tx.sender == sender
                and tx.decoded.to == self.token
                and tx.decoded.nonce != replacing
            ):
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
        mempool = set(self.pending)
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
                    "pending": tx.hash in mempool,
                    "block": tx.block_number,
                    "status": tx.status,
                    "max_fee_per_gas": d.max_fee_per_gas,
                    "max_priority_fee_per_gas": d.max_priority_fee_per_gas,
                    "gas_price": d.gas_price,
                    "replaced_by": tx.replaced_by,
                    "dropped": tx.dropped,
                }
            )
        return {
            "chain_id": self.config.chain_id,
            "block_number": self.head,
            "base_fee_wei": self.base_fee,
            "mempool": list(self.pending),
            "accounts": [to_checksum_address(a) for a in sorted(self.managed)],
            "usdt_contract": to_checksum_address(self.token),
            "balances": balances,
            "transactions": transactions,
        }


def _block_hash(number: int, txs: list[str], fork: int) -> str:
    return "0x" + keccak(text=f"sandbox-block-{number}-{fork}-{','.join(txs)}").hex()


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
