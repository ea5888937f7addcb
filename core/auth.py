"""Identities: signed tokens for drivers, dispatchers, origins and services; tracking tokens
for customers.

Tokens are JWTs (HS256) signed with ``Settings.token_secret``; the interceptor verifies the
``authorization: Bearer`` metadata of each call and handlers read the caller with
``current_principal()``.
"""

from __future__ import annotations

import contextvars
import enum
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import jwt

from core.errors import PermissionDenied, Unauthenticated
from core.settings import Settings


class Role(enum.StrEnum):
    """What kind of caller a token stands for."""

    DRIVER = "driver"
    DISPATCHER = "dispatcher"
    ORIGIN = "origin"
    SERVICE = "service"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one RPC."""

    subject: str
    role: Role
    tenant_id: str


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "lastmile_principal", default=None
)


def issue_token(
    settings: Settings, subject: str, role: Role, tenant_id: str, ttl_s: int | None = None
) -> str:
    """A signed token for ``subject`` acting as ``role`` within ``tenant_id``."""
    now = int(time.time())
    claims = {
        "sub": subject,
        "role": role.value,
        "tenant": tenant_id,
        "aud": settings.token_audience,
        "iat": now,
        "exp": now + (settings.token_ttl_s if ttl_s is None else ttl_s),
    }
    return jwt.encode(claims, settings.token_secret, algorithm="HS256")


def verify_token(settings: Settings, token: str) -> Principal:
    """The principal of a valid token; ``Unauthenticated`` for anything else."""
    try:
        claims = jwt.decode(
            token,
            settings.token_secret,
            algorithms=["HS256"],
            audience=settings.token_audience,
            options={"require": ["sub", "role", "exp", "aud"]},
        )
        return Principal(str(claims["sub"]), Role(claims["role"]), str(claims.get("tenant", "")))
    except jwt.ExpiredSignatureError as exc:
        raise Unauthenticated("token expired") from exc
    except (jwt.InvalidTokenError, ValueError, KeyError) as exc:
        raise Unauthenticated("invalid token") from exc


def principal_from_metadata(settings: Settings, authorization: str | None) -> Principal | None:
    """Parse an ``authorization`` header value; None when absent."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("authorization must be 'Bearer <token>'")
    return verify_token(settings, token.strip())


def set_current_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    """Bind the caller for the current RPC (done by the interceptor)."""
    return _current.set(principal)


def current_principal() -> Principal | None:
    """The caller of the RPC being handled, None when anonymous."""
    return _current.get()


def require(*roles: Role) -> Principal:
    """The caller, who must hold one of ``roles``."""
    principal = _current.get()
    if principal is None:
        raise Unauthenticated("this call needs a token")
    if principal.role not in roles:
        raise PermissionDenied(f"role {principal.role.value} may not do this")
    return principal


def new_tracking_token() -> str:
    """A customer tracking token: 192 random bits, URL-safe."""
    return secrets.token_urlsafe(24)


def tracking_token_digest(token: str) -> str:
    """What is stored of a tracking token: its SHA-256, so a database leak leaks no links."""
    return hashlib.sha256(token.encode()).hexdigest()


def delivery_code_digest(secret: str, order_id: str, code: str) -> str:
    """What is stored of an order's contactless delivery code: HMAC-SHA256 of
    ``{order_id}:{code}`` keyed with the delivery-code secret (the code is never stored)."""
    return hmac.new(secret.encode(), f"{order_id}:{code}".encode(), hashlib.sha256).hexdigest()


def delivery_code_matches(secret: str, order_id: str, code: str, stored_digest: str) -> bool:
    """Whether ``code`` is the order's delivery code (constant-time comparison)."""
    if not code or not stored_digest:
        return False
    return hmac.compare_digest(delivery_code_digest(secret, order_id, code), stored_digest)
