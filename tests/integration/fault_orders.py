"""Orders and proofs of the fault tests, driven as the dispatch desk and the driver app drive
them (every call retried with backoff on UNAVAILABLE), and the checks of what the platform
kept: each accepted order with its whole event history, each confirmed proof retrievable."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import itertools
import random
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from lastmile_client.lastmile.common.v1 import Address, OrderStatus, TimeWindow
from lastmile_client.lastmile.common.v1 import LatLng as LatLngMessage
from lastmile_client.lastmile.dispatch.v1 import (
    AssignOrderRequest,
    CreateOrderRequest,
    Driver,
    GetOrderRequest,
    ListOrderEventsRequest,
    Order,
    OrderKind,
    UpsertDriverRequest,
)
from lastmile_client.lastmile.driver.v1 import StopEventKind
from lastmile_client.lastmile.pod.v1 import (
    ConfirmProofRequest,
    CreateUploadUrlRequest,
    GetProofRequest,
    ProofKind,
    ProofOfDeliveryServiceStub,
)
from simulator.connection import Connection
from simulator.proofs import CONTENT_TYPE, photo

from core.geo import LatLng
from tests.helpers import async_wait_until
from tests.integration.fault_fleet import CALL_TIMEOUT_S, FleetDriver, retrying
from tests.integration.pod_support import http_get, post_form

TENANT = "tenant-faults"
STATUS_WITHIN_S = 90.0
#: The milestones every order of the fault tests passes, in this order.
MILESTONES = (
    OrderStatus.PENDING,
    OrderStatus.ASSIGNED,
    OrderStatus.AT_PICKUP,
    OrderStatus.PICKED_UP,
    OrderStatus.NEARBY,
    OrderStatus.DELIVERED,
)


@dataclass
class OrderFlow:
    """One order as its creator, its driver and its customer know it."""

    key: str
    driver: FleetDriver
    pickup: LatLng
    drop_off: LatLng
    order_id: str = ""
    tracking_token: str = ""
    proof_id: str = ""
    proof_sha256: str = ""


class Desk:
    """The dispatch desk's and the driver apps' calls, each retried until it succeeds."""

    def __init__(self, connection: Connection, retries: Counter[str]) -> None:
        self._connection = connection
        self.retries = retries
        self._rng = random.Random(7)

    async def register(self, driver_id: str) -> None:
        """UpsertDriver: an active driver of the tenant."""
        request = UpsertDriverRequest(driver=Driver(driver_id=driver_id, name="Fault Driver"))
        request.driver.active = True
        await retrying(
            "UpsertDriver",
            lambda: self._connection.dispatch().upsert_driver(request, timeout=CALL_TIMEOUT_S),
            self.retries,
        )

    async def place(self, flow: OrderFlow) -> None:
        """CreateOrder with the flow's idempotency key; the order counts as accepted once a
        call returned OK."""
        now = dt.datetime.now(dt.UTC)
        order = Order(
            kind=OrderKind.INSTANT,
            size_units=1,
            external_ref=flow.key,
            pickup_address=_address("pickup", flow.pickup),
            drop_off_address=_address("door", flow.drop_off),
            drop_off_window=TimeWindow(start=now, end=now + dt.timedelta(hours=2)),
            customer_name="Fault Customer",
        )
        request = CreateOrderRequest(idempotency_key=flow.key, order=order)
        response = await retrying(
            "CreateOrder",
            lambda: self._connection.orders().create_order(request, timeout=CALL_TIMEOUT_S),
            self.retries,
        )
        flow.order_id = response.order.order_id
        flow.tracking_token = response.order.tracking_token

    async def assign(self, flow: OrderFlow) -> None:
        """AssignOrder to the flow's driver (idempotent for the same driver)."""
        request = AssignOrderRequest(
            order_id=flow.order_id, driver_id=flow.driver.driver_id, reason="fault test"
        )
        await retrying(
            "AssignOrder",
            lambda: self._connection.dispatch().assign_order(request, timeout=CALL_TIMEOUT_S),
            self.retries,
        )

    async def status(self, order_id: str) -> Any:
        """The order's status now (one call, not retried)."""
        response = await self._connection.orders().get_order(
            GetOrderRequest(order_id=order_id), timeout=CALL_TIMEOUT_S
        )
        return response.order.status

    async def reach(self, flow: OrderFlow, status: Any) -> None:
        """Wait until the order is at ``status`` or past it."""

        async def there() -> bool:
            return bool((await self.status(flow.order_id)).value >= status.value)

        await async_wait_until(
            there, STATUS_WITHIN_S, interval=0.1, what=f"{flow.order_id} at {status.name}"
        )

    async def pick_up(self, flow: OrderFlow) -> None:
        """The driver reports arrival at the pickup and the pickup, on its stream."""
        flow.driver.report_stop(flow.order_id, f"{flow.order_id}:pickup", StopEventKind.ARRIVED)
        flow.driver.report_stop(flow.order_id, f"{flow.order_id}:pickup", StopEventKind.PICKED_UP)
        await self.reach(flow, OrderStatus.PICKED_UP)

    async def deliver(self, flow: OrderFlow) -> None:
        """Arrival at the door, then a photo proof; wait until the order is DELIVERED."""
        stop_id = f"{flow.order_id}:drop_off"
        flow.driver.report_stop(flow.order_id, stop_id, StopEventKind.ARRIVED)
        await self.reach(flow, OrderStatus.NEARBY)
        await self._prove(flow)
        await self.reach(flow, OrderStatus.DELIVERED)

    async def full_lifecycle(self, flow: OrderFlow) -> None:
        """Create, assign, pick up and deliver."""
        await self.place(flow)
        await self.assign(flow)
        await self.pick_up(flow)
        await self.deliver(flow)

    async def _prove(self, flow: OrderFlow) -> None:
        """Upload a photo through a pre-signed form, then ConfirmProof; each step retried on
        its own so that a retried confirmation names the object already uploaded."""
        pod = self._connection.pod(flow.driver.driver_id)
        taken_at = dt.datetime.now(dt.UTC)
        data = photo(flow.drop_off, taken_at, self._rng)
        upload = await retrying(
            "CreateUploadUrl",
            lambda: pod.create_upload_url(
                CreateUploadUrlRequest(
                    order_id=flow.order_id,
                    kind=ProofKind.PHOTO,
                    content_type=CONTENT_TYPE,
                    content_length=len(data),
                ),
                timeout=CALL_TIMEOUT_S,
            ),
            self.retries,
        )
        status, body = await asyncio.to_thread(
            post_form, upload.upload_url, dict(upload.form_fields), data, CONTENT_TYPE
        )
        assert 200 <= status < 300, (status, body[:300])
        sha256 = hashlib.sha256(data).hexdigest()
        request = ConfirmProofRequest(
            order_id=flow.order_id,
            kind=ProofKind.PHOTO,
            object_key=upload.object_key,
            sha256=sha256,
            captured_at=taken_at,
            position=LatLngMessage(lat=flow.drop_off.lat, lng=flow.drop_off.lng),
        )
        confirmed = await retrying(
            "ConfirmProof", lambda: pod.confirm_proof(request, timeout=CALL_TIMEOUT_S), self.retries
        )
        flow.proof_id, flow.proof_sha256 = confirmed.proof.proof_id, sha256

    def _desk_pod(self) -> ProofOfDeliveryServiceStub:
        return ProofOfDeliveryServiceStub(
            self._connection.channel("pod"), metadata=self._connection.desk()
        )

    async def history_problems(self, flow: OrderFlow) -> list[str]:
        """What is wrong with the order's stored event history (empty: nothing)."""
        try:
            order_status = await self.status(flow.order_id)
        except Exception as exc:
            return [f"{flow.order_id}: GetOrder failed: {exc!r}"]
        response = await self._connection.orders().list_order_events(
            ListOrderEventsRequest(order_id=flow.order_id), timeout=CALL_TIMEOUT_S
        )
        return event_problems(flow.order_id, order_status, list(response.events))

    async def proof_retrievable(self, flow: OrderFlow) -> bool:
        """GetProof as the desk, then the photo through its download URL, hash compared."""
        response = await self._desk_pod().get_proof(
            GetProofRequest(order_id=flow.order_id), timeout=CALL_TIMEOUT_S
        )
        if response.proof.proof_id != flow.proof_id or not response.download_url:
            return False
        status, body = await asyncio.to_thread(http_get, response.download_url)
        return status == 200 and hashlib.sha256(body).hexdigest() == flow.proof_sha256


