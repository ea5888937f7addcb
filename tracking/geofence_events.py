"""WatchGeofenceEvents: stored geofence events after a cursor, then new ones as they happen.

The cursor is the Redis stream entry id of ``core.topics.GEOFENCE_EVENTS``: replay reads
after it with XRANGE in pages, then the live part blocks on XREAD from the last id seen (never
``$``, which would drop events appended between two reads). The stream is capped at about
``geofence_events_maxlen`` entries: a cursor older than that resumes at the oldest kept event.
Only events of the caller's tenant's fences are sent (the entry's ``tenant`` field).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from lastmile.tracking.v1 import fleet_service_pb2, tracking_pb2

from core import topics
from core.bus import newest_id
from core.errors import InvalidArgument
from core.settings import Settings

_CURSOR = re.compile(r"^\d+-\d+$")
_PAGE = 500


def _matches(
    event: tracking_pb2.GeofenceEvent, fences: frozenset[str], drivers: frozenset[str]
) -> bool:
    return (not fences or event.geofence_id in fences) and (
        not drivers or event.driver_id in drivers
    )


def _tenant_of(fields: dict[Any, Any]) -> str:
    value = fields.get(b"tenant", b"")
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(entry_id: Any, fields: dict[Any, Any]) -> tracking_pb2.GeofenceEvent:
    event = tracking_pb2.GeofenceEvent.FromString(fields[b"data"])
    event.cursor = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return event


async def watch_geofence_events(
    client: aioredis.Redis,
    settings: Settings,
    request: fleet_service_pb2.WatchGeofenceEventsRequest,
    tenant_id: str,
) -> AsyncIterator[fleet_service_pb2.WatchGeofenceEventsResponse]:
    """Replay after ``after_cursor``, then follow, ``tenant_id``'s events only; ends only when
    the caller cancels."""
    if request.after_cursor and not _CURSOR.match(request.after_cursor):
        raise InvalidArgument(f"after_cursor {request.after_cursor!r} is not a cursor")
    if any(not i for i in (*request.geofence_ids, *request.driver_ids)):
        raise InvalidArgument("geofence_ids and driver_ids must not hold empty ids")
    fences, drivers = frozenset(request.geofence_ids), frozenset(request.driver_ids)
    last = request.after_cursor or await newest_id(client, topics.GEOFENCE_EVENTS)
    if request.after_cursor:
        while True:
            page: Any = await client.xrange(topics.GEOFENCE_EVENTS, min=f"({last}", count=_PAGE)
            for entry_id, fields in page:
                event = _decode(entry_id, fields)
                last = event.cursor
                if _tenant_of(fields) == tenant_id and _matches(event, fences, drivers):
                    yield fleet_service_pb2.WatchGeofenceEventsResponse(event=event)
            if len(page) < _PAGE:
                break
    while True:
        reply: Any = await client.xread(
            {topics.GEOFENCE_EVENTS: last}, count=_PAGE, block=settings.watch_block_ms
        )
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                event = _decode(entry_id, fields)
                last = event.cursor
                if _tenant_of(fields) == tenant_id and _matches(event, fences, drivers):
                    yield fleet_service_pb2.WatchGeofenceEventsResponse(event=event)
