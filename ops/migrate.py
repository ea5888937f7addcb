"""Apply the schema migrations to ``LASTMILE_DATABASE_URL`` and exit (the Helm hook Job).

The services apply pending migrations at start-up too (under the same advisory lock); running
them once before the pods roll means a new schema is in place before any new code serves.

Usage: ``python -m ops.migrate``
"""

from __future__ import annotations

import asyncio
import logging
import sys

import asyncpg

from core.db import migrate
from core.logs import configure
from core.settings import Settings

log = logging.getLogger("ops.migrate")


async def run(settings: Settings) -> list[int]:
    """Apply what is pending; return the versions applied (empty when up to date)."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


def main() -> int:
    """Entry point of the hook Job: exit 0 when the schema is current."""
    settings = Settings.from_env()
    configure("migrate", settings.log_level)
    applied = asyncio.run(run(settings))
    log.info("schema up to date", extra={"applied": applied})
    return 0


if __name__ == "__main__":
    sys.exit(main())
