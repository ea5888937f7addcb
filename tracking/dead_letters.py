"""Ping entries the processor could not read: kept, not dropped, until an operator replays them.

The gateway acked these fixes to the driver, so losing them silently would break its promise.
An entry that fails to decode (a malformed field, or a gateway newer than the processor in the
middle of an upgrade) is copied to ``topics.PING_DEAD_LETTERS`` with where it was and why, and
acked from its shard like the rest of its round. ``lastmile dead-letters`` lists them;
``--replay`` appends each back to its shard stream, once however often a retried round buried
it, and removes it, for a processor that can read it now.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core import topics
from core.bus import Bus, StreamEntry, as_text

STREAM, ENTRY, ERROR = b"dead_stream", b"dead_entry", b"dead_error"
_OWN = (STREAM, ENTRY, ERROR)
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One buried entry: its id here, where it was, why, and its fields as they were."""

    dead_id: str
    stream: str
    entry_id: str
    error: str
    fields: dict[Any, Any]


async def bury(bus: Bus, failed: Sequence[tuple[StreamEntry, str]], maxlen: int) -> None:
    """Keep each (entry, why it could not be read) in the dead-letter stream."""
    if not failed:
        return
    pipe = bus.redis.pipeline(transaction=False)
    for entry, error in failed:
        fields: dict[Any, Any] = {
            **entry.fields,
            STREAM: entry.stream,
            ENTRY: entry.entry_id,
            ERROR: error,
        }
        pipe.xadd(topics.PING_DEAD_LETTERS, fields, maxlen=maxlen, approximate=True)
    await pipe.execute()


async def count(bus: Bus) -> int:
    """How many dead letters are kept."""
    return int(await bus.redis.xlen(topics.PING_DEAD_LETTERS))


async def buried(bus: Bus, limit: int | None = None) -> list[DeadLetter]:
    """The dead letters, oldest first (at most ``limit``)."""
    letters: list[DeadLetter] = []
    after = "-"
    while limit is None or len(letters) < limit:
        count = _CHUNK if limit is None else min(_CHUNK, limit - len(letters))
        chunk: Any = await bus.redis.xrange(topics.PING_DEAD_LETTERS, min=after, count=count)
        letters += [_letter(dead_id, fields) for dead_id, fields in chunk]
        if len(chunk) < count:
            break
        after = f"({letters[-1].dead_id}"
    return letters


async def replay(bus: Bus) -> int:
    """Append every dead letter back to its shard stream and remove it; returns how many
    entries went back (a retried round may have buried one entry more than once)."""
    sent: set[tuple[str, str]] = set()
    while letters := await buried(bus, _CHUNK):
        pipe = bus.redis.pipeline(transaction=True)
        for letter in letters:
            if (letter.stream, letter.entry_id) not in sent:
                sent.add((letter.stream, letter.entry_id))
                pipe.xadd(letter.stream, letter.fields)
            pipe.xdel(topics.PING_DEAD_LETTERS, letter.dead_id)
        await pipe.execute()
    return len(sent)


def _letter(dead_id: bytes | str, fields: dict[bytes, bytes]) -> DeadLetter:
    return DeadLetter(
        dead_id=as_text(dead_id),
        stream=as_text(fields.get(STREAM, b"")),
        entry_id=as_text(fields.get(ENTRY, b"")),
        error=as_text(fields.get(ERROR, b"")),
        fields={k: v for k, v in fields.items() if k not in _OWN},
    )
