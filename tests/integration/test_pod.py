"""Proof of delivery through the real pod service, PostgreSQL and SeaweedFS: pre-signed
uploads of real images (JPEG with EXIF, PNG signature), confirmation, the record and its
outbox event, retrieval, the review queue, policies, and every bad input with its status and
nothing stored half-way."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest
from lastmile.common.v1 import common_pb2
from lastmile.pod.v1 import pod_pb2, pod_service_pb2, pod_service_pb2_grpc
from lastmile.tracking.v1 import tracking_service_pb2, tracking_service_pb2_grpc

from core import topics
from core.auth import Role, issue_token
from core.bus import Bus
from core.db import Database
from core.geo import LatLng
from dispatch.context import DispatchContext
from dispatch.proof_events import apply_proof_event
from ops.servers import ManagedProcess
from ops.servers.process import free_port
from ops.stack import service_process, start_service
from pod.records import timestamp, verify_record
from tests.helpers import async_wait_until
from tests.integration.conftest import Platform
from tests.integration.pod_support import (
    DOOR,
    SeededOrder,
    http_get,
    post_form,
    seed_order,
    sha256_hex,
)
from tests.pod_images import photo_jpeg, signature_png

pytestmark = [
    pytest.mark.integration,
    # minio signs POST policies with datetime.utcnow(), deprecated in Python 3.12.
    pytest.mark.filterwarnings("ignore:datetime.datetime.utcnow:DeprecationWarning"),
]

RUN = uuid.uuid4().hex[:8]
TENANT = f"pod-{RUN}"
TIMEOUT_S = 10.0
Stub = Any  # grpc.aio stub (the generated stubs are typed for the blocking API)
Request = pod_service_pb2.ConfirmProofRequest
PHOTO, SIGNATURE, QR = (
    pod_pb2.PROOF_KIND_PHOTO,
    pod_pb2.PROOF_KIND_SIGNATURE,
    pod_pb2.PROOF_KIND_CONTACTLESS_QR,
)
FAR = LatLng(lat=DOOR.lat + 0.01, lng=DOOR.lng)  # ~1.1 km north of the door


def _auth(platform: Platform, subject: str, role: Role) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {issue_token(platform.settings, subject, role, TENANT)}")]


@dataclass
class Env:
    """What each test needs: the service, the database, and who calls."""

    platform: Platform
    pod: Stub
    db: asyncpg.Connection[Any]

    def driver(self, driver_id: str) -> list[tuple[str, str]]:
        return _auth(self.platform, driver_id, Role.DRIVER)

    @property
    def dispatcher(self) -> list[tuple[str, str]]:
        return _auth(self.platform, "dispatcher-1", Role.DISPATCHER)

    async def order(self, status: int = common_pb2.ORDER_STATUS_PICKED_UP) -> SeededOrder:
        driver_id = f"drv-{RUN}-{uuid.uuid4().hex[:6]}"
        return await seed_order(self.db, self.platform.settings, TENANT, driver_id, status)

    async def upload(
        self,
        order: SeededOrder,
        kind: pod_pb2.ProofKind,
        data: bytes,
        content_type: str = "image/jpeg",
    ) -> str:
        form = await self.pod.CreateUploadUrl(
            pod_service_pb2.CreateUploadUrlRequest(
                order_id=order.order_id,
                kind=kind,
                content_type=content_type,
                content_length=len(data),
            ),
            metadata=self.driver(order.driver_id),
            timeout=TIMEOUT_S,
        )
        status, body = await asyncio.to_thread(
            post_form, form.upload_url, dict(form.form_fields), data, content_type
        )
        assert status in (200, 201, 204), body
        key: str = form.object_key
        return key

    async def confirm(self, order: SeededOrder, request: Request, driver: str = "") -> Any:
        request.order_id = request.order_id or order.order_id
        return await self.pod.ConfirmProof(
            request, metadata=self.driver(driver or order.driver_id), timeout=TIMEOUT_S
        )

    async def stored(self, order: SeededOrder) -> tuple[int, int, int]:
        """(proof rows, proof outbox rows, order status) of an order."""
        proofs = await self.db.fetchval(
            "SELECT count(*) FROM proofs WHERE order_id = $1", order.order_id
        )
        events = await self.db.fetchval(
            "SELECT count(*) FROM outbox WHERE key = $1 AND topic = $2",
            order.order_id,
            topics.PROOF_EVENTS,
        )
        status = await self.db.fetchval(
            "SELECT status FROM orders WHERE order_id = $1", order.order_id
        )
        return proofs, events, status


@pytest.fixture(scope="module")
async def env(platform: Platform) -> AsyncIterator[Env]:
    db = await asyncpg.connect(platform.settings.database_url)
    async with grpc.aio.insecure_channel(platform.addresses["pod"]) as channel:
        yield Env(platform, pod_service_pb2_grpc.ProofOfDeliveryServiceStub(channel), db)
    await db.close()


def _photo_request(key: str, data: bytes, at: dt.datetime, where: LatLng = DOOR) -> Request:
    return Request(
        kind=PHOTO,
        object_key=key,
        sha256=sha256_hex(data),
        captured_at=timestamp(at),
        position=common_pb2.LatLng(lat=where.lat, lng=where.lng),
    )


async def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    code: grpc.StatusCode = caught.value.code()
    return code


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def test_photo_proof_is_recorded_announced_and_delivers_the_order(env: Env) -> None:
    order = await env.order()
    taken = _now() - dt.timedelta(seconds=20)
    photo = photo_jpeg(taken.replace(microsecond=0), DOOR.lat, DOOR.lng)
    key = await env.upload(order, PHOTO, photo)
    assert key.startswith(f"proofs/{order.order_id}/1/photo-") and key.endswith(".jpg")
    # A second photo is uploaded now: once the proof lands, dispatch may deliver the order
    # at any moment, and a delivered order gets no more upload URLs.
    other = photo_jpeg(taken.replace(microsecond=0), DOOR.lat, DOOR.lng, size=(330, 240))
    other_key = await env.upload(order, PHOTO, other)

    proof = (await env.confirm(order, _photo_request(key, photo, taken))).proof

    assert (proof.order_id, proof.driver_id, proof.kind, proof.attempt) == (
        order.order_id,
        order.driver_id,
        PHOTO,
        1,
    )
    assert not proof.flagged
    assert all(c.passed for c in proof.checks), proof.checks
    names = {c.name for c in proof.checks}
    assert {"object_exists", "sha256", "content_is_image", "exif_time", "exif_gps"} <= names
    assert verify_record(proof, photo)
    payload = await env.db.fetchval(
        "SELECT payload FROM outbox WHERE key = $1 AND topic = $2",
        order.order_id,
        topics.PROOF_EVENTS,
    )
    assert pod_pb2.Proof.FromString(payload) == proof
    # A retry (lost response) gets the same record; another photo is refused.
    again = (await env.confirm(order, _photo_request(key, photo, taken))).proof
    assert again == proof
    refused = env.confirm(order, _photo_request(other_key, other, taken))
    assert await _code(refused) == grpc.StatusCode.ALREADY_EXISTS

    # Dispatch relays the proof event from the outbox and delivers the order, once.
    async def delivered() -> bool:
        return await env.stored(order) == (1, 1, common_pb2.ORDER_STATUS_DELIVERED)

    assert await async_wait_until(delivered, within=20, what="the order to be delivered")
    ctx = DispatchContext(
        env.platform.settings, Database(env.platform.settings), Bus(env.platform.settings)
    )
    await ctx.database.start()
    try:
        assert not await apply_proof_event(ctx, payload), "a replayed proof event applied twice"
    finally:
        await ctx.database.stop()
    assert await env.stored(order) == (1, 1, common_pb2.ORDER_STATUS_DELIVERED)
    # The customer's tracking page shows the delivery with its proof.
    async with grpc.aio.insecure_channel(env.platform.addresses["tracking"]) as channel:
        seen = await tracking_service_pb2_grpc.TrackingServiceStub(channel).GetTracking(
            tracking_service_pb2.GetTrackingRequest(tracking_token=order.tracking_token),
            timeout=TIMEOUT_S,
        )
    assert seen.snapshot.status == common_pb2.ORDER_STATUS_DELIVERED
    assert seen.snapshot.proof_id == proof.proof_id
    assert seen.snapshot.timeline[-1].status == common_pb2.ORDER_STATUS_DELIVERED
    # A retry after delivery still gets the record.
    assert (await env.confirm(order, _photo_request(key, photo, taken))).proof == proof


async def test_concurrent_confirmations_record_one_proof(env: Env) -> None:
    """The app retries while its first confirmation is in flight, and a second photo races
    it: the calls with the winning photo all get its one record, the others ALREADY_EXISTS,
    and one proof with one event is stored."""
    order = await env.order()
    taken = _now() - dt.timedelta(seconds=20)
    photos = [
        photo_jpeg(taken.replace(microsecond=0), DOOR.lat, DOOR.lng, size=size)
        for size in ((320, 240), (330, 240))
    ]
    requests = [_photo_request(await env.upload(order, PHOTO, p), p, taken) for p in photos]
    racing = [requests[0]] * 4 + [requests[1]] * 2
    outcomes = await asyncio.gather(
        *(env.confirm(order, r) for r in racing), return_exceptions=True
    )
    proofs = [o.proof for o in outcomes if not isinstance(o, BaseException)]
    (winner,) = {proof.object_key for proof in proofs}
    assert len({proof.proof_id for proof in proofs}) == 1
    for request, outcome in zip(racing, outcomes, strict=True):
        if request.object_key == winner:
            assert not isinstance(outcome, BaseException), outcome
        else:
            assert isinstance(outcome, grpc.aio.AioRpcError), outcome
            assert outcome.code() == grpc.StatusCode.ALREADY_EXISTS, outcome

    async def settled() -> bool:
        return await env.stored(order) == (1, 1, common_pb2.ORDER_STATUS_DELIVERED)

    assert await async_wait_until(settled, within=20, what="one proof, one event, delivered")


async def test_get_proof_for_the_customer_and_dispatchers_only(env: Env) -> None:
    order, stranger = await env.order(), await env.order()
    taken = _now()
    photo = photo_jpeg(taken.replace(microsecond=0), DOOR.lat, DOOR.lng)
    key = await env.upload(order, PHOTO, photo)
    proof = (await env.confirm(order, _photo_request(key, photo, taken))).proof
    by_order = pod_service_pb2.GetProofRequest(order_id=order.order_id)

    as_customer = await env.pod.GetProof(
        pod_service_pb2.GetProofRequest(
            proof_id=proof.proof_id, tracking_token=order.tracking_token
        ),
        timeout=TIMEOUT_S,
    )
    assert as_customer.proof == proof
    assert await asyncio.to_thread(http_get, as_customer.download_url) == (200, photo)
    assert as_customer.download_url_expires_at.ToDatetime(tzinfo=dt.UTC) <= _now() + dt.timedelta(
        seconds=env.platform.settings.pod_download_expiry_s
    )
    as_dispatcher = await env.pod.GetProof(by_order, metadata=env.dispatcher, timeout=TIMEOUT_S)
    assert as_dispatcher.proof == proof

    someone_else = pod_service_pb2.GetProofRequest(
        order_id=order.order_id, tracking_token=stranger.tracking_token
    )
    denied = [
        env.pod.GetProof(someone_else, timeout=TIMEOUT_S),
        env.pod.GetProof(by_order, metadata=env.driver(order.driver_id), timeout=TIMEOUT_S),
    ]
    for call in denied:
        assert await _code(call) == grpc.StatusCode.PERMISSION_DENIED
    anonymous = env.pod.GetProof(by_order, timeout=TIMEOUT_S)
    assert await _code(anonymous) == grpc.StatusCode.UNAUTHENTICATED
    other_tenant = [
        (
            "authorization",
            "Bearer " + issue_token(env.platform.settings, "d", Role.DISPATCHER, "other"),
        )
    ]
    hidden = env.pod.GetProof(by_order, metadata=other_tenant, timeout=TIMEOUT_S)
    assert await _code(hidden) == grpc.StatusCode.NOT_FOUND


async def test_signature_png_needs_a_signer_name(env: Env) -> None:
    order = await env.order()
    png = signature_png("Maria Borg")
    key = await env.upload(order, SIGNATURE, png, "image/png")
    request = Request(
        kind=SIGNATURE,
        object_key=key,
        sha256=sha256_hex(png),
        captured_at=timestamp(_now()),
        position=common_pb2.LatLng(lat=DOOR.lat, lng=DOOR.lng),
    )
    assert await _code(env.confirm(order, request)) == grpc.StatusCode.INVALID_ARGUMENT
    assert await env.stored(order) == (0, 0, common_pb2.ORDER_STATUS_PICKED_UP)

    request.signer_name = "Maria Borg"
    proof = (await env.confirm(order, request)).proof
    assert (proof.kind, proof.signer_name, proof.flagged) == (SIGNATURE, "Maria Borg", False)
    assert key.endswith(".png") and verify_record(proof, png)
    assert await env.stored(order) == (1, 1, common_pb2.ORDER_STATUS_PICKED_UP)


async def test_contactless_qr_verifies_the_delivery_code(env: Env) -> None:
    order = await env.order()
    request = Request(
        kind=QR,
        qr_code="000000" if order.delivery_code != "000000" else "111111",
        captured_at=timestamp(_now()),
        position=common_pb2.LatLng(lat=DOOR.lat, lng=DOOR.lng),
    )
    assert await _code(env.confirm(order, request)) == grpc.StatusCode.INVALID_ARGUMENT
    assert await env.stored(order) == (0, 0, common_pb2.ORDER_STATUS_PICKED_UP)

    request.qr_code = order.delivery_code
    proof = (await env.confirm(order, request)).proof
    assert (proof.kind, proof.object_key, proof.sha256) == (QR, "", "")
    assert proof.checks[0].name == "qr_code" and proof.checks[0].passed
    assert verify_record(proof, b"")
    assert await env.stored(order) == (1, 1, common_pb2.ORDER_STATUS_PICKED_UP)


async def test_doubtful_photos_are_flagged_and_listed_for_dispatchers(env: Env) -> None:
    flagged_ids = []
    for _ in range(2):
        order = await env.order()
        bare = photo_jpeg(None, None, None, exif=False)
        key = await env.upload(order, PHOTO, bare)
        proof = (await env.confirm(order, _photo_request(key, bare, _now(), FAR))).proof
        failed = {c.name for c in proof.checks if not c.passed}
        assert proof.flagged and failed == {"exif_present", "address_distance"}
        flagged_ids.append(proof.proof_id)

    first = await env.pod.ListFlaggedProofs(
        pod_service_pb2.ListFlaggedProofsRequest(page_size=1),
        metadata=env.dispatcher,
        timeout=TIMEOUT_S,
    )
    second = await env.pod.ListFlaggedProofs(
        pod_service_pb2.ListFlaggedProofsRequest(page_size=1, page_token=first.next_page_token),
        metadata=env.dispatcher,
        timeout=TIMEOUT_S,
    )
    assert [p.proof_id for p in (*first.proofs, *second.proofs)] == flagged_ids[::-1]
    assert all(p.flagged for p in (*first.proofs, *second.proofs))
    as_driver = env.pod.ListFlaggedProofs(
        pod_service_pb2.ListFlaggedProofsRequest(), metadata=env.driver("x"), timeout=TIMEOUT_S
    )
    assert await _code(as_driver) == grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture(scope="module")
def strict_pod(platform: Platform) -> Iterator[Stub]:
    """A second pod process whose policy rejects doubtful GPS and whose upload forms are
    born expired, on the same database and bucket."""
    settings = platform.settings.replace(
        pod_port=free_port(),
        pod_doubt_policies="exif_gps=reject,address_distance=reject",
        pod_upload_expiry_s=-60,
    )
    process: ManagedProcess = service_process("pod", settings, platform.log_dir / "strict")
    start_service(process, f"{settings.host}:{settings.pod_port}")
    try:
        yield f"{settings.host}:{settings.pod_port}"
    finally:
        process.stop(grace=10.0)


async def test_reject_policy_refuses_a_doubtful_photo_and_stores_nothing(
    env: Env, strict_pod: str
) -> None:
    order = await env.order()
    taken = _now()
    photo = photo_jpeg(taken.replace(microsecond=0), FAR.lat, FAR.lng)
    key = await env.upload(order, PHOTO, photo)
    async with grpc.aio.insecure_channel(strict_pod) as channel:
        strict = pod_service_pb2_grpc.ProofOfDeliveryServiceStub(channel)
        request = _photo_request(key, photo, taken, FAR)
        request.order_id = order.order_id
        call = strict.ConfirmProof(
            request,
            metadata=env.driver(order.driver_id),
            timeout=TIMEOUT_S,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "address_distance" in (caught.value.details() or "")
        # Its forms are expired on arrival: the store refuses the upload.
        form = await strict.CreateUploadUrl(
            pod_service_pb2.CreateUploadUrlRequest(
                order_id=order.order_id,
                kind=PHOTO,
                content_type="image/jpeg",
                content_length=len(photo),
            ),
            metadata=env.driver(order.driver_id),
            timeout=TIMEOUT_S,
        )
    status, body = await asyncio.to_thread(
        post_form, form.upload_url, dict(form.form_fields), photo, "image/jpeg"
    )
    assert status == 403 and b"Policy expired" in body
    expired = env.confirm(order, _photo_request(form.object_key, photo, taken))
    assert await _code(expired) == grpc.StatusCode.FAILED_PRECONDITION
    assert await env.stored(order) == (0, 0, common_pb2.ORDER_STATUS_PICKED_UP)


async def test_bad_uploads_are_refused_by_the_service_or_the_store(env: Env) -> None:
    order = await env.order()
    photo = photo_jpeg(_now().replace(microsecond=0), DOOR.lat, DOOR.lng)
    ask = pod_service_pb2.CreateUploadUrlRequest
    me = env.driver(order.driver_id)
    max_bytes = env.platform.settings.pod_upload_max_bytes
    refused = {
        "pdf": (
            ask(
                order_id=order.order_id,
                kind=PHOTO,
                content_type="application/pdf",
                content_length=9,
            ),
            me,
        ),
        "oversize": (
            ask(
                order_id=order.order_id,
                kind=PHOTO,
                content_type="image/jpeg",
                content_length=max_bytes + 1,
            ),
            me,
        ),
        "empty": (
            ask(order_id=order.order_id, kind=PHOTO, content_type="image/jpeg", content_length=0),
            me,
        ),
        "qr": (
            ask(order_id=order.order_id, kind=QR, content_type="image/jpeg", content_length=9),
            me,
        ),
        "not mine": (
            ask(order_id=order.order_id, kind=PHOTO, content_type="image/jpeg", content_length=9),
            env.driver("someone"),
        ),
        "unknown": (
            ask(order_id="ord_nope", kind=PHOTO, content_type="image/jpeg", content_length=9),
            me,
        ),
    }
    codes = {
        name: await _code(env.pod.CreateUploadUrl(req, metadata=md, timeout=TIMEOUT_S))
        for name, (req, md) in refused.items()
    }
    invalid, denied = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED
    assert codes == {
        "pdf": invalid,
        "oversize": invalid,
        "empty": invalid,
        "qr": invalid,
        "not mine": denied,
        "unknown": denied,
    }
    form = await env.pod.CreateUploadUrl(
        ask(
            order_id=order.order_id,
            kind=PHOTO,
            content_type="image/jpeg",
            content_length=len(photo),
        ),
        metadata=me,
        timeout=TIMEOUT_S,
    )
    fields = dict(form.form_fields)
    attempts = {
        "tampered signature": ({**fields, "x-amz-signature": "0" * 64}, photo, "image/jpeg"),
        "other content type": ({**fields, "Content-Type": "image/png"}, photo, "image/png"),
        "more than declared": (fields, photo + b"\0" * 10, "image/jpeg"),
    }
    for name, (form_fields, data, file_type) in attempts.items():
        status, _ = await asyncio.to_thread(
            post_form, form.upload_url, form_fields, data, file_type
        )
        assert status in (400, 403), name
    # Nothing reached the bucket: confirming says so.
    before_upload = env.confirm(order, _photo_request(form.object_key, photo, _now()))
    assert await _code(before_upload) == grpc.StatusCode.FAILED_PRECONDITION
    assert await env.stored(order) == (0, 0, common_pb2.ORDER_STATUS_PICKED_UP)


async def test_bad_confirmations_store_nothing(env: Env) -> None:
    order, other = await env.order(), await env.order()
    taken = _now()
    photo = photo_jpeg(taken.replace(microsecond=0), DOOR.lat, DOOR.lng)
    key = await env.upload(order, PHOTO, photo)
    other_key = await env.upload(other, PHOTO, photo)
    text = b"this is not a photo at all"
    text_key = await env.upload(order, PHOTO, text)
    good = _photo_request(key, photo, taken)
    cases: dict[str, tuple[Request, str, grpc.StatusCode]] = {
        "hash mismatch": (
            _photo_request(key, photo + b"x", taken),
            "",
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        "non-image bytes": (
            _photo_request(text_key, text, taken),
            "",
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        "another order's key": (
            _photo_request(other_key, photo, taken),
            "",
            grpc.StatusCode.PERMISSION_DENIED,
        ),
        "forged key": (
            _photo_request(key.replace("/1/", "/2/"), photo, taken),
            "",
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        "not this driver": (good, "someone-else", grpc.StatusCode.PERMISSION_DENIED),
        "no position": (
            Request(
                kind=PHOTO, object_key=key, sha256=sha256_hex(photo), captured_at=timestamp(taken)
            ),
            "",
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    }
    for name, (request, driver, expected) in cases.items():
        assert await _code(env.confirm(order, request, driver)) == expected, name
    assert await env.stored(order) == (0, 0, common_pb2.ORDER_STATUS_PICKED_UP)

    not_picked_up = await env.order(common_pb2.ORDER_STATUS_ASSIGNED)
    too_early = env.pod.CreateUploadUrl(
        pod_service_pb2.CreateUploadUrlRequest(
            order_id=not_picked_up.order_id, kind=PHOTO, content_type="image/jpeg", content_length=9
        ),
        metadata=env.driver(not_picked_up.driver_id),
        timeout=TIMEOUT_S,
    )
    assert await _code(too_early) == grpc.StatusCode.FAILED_PRECONDITION
    qr = Request(
        kind=QR,
        qr_code=not_picked_up.delivery_code,
        captured_at=timestamp(taken),
        position=common_pb2.LatLng(lat=DOOR.lat, lng=DOOR.lng),
    )
    assert await _code(env.confirm(not_picked_up, qr)) == grpc.StatusCode.FAILED_PRECONDITION
    assert await env.stored(not_picked_up) == (0, 0, common_pb2.ORDER_STATUS_ASSIGNED)
    # The good request still works after all that.
    assert (await env.confirm(order, good)).proof.sha256 == sha256_hex(photo)
