"""NOWPayments IPN verification: HMAC-SHA512 of the JSON body, header ``x-nowpayments-sig``.

NOWPayments signs the payload with its keys sorted, serialised compactly: their reference
implementation is Node's ``JSON.stringify`` over the sorted object (non-ASCII characters
raw in UTF-8, ``/`` not escaped, numbers printed as JavaScript prints them), while their
PHP and Python examples produce ``\\uXXXX`` escapes for non-ASCII. We accept a signature
that matches any of:

1. the raw body exactly as received (the body already arrives sorted and compact);
2. the canonical form: keys sorted recursively (by UTF-16 code units, as JavaScript
   sorts), compact separators, numbers copied digit for digit from the body (``1e-7`` stays
   ``1e-7``, ``0.10000000`` stays ``0.10000000``), non-ASCII raw UTF-8;
3. the same with non-ASCII escaped as ``\\uXXXX``.

Every comparison is constant-time. A body that is not a JSON object is ``MalformedPayload``
(HTTP 400); a missing or wrong signature is ``InvalidSignature`` (HTTP 401). The returned
payload has every non-integer number as a ``Decimal``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from integrations.errors import InvalidSignature, MalformedPayload

SIGNATURE_HEADER = "x-nowpayments-sig"


class _Number(str):
    """A JSON number kept as the exact text the sender wrote."""

    __slots__ = ()


def _pairs_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # Two parsers may pick different values for a duplicated key: never sign-check
            # one reading and credit another.
            raise MalformedPayload(f"duplicate key {key!r} in the IPN body")
        result[key] = value
    return result


def _parse_textual(body: str) -> Any:
    return json.loads(
        body,
        parse_float=_Number,
        parse_int=_Number,
        parse_constant=_reject_constant,
        object_pairs_hook=_pairs_no_duplicates,
    )


def _reject_constant(name: str) -> Any:
    raise MalformedPayload(f"{name} is not valid JSON")


def _js_key(key: str) -> bytes:
    # JavaScript's default sort compares UTF-16 code units, not code points.
    return key.encode("utf-16-be")


def _serialise(value: Any, ensure_ascii: bool) -> str:
    if isinstance(value, _Number):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=ensure_ascii)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda item: _js_key(item[0]))
        return (
            "{"
            + ",".join(
                json.dumps(k, ensure_ascii=ensure_ascii) + ":" + _serialise(v, ensure_ascii)
                for k, v in items
            )
            + "}"
        )
    if isinstance(value, list):
        return "[" + ",".join(_serialise(item, ensure_ascii) for item in value) + "]"
    raise TypeError(f"cannot serialise {type(value).__name__}")


def canonical_json(body: str | bytes, *, ensure_ascii: bool = False) -> str:
    """The sorted, compact form of a JSON body, numbers exactly as written."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    return _serialise(_parse_textual(text), ensure_ascii)


def _hmac(secret: str | bytes, message: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, message, hashlib.sha512).hexdigest()


def _decode_body(body: bytes | str) -> str:
    if isinstance(body, str):
        return body
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPayload("IPN body is not UTF-8") from None


def verify_ipn(body: bytes | str, signature: str | None, secret: str) -> dict[str, Any]:
    """Verify an IPN and return its payload (non-integers as Decimal) or raise."""
    if not secret:
        # An empty key makes every forger's HMAC valid: refuse to verify anything.
        raise InvalidSignature("NOWPAYMENTS_IPN_SECRET is not configured")
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    text = _decode_body(body)
    if not text.strip():
        raise MalformedPayload("IPN body is empty")
    given = (signature or "").strip().lower()
    if not given:
        raise InvalidSignature(f"missing {SIGNATURE_HEADER} header")
    if len(given) != 128 or any(c not in "0123456789abcdef" for c in given):
        raise InvalidSignature(f"{SIGNATURE_HEADER} is not a hex HMAC-SHA512")

    try:
        textual = _parse_textual(text)
    except MalformedPayload:
        raise
    except ValueError as exc:
        raise MalformedPayload(f"IPN body is not JSON: {exc}") from None
    if not isinstance(textual, dict):
        raise MalformedPayload("IPN body is not a JSON object")

    candidates = [raw]
    for ensure_ascii in (False, True):
        candidate = _serialise(textual, ensure_ascii).encode("utf-8")
        if candidate not in candidates:
            candidates.append(candidate)
    # Compare against every candidate (no early exit) so timing says nothing about which.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(_hmac(secret, candidate), given)
    if not matched:
        raise InvalidSignature("IPN signature does not match")
    return json.loads(text, parse_float=Decimal)


def sign_ipn(payload_or_body: Mapping[str, Any] | bytes | str, secret: str) -> tuple[bytes, str]:
    """Sign as NOWPayments does: (body to send, x-nowpayments-sig value).

    A mapping is serialised sorted and compact (Decimals as JSON numbers, exactly); a body
    given as text or bytes is sent as is and signed in its canonical form.
    """
    if isinstance(payload_or_body, Mapping):
        body = _dump_payload(payload_or_body)
    else:
        body = _decode_body(payload_or_body)
    canonical = canonical_json(body).encode("utf-8")
    return body.encode("utf-8"), _hmac(secret, canonical)


def _dump_payload(payload: Mapping[str, Any]) -> str:
    def convert(value: Any) -> Any:
        if isinstance(value, float):
            raise TypeError("floats are not accepted in an IPN payload; use Decimal")
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise ValueError(f"{value} is not a JSON number")
            return _Number(format(value, "f"))  # plain digits, as written in a Decimal
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return value
        if isinstance(value, int):
            return _Number(str(value))
        if isinstance(value, Mapping):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        raise TypeError(f"cannot put {type(value).__name__} in an IPN payload")

    return _serialise(convert(payload), ensure_ascii=False)
