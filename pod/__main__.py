"""``python -m pod``: run the proof-of-delivery process."""

from __future__ import annotations

from collections.abc import Sequence

from core.db import Database
from core.objects import ObjectStore
from core.runtime import Component, main
from core.settings import Settings
from pod.context import PodContext
from pod.service import component


async def build(settings: Settings) -> Sequence[Component]:
    """Storage first so it stops last; the policy is parsed here so bad settings fail fast."""
    database, objects = Database(settings), ObjectStore(settings)
    return [database, objects, component(PodContext(settings, database, objects))]


if __name__ == "__main__":
    main("pod", build)
