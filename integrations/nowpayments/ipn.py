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

The signature is checked before the body is parsed: the raw bytes first, with no parse at
all; the canonical forms need a parse, so they are tried only for a body within the limits
(`JsonLimits`), which a cheap linear scan checks first. A missing or wrong signature is
``InvalidSignature`` (HTTP 401), whatever the body is. ``MalformedPayload`` (HTTP 400) is
raised only for a correctly signed body: not UTF-8, not a JSON object, duplicated keys, or
over a limit. Every comparison is constant-time. The returned payload has every
non-integer number as a ``Decimal``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from integrations.errors import InvalidSignature, MalformedPayload

SIGNATURE_HEADER = "x-nowpayments-sig"


@dataclass(frozen=True)
class JsonLimits:
    """Bounds on a body before anything parses it. A real IPN is about 600 bytes, two levels
    deep, with numbers of a dozen digits: these are far above that and far below what makes
    a parser slow or crash (Python refuses integers over 4,300 digits and recurses once per
    nesting level)."""

    max_bytes: int = 64 * 1024
    max_depth: int = 32
    max_number_chars: int = 64
    max_string_chars: int = 8192


DEFAULT_LIMITS = JsonLimits()

# The tokens that matter to the limits: strings (the closing quote optional, so an
# unterminated string is one token to the end instead of a rescan from every later quote),
# numbers, and brackets. Everything else is skipped.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|-?[0-9][0-9.eE+-]*|[\[\]{}]', re.DOTALL)

_STATUS = re.compile(r"[a-z_]{1,32}")


class _Number(str):
    """A JSON number kept as the exact text the sender wrote."""

    __slots__ = ()


def check_limits(text: str, limits: JsonLimits = DEFAULT_LIMITS) -> None:
    """Raise MalformedPayload when `text` nests, or holds a number or a string, beyond
    `limits`. Linear in the text, no recursion: safe on any input."""
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        first = token[0]
        if first == '"':
            if len(token) - 2 > limits.max_string_chars:
                raise MalformedPayload(
                    f"a string is longer than {limits.max_string_chars} characters"
                )
        elif first in "[{":
            depth += 1
            if depth > limits.max_depth:
                raise MalformedPayload(f"nesting is deeper than {limits.max_depth} levels")
        elif first in "]}":
            depth -= 1
        elif len(token) > limits.max_number_chars:
            raise MalformedPayload(f"a number is longer than {limits.max_number_chars} characters")


def _pairs_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # Two parsers may pick different values for a duplicated key: never sign-check
            # one reading and credit another.
            raise MalformedPayload(f"duplicate key {ascii(key)[:80]} in the IPN body")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise MalformedPayload(f"{name} is not valid JSON")


