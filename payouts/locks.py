"""The one helper for PostgreSQL advisory locks.

Every single-flight job and every per-object lock in the code base goes through
`advisory_lock`: the conversion sweep, the payout sweep, the per-order step lock that engine
steps and operator actions share, and the host-wallet lock of the send path.

Session locks (the default) survive commits, which a step that calls providers between
short transactions needs, and PostgreSQL drops them when the connection dies, so a killed
worker never leaves one behind. Transaction locks (`xact=True`) end with the transaction.
Within one session a lock is re-entrant: an operator action holding an order's lock can
run the engine's step for that order.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator

from django.db import connection


class LockTimeout(Exception):
    """A waiting lock was not granted in time."""


def lock_key(namespace: str, value: str = "") -> int:
    """A stable signed 64-bit key: a namespace in the high half, the value in the low."""
    key = (zlib.crc32(namespace.encode()) << 31) ^ zlib.crc32(value.encode())
    return key - (1 << 64) if key >= (1 << 63) else key


@contextlib.contextmanager
def advisory_lock(
    namespace: str,
    value: str = "",
    *,
    wait: bool = False,
    timeout_ms: int = 0,
    xact: bool = False,
) -> Iterator[bool]:
    """Hold the advisory lock (namespace, value) for the block.

    Without `wait`, yields False at once when another session holds it (the caller decides
    what "busy" means). With `wait`, blocks up to `timeout_ms` (0: for ever) and raises
    LockTimeout after that. `xact` takes a transaction-level lock, which needs an open
    transaction and is released by its end (nothing to unlock here)."""
    key = lock_key(namespace, value)
    scope = "_xact" if xact else ""
    with connection.cursor() as cur:
        if not wait:
            cur.execute(f"SELECT pg_try_advisory{scope}_lock(%s)", [key])
            got = bool(cur.fetchone()[0])
        else:
            if timeout_ms:
                cur.execute(f"SET lock_timeout = {int(timeout_ms)}")
            try:
                cur.execute(f"SELECT pg_advisory{scope}_lock(%s)", [key])
                got = True
            except Exception as exc:
                if "lock timeout" in str(exc).lower() or "canceling statement" in str(exc):
                    raise LockTimeout(f"lock {namespace}:{value} not granted in time") from exc
                raise
            finally:
                if timeout_ms:
                    with contextlib.suppress(Exception):
                        cur.execute("SET lock_timeout = 0")
    try:
        yield got
    finally:
        if got and not xact:
            with connection.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", [key])


def order_lock(kind: str, order_id: object) -> contextlib.AbstractContextManager[bool]:
    """The per-order lock an engine step and every operator action take (never waits)."""
    return advisory_lock(f"order:{kind}", str(order_id))


def order_lock_held_elsewhere(kind: str, order_id: object) -> bool:
    """Does another session hold the order's lock right now? (For pages, not decisions.)"""
    with order_lock(kind, order_id) as got:
        return not got
