"""Opaque page tokens for keyset paging, and page-size limits."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from core.errors import InvalidArgument
from core.settings import Settings


def page_size(settings: Settings, requested: int) -> int:
    """The page size to use: the default when unset, INVALID_ARGUMENT when negative, capped."""
    if requested < 0:
        raise InvalidArgument("page_size must not be negative")
    if requested == 0:
        return settings.order_page_size_default
    return min(requested, settings.order_page_size_max)


def encode_token(position: list[Any]) -> str:
    """An opaque token for the keyset position after the last row of a page."""
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def decode_token(token: str, length: int) -> list[Any] | None:
    """The keyset position of a token (None for the first page); INVALID_ARGUMENT when the
    token was not made by :func:`encode_token`."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        position = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgument("page_token is not valid") from exc
    if not isinstance(position, list) or len(position) != length:
        raise InvalidArgument("page_token is not valid")
    return position
