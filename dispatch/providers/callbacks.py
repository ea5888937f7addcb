"""The HTTP endpoint webhook providers call back: ``POST /providers/{provider_id}/status``
with ``{"external_id", "status"}``, signed (see dispatch.providers.transport).

A deliberately tiny HTTP/1.1 server on asyncio streams (one request per connection): it
serves one route, so a web framework would be all weight and no help.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

from dispatch.providers.transport import SIGNATURE_HEADER, signature_ok

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024
#: (provider_id, external_id, status) -> whether the order was known.
StatusHandler = Callable[[str, str, str], Awaitable[bool]]


class CallbackServer:
    """Listens on ``host:port`` (0 = any free port; see :attr:`port`)."""

    def __init__(self, host: str, port: int, secret: str, handler: StatusHandler) -> None:
        self._host, self._port = host, port
        self._secret = secret
        self._handler = handler
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (after start)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and serve."""
        self._server = await asyncio.start_server(self._serve, self._host, self._port)

    async def stop(self) -> None:
        """Stop accepting and close."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            code = await self._handle(reader)
        except (ValueError, asyncio.IncompleteReadError, ConnectionError):
            code = 400
        except Exception:
            log.exception("provider callback failed")
            code = 500
        reason = {204: "No Content", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
        writer.write(
            f"HTTP/1.1 {code} {reason.get(code, 'Error')}\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        try:
            await writer.drain()
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader) -> int:
        method, path, _ = (await reader.readline()).decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (line := (await reader.readline()).decode("latin-1").strip()) != "":
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if length > MAX_BODY:
            return 400
        body = await reader.readexactly(length)
        parts = path.strip("/").split("/")
        if method != "POST" or len(parts) != 3 or parts[0] != "providers" or parts[2] != "status":
            return 404
        if not signature_ok(self._secret, body, headers.get(SIGNATURE_HEADER.lower(), "")):
            return 401
        data = json.loads(body)
        known = await self._handler(parts[1], str(data["external_id"]), str(data["status"]))
        return 204 if known else 404
