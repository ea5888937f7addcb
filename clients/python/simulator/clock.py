"""Simulated time: ``speed`` simulated seconds per wall second from a time of day (see the
package docstring for why the platform still sees wall-clock timestamps)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time


class SimClock:
    """Elapsed simulated time since the run started, and waits in simulated seconds."""

    def __init__(self, speed: float, start_of_day_s: float = 0.0) -> None:
        self.speed = speed
        self.start_of_day_s = start_of_day_s
        self._wall_start = time.monotonic()

    def elapsed(self) -> float:
        """Simulated seconds since the start."""
        return (time.monotonic() - self._wall_start) * self.speed

    def time_of_day(self) -> float:
        """Simulated seconds since midnight (may exceed a day on long runs)."""
        return self.start_of_day_s + self.elapsed()

    def label(self) -> str:
        """``HH:MM:SS`` of the simulated time of day."""
        total = int(self.time_of_day()) % 86400
        return f"{total // 3600:02d}:{total // 60 % 60:02d}:{total % 60:02d}"

    async def sleep(self, simulated_s: float) -> None:
        """Wait ``simulated_s`` simulated seconds."""
        await asyncio.sleep(max(0.0, simulated_s) / self.speed)

    async def sleep_until(self, elapsed_s: float) -> None:
        """Wait until ``elapsed_s`` simulated seconds after the start."""
        await self.sleep(elapsed_s - self.elapsed())

    def wall_in(self, simulated_s: float) -> dt.datetime:
        """The wall-clock moment ``simulated_s`` simulated seconds from now (for windows and
        deadlines the platform checks against its own clock)."""
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=simulated_s / self.speed)

    @staticmethod
    def wall_now() -> dt.datetime:
        """Now, wall clock, UTC."""
        return dt.datetime.now(dt.UTC)
