"""What the proof-of-delivery use cases share: settings, the database, the object store, and
the parsed policy and limits (parsed once, so bad configuration fails at start-up)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from core.db import Database
from core.objects import ObjectStore
from core.settings import Settings
from pod.checks import Action, Limits, parse_policies


@dataclass
class PodContext:
    """Dependencies of the pod use cases, handed to the servicer."""

    settings: Settings
    database: Database
    objects: ObjectStore
    policies: dict[str, Action] = field(init=False)
    limits: Limits = field(init=False)

    def __post_init__(self) -> None:
        self.policies = parse_policies(self.settings.pod_doubt_policies)
        self.limits = Limits.of(self.settings)

    @property
    def upload_expiry(self) -> dt.timedelta:
        """Lifetime of a pre-signed upload form."""
        return dt.timedelta(seconds=self.settings.pod_upload_expiry_s)

    @property
    def download_expiry(self) -> dt.timedelta:
        """Lifetime of a pre-signed download URL."""
        return dt.timedelta(seconds=self.settings.pod_download_expiry_s)


def now() -> dt.datetime:
    """The current UTC time."""
    return dt.datetime.now(dt.UTC)
