"""Which exceptions mean that a dependency (PostgreSQL, Redis, S3) is down or restarting,
as opposed to a bug: callers answer those with UNAVAILABLE ("retry with backoff") and
background workers retry them without giving up.

A crash or restart of a server shows up as refused or reset connections, a connection closed
in the middle of a call, a timeout, or the server saying it is starting up or shutting down.
"""

from __future__ import annotations

import asyncpg
import redis.exceptions
import urllib3.exceptions

OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    # Refused, reset, aborted, broken pipe: the socket-level signs of a server going away.
    ConnectionError,
    TimeoutError,
    redis.exceptions.ConnectionError,  # includes BusyLoadingError (loading the AOF)
    redis.exceptions.TimeoutError,
    redis.exceptions.TryAgainError,
    asyncpg.exceptions.ConnectionDoesNotExistError,  # closed in the middle of a call
    asyncpg.exceptions.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.CannotConnectNowError,  # 57P03: starting up, recovering
    asyncpg.exceptions.AdminShutdownError,  # 57P01
    asyncpg.exceptions.CrashShutdownError,  # 57P02
    urllib3.exceptions.MaxRetryError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.TimeoutError,
)
#: asyncpg reports the use of a connection that a restart closed with this message.
_CLOSED_CONNECTION = "connection is closed"


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) says a dependency is unavailable."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OUTAGE_ERRORS):
            return True
        if isinstance(current, asyncpg.exceptions.InterfaceError) and _CLOSED_CONNECTION in str(
            current
        ):
            return True
        current = current.__cause__ or current.__context__
    return False
