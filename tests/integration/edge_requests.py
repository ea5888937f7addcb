"""Requests of the bad-input suite's deterministic sweep: each numeric, enum or string field
of a request at the ends of its type's range, non-finite, an enum number no enum defines, or
text empty, over-long or with a NUL, one field at a time. The rest of the request is either empty or *plausible* (ids that exist,
coordinates in the test city, times ahead, small positive numbers): an empty request reaches
only handlers without other required fields, a plausible one gets the value past the checks
of its neighbours."""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from core.geo import LatLng
from tests.integration.fuzz_messages import DURATION, TIMESTAMP, message_class

# How deep the sweep looks into nested messages.
EDGE_DEPTH = 3
_F = FieldDescriptor
_INT32 = (2**31 - 1, -(2**31))
_INT64 = (2**63 - 1, -(2**63))
_FLOATS = (math.nan, math.inf, -math.inf, -1e300)
# Strings: empty, far over any length limit, a NUL inside, direction marks and an emoji.
LONG_TEXT_CHARS = 100_000
EDGE_STRINGS = ("", "x" * LONG_TEXT_CHARS, "a\x00b", "\u202e\ud7ff\U0001f600")
# The values tried per field type: the ends of each integer range, non-finite floats, for
# enums the largest int32, which no enum of the contracts defines, and the strings above.
EDGE_VALUES: dict[int, tuple[float, ...] | tuple[str, ...]] = {
    _F.TYPE_ENUM: (2**31 - 1,),
    _F.TYPE_INT32: _INT32,
    _F.TYPE_SINT32: _INT32,
    _F.TYPE_SFIXED32: _INT32,
    _F.TYPE_UINT32: (2**32 - 1,),
    _F.TYPE_FIXED32: (2**32 - 1,),
    _F.TYPE_INT64: _INT64,
    _F.TYPE_SINT64: _INT64,
    _F.TYPE_SFIXED64: _INT64,
    _F.TYPE_UINT64: (2**64 - 1,),
    _F.TYPE_FIXED64: (2**64 - 1,),
    _F.TYPE_DOUBLE: _FLOATS,
    _F.TYPE_FLOAT: _FLOATS,
    _F.TYPE_STRING: EDGE_STRINGS,
}

# A field path from a request down to one of its numbers or strings.
Path = tuple[FieldDescriptor, ...]
# The request a path's value is set into.
Template = Callable[[Path], Message]


class EdgeRequest(NamedTuple):
    """One request of the sweep: the field set, its value, the whole request."""

    shown: str
    value: float | str
    request: Message


def edge_value_requests(
    descriptor: Descriptor, template: Template | None = None
) -> list[EdgeRequest]:
    """One request per numeric, enum or string field reachable in ``descriptor`` (through
    singular nested messages and the first element of repeated ones) and per
    :data:`EDGE_VALUES` value of its type, that field holding it and the rest as ``template``
    makes it (empty without one)."""
    found: list[EdgeRequest] = []
    for path in _edge_paths(descriptor, (), EDGE_DEPTH):
        for value in EDGE_VALUES[path[-1].type]:
            request = template(path) if template else message_class(descriptor)()
            _set(request, path, value)
            shown = f"{'.'.join(f.name for f in path)} = {_short(value)}"
            found.append(EdgeRequest(shown, value, request))
    return found


# How much of a string value a description shows.
SHOWN_CHARS = 20


def _short(value: float | str) -> str:
    if isinstance(value, str) and len(value) > SHOWN_CHARS:
        return f"{value[:SHOWN_CHARS]!r}... ({len(value)} characters)"
    return repr(value)


def _edge_paths(descriptor: Descriptor, prefix: Path, depth: int) -> list[Path]:
    paths: list[Path] = []
    for f in descriptor.fields:
        if f.type in EDGE_VALUES:
            paths.append((*prefix, f))
            continue
        nested = f.message_type
        # Durations and timestamps included: their seconds are int64s a handler converts.
        if nested is not None and depth > 0 and not nested.GetOptions().map_entry:
            paths += _edge_paths(nested, (*prefix, f), depth - 1)
    return paths


def _set(request: Message, path: Path, value: float | str) -> None:
    target: Any = request
    for nested in path[:-1]:
        field_ = getattr(target, nested.name)
        first = field_[0] if nested.is_repeated and len(field_) else None
        target = first if first is not None else field_.add() if nested.is_repeated else field_
    leaf = path[-1]
    if leaf.is_repeated:
        values = getattr(target, leaf.name)
        del values[:]
        values.append(value)
    else:
        setattr(target, leaf.name, value)