def event_problems(order_id: str, status: Any, events: list[Any]) -> list[str]:
    """Sequences 1..n without gaps or repeats, each event starting where the previous one
    ended, no status entered twice, every milestone in order, ending where the order is."""
    problems = []
    sequences = [int(e.sequence) for e in events]
    if sequences != list(range(1, len(events) + 1)):
        problems.append(f"{order_id}: event sequences {sequences}")
    entered = [e.to_status for e in events if e.to_status != e.from_status]
    repeated = [s.name for s, n in Counter(entered).items() if n > 1]
    if repeated:
        problems.append(f"{order_id}: statuses entered twice: {repeated}")
    for before, after in itertools.pairwise(events):
        if after.from_status != before.to_status:
            problems.append(f"{order_id}: event {after.sequence} does not follow its predecessor")
    milestones = [s for s in entered if s in MILESTONES]
    if milestones != list(MILESTONES):
        problems.append(f"{order_id}: milestones {[s.name for s in milestones]}")
    if not events or events[-1].to_status != status:
        problems.append(f"{order_id}: history ends elsewhere than the order ({status.name})")
    return problems


def _address(line: str, where: LatLng) -> Address:
    return Address(line1=line, country="MT", location=LatLngMessage(lat=where.lat, lng=where.lng))


def new_key(label: str) -> str:
    """A fresh idempotency key."""
    return f"fault-{label}-{uuid.uuid4().hex[:12]}"
