"""Which ping shards this tracking process reads: every shard has one owner at a time.

Why: when every processor read every shard in one consumer group, two batches of one driver
could be processed at once by two processes, and per-driver state that is read, stepped and
written back (geofence insides, off-route episodes) could step an older batch after a newer
one, or step two batches from the same starting state. A driver always lands on the same
shard, so with one owner per shard one driver's batches are processed one round after
another, in stream order, whatever the number of processes.

How (in Redis, no coordinator):

* membership: a sorted set of processor names scored by the expiry of their heartbeat
  (Redis's clock); a processor is live while its score lies ahead. Each one heartbeats every
  ``processor_lease_s / 4``.
* assignment: the live names sorted; shard ``i`` belongs to ``names[i mod n]``. Everybody
  computes the same answer from the same set, so shards move only when a processor joins,
  leaves or dies.
* leases: one key per shard holding the owner's name with a ``processor_lease_s`` expiry. A
  processor takes the shards assigned to it when their lease is free, extends the ones it
  holds, and gives back the ones no longer assigned to it. All of this happens between two
  processing rounds, so a shard is given back only after everything read from it is written
  and acked.
* handover: a dead owner's leases and heartbeat expire after ``processor_lease_s``; the new
  owner then claims the shard's entries still pending with other consumers (the dead owner's
  unfinished round) and processes them before anything new.

Limits: parallelism is bounded by ``ingest_shards`` (more processors than shards stand by).
A processor frozen for longer than its lease may, on waking, finish the round it held while
the new owner starts: its writes are idempotent (live state and ETAs move only forward,
history ignores replays), the per-driver steps of that one round may interleave as before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from core.bus import Bus
from core.redis_scripts import Script

log = logging.getLogger(__name__)

MEMBERS_KEY = "lastmile:tracking:processors"

# KEYS[1] members; ARGV[1] name, ARGV[2] lease ms. Heartbeat, forget the dead, list the live.
_HEARTBEAT = Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
)
# KEYS: every shard's lease; ARGV[1] name, ARGV[2] lease ms, ARGV[2 + i] '1' when shard i is
# wanted. Per shard: 2 taken now, 1 still held (extended), 0 not held (given back or taken).
_LEASES = Script(
    """
local out = {}
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if ARGV[i + 2] == '1' then
    if holder == ARGV[1] then
      redis.call('PEXPIRE', key, ARGV[2])
      out[i] = 1
    elseif not holder then
      redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
      out[i] = 2
    else
      out[i] = 0
    end
  else
    if holder == ARGV[1] then redis.call('DEL', key) end
    out[i] = 0
  end
end
return out
"""
)
# KEYS[1] members; ARGV[1] name.
_LEAVE = Script("redis.call('ZREM', KEYS[1], ARGV[1])")


def lease_key(stream: str) -> str:
    """The key holding the owner of one shard stream."""
    return f"lastmile:tracking:owner:{stream}"


def assigned(shards: int, members: Sequence[str], me: str) -> list[int]:
    """The shard indexes that belong to ``me`` among the live ``members``."""
    names = sorted(set(members) | {me})
    index = names.index(me)
    return [shard for shard in range(shards) if shard % len(names) == index]


@dataclass(frozen=True, slots=True)
class Ownership:
    """The outcome of one refresh: the streams held now, and which of them were just taken."""

    held: tuple[str, ...]
    taken: tuple[str, ...]


class ShardLeases:
    """One processor's membership and shard leases; see the module docstring."""

    def __init__(self, bus: Bus, streams: Sequence[str], name: str, lease_s: float) -> None:
        if lease_s <= 0:
            raise ValueError("processor_lease_s must be positive")
        self._bus = bus
        self._streams = list(streams)
        self._name = name
        self._lease_ms = int(lease_s * 1000)
        self.held: tuple[str, ...] = ()

    @property
    def renew_every_s(self) -> float:
        """How often :meth:`refresh` must run to keep the leases."""
        return self._lease_ms / 4000

    async def refresh(self) -> Ownership:
        """Heartbeat, then take, extend and give back shards to match the assignment."""
        redis = self._bus.redis
        members = await _HEARTBEAT(redis, [MEMBERS_KEY], [self._name, self._lease_ms])
        live = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
        mine = set(assigned(len(self._streams), live, self._name))
        wanted = ["1" if i in mine else "0" for i in range(len(self._streams))]
        keys = [lease_key(stream) for stream in self._streams]
        states = await _LEASES(redis, keys, [self._name, self._lease_ms, *wanted])
        held = tuple(s for s, state in zip(self._streams, states, strict=True) if int(state))
        taken = tuple(s for s, state in zip(self._streams, states, strict=True) if state == 2)
        if held != self.held:
            log.info(
                "ping shards owned",
                extra={"shards": list(held), "processors": len(live), "taken": list(taken)},
            )
        self.held = held
        return Ownership(held, taken)

    async def leave(self) -> None:
        """Give every shard back and leave the membership (a clean stop): the others take
        the shards at their next refresh instead of after the leases expire."""
        keys = [lease_key(stream) for stream in self._streams]
        await _LEASES(self._bus.redis, keys, [self._name, self._lease_ms, *["0"] * len(keys)])
        await _LEAVE(self._bus.redis, [MEMBERS_KEY], [self._name])
        self.held = ()
