"""The simulator's way into the platform: channels to the public gRPC endpoints and signed
identities, through the generated betterproto clients (grpclib) only.

Identities: the simulator plays the identity provider of its drivers and of the operator's
dispatch desk, signing tokens with the platform's token secret (``core.auth.issue_token``),
as a test harness or an operator's login service would. Customers hold only the tracking
tokens their orders return.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from grpclib.client import Channel
from lastmile_client.lastmile.dispatch.v1 import DispatchServiceStub, OrderServiceStub
from lastmile_client.lastmile.driver.v1 import DriverGatewayServiceStub
from lastmile_client.lastmile.origin.v1 import OriginServiceStub
from lastmile_client.lastmile.pod.v1 import ProofOfDeliveryServiceStub
from lastmile_client.lastmile.tracking.v1 import TrackingServiceStub

from core.auth import Role, issue_token
from core.settings import Settings

SERVICES = ("gateway", "tracking", "dispatch", "pod")
# Tokens outlive any simulation (a day of simulated time at 1x included).
TOKEN_TTL_S = 2 * 86400


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` as a pair."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"address must be host:port, got {address!r}")
    return host, int(port)


def addresses_of(settings: Settings, target: str | None) -> dict[str, str]:
    """Where each service is reached: all through ``target`` (usually the Envoy edge, which
    routes by package) when given, else each service's own port from the settings."""
    if target:
        return dict.fromkeys(SERVICES, target)
    return {name: f"{settings.host}:{settings.port_of(name)}" for name in SERVICES}


@dataclass
class Connection:
    """Channels (one per distinct address, HTTP/2 multiplexes the calls) and tokens."""

    settings: Settings
    addresses: Mapping[str, str]
    tenant: str
    _channels: dict[str, Channel] = field(default_factory=dict)

    def channel(self, service: str) -> Channel:
        """The channel that reaches ``service``."""
        address = self.addresses[service]
        if address not in self._channels:
            host, port = split_address(address)
            self._channels[address] = Channel(host, port)
        return self._channels[address]

    def bearer(self, subject: str, role: Role) -> dict[str, str]:
        """Call metadata carrying a token for ``subject``."""
        token = issue_token(self.settings, subject, role, self.tenant, ttl_s=TOKEN_TTL_S)
        return {"authorization": f"Bearer {token}"}

    def desk(self) -> dict[str, str]:
        """Metadata of the operator's dispatch desk (orders, assignment, origins' setup)."""
        return self.bearer("simulator-desk", Role.DISPATCHER)

    def orders(self) -> OrderServiceStub:
        """OrderService as the dispatch desk."""
        return OrderServiceStub(self.channel("dispatch"), metadata=self.desk())

    def customer_orders(self) -> OrderServiceStub:
        """OrderService with no token (customers speak by their tracking token)."""
        return OrderServiceStub(self.channel("dispatch"))

    def dispatch(self) -> DispatchServiceStub:
        """DispatchService as the dispatch desk."""
        return DispatchServiceStub(self.channel("dispatch"), metadata=self.desk())

    def origins(self, origin_id: str | None = None) -> OriginServiceStub:
        """OriginService as an origin (its own token) or as the desk."""
        metadata = self.bearer(origin_id, Role.ORIGIN) if origin_id else self.desk()
        return OriginServiceStub(self.channel("dispatch"), metadata=metadata)

    def gateway(self, driver_id: str) -> DriverGatewayServiceStub:
        """The driver gateway as one driver."""
        return DriverGatewayServiceStub(
            self.channel("gateway"), metadata=self.bearer(driver_id, Role.DRIVER)
        )

    def pod(self, driver_id: str) -> ProofOfDeliveryServiceStub:
        """Proof of delivery as one driver."""
        return ProofOfDeliveryServiceStub(
            self.channel("pod"), metadata=self.bearer(driver_id, Role.DRIVER)
        )

    def tracking(self) -> TrackingServiceStub:
        """TrackingService (customers authorize with tracking tokens in the request)."""
        return TrackingServiceStub(self.channel("tracking"))

    def close(self) -> None:
        """Close every channel."""
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