# Strings a handler would refuse when made up, or that are the server's to fill: left unset.
_UNSET_STRINGS = frozenset(
    {
        "after_cursor",
        "page_token",
        "fallback_provider_id",
        "fallback_origin_ids",
        "external_ref",
        "offer_id",
        "object_key",
        "sha256",
        "qr_code",
        "photo_key",
    }
)
_PLAIN_STRINGS = {
    "content_type": "image/jpeg",
    "customer_phone": "+35621234567",
    "phone": "+35621234567",
    "country": "MT",
    "url": "https://example.com/hooks/lastmile",
    "endpoint_url": "https://example.com/dispatch",
    "event_types": "order.status_changed",
}
# Seconds from now of the times a request carries: windows and ranges ahead (their end after
# their start), any other time (a capture, an event) just past.
_TIME_OFFSETS_S = {"start": 3600, "end": 3 * 3600}
_PAST_S = -5
# How far a rectangle's north-east corner lies from its south-west one (about a kilometre).
CORNER_SHIFT_DEG = 0.01
# Durations (preparations, dwells, solver limits): short, so that no call waits on one.
DURATION_S = 1


@dataclass(frozen=True)
class Plausible:
    """Builds requests whose every field holds a value a handler would accept: ids from
    ``ids`` by field name (``order_id`` -> an order that exists) except a message's own id
    (``Driver.driver_id``: a new one, so that upserts create), ``place`` for coordinates,
    windows ahead, and 1 for other numbers. A oneof holds the member a path goes through, else
    its first."""

    ids: Mapping[str, str]
    place: LatLng

    def template(self, descriptor: Descriptor) -> Template:
        """The :data:`Template` of requests of ``descriptor``."""
        return lambda path: self.request(descriptor, path)

    def request(self, descriptor: Descriptor, through: Path = ()) -> Message:
        """A plausible ``descriptor`` message, its oneofs chosen along ``through``."""
        message = message_class(descriptor)()
        self._fill(message, descriptor, through, EDGE_DEPTH)
        return message

    def _fill(self, message: Message, descriptor: Descriptor, through: Path, depth: int) -> None:
        step = through[0] if through else None
        for f in descriptor.fields:
            on_path = step is not None and f.number == step.number
            if not on_path and not self._chosen(f, step):
                continue
            if f.message_type is not None and f.message_type.GetOptions().map_entry:
                continue
            self._fill_field(message, f, through[1:] if on_path else (), depth)

    @staticmethod
    def _chosen(f: FieldDescriptor, step: FieldDescriptor | None) -> bool:
        oneof = f.containing_oneof
        if oneof is None or len(oneof.fields) == 1:  # proto3 optional: a oneof of one
            return True
        chosen = step.containing_oneof if step is not None else None
        if chosen is not None and chosen.full_name == oneof.full_name:
            return False  # the path's member is filled instead
        return f.number == oneof.fields[0].number

    def _fill_field(self, message: Message, f: FieldDescriptor, rest: Path, depth: int) -> None:
        container: Any = getattr(message, f.name)
        nested = f.message_type
        if nested is not None and nested.full_name in (TIMESTAMP, DURATION):
            offset = _TIME_OFFSETS_S.get(f.name, _PAST_S)
            seconds = DURATION_S if nested.full_name == DURATION else int(time.time()) + offset
            (container.add() if f.is_repeated else container).seconds = seconds
            return
        if nested is not None:
            if depth <= 0 and not rest:
                return
            child = container.add() if f.is_repeated else container
            child.SetInParent()
            # A rectangle's far corner apart from its near one, so that the box is not empty.
            filler = self._shifted() if f.name == "north_east" else self
            filler._fill(child, nested, rest, depth - 1)
            return
        value = self._scalar(f)
        if value is None:
            return
        if f.is_repeated:
            container.append(value)
        else:
            setattr(message, f.name, value)

    def _shifted(self) -> Plausible:
        far = LatLng(self.place.lat + CORNER_SHIFT_DEG, self.place.lng + CORNER_SHIFT_DEG)
        return dataclasses.replace(self, place=far)

    def _scalar(self, f: FieldDescriptor) -> Any:
        kind = f.type
        if kind == _F.TYPE_STRING:
            if f.name in _UNSET_STRINGS:
                return None
            if f.name in self.ids and f.name != _own_id(f):
                return self.ids[f.name]
            # Unique, so that keys (idempotency) and names never collide between requests.
            return _PLAIN_STRINGS.get(f.name, f"sweep-{f.name}-{uuid.uuid4().hex[:8]}")
        if kind == _F.TYPE_BYTES:
            return b"sweep"
        if kind == _F.TYPE_BOOL:
            return None
        if kind == _F.TYPE_ENUM:
            assert f.enum_type is not None
            defined = [v.number for v in f.enum_type.values if v.number != 0]
            return defined[0] if defined else None
        if f.name in ("lat", "latitude"):
            return self.place.lat
        if f.name in ("lng", "longitude"):
            return self.place.lng
        return 1.0 if kind in (_F.TYPE_DOUBLE, _F.TYPE_FLOAT) else 1


def _own_id(f: FieldDescriptor) -> str:
    """The name of the id field of the message holding ``f`` (``driver_id`` in ``Driver``)."""
    assert f.containing_type is not None
    name = f.containing_type.name
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
    return f"{snake}_id"
