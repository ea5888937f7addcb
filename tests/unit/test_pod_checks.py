"""Proof checks (EXIF, image bytes, distances, times, delivery codes), the doubtful-proof
policy and the tamper-evident record hash: pure functions on real images made here."""

from __future__ import annotations

import datetime as dt
import hashlib
import io

import pytest
from lastmile.common.v1 import common_pb2
from lastmile.pod.v1 import pod_pb2
from PIL import Image

from core.auth import delivery_code_digest, delivery_code_matches
from core.geo import LatLng
from pod import checks as chk
from pod.records import canonical_metadata, record_hash, timestamp, verify_record
from tests.pod_images import exif_bytes, photo_jpeg, signature_png

T0 = dt.datetime(2025, 3, 14, 9, 26, 53, tzinfo=dt.UTC)
DOOR = LatLng(lat=35.8989, lng=14.5146)  # Valletta
LIMITS = chk.Limits(
    max_address_distance_m=200.0,
    max_position_gap_m=200.0,
    max_clock_skew_s=300.0,
    max_capture_age_s=6 * 3600.0,
)


def _exif_of(data: bytes, content_type: str = "image/jpeg") -> chk.Exif | None:
    with chk.load_image(data, content_type) as image:
        return chk.read_exif(image)


def test_exif_time_and_gps_are_read_back_from_a_real_jpeg() -> None:
    exif = _exif_of(photo_jpeg(T0, DOOR.lat, DOOR.lng))
    assert exif is not None and exif.taken_at == T0
    assert exif.position is not None
    assert exif.position.lat == pytest.approx(DOOR.lat, abs=1e-6)
    assert exif.position.lng == pytest.approx(DOOR.lng, abs=1e-6)


def test_exif_offset_and_southern_western_hemispheres() -> None:
    block = exif_bytes(T0, -33.8568, -70.6483, offset="-04:00")
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="JPEG", exif=block)
    exif = _exif_of(out.getvalue())
    assert exif is not None and exif.taken_at == T0  # local time + offset = the same instant
    assert exif.position is not None
    assert (exif.position.lat, exif.position.lng) == pytest.approx((-33.8568, -70.6483), abs=1e-6)


def test_a_photo_without_exif_reads_as_none_and_is_doubtful() -> None:
    assert _exif_of(photo_jpeg(None, None, None, exif=False)) is None
    checks = chk.photo_checks(None, T0, DOOR, LIMITS)
    assert [(c.name, c.passed) for c in checks] == [("exif_present", False)]


def test_photo_checks_pass_near_and_fail_far_or_skewed() -> None:
    near = chk.Exif(taken_at=T0 + dt.timedelta(seconds=30), position=DOOR)
    assert all(c.passed for c in chk.photo_checks(near, T0, DOOR, LIMITS))
    far = chk.Exif(taken_at=T0 + dt.timedelta(hours=2), position=LatLng(lat=35.9100, lng=14.5146))
    failed = {c.name for c in chk.photo_checks(far, T0, DOOR, LIMITS) if not c.passed}
    assert failed == {"exif_time", "exif_gps"}
    partial = chk.Exif(taken_at=None, position=None)
    failed = {c.name for c in chk.photo_checks(partial, T0, DOOR, LIMITS) if not c.passed}
    assert failed == {"exif_time", "exif_gps"}


def test_address_check_uses_the_farthest_known_position() -> None:
    assert chk.address_check([DOOR], DOOR, LIMITS).passed
    about_150_m = LatLng(lat=DOOR.lat + 0.00135, lng=DOOR.lng)
    assert chk.address_check([DOOR, about_150_m], DOOR, LIMITS).passed
    about_300_m = LatLng(lat=DOOR.lat + 0.0027, lng=DOOR.lng)
    check = chk.address_check([DOOR, about_300_m], DOOR, LIMITS)
    assert not check.passed and "300 m" in check.detail


def test_capture_time_refuses_the_future_and_the_stale() -> None:
    assert chk.capture_time_check(T0 - dt.timedelta(minutes=5), T0, LIMITS).passed
    assert not chk.capture_time_check(T0 + dt.timedelta(minutes=10), T0, LIMITS).passed
    assert not chk.capture_time_check(T0 - dt.timedelta(hours=7), T0, LIMITS).passed


