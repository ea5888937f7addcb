"""Signed tokens: issue and verify, and every way a token or header can be wrong."""

from __future__ import annotations

import time
from collections.abc import Iterator

import jwt
import pytest

from core import auth
from core.auth import Principal, Role
from core.errors import PermissionDenied, Unauthenticated
from core.settings import Settings

SETTINGS = Settings().replace(
    token_secret="unit-test-secret-of-at-least-32-bytes", token_audience="lastmile-test"
)


@pytest.fixture
def as_caller() -> Iterator[None]:
    """Restore the anonymous caller after a test binds one."""
    token = auth.set_current_principal(None)
    yield
    auth._current.reset(token)


def test_issued_token_verifies_to_its_principal() -> None:
    token = auth.issue_token(SETTINGS, "driver-7", Role.DRIVER, "tenant-a")
    assert auth.verify_token(SETTINGS, token) == Principal("driver-7", Role.DRIVER, "tenant-a")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == SETTINGS.token_ttl_s
    assert claims["aud"] == "lastmile-test"


def test_expired_token_is_refused() -> None:
    token = auth.issue_token(SETTINGS, "driver-7", Role.DRIVER, "tenant-a", ttl_s=-5)
    with pytest.raises(Unauthenticated, match="token expired"):
        auth.verify_token(SETTINGS, token)


def test_token_for_another_audience_is_refused() -> None:
    token = auth.issue_token(SETTINGS.replace(token_audience="other"), "d", Role.DRIVER, "t")
    with pytest.raises(Unauthenticated, match="invalid token"):
        auth.verify_token(SETTINGS, token)


def test_token_signed_with_another_secret_is_refused() -> None:
    token = auth.issue_token(
        SETTINGS.replace(token_secret="not-ours-but-also-long-enough-for-hs256"),
        "d",
        Role.DRIVER,
        "t",
    )
    with pytest.raises(Unauthenticated, match="invalid token"):
        auth.verify_token(SETTINGS, token)


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "d", "role": "emperor", "aud": "lastmile-test"},  # unknown role
        {"sub": "d", "aud": "lastmile-test"},  # no role
        {"role": "driver", "aud": "lastmile-test"},  # no subject
    ],
    ids=["unknown-role", "no-role", "no-subject"],
)
def test_token_with_bad_claims_is_refused(claims: dict[str, str]) -> None:
    token = jwt.encode({**claims, "exp": int(time.time()) + 60}, SETTINGS.token_secret, "HS256")
    with pytest.raises(Unauthenticated, match="invalid token"):
        auth.verify_token(SETTINGS, token)


def test_unsigned_token_is_refused() -> None:
    claims = {"sub": "d", "role": "driver", "aud": "lastmile-test", "exp": int(time.time()) + 60}
    token = jwt.encode(claims, None, algorithm="none")
    with pytest.raises(Unauthenticated, match="invalid token"):
        auth.verify_token(SETTINGS, token)


def test_authorization_header() -> None:
    token = auth.issue_token(SETTINGS, "disp-1", Role.DISPATCHER, "tenant-a")
    assert auth.principal_from_metadata(SETTINGS, None) is None
    assert auth.principal_from_metadata(SETTINGS, "") is None
    for header in (f"Bearer {token}", f"bearer {token}", f"Bearer  {token} "):
        principal = auth.principal_from_metadata(SETTINGS, header)
        assert principal == Principal("disp-1", Role.DISPATCHER, "tenant-a")


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "token-only"])
def test_malformed_authorization_header_is_refused(header: str) -> None:
    with pytest.raises(Unauthenticated, match="authorization must be 'Bearer <token>'"):
        auth.principal_from_metadata(SETTINGS, header)


def test_garbage_bearer_token_is_refused() -> None:
    with pytest.raises(Unauthenticated, match="invalid token"):
        auth.principal_from_metadata(SETTINGS, "Bearer not.a.jwt")


@pytest.mark.usefixtures("as_caller")
def test_require_checks_the_current_caller() -> None:
    with pytest.raises(Unauthenticated, match="this call needs a token"):
        auth.require(Role.DISPATCHER)

    driver = Principal("driver-7", Role.DRIVER, "tenant-a")
    auth.set_current_principal(driver)
    assert auth.current_principal() == driver
    assert auth.require(Role.DRIVER) == driver
    assert auth.require(Role.DISPATCHER, Role.DRIVER) == driver
    with pytest.raises(PermissionDenied, match="role driver may not do this"):
        auth.require(Role.DISPATCHER, Role.SERVICE)


def test_tracking_tokens_are_random_and_stored_as_digests() -> None:
    tokens = {auth.new_tracking_token() for _ in range(100)}
    assert len(tokens) == 100
    token = tokens.pop()
    assert len(token) == 32  # 24 random bytes, URL-safe base64
    digest = auth.tracking_token_digest(token)
    assert digest == auth.tracking_token_digest(token)
    assert len(digest) == 64 and token not in digest