def _bounded_text(body: bytes | str, limits: JsonLimits) -> str:
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body)
    if len(raw) > limits.max_bytes:
        raise MalformedPayload(f"the body is {len(raw)} bytes, over the {limits.max_bytes} limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPayload("IPN body is not UTF-8") from None
    if not text.strip():
        raise MalformedPayload("IPN body is empty")
    check_limits(text, limits)
    return text


def _loads(text: str, **hooks: Any) -> dict[str, Any]:
    try:
        data = json.loads(
            text,
            parse_constant=_reject_constant,
            object_pairs_hook=_pairs_no_duplicates,
            **hooks,
        )
    except MalformedPayload:
        raise
    except (ValueError, RecursionError) as exc:
        # The limits make both unlikely; neither may ever escape as a server error.
        raise MalformedPayload(f"IPN body is not JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise MalformedPayload("IPN body is not a JSON object")
    return data


def parse_ipn_body(body: bytes | str, limits: JsonLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The payload of a body (integers as int, other numbers as Decimal) or MalformedPayload."""
    return _loads(_bounded_text(body, limits), parse_float=Decimal)


def _parse_textual(text: str) -> Any:
    return json.loads(
        text,
        parse_float=_Number,
        parse_int=_Number,
        parse_constant=_reject_constant,
        object_pairs_hook=_pairs_no_duplicates,
    )


def _js_key(key: str) -> bytes:
    # JavaScript's default sort compares UTF-16 code units, not code points.
    return key.encode("utf-16-be", "surrogatepass")


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


def _utf8(text: str) -> bytes:
    # A lone surrogate has no UTF-8 form; JavaScript's JSON.stringify writes it as a
    # lowercase \\udXXX escape, which is exactly what backslashreplace produces.
    return text.encode("utf-8", "backslashreplace")


def canonical_json(body: str | bytes, *, ensure_ascii: bool = False) -> str:
    """The sorted, compact form of a JSON body, numbers exactly as written."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    return _serialise(_parse_textual(text), ensure_ascii)


def _hmac(secret: str | bytes, message: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, message, hashlib.sha512).hexdigest()


def _canonical_candidates(raw: bytes, limits: JsonLimits) -> list[bytes]:
    """The canonical forms of a body that can be one; none for a body that cannot be what
    NOWPayments signed (not UTF-8, not JSON, over a limit)."""
    try:
        textual = _parse_textual(_bounded_text(raw, limits))
    except (MalformedPayload, ValueError, RecursionError):
        return []
    if not isinstance(textual, dict):
        return []
    candidates: list[bytes] = []
    for ensure_ascii in (False, True):
        candidate = _utf8(_serialise(textual, ensure_ascii))
        if candidate != raw and candidate not in candidates:
            candidates.append(candidate)
    return candidates


def verify_ipn(
    body: bytes | str,
    signature: str | None,
    secret: str,
    *,
    limits: JsonLimits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """Verify an IPN and return its payload (non-integers as Decimal) or raise
    InvalidSignature (not signed) or MalformedPayload (signed, but not a usable body)."""
    if not secret:
        # An empty key makes every forger's HMAC valid: refuse to verify anything.
        raise InvalidSignature("NOWPAYMENTS_IPN_SECRET is not configured")
    given = (signature or "").strip().lower()
    if not given:
        raise InvalidSignature(f"missing {SIGNATURE_HEADER} header")
    if len(given) != 128 or any(c not in "0123456789abcdef" for c in given):
        raise InvalidSignature(f"{SIGNATURE_HEADER} is not a hex HMAC-SHA512")
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body)

    if not hmac.compare_digest(_hmac(secret, raw), given):
        # Compare against every candidate (no early exit) so timing says nothing about which.
        matched = False
        for candidate in _canonical_candidates(raw, limits):
            matched |= hmac.compare_digest(_hmac(secret, candidate), given)
        if not matched:
            raise InvalidSignature("IPN signature does not match")
    return parse_ipn_body(raw, limits)


def ipn_payment_id(value: object) -> str:
    """`payment_id` as NOWPayments sends it: a JSON integer or a string of ASCII digits.
    Anything else (an object, a list, a boolean, "1_000", other scripts' digits) is refused
    rather than turned into some string that could match a real payment."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        text = str(value)
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        text = value
    else:
        shown = ascii(value)[:40] if isinstance(value, str) else type(value).__name__
        raise MalformedPayload(f"payment_id must be an integer or a string of digits, not {shown}")
    if len(text) > 64:
        raise MalformedPayload("payment_id is longer than 64 digits")
    return text


def ipn_status(value: object) -> str:
    """`payment_status`, lower case: one of NOWPayments' words (finished, partially_paid...)."""
    if isinstance(value, str) and value.isascii() and _STATUS.fullmatch(value.lower()):
        return value.lower()
    shown = ascii(value)[:40] if isinstance(value, str) else type(value).__name__
    raise MalformedPayload(f"payment_status must be a status word, not {shown}")


def sign_ipn(payload_or_body: Mapping[str, Any] | bytes | str, secret: str) -> tuple[bytes, str]:
    """Sign as NOWPayments does: (body to send, x-nowpayments-sig value).

    A mapping is serialised sorted and compact (Decimals as JSON numbers, exactly); a body
    given as text or bytes is sent as is and signed in its canonical form.
    """
    if isinstance(payload_or_body, Mapping):
        body = _dump_payload(payload_or_body)
    elif isinstance(payload_or_body, bytes):
        body = payload_or_body.decode("utf-8")
    else:
        body = payload_or_body
    canonical = _utf8(canonical_json(body))
    return _utf8(body), _hmac(secret, canonical)


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
