"""The provider interface and its two transports, spoken as JSON over HTTP.

Both transports submit an order with ``POST {endpoint}/orders`` (answer: ``{"external_id"}``)
and read a status with ``GET {endpoint}/orders/{external_id}`` (answer: ``{"status"}``).
Webhook providers also call us back on each change (``callback_url`` in the submission);
polling providers are asked every ``provider_poll_interval_s``. Every request body (and every
callback) is signed: header ``X-Lastmile-Signature`` = hex HMAC-SHA256 of the body with the
secret shared with the provider.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from lastmile.dispatch.v1 import dispatch_pb2

from dispatch import state_machine as sm

SIGNATURE_HEADER = "X-Lastmile-Signature"
#: Provider status words and the order status each one means.
STATUSES: dict[str, int] = {
    "accepted": sm.ASSIGNED,
    "to_pickup": sm.TO_PICKUP,
    "at_pickup": sm.AT_PICKUP,
    "picked_up": sm.PICKED_UP,
    "delivered": sm.DELIVERED,
    "failed": sm.FAILED,
}


class ProviderRefused(Exception):
    """The provider did not take the order (refused, unreachable, bad answer)."""


@dataclass(frozen=True, slots=True)
class ProviderOrder:
    """What a provider is told about an order."""

    order_id: str
    pickup: tuple[float, float]
    drop_off: tuple[float, float]
    size_units: int
    callback_url: str = ""


class ExternalProvider(Protocol):
    """One external fleet, whatever its transport."""

    async def submit(self, order: ProviderOrder) -> str:
        """Hand the order over; returns the provider's id of it. Raises ProviderRefused."""

    async def status(self, external_id: str) -> str:
        """The provider's current status word of the order (see STATUSES)."""


def sign(secret: str, body: bytes) -> str:
    """The signature of a body."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_ok(secret: str, body: bytes, signature: str) -> bool:
    """Whether ``signature`` signs ``body`` (constant-time)."""
    return hmac.compare_digest(sign(secret, body), signature)


class HttpProvider:
    """Both transports: they differ only in whether a callback URL is sent."""

    def __init__(self, endpoint: str, secret: str, timeout_s: float, callback_url: str) -> None:
        self._endpoint = endpoint.rstrip("/")
        self._secret = secret
        self._timeout = timeout_s
        self._callback_url = callback_url

    async def submit(self, order: ProviderOrder) -> str:
        """POST the order; a 2xx answer with an external_id means accepted."""
        payload = asdict(order) | {"callback_url": self._callback_url}
        answer = await self._call("POST", "/orders", payload)
        external_id = answer.get("external_id")
        if not isinstance(external_id, str) or not external_id:
            raise ProviderRefused("answer carries no external_id")
        return external_id

    async def status(self, external_id: str) -> str:
        """GET the order's status word."""
        answer = await self._call("GET", f"/orders/{external_id}", None)
        return str(answer.get("status", ""))

    async def _call(self, method: str, path: str, payload: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self._call_blocking, method, path, payload)

    def _call_blocking(self, method: str, path: str, payload: Any) -> dict[str, Any]:
        body = json.dumps(payload).encode() if payload is not None else b""
        request = urllib.request.Request(self._endpoint + path, data=body or None, method=method)
        request.add_header("Content-Type", "application/json")
        request.add_header(SIGNATURE_HEADER, sign(self._secret, body))
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                answer = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise ProviderRefused(f"{method} {path}: HTTP {exc.code}") from exc
        except (OSError, ValueError) as exc:
            raise ProviderRefused(f"{method} {path}: {exc}") from exc
        if not isinstance(answer, dict):
            raise ProviderRefused(f"{method} {path}: answer is not an object")
        return answer


def provider_for(
    transport: int, endpoint: str, secret: str, timeout_s: float, callback_base: str, pid: str
) -> ExternalProvider:
    """The provider client of a registered provider."""
    if transport == dispatch_pb2.PROVIDER_TRANSPORT_WEBHOOK:
        return HttpProvider(endpoint, secret, timeout_s, f"{callback_base}/providers/{pid}/status")
    return HttpProvider(endpoint, secret, timeout_s, "")
