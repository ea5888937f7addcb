"""The checks run on a proof, and the policy that turns them into a verdict (pure: no I/O).

Hard checks (object present, hash, image bytes, signer name, delivery code) are refused by the
caller with a status before anything is stored. Doubtful checks (:data:`DOUBTFUL`) are
recorded on the proof; the configured policy says, per check, whether a failure rejects the
proof or accepts it flagged for a dispatcher's review.
"""

from __future__ import annotations

import datetime as dt
import enum
import io
from dataclasses import dataclass

import piexif
from PIL import Image

from core.geo import LatLng, haversine_m
from core.settings import Settings

#: Content types a proof object may have, and the file extension its key gets.
IMAGE_TYPES: dict[str, str] = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
#: Checks whose failure makes a proof doubtful rather than invalid.
DOUBTFUL = ("exif_present", "exif_time", "exif_gps", "address_distance", "capture_time")
# A JPEG is decoded at 1/8 scale to prove its data is intact: the DCT scaling makes that a
# fraction of a full decode, which keeps a 5 MB photo well inside the confirmation budget.
_JPEG_DRAFT_SCALE = 8


class Action(enum.StrEnum):
    """What a failed doubtful check does to a proof."""

    REJECT = "reject"
    FLAG = "flag"


class NotAnImage(ValueError):
    """The object's bytes are not an intact image of its declared content type."""


@dataclass(frozen=True, slots=True)
class Check:
    """One check's outcome, as recorded on the proof."""

    name: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Limits:
    """Thresholds of the doubtful checks (from settings)."""

    max_address_distance_m: float
    max_position_gap_m: float
    max_clock_skew_s: float
    max_capture_age_s: float

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        """The limits configured in ``settings``."""
        return cls(
            settings.pod_max_address_distance_m,
            settings.pod_max_position_gap_m,
            settings.pod_max_clock_skew_s,
            settings.pod_max_capture_age_s,
        )


@dataclass(frozen=True, slots=True)
class Exif:
    """What a photo's EXIF says about when and where it was taken."""

    taken_at: dt.datetime | None
    position: LatLng | None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The policy's decision: rejected (with reasons) or accepted, maybe flagged."""

    rejected: bool
    flagged: bool
    reasons: tuple[str, ...]


def parse_policies(text: str) -> dict[str, Action]:
    """``name=action,...`` into a policy per doubtful check; unnamed checks are flagged.

    Raises ValueError for unknown check names or actions, so bad configuration fails at
    start-up rather than on the first doubtful proof.
    """
    policies = dict.fromkeys(DOUBTFUL, Action.FLAG)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, action = item.partition("=")
        name, action = name.strip(), action.strip().lower()
        if not sep or name not in DOUBTFUL:
            raise ValueError(f"pod policy {item!r}: check must be one of {', '.join(DOUBTFUL)}")
        try:
            policies[name] = Action(action)
        except ValueError as exc:
            raise ValueError(f"pod policy {item!r}: action must be reject or flag") from exc
    return policies


def decide(checks: list[Check], policies: dict[str, Action]) -> Verdict:
    """Reject when a failed check's policy says so, flag when any other doubtful one failed."""
    failed = [c for c in checks if not c.passed and c.name in policies]
    reasons = tuple(f"{c.name}: {c.detail}" for c in failed)
    rejected = any(policies[c.name] is Action.REJECT for c in failed)
    return Verdict(rejected=rejected, flagged=bool(failed) and not rejected, reasons=reasons)


# --- image bytes -------------------------------------------------------------------------


