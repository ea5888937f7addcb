"""The platform as a browser sees it: the integration ``platform`` (services on real servers),
the browser apps' web server, and an Envoy edge routing grpc-web and pages on one origin."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.settings import Settings
from ops.servers import EnvoyServer, free_port
from ops.stack import edge_config, web_is_ready, web_process
from tests.e2e.browser import Browser
from tests.integration.conftest import Platform, platform  # noqa: F401 (the fixture)

REPO = Path(__file__).resolve().parents[2]
APPS = REPO / "clients" / "web" / "dist" / "apps"
SCREENSHOTS = REPO / "test-output" / "e2e"
START_TIMEOUT_S = 60.0


@dataclass
class WebEdge:
    """Where the browser goes: the edge serving the apps and grpc-web."""

    platform: Platform
    settings: Settings
    url: str


@pytest.fixture(scope="session")
def web_edge(platform: Platform) -> Iterator[WebEdge]:  # noqa: F811 (pytest fixture injection)
    """The web server and a web-enabled edge on free ports, next to the platform's own."""
    for app in ("tracking", "dashboard"):
        index = APPS / app / "index.html"
        assert index.is_file(), f"{index} missing: run `cd clients/web && npm run build:apps`"
    settings = platform.settings.replace(
        web_port=free_port(), edge_port=free_port(), edge_admin_port=free_port()
    )
    data_dir = Path(tempfile.mkdtemp(prefix="lastmile-test-web-"))
    web = web_process(settings, data_dir)
    edge: EnvoyServer | None = None
    try:
        web.start()
        web.wait_ready(lambda: web_is_ready(settings), START_TIMEOUT_S)
        config = edge_config(settings, data_dir / "envoy.yaml", web=True)
        edge = EnvoyServer(config, settings.edge_admin_port, log_path=data_dir / "envoy.log")
        edge.start()
        yield WebEdge(platform, settings, f"http://{settings.host}:{settings.edge_port}")
    finally:
        if edge is not None:
            edge.stop()
        web.stop(grace=5.0)


@pytest.fixture
def screenshots() -> Path:
    """Folder of the screenshots the tests save (git-ignored)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture
def phone() -> Iterator[Browser]:
    """Chromium with a phone-sized viewport."""
    browser = Browser(390, 844, mobile=True)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def desktop() -> Iterator[Browser]:
    """Chromium with a desktop viewport."""
    browser = Browser(1366, 900)
    try:
        yield browser
    finally:
        browser.close()
