"""``python -m gateway``: run the driver gateway process."""

from __future__ import annotations

from collections.abc import Sequence

from core.bus import Bus
from core.runtime import Component, main
from core.settings import Settings
from gateway.service import component


async def build(settings: Settings) -> Sequence[Component]:
    """Redis first (the ingest queue), then the servicer."""
    return [Bus(settings), component()]


if __name__ == "__main__":
    main("gateway", build)