def sniff_image_type(data: bytes) -> str | None:
    """The content type the magic bytes announce (JPEG, PNG, WebP), None for anything else."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def load_image(data: bytes, content_type: str) -> Image.Image:
    """The decoded image; NotAnImage unless the bytes are an intact image of ``content_type``."""
    sniffed = sniff_image_type(data)
    if sniffed is None:
        raise NotAnImage("object is not a JPEG, PNG or WebP image")
    if sniffed != content_type:
        raise NotAnImage(f"object bytes are {sniffed} but were uploaded as {content_type}")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()  # structure and checksums (PNG CRCs); a JPEG needs the decode below
        image = Image.open(io.BytesIO(data))
        if image.format == "JPEG":
            size = (
                max(1, image.width // _JPEG_DRAFT_SCALE),
                max(1, image.height // _JPEG_DRAFT_SCALE),
            )
            image.draft("RGB", size)
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise NotAnImage(f"object is not an intact {content_type} image: {exc}") from exc
    return image


# --- EXIF --------------------------------------------------------------------------------


def read_exif(image: Image.Image) -> Exif | None:
    """When and where the photo was taken per its EXIF; None when it has no readable EXIF."""
    raw = image.info.get("exif")
    # piexif treats bytes it does not recognise as a file name: only hand it EXIF blocks.
    if not isinstance(raw, bytes) or not raw.startswith((b"Exif", b"II", b"MM")):
        return None
    try:
        tags = piexif.load(raw)
    except Exception:  # piexif raises struct.error, ValueError, KeyError... on damaged blocks
        return None
    exif_ifd, gps_ifd = tags.get("Exif") or {}, tags.get("GPS") or {}
    if not exif_ifd and not gps_ifd:
        return None
    return Exif(taken_at=_exif_time(exif_ifd), position=_exif_position(gps_ifd))


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip("\x00 ")
    return str(value).strip() if value is not None else ""


def _exif_time(tags: dict[int, object]) -> dt.datetime | None:
    """DateTimeOriginal (+ SubSecTimeOriginal, OffsetTimeOriginal). Without an offset the
    time is taken as UTC: driver apps must write UTC or the offset."""
    stamp = _text(tags.get(piexif.ExifIFD.DateTimeOriginal))
    try:
        taken = dt.datetime.strptime(stamp, "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    subsec = _text(tags.get(piexif.ExifIFD.SubSecTimeOriginal))
    if subsec.isdigit():
        taken += dt.timedelta(seconds=float("0." + subsec))
    offset = _text(tags.get(piexif.ExifIFD.OffsetTimeOriginal))
    tz = dt.UTC
    if len(offset) == 6 and offset[0] in "+-" and offset[3] == ":":
        try:
            delta = dt.timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
            tz = dt.timezone(-delta if offset[0] == "-" else delta)
        except ValueError:
            return None
    return taken.replace(tzinfo=tz).astimezone(dt.UTC)


def _degrees(value: object) -> float | None:
    """Degrees of an EXIF (deg, min, sec) triple of rationals."""
    if not isinstance(value, tuple) or len(value) != 3:
        return None
    parts: list[float] = []
    for rational in value:
        if not (isinstance(rational, tuple) and len(rational) == 2 and rational[1]):
            return None
        parts.append(float(rational[0]) / float(rational[1]))
    return parts[0] + parts[1] / 60 + parts[2] / 3600


def _exif_position(tags: dict[int, object]) -> LatLng | None:
    lat = _degrees(tags.get(piexif.GPSIFD.GPSLatitude))
    lng = _degrees(tags.get(piexif.GPSIFD.GPSLongitude))
    if lat is None or lng is None:
        return None
    if _text(tags.get(piexif.GPSIFD.GPSLatitudeRef)).upper() == "S":
        lat = -lat
    if _text(tags.get(piexif.GPSIFD.GPSLongitudeRef)).upper() == "W":
        lng = -lng
    if not (-90 <= lat <= 90 and -180 <= lng <= 180):
        return None
    return LatLng(lat=lat, lng=lng)


# --- the checks --------------------------------------------------------------------------


def photo_checks(
    exif: Exif | None, captured_at: dt.datetime, position: LatLng, limits: Limits
) -> list[Check]:
    """EXIF present, EXIF time near the submitted capture time, EXIF GPS near the submitted
    position. Without EXIF only ``exif_present`` is recorded (one missing block, one reason)."""
    if exif is None:
        return [Check("exif_present", False, "photo carries no EXIF block")]
    checks = [Check("exif_present", True)]
    if exif.taken_at is None:
        checks.append(Check("exif_time", False, "no DateTimeOriginal in EXIF"))
    else:
        skew = abs((exif.taken_at - captured_at).total_seconds())
        ok = skew <= limits.max_clock_skew_s
        checks.append(Check("exif_time", ok, f"EXIF time {skew:.0f} s from captured_at"))
    if exif.position is None:
        checks.append(Check("exif_gps", False, "no GPS position in EXIF"))
    else:
        gap = haversine_m(exif.position, position)
        ok = gap <= limits.max_position_gap_m
        checks.append(Check("exif_gps", ok, f"EXIF GPS {gap:.0f} m from submitted position"))
    return checks


def address_check(positions: list[LatLng], drop_off: LatLng, limits: Limits) -> Check:
    """Every known position of the proof (submitted, EXIF) within the limit of the drop-off."""
    farthest = max(haversine_m(p, drop_off) for p in positions)
    ok = farthest <= limits.max_address_distance_m
    return Check(
        "address_distance",
        ok,
        f"{farthest:.0f} m from the drop-off (limit {limits.max_address_distance_m:.0f} m)",
    )


def capture_time_check(captured_at: dt.datetime, now: dt.datetime, limits: Limits) -> Check:
    """The capture time is neither in the future (beyond the skew) nor too old."""
    ahead = (captured_at - now).total_seconds()
    if ahead > limits.max_clock_skew_s:
        return Check("capture_time", False, f"captured_at is {ahead:.0f} s in the future")
    if -ahead > limits.max_capture_age_s:
        return Check("capture_time", False, f"captured_at is {-ahead:.0f} s old")
    return Check("capture_time", True)
