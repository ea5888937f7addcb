"""Lua scripts run by their SHA1, alone or inside pipelines, without a per-pipeline check.

redis-py's registered scripts send SCRIPT EXISTS before every pipeline that holds one: a
second round trip per pipeline. The gateway and the tracking processor run such a pipeline
per round, so under load that check cost a round trip of latency per round and measurable CPU
on both ends. Here a pipeline carries bare EVALSHA commands. Redis answers NOSCRIPT only when
its script cache is empty (a restarted Redis); then the script is loaded and exactly the calls
that failed are run again, after the pipeline, in their order. A call answered NOSCRIPT did
not run at all, so running it again cannot apply anything twice. Callers put at most one
order-sensitive call per key in a pipeline (one event per driver stream in flight, one fix per
driver per round), so running those calls after the others changes no outcome.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError

# Every script of the process by SHA1, to reload the one a NOSCRIPT answer names.
_SOURCES: dict[str, str] = {}


class Script:
    """One Lua script; see the module docstring."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        _SOURCES[self.sha] = source

    def queue(self, pipe: Any, keys: Sequence[Any], args: Sequence[Any]) -> None:
        """Add a call to ``pipe``; run the pipeline with :func:`execute`."""
        pipe.evalsha(self.sha, len(keys), *keys, *args)

    async def load(self, client: Any) -> None:
        """Put the script into Redis's cache (saves the NOSCRIPT detour on first use)."""
        await client.script_load(self.source)

    async def __call__(self, client: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run the script once, outside any pipeline."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.load(client)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


async def execute(pipe: Any, client: Any, raise_on_error: bool = True) -> list[Any]:
    """Run ``pipe`` (a non-transactional pipeline of ``client``); calls of scripts Redis no
    longer knew are loaded and run again in order. With ``raise_on_error`` False, errors are
    returned in place of their replies, as redis-py does."""
    calls = [args for args, _ in pipe.command_stack]
    replies = list(await pipe.execute(raise_on_error=False))
    for index, reply in enumerate(replies):
        if isinstance(reply, NoScriptError):
            replies[index] = await _again(client, calls[index])
    if raise_on_error:
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
    return replies


async def _again(client: Any, call: tuple[Any, ...]) -> Any:
    sha = call[1]
    source = _SOURCES.get(sha.decode() if isinstance(sha, bytes) else str(sha))
    if source is None:
        return NoScriptError(f"script {sha!r} is not known to this process")
    try:
        await client.script_load(source)
        return await client.execute_command(*call)
    except Exception as exc:
        return exc


def per_call[T](items: Sequence[T], size: int) -> list[Sequence[T]]:
    """``items`` in runs of at most ``size``, in order: one script call each. Batching many
    items into a call saves redis-py's per-command CPU; Redis serves no one else while a
    script runs, so a call is bounded."""
    return [items[first : first + size] for first in range(0, len(items), size)]
