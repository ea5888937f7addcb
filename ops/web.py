"""The browser apps' HTTP server: the built static apps and the road base map, behind the edge.

``python -m ops.web`` serves, on ``settings.host:settings.web_port``:

- ``/track/`` and ``/dashboard/``: the built apps (``clients/web/dist/apps/...``);
- ``/roads?bbox=minLng,minLat,maxLng,maxLat&zoom=Z``: GeoJSON LineStrings of the city's
  roads in the box, from the OSM extract (see :mod:`ops.road_tiles`);
- ``/roads/bounds``: ``[minLng, minLat, maxLng, maxLat]`` of the city, to frame maps;
- ``/healthz``: 200 once the roads are loaded.

Envoy routes every non-gRPC path here, so pages and grpc-web calls share one origin. Tokens
travel in URL fragments, which browsers never send, so they never reach these logs.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import signal
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from core import logs
from core.settings import Settings
from ops.road_tiles import RoadIndex, parse_bbox

log = logging.getLogger("lastmile.web")
# URL prefix -> folder of dist/apps.
APPS = {"track": "tracking", "dashboard": "dashboard"}
MAX_ZOOM = 22
# Road answers change only with the extract: let browsers keep them for a day.
ROADS_MAX_AGE_S = 86_400


class WebServer(ThreadingHTTPServer):
    """ThreadingHTTPServer carrying what the handlers need."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], apps_dir: Path, roads: RoadIndex) -> None:
        """Bind ``address``; serve apps from ``apps_dir`` and roads from ``roads``."""
        super().__init__(address, Handler)
        self.apps_dir = apps_dir.resolve()
        self.roads = roads


class Handler(BaseHTTPRequestHandler):
    """GET and HEAD of apps, roads and health."""

    server: WebServer
    server_version = "lastmile-web"

    def do_HEAD(self) -> None:
        """Same as GET without the body."""
        self._dispatch(send_body=False)

    def do_GET(self) -> None:
        """Route to the roads, health or a static file."""
        self._dispatch(send_body=True)

    def _dispatch(self, send_body: bool) -> None:
        url = urlsplit(self.path)
        if url.path == "/roads":
            self._roads(url.query, send_body)
        elif url.path == "/roads/bounds":
            bounds = json.dumps(self.server.roads.bounds).encode()
            self._send(HTTPStatus.OK, bounds, "application/json", send_body)
        elif url.path == "/healthz":
            self._send(HTTPStatus.OK, b"ok\n", "text/plain", send_body)
        elif url.path in ("/", ""):
            self.send_response(HTTPStatus.FOUND)
            self.send_header("Location", "/dashboard/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._static(url.path, send_body)

    def _roads(self, query: str, send_body: bool) -> None:
        params = parse_qs(query)
        try:
            bbox = parse_bbox(params.get("bbox", [""])[0])
            zoom = int(params.get("zoom", ["14"])[0])
            if not 0 <= zoom <= MAX_ZOOM:
                raise ValueError(f"zoom must be 0..{MAX_ZOOM}")
        except ValueError as exc:
            self._send(HTTPStatus.BAD_REQUEST, f"{exc}\n".encode(), "text/plain", send_body)
            return
        body = self.server.roads.geojson(bbox, zoom)
        self._send(
            HTTPStatus.OK,
            body,
            "application/geo+json",
            send_body,
            cache=f"public, max-age={ROADS_MAX_AGE_S}",
        )

    def _static(self, path: str, send_body: bool) -> None:
        parts = [p for p in path.split("/") if p]
        app = APPS.get(parts[0]) if parts else None
        if app is None or any(p in ("..", ".") or p.startswith(".") for p in parts):
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain", send_body)
            return
        if path.endswith("/") or len(parts) == 1:
            if not path.endswith("/"):  # relative asset URLs need the trailing slash
                self.send_response(HTTPStatus.MOVED_PERMANENTLY)
                self.send_header("Location", path + "/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            parts.append("index.html")
        file = (self.server.apps_dir / app).joinpath(*parts[1:]).resolve()
        if not file.is_relative_to(self.server.apps_dir) or not file.is_file():
            hint = b"not found (build the apps: cd clients/web && npm run build:apps)\n"
            self._send(HTTPStatus.NOT_FOUND, hint, "text/plain", send_body)
            return
        kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        # Pages always revalidate so a rebuilt app is picked up at once.
        self._send(HTTPStatus.OK, file.read_bytes(), kind, send_body, cache="no-cache")

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        kind: str,
        send_body: bool,
        cache: str = "no-store",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Request lines go to the structured log at DEBUG, not to stderr."""
        log.debug("%s " + format, self.address_string(), *args)


def build(settings: Settings) -> WebServer:
    """Load the roads and bind the server (not yet serving)."""
    roads = RoadIndex.from_pbf(settings.osm_pbf, settings.web_roads_cache)
    log.info("roads loaded", extra={"roads": len(roads.roads)})
    return WebServer((settings.host, settings.web_port), settings.web_dist_dir / "apps", roads)


def main() -> None:
    """Serve until SIGTERM or SIGINT."""
    settings = Settings.from_env()
    logs.configure("web", settings.log_level)
    server = build(settings)

    def stop(*_: object) -> None:
        # shutdown() blocks until serve_forever returns: call it off the serving thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("serving", extra={"address": f"{settings.host}:{settings.web_port}"})
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
