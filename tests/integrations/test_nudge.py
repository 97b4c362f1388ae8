"""ChangeNOW nudge signatures: X-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from integrations.changenow.nudge import (
    MAX_BODY_BYTES,
    parse_nudge_body,
    parse_signature_header,
    sign_nudge,
    verify_nudge,
)
from integrations.errors import InvalidSignature, MalformedPayload

SECRET = "whsec-current"
OLD_SECRET = "whsec-previous"
BODY = b'{"id":"a1b2c3d4e5f607"}'
NOW = 1_750_000_000


def _v1(secret: str, t: int, body: bytes = BODY) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def test_it_accepts_a_valid_signature() -> None:
    header = f"t={NOW},v1={_v1(SECRET, NOW)}"
    assert verify_nudge(BODY, header, SECRET, now=NOW) == NOW


def test_it_accepts_a_signature_at_the_edges_of_the_tolerance() -> None:
    for t in (NOW - 300, NOW + 300):
        assert verify_nudge(BODY, f"t={t},v1={_v1(SECRET, t)}", SECRET, now=NOW) == t


def test_it_rejects_a_stale_signature() -> None:
    t = NOW - 301
    with pytest.raises(InvalidSignature, match="old"):
        verify_nudge(BODY, f"t={t},v1={_v1(SECRET, t)}", SECRET, now=NOW)


def test_it_rejects_a_signature_from_the_future() -> None:
    t = NOW + 301
    with pytest.raises(InvalidSignature, match="future"):
        verify_nudge(BODY, f"t={t},v1={_v1(SECRET, t)}", SECRET, now=NOW)


def test_it_rejects_a_tampered_body_or_timestamp() -> None:
    header = f"t={NOW},v1={_v1(SECRET, NOW)}"
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_nudge(b'{"id":"someone-else"}', header, SECRET, now=NOW)
    moved = f"t={NOW + 1},v1={_v1(SECRET, NOW)}"
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_nudge(BODY, moved, SECRET, now=NOW)


def test_it_accepts_any_of_several_v1_values_during_key_rotation() -> None:
    header = f"t={NOW},v1={_v1(OLD_SECRET, NOW)},v1={_v1(SECRET, NOW)}"
    assert verify_nudge(BODY, header, SECRET, now=NOW) == NOW
    assert verify_nudge(BODY, header, OLD_SECRET, now=NOW) == NOW


def test_it_accepts_any_of_several_configured_secrets() -> None:
    header = f"t={NOW},v1={_v1(OLD_SECRET, NOW)}"
    assert verify_nudge(BODY, header, [SECRET, OLD_SECRET], now=NOW) == NOW
    with pytest.raises(InvalidSignature):
        verify_nudge(BODY, header, [SECRET], now=NOW)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        f"v1={'a' * 64}",  # no timestamp
        f"t={NOW}",  # no signature
        f"t=yesterday,v1={'a' * 64}",
        f"t={NOW},v1=nothex",
        f"t={NOW},v1={'a' * 63}",
        f"t={NOW},t={NOW},v1={'a' * 64}",
        f"t={NOW},v1=",
        f"t=\u00b2,v1={'a' * 64}",  # a digit to str.isdigit, not to int()
        f"t=\u0661\u0662,v1={'a' * 64}",
        f"t={NOW}," + ",".join(f"v1={'a' * 64}" for _ in range(9)),
    ],
)
def test_it_rejects_malformed_headers(header: str | None) -> None:
    with pytest.raises(InvalidSignature):
        verify_nudge(BODY, header, SECRET, now=NOW)


def test_it_ignores_unknown_schemes_next_to_v1() -> None:
    header = f"t={NOW},v0=legacy,v1={_v1(SECRET, NOW)}"
    assert parse_signature_header(header) == (NOW, [_v1(SECRET, NOW)])
    assert verify_nudge(BODY, header, SECRET, now=NOW) == NOW


def test_it_refuses_to_verify_without_a_secret() -> None:
    header = f"t={NOW},v1={_v1('', NOW)}"
    with pytest.raises(InvalidSignature, match="not configured"):
        verify_nudge(BODY, header, "", now=NOW)


def test_the_signer_produces_headers_the_verifier_accepts() -> None:
    header = sign_nudge(BODY, [OLD_SECRET, SECRET], timestamp=NOW)
    assert header == f"t={NOW},v1={_v1(OLD_SECRET, NOW)},v1={_v1(SECRET, NOW)}"
    assert verify_nudge(BODY, header, SECRET, now=NOW) == NOW
    fresh = sign_nudge(BODY.decode(), SECRET)  # current time
    assert verify_nudge(BODY, fresh, SECRET) > 0
    with pytest.raises(ValueError):
        sign_nudge(BODY, "")


def test_it_reads_the_exchange_id_of_a_nudge_body() -> None:
    assert parse_nudge_body(BODY) == "a1b2c3d4e5f607"
    assert parse_nudge_body(b'{"id": "no-such_exchange-1"}') == "no-such_exchange-1"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"[" * 30_000,
        b"[" * 400 + b"]" * 400,
        b'{"id": 1}',
        b'{"id": ""}',
        b'{"id": "a\\u0000b"}',
        b'{"id": "\\ud800"}',
        b'{"id": "a b"}',
        b'{"id": "' + b"a" * 65 + b'"}',
        b'{"id": "x"}\x00',
        b'{"id": ' + b"1" * 5000 + b"}",
        b"\xff\xfe",
        b'["a1b2"]',
    ],
)
def test_it_refuses_any_other_nudge_body_with_a_reason(body: bytes) -> None:
    with pytest.raises(MalformedPayload):
        parse_nudge_body(body)


def test_a_nudge_body_over_the_size_limit_is_refused_unparsed() -> None:
    body = b'{"id": "a1", "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
    with pytest.raises(MalformedPayload, match="over the"):
        parse_nudge_body(body)
