"""Hypothesis strategies that build a random protobuf message for any descriptor.

Every field is either left unset or given a value of its type, mixing the hostile (empty,
huge, control characters, SQL-ish text, NaN and infinities, extremes of the integer type,
unknown enum numbers, timestamps outside the representable range) with the plausible (ids
that exist, coordinates in the test city, times around now), so that random requests get
past the first check of a handler as well as fail it. Nesting is bounded in depth; a oneof
gets at most one member; repeated fields are empty, short, or long.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

MAX_DEPTH = 3
HUGE_CHARS = 100_000
LONG_SCALAR_LIST = 2_000
LONG_MESSAGE_LIST = 300
# A long list of huge elements would be gigabytes: long lists stop at this many bytes.
LONG_LIST_BYTES = 2_000_000

TIMESTAMP = "google.protobuf.Timestamp"
DURATION = "google.protobuf.Duration"
# Seconds of 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the range Timestamp allows.
MIN_TIMESTAMP_S = -62_135_596_800
MAX_TIMESTAMP_S = 253_402_300_799
# +/- 10,000 years: the range Duration allows.
MAX_DURATION_S = 315_576_000_000

SQLISH = (
    "' OR '1'='1",
    "'; DROP TABLE orders; --",
    "%",
    "_%_",
    "\\",
    "$1",
    "NULL",
    "null",
    "../../../etc/passwd",
    "{{7*7}}",
    "<script>alert(1)</script>",
    "\x00",
    " ",
    "0",
    "-1",
    "9" * 40,
    "1e999",
    "NaN",
    "true",
    "😀" * 10,
    "\u202e\u200b\ufeff",
)

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_SPECIAL_DOUBLES = (
    math.nan,
    math.inf,
    -math.inf,
    0.0,
    -0.0,
    1e308,
    -1e308,
    5e-324,
    90.000001,
    -90.5,
    180.5,
    -181.0,
    1e9,
    -1.0,
)
# A box around the test city (Malta), so that some coordinates are real places.
_CITY_LAT = (35.80, 36.08)
_CITY_LNG = (14.18, 14.58)


@dataclass(frozen=True)
class Pools:
    """Values that exist on the platform under test (ids, tokens), mixed into strings so that
    random requests sometimes name real resources."""

    known: tuple[str, ...] = ()


def message_class(descriptor: Descriptor) -> type[Message]:
    """The generated class of ``descriptor``."""
    return message_factory.GetMessageClass(descriptor)


class MessageStrategies:
    """Builds (and caches) a strategy of random messages per descriptor and depth."""

    def __init__(self, pools: Pools) -> None:
        self._pools = pools
        self._cache: dict[tuple[str, int], st.SearchStrategy[Message]] = {}
        self._strings = _strings(pools)

    def of(self, descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
        """Random messages of ``descriptor``; nested messages stop at ``MAX_DEPTH``."""
        key = (descriptor.full_name, depth)
        if key not in self._cache:
            self._cache[key] = self._build(descriptor, depth)
        return self._cache[key]

    def _build(self, descriptor: Descriptor, depth: int) -> st.SearchStrategy[Message]:
        if descriptor.full_name == TIMESTAMP:
            return _timestamps(descriptor)
        if descriptor.full_name == DURATION:
            return _durations(descriptor)
        plain = [
            f for f in descriptor.fields if f.containing_oneof is None and self._allowed(f, depth)
        ]
        oneofs = [
            [f for f in oneof.fields if self._allowed(f, depth)] for oneof in descriptor.oneofs
        ]
        optional = {f.name: self._field(f, depth) for f in plain}
        choices = [
            st.one_of(
                st.none(), *(st.tuples(st.just(f.name), self._field(f, depth)) for f in members)
            )
            for members in oneofs
            if members
        ]
        return st.builds(
            _assemble,
            st.just(descriptor),
            st.fixed_dictionaries({}, optional=optional),
            st.tuples(*choices),
        )

    def _allowed(self, field: FieldDescriptor, depth: int) -> bool:
        # Deeper than MAX_DEPTH only leaves (and timestamps/durations) are filled.
        if field.type != FieldDescriptor.TYPE_MESSAGE or depth < MAX_DEPTH:
            return True
        return _nested(field).full_name in (TIMESTAMP, DURATION)

    def _field(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        if _is_map(field):
            key_field = _nested(field).fields_by_name["key"]
            value_field = _nested(field).fields_by_name["value"]
            return st.dictionaries(
                self._single(key_field, depth), self._single(value_field, depth), max_size=5
            )
        one = self._single(field, depth)
        if not field.is_repeated:
            return one
        long_size = (
            LONG_MESSAGE_LIST if field.type == FieldDescriptor.TYPE_MESSAGE else LONG_SCALAR_LIST
        )
        return st.one_of(
            st.just([]),
            st.lists(one, min_size=1, max_size=4),
            # Many copies of one element: a long list without drawing each element.
            st.builds(_repeat, one, st.integers(20, long_size)),
        )

    def _single(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        kind = field.type
        if kind == FieldDescriptor.TYPE_MESSAGE:
            return self.of(_nested(field), depth + 1)
        if kind == FieldDescriptor.TYPE_STRING:
            return self._strings
        if kind == FieldDescriptor.TYPE_BYTES:
            return _bytes()
        if kind == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if kind == FieldDescriptor.TYPE_ENUM:
            return _enums(field)
        if kind == FieldDescriptor.TYPE_DOUBLE:
            return _doubles(field.name, 64)
        if kind == FieldDescriptor.TYPE_FLOAT:
            return _doubles(field.name, 32)
        low, high = _INT_RANGES[kind]
        return _ints(low, high)


def _nested(field: FieldDescriptor) -> Descriptor:
    """The message type of a message field."""
    assert field.message_type is not None, field.full_name
    return field.message_type


def _is_map(field: FieldDescriptor) -> bool:
    return (
        field.type == FieldDescriptor.TYPE_MESSAGE
        and field.is_repeated
        and bool(_nested(field).GetOptions().map_entry)
    )


def _repeat(item: Any, count: int) -> list[Any]:
    if isinstance(item, Message):
        size = item.ByteSize()
    elif isinstance(item, str | bytes):
        size = len(item)
    else:
        size = 8
    return [item] * max(1, min(count, LONG_LIST_BYTES // max(size, 1)))


def _assemble(
    descriptor: Descriptor, values: dict[str, Any], oneofs: Sequence[tuple[str, Any] | None]
) -> Message:
    message = message_class(descriptor)()
    for name, value in [*values.items(), *(c for c in oneofs if c is not None)]:
        _assign(message, descriptor.fields_by_name[name], value)
    return message


def _assign(message: Message, field: FieldDescriptor, value: Any) -> None:
    target = getattr(message, field.name)
    if _is_map(field):
        value_field = _nested(field).fields_by_name["value"]
        for key, item in value.items():
            if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif field.is_repeated:
        target.extend(value)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        target.CopyFrom(value)
    else:
        setattr(message, field.name, value)


def _huge_text(seed: str, length: int) -> str:
    return (seed * (length // len(seed) + 1))[:length]


def _strings(pools: Pools) -> st.SearchStrategy[str]:
    parts: list[st.SearchStrategy[str]] = [
        st.just(""),
        st.uuids().map(str),
        st.text(max_size=40),
        st.sampled_from(SQLISH),
        st.text(st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp", "So"]), max_size=20),
        st.builds(_huge_text, st.text(min_size=1, max_size=3), st.integers(1_000, HUGE_CHARS)),
    ]
    if pools.known:
        parts.insert(1, st.sampled_from(pools.known))
    return st.one_of(parts)


def _bytes() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.just(b""),
        st.binary(max_size=64),
        st.builds(
            lambda b, n: b * n, st.binary(min_size=1, max_size=2), st.integers(1_000, 50_000)
        ),
    )


def _ints(low: int, high: int) -> st.SearchStrategy[int]:
    edges = sorted(
        {v for v in (0, 1, -1, low, high, low + 1, high - 1, 2**31, 2**53) if low <= v <= high}
    )
    return st.one_of(
        st.sampled_from(edges), st.integers(max(low, -10), min(high, 1_000)), st.integers(low, high)
    )


def _doubles(name: str, width: int) -> st.SearchStrategy[float]:
    plausible: st.SearchStrategy[float] = st.floats(0.0, 1_000.0, width=width)  # type: ignore[arg-type]
    if name in ("lat", "latitude"):
        plausible = st.floats(*_CITY_LAT, width=width)  # type: ignore[arg-type]
    elif name in ("lng", "lon", "longitude"):
        plausible = st.floats(*_CITY_LNG, width=width)  # type: ignore[arg-type]
    specials = [v for v in _SPECIAL_DOUBLES if width == 64 or abs(v) < 3e38 or math.isnan(v)]
    return st.one_of(
        st.sampled_from(specials),
        plausible,
        st.floats(width=width),  # type: ignore[arg-type]
    )


def _enums(field: FieldDescriptor) -> st.SearchStrategy[int]:
    assert field.enum_type is not None, field.full_name
    known = [v.number for v in field.enum_type.values]
    unknown = [max(known) + 1, -1, 99, 2**31 - 1, -(2**31)]
    return st.one_of(
        st.sampled_from(known), st.sampled_from(unknown), st.integers(-(2**31), 2**31 - 1)
    )


def _time_parts(
    seconds: st.SearchStrategy[int], build: Callable[[int, int], Message]
) -> st.SearchStrategy[Message]:
    nanos = st.one_of(
        st.sampled_from([0, -1, 999_999_999, 1_000_000_000, 2**31 - 1, -(2**31)]),
        st.integers(0, 999_999_999),
    )
    return st.builds(build, seconds, nanos)


def _timestamps(descriptor: Descriptor) -> st.SearchStrategy[Message]:
    cls = message_class(descriptor)
    now = int(time.time())
    seconds = st.one_of(
        st.sampled_from(
            [0, -1, MIN_TIMESTAMP_S - 1, MIN_TIMESTAMP_S, MAX_TIMESTAMP_S, MAX_TIMESTAMP_S + 1]
        ),
        st.sampled_from([2**63 - 1, -(2**63)]),
        st.integers(now - 600, now + 60),
        st.integers(now - 10**9, now + 10**9),
    )
    return _time_parts(seconds, lambda s, n: cls(seconds=s, nanos=n))


def _durations(descriptor: Descriptor) -> st.SearchStrategy[Message]:
    cls = message_class(descriptor)
    seconds = st.one_of(
        st.sampled_from([0, -1, -(10**9), MAX_DURATION_S, MAX_DURATION_S + 1, 2**63 - 1, -(2**63)]),
        st.integers(0, 3_600),
        st.integers(-86_400 * 365, 86_400 * 365),
    )
    return _time_parts(seconds, lambda s, n: cls(seconds=s, nanos=n))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def unknown_fields() -> st.SearchStrategy[bytes]:
    """Wire bytes of fields no message of the contracts defines (numbers from 5,000), which a
    server must skip: appended to a serialized request."""

    def encode(number: int, value: int | bytes) -> bytes:
        if isinstance(value, int):
            return _varint(number << 3) + _varint(value)
        return _varint(number << 3 | 2) + _varint(len(value)) + value

    field = st.builds(
        encode,
        st.integers(5_000, 2**29 - 1),
        st.one_of(st.integers(0, 2**64 - 1), st.binary(max_size=32)),
    )
    return st.one_of(st.just(b""), st.lists(field, min_size=1, max_size=3).map(b"".join))
