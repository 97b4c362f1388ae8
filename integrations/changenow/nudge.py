"""Signed "nudge" webhooks: ``X-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]``.

ChangeNOW documents no partner webhooks, so our endpoint only asks for an immediate poll of
one exchange; it must still be authenticated. ``v1`` is the hex HMAC-SHA256 of
``"<t>.<raw body>"``. The timestamp must be within the tolerance (5 minutes) in both
directions, which bounds replays. Several ``v1`` values may be present and several secrets
configured, so a key can be rotated without a window where valid nudges are refused.

The body is parsed only after the signature matched (`parse_nudge_body`), and only when it
is small: a nudge is about 30 bytes, and a bound on the size also bounds nesting, numbers
and strings for the parser.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterable

from integrations.errors import InvalidSignature, MalformedPayload

SIGNATURE_HEADER = "X-Signature"
DEFAULT_TOLERANCE = 300
_MAX_SIGNATURES = 8  # bounds the work an attacker can make us do per request
# Far above `{"id": "<exchange id>"}`, and below the nesting at which Python's parser recurses
# too deep, so no body under it can crash the parse.
MAX_BODY_BYTES = 512
_EXCHANGE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def compute_signature(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign_nudge(
    body: bytes | str,
    secrets: str | Iterable[str],
    *,
    timestamp: int | None = None,
) -> str:
    """The X-Signature header value for ``body``, one ``v1`` per secret."""
    raw = body.encode() if isinstance(body, str) else body
    ts = int(time.time()) if timestamp is None else timestamp
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    if not keys or not all(keys):
        raise ValueError("at least one non-empty secret is required")
    return ",".join([f"t={ts}"] + [f"v1={compute_signature(key, ts, raw)}" for key in keys])


def parse_signature_header(header: str | None) -> tuple[int, list[str]]:
    """(timestamp, v1 signatures) or InvalidSignature for anything malformed."""
    if not header or not header.strip():
        raise InvalidSignature(f"missing {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or not value:
            raise InvalidSignature(f"malformed {SIGNATURE_HEADER} element {part.strip()!r}")
        if key == "t":
            if timestamp is not None:
                raise InvalidSignature(f"{SIGNATURE_HEADER} has two timestamps")
            if not (value.isascii() and value.isdigit()) or len(value) > 12:
                raise InvalidSignature(
                    f"{SIGNATURE_HEADER} timestamp {value!r} is not unix seconds"
                )
            timestamp = int(value)
        elif key == "v1":
            value = value.lower()
            if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
                raise InvalidSignature(f"{SIGNATURE_HEADER} v1 is not a hex HMAC-SHA256")
            signatures.append(value)
        # Other schemes (v0, future v2) are ignored, as Stripe-style headers intend.
    if timestamp is None:
        raise InvalidSignature(f"{SIGNATURE_HEADER} has no t=")
    if not signatures:
        raise InvalidSignature(f"{SIGNATURE_HEADER} has no v1=")
    if len(signatures) > _MAX_SIGNATURES:
        raise InvalidSignature(f"{SIGNATURE_HEADER} has too many signatures")
    return timestamp, signatures


def verify_nudge(
    body: bytes | str,
    header: str | None,
    secrets: str | Iterable[str],
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> int:
    """Verify a nudge; returns its timestamp or raises InvalidSignature."""
    keys = [secrets] if isinstance(secrets, str) else [key for key in secrets]
    keys = [key for key in keys if key]
    if not keys:
        # An empty secret would make every forged signature valid.
        raise InvalidSignature("CHANGENOW_WEBHOOK_SECRET is not configured")
    raw = body.encode() if isinstance(body, str) else body
    timestamp, signatures = parse_signature_header(header)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        direction = "old" if timestamp < current else "far in the future"
        raise InvalidSignature(f"{SIGNATURE_HEADER} timestamp is too {direction}")
    matched = False
    for key in keys:
        expected = compute_signature(key, timestamp, raw)
        for candidate in signatures:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise InvalidSignature(f"{SIGNATURE_HEADER} does not match")
    return timestamp


def parse_nudge_body(body: bytes) -> str:
    """The exchange id of a verified nudge body ``{"id": "<exchange id>"}``, or
    MalformedPayload with the reason."""
    if len(body) > MAX_BODY_BYTES:
        raise MalformedPayload(f"the body is {len(body)} bytes, over the {MAX_BODY_BYTES} limit")
    try:
        data = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise MalformedPayload("the body is not UTF-8 JSON") from None
    exchange_id = data.get("id") if isinstance(data, dict) else None
    if not isinstance(exchange_id, str) or not _EXCHANGE_ID.fullmatch(exchange_id):
        raise MalformedPayload('body must be {"id": "<exchange id>"} (letters, digits, - or _)')
    return exchange_id
