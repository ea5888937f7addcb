"""Real proof images made in the tests: JPEG photos with EXIF written in (Pillow + piexif),
PNG signatures, and photo-sized noise for the benchmark."""

from __future__ import annotations

import datetime as dt
import io
import random
from fractions import Fraction

import piexif
from PIL import Image, ImageDraw


def _rational(value: float) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(deg, min, sec) rationals of a non-negative angle, seconds to 1/1000."""
    degrees = int(value)
    minutes_f = (value - degrees) * 60
    minutes = int(minutes_f)
    seconds = Fraction(round((minutes_f - minutes) * 60 * 1000), 1000)
    return (degrees, 1), (minutes, 1), (seconds.numerator, seconds.denominator)


def exif_bytes(
    taken_at: dt.datetime | None = None,
    lat: float | None = None,
    lng: float | None = None,
    offset: str = "+00:00",
) -> bytes:
    """An EXIF block: DateTimeOriginal (+ offset) and GPS when given."""
    exif: dict[int, object] = {}
    gps: dict[int, object] = {}
    if taken_at is not None:
        local = taken_at.astimezone(dt.timezone(_offset(offset)))
        exif[piexif.ExifIFD.DateTimeOriginal] = local.strftime("%Y:%m:%d %H:%M:%S").encode()
        exif[piexif.ExifIFD.OffsetTimeOriginal] = offset.encode()
    if lat is not None and lng is not None:
        gps[piexif.GPSIFD.GPSLatitudeRef] = b"N" if lat >= 0 else b"S"
        gps[piexif.GPSIFD.GPSLatitude] = _rational(abs(lat))
        gps[piexif.GPSIFD.GPSLongitudeRef] = b"E" if lng >= 0 else b"W"
        gps[piexif.GPSIFD.GPSLongitude] = _rational(abs(lng))
    block: bytes = piexif.dump({"0th": {}, "Exif": exif, "GPS": gps, "1st": {}})
    return block


def _offset(text: str) -> dt.timedelta:
    sign = -1 if text[0] == "-" else 1
    return sign * dt.timedelta(hours=int(text[1:3]), minutes=int(text[4:6]))


def photo_jpeg(
    taken_at: dt.datetime | None,
    lat: float | None,
    lng: float | None,
    size: tuple[int, int] = (320, 240),
    exif: bool = True,
) -> bytes:
    """A JPEG photo, with EXIF time and GPS unless ``exif`` is False."""
    image = Image.new("RGB", size, (40, 120, 200))
    ImageDraw.Draw(image).rectangle((10, 10, size[0] // 2, size[1] // 2), fill=(220, 200, 30))
    out = io.BytesIO()
    if exif:
        image.save(out, format="JPEG", quality=85, exif=exif_bytes(taken_at, lat, lng))
    else:
        image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def signature_png(name: str = "A. Customer") -> bytes:
    """A PNG of a scribbled signature."""
    image = Image.new("L", (300, 100), 255)
    draw = ImageDraw.Draw(image)
    draw.line([(10, 70), (60, 20), (110, 80), (160, 30), (220, 75), (290, 40)], fill=0, width=3)
    draw.text((10, 85), name, fill=0)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def noise_jpeg(
    target_bytes: int, taken_at: dt.datetime, lat: float, lng: float, seed: int = 7
) -> bytes:
    """A JPEG of random noise of about ``target_bytes`` (noise does not compress), with EXIF:
    a photo-sized upload for the benchmark."""
    side = 256
    while True:
        rng = random.Random(seed)
        image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=95, exif=exif_bytes(taken_at, lat, lng))
        if out.tell() >= target_bytes:
            return out.getvalue()
        side = int(side * max(1.1, (target_bytes / out.tell()) ** 0.5))
