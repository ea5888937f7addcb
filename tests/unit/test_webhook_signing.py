"""The webhook signature: what a receiver computes from the secret and the raw body matches
the header, and any change of body, secret or time (beyond the tolerance) fails."""

from __future__ import annotations

import hashlib
import hmac

from dispatch.webhooks.signing import signature, signature_header, verify

SECRET = "whsec_test"
BODY = b'{"id":"order:ord_1:1","type":"order.created"}'
T = 1_700_000_000


def test_the_header_is_timestamp_and_hmac_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert signature(SECRET, T, BODY) == expected
    assert signature_header(SECRET, T, BODY) == f"t={T},v1={expected}"


def test_a_genuine_header_verifies() -> None:
    assert verify(SECRET, signature_header(SECRET, T, BODY), BODY, now=T + 10)


def test_another_body_secret_or_timestamp_fails() -> None:
    header = signature_header(SECRET, T, BODY)
    assert not verify(SECRET, header, BODY + b" ", now=T)
    assert not verify("whsec_other", header, BODY, now=T)
    forged = header.replace(f"t={T}", f"t={T + 1}")
    assert not verify(SECRET, forged, BODY, now=T)


def test_an_old_or_future_timestamp_fails_outside_the_tolerance() -> None:
    header = signature_header(SECRET, T, BODY)
    assert verify(SECRET, header, BODY, now=T + 300)
    assert not verify(SECRET, header, BODY, now=T + 301)
    assert not verify(SECRET, header, BODY, now=T - 301)
    assert verify(SECRET, header, BODY, now=T + 3600, tolerance_s=3600)


def test_malformed_headers_fail() -> None:
    good = signature(SECRET, T, BODY)
    for header in ("", f"v1={good}", f"t={T}", f"t=abc,v1={good}", good, f"t={T},v2={good}"):
        assert not verify(SECRET, header, BODY, now=T), header


def test_one_of_several_v1_values_may_match() -> None:
    header = f"t={T},v1={'0' * 64},v1={signature(SECRET, T, BODY)}"
    assert verify(SECRET, header, BODY, now=T)
