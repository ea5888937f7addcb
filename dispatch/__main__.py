"""``python -m dispatch``: run the dispatch process."""

from __future__ import annotations

from collections.abc import Sequence

from core.bus import Bus
from core.db import Database
from core.runtime import Component, main
from core.settings import Settings
from dispatch.service import components


async def build(settings: Settings) -> Sequence[Component]:
    """Storage first so it stops last."""
    return [Database(settings), Bus(settings), *components()]


if __name__ == "__main__":
    main("dispatch", build)