def test_images_are_checked_by_magic_bytes_and_decoding() -> None:
    jpeg, png = photo_jpeg(T0, DOOR.lat, DOOR.lng), signature_png()
    assert chk.sniff_image_type(jpeg) == "image/jpeg"
    assert chk.sniff_image_type(png) == "image/png"
    assert chk.sniff_image_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert chk.sniff_image_type(b"%PDF-1.7") is None
    chk.load_image(jpeg, "image/jpeg").close()
    chk.load_image(png, "image/png").close()
    with pytest.raises(chk.NotAnImage, match="not a JPEG, PNG or WebP"):
        chk.load_image(b"hello, this is text", "image/jpeg")
    with pytest.raises(chk.NotAnImage, match="uploaded as image/jpeg"):
        chk.load_image(png, "image/jpeg")
    with pytest.raises(chk.NotAnImage, match="not an intact"):
        chk.load_image(jpeg[: len(jpeg) // 2], "image/jpeg")
    broken_png = png[:40] + bytes(b ^ 0xFF for b in png[40:60]) + png[60:]
    with pytest.raises(chk.NotAnImage):
        chk.load_image(broken_png, "image/png")


def test_policies_parse_and_decide() -> None:
    policies = chk.parse_policies("exif_gps=reject, address_distance=flag")
    assert policies["exif_gps"] is chk.Action.REJECT
    assert policies["exif_present"] is chk.Action.FLAG  # unnamed checks flag
    for bad in ("nonsense=flag", "exif_gps=maybe", "exif_gps"):
        with pytest.raises(ValueError, match="pod policy"):
            chk.parse_policies(bad)
    ok = [chk.Check("sha256", True), chk.Check("exif_time", True)]
    assert chk.decide(ok, policies) == chk.Verdict(False, False, ())
    skewed = [*ok[:1], chk.Check("exif_time", False, "EXIF time 900 s from captured_at")]
    verdict = chk.decide(skewed, policies)
    assert (verdict.rejected, verdict.flagged) == (False, True)
    assert verdict.reasons == ("exif_time: EXIF time 900 s from captured_at",)
    far = [chk.Check("exif_gps", False, "EXIF GPS 900 m away"), *skewed]
    assert chk.decide(far, policies).rejected


def test_delivery_code_is_compared_as_an_hmac_bound_to_the_order() -> None:
    digest = delivery_code_digest("secret", "ord_1", "123456")
    assert delivery_code_matches("secret", "ord_1", "123456", digest)
    assert not delivery_code_matches("secret", "ord_1", "123457", digest)
    assert not delivery_code_matches("secret", "ord_2", "123456", digest)
    assert not delivery_code_matches("other", "ord_1", "123456", digest)
    assert not delivery_code_matches("secret", "ord_1", "", digest)


def _proof(data: bytes) -> pod_pb2.Proof:
    proof = pod_pb2.Proof(
        proof_id="prf_1",
        order_id="ord_1",
        driver_id="drv_1",
        kind=pod_pb2.PROOF_KIND_PHOTO,
        object_key="proofs/ord_1/1/photo-0123456789abcdef.jpg",
        sha256=hashlib.sha256(data).hexdigest(),
        captured_at=timestamp(T0),
        position=common_pb2.LatLng(lat=DOOR.lat, lng=DOOR.lng),
        checks=[pod_pb2.ProofCheck(name="exif_gps", passed=False, detail="900 m")],
        flagged=True,
        confirmed_at=timestamp(T0 + dt.timedelta(microseconds=250)),
        attempt=1,
    )
    proof.record_hash = record_hash(proof, data)
    return proof


def test_record_hash_has_the_documented_canonical_form_and_detects_tampering() -> None:
    data = photo_jpeg(T0, DOOR.lat, DOOR.lng)
    proof = _proof(data)
    canonical = canonical_metadata(proof)
    assert canonical.startswith(b'{"attempt":1,"captured_at":"2025-03-14T09:26:53.000000Z",')
    assert b'"lat":"35.8989000","lng":"14.5146000"' in canonical
    assert b'"confirmed_at":"2025-03-14T09:26:53.000250Z"' in canonical
    expected = hashlib.sha256(canonical + b"\n" + data).hexdigest()
    assert proof.record_hash == expected
    assert verify_record(proof, data)
    assert not verify_record(proof, data[:-1] + b"\x00")  # other bytes
    tampered = pod_pb2.Proof()
    tampered.CopyFrom(proof)
    tampered.flagged = False  # hiding the review flag breaks the record
    assert not verify_record(tampered, data)
