"""``python -m pod``: run the proof-of-delivery process."""

from __future__ import annotations

from collections.abc import Sequence

from core.db import Database
from core.objects import ObjectStore
from core.runtime import Component, main
from core.settings import Settings
from pod.service import component


async def build(settings: Settings) -> Sequence[Component]:
    """Storage first so it stops last."""
    return [Database(settings), ObjectStore(settings), component()]


if __name__ == "__main__":
    main("pod", build)
