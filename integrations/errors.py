"""Typed errors for every outbound provider call.

The engine decides what to do from two facts only: is the failure *permanent* (a 4xx with
an error code, a rejected transaction: retrying the same call cannot help) or *transient*
(429, 5xx, timeouts, connection errors: back off and retry), and its machine-readable
``code``. Messages are for humans and audit logs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Any, TypeVar

T = TypeVar("T")


class ProviderError(Exception):
    """A provider call failed. ``retry_after`` (seconds) is the provider's hint, if any."""

    provider = "provider"

    def __init__(
        self,
        message: str,
        code: str = "error",
        permanent: bool = False,
        retry_after: float | None = None,
        *,
        status: int | None = None,
        data: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = str(code)
        self.permanent = permanent
        self.retry_after = retry_after
        self.status = status
        self.data = data

    @property
    def transient(self) -> bool:
        return not self.permanent

    def __str__(self) -> str:
        where = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{self.provider}: {self.code}{where}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, permanent={self.permanent}, "
            f"status={self.status}, retry_after={self.retry_after}, message={self.message!r})"
        )


class ChangeNowError(ProviderError):
    provider = "changenow"


class WalletErrorKind(StrEnum):
    """What went wrong at the signer / node. Values are the ``code`` of a WalletError."""

    ALREADY_KNOWN = "already_known"  # the node already has these exact bytes: not a failure
    NONCE_TOO_LOW = "nonce_too_low"  # the nonce was used (by this tx, or by another one)
    NONCE_TOO_HIGH = "nonce_too_high"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    UNDERPRICED = "underpriced"  # fee below base fee / replacement too cheap
    GAS_TOO_LOW = "gas_too_low"
    REVERTED = "reverted"  # execution reverted (eth_call / eth_estimateGas)
    SIGNER_UNAVAILABLE = "signer_unavailable"  # no signer for the account, locked, refused
    SIGNER_MISMATCH = "signer_mismatch"  # the signer signed something other than asked
    WRONG_CHAIN = "wrong_chain"
    INVALID_PARAMS = "invalid_params"
    METHOD_NOT_FOUND = "method_not_found"
    BAD_RESPONSE = "bad_response"  # not JSON-RPC, or a result of the wrong shape
    RPC_ERROR = "rpc_error"  # any other JSON-RPC error
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    SERVER_ERROR = "server_error"
    RATE_LIMITED = "rate_limited"


# Kinds after which retrying the very same call later may succeed.
TRANSIENT_WALLET_KINDS = frozenset(
    {
        WalletErrorKind.UNDERPRICED,  # base fee may drop back under our max fee
        WalletErrorKind.NONCE_TOO_HIGH,  # an earlier nonce may still land
        WalletErrorKind.TIMEOUT,
        WalletErrorKind.CONNECTION_ERROR,
        WalletErrorKind.SERVER_ERROR,
        WalletErrorKind.RATE_LIMITED,
        WalletErrorKind.BAD_RESPONSE,
        WalletErrorKind.RPC_ERROR,
    }
)


class WalletError(ProviderError):
    provider = "wallet"

    def __init__(
        self,
        message: str,
        code: str | WalletErrorKind = WalletErrorKind.RPC_ERROR,
        permanent: bool | None = None,
        retry_after: float | None = None,
        *,
        status: int | None = None,
        data: Any = None,
        rpc_code: int | None = None,
    ) -> None:
        try:
            kind: WalletErrorKind | None = WalletErrorKind(code)
        except ValueError:
            kind = None
        if permanent is None:
            permanent = kind not in TRANSIENT_WALLET_KINDS
        super().__init__(message, str(code), permanent, retry_after, status=status, data=data)
        self.rpc_code = rpc_code

    @property
    def kind(self) -> str:
        return self.code


class VerificationError(ValueError):
    """An inbound webhook could not be trusted. Subclasses tell the HTTP answer apart."""

    code = "verification_failed"


class InvalidSignature(VerificationError):
    """Signature missing, malformed, stale or wrong: answer 401."""

    code = "bad_signature"


class MalformedPayload(VerificationError):
    """The body is not the JSON object the provider sends: answer 400."""

    code = "malformed_body"


# Pauses between the attempts of a read that proves something (reconcile, the opening
# balance): a provider that fails this often in a row is reported as unreadable.
READ_RETRY_DELAYS: tuple[float, ...] = (0.25, 0.5, 1.0)


def read_with_retries(call: Callable[[], T], *, delays: Sequence[float] | None = None) -> T:
    """`call()`, tried again after each delay on a ProviderError; the last error is raised."""
    for delay in READ_RETRY_DELAYS if delays is None else delays:
        try:
            return call()
        except ProviderError:
            time.sleep(delay)
    return call()
