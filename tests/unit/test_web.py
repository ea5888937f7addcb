"""The browser apps' web server and its road base map: bbox parsing, thinning, the HTTP
answers, and the edge route that sends non-gRPC paths to it."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.road_tiles import Road, RoadIndex, parse_bbox, simplify
from ops.servers.envoy import WEB_CLUSTER, EdgeOptions, render_envoy_config
from ops.web import WebServer

RESIDENTIAL = Road(
    "residential", "Triq il-Kbira", ((14.50, 35.90), (14.51, 35.91)), (14.50, 35.90, 14.51, 35.91)
)
PRIMARY = Road(
    "primary",
    "",
    ((14.40, 35.88), (14.405, 35.8801), (14.41, 35.88)),
    (14.40, 35.88, 14.41, 35.8801),
)


def test_bbox_must_be_four_ordered_numbers() -> None:
    assert parse_bbox("14.4,35.8,14.6,35.95") == (14.4, 35.8, 14.6, 35.95)
    for bad in ("", "1,2,3", "14.6,35.8,14.4,35.95", "a,b,c,d", "0,0,0,nan", "0,-91,1,1"):
        with pytest.raises(ValueError):
            parse_bbox(bad)


def test_simplify_drops_only_vertices_within_the_tolerance() -> None:
    line = [(0.0, 0.0), (1.0, 0.001), (2.0, 0.0), (3.0, 1.0)]
    assert simplify(line, 0.01) == [(0.0, 0.0), (2.0, 0.0), (3.0, 1.0)]
    assert simplify(line, 0.0001) == line
    assert simplify(line[:2], 10.0) == line[:2]


def test_minor_roads_appear_only_when_zoomed_in() -> None:
    index = RoadIndex([RESIDENTIAL, PRIMARY])
    everywhere = (14.0, 35.0, 15.0, 36.0)
    assert index.query(everywhere, 10) == [PRIMARY]
    assert {r.kind for r in index.query(everywhere, 15)} == {"primary", "residential"}
    assert index.query((14.505, 35.905, 14.506, 35.906), 15) == [RESIDENTIAL]
    assert index.query((14.0, 35.0, 14.1, 35.1), 15) == []
    assert index.bounds == (14.40, 35.88, 14.51, 35.91)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    apps = tmp_path / "apps"
    (apps / "tracking").mkdir(parents=True)
    (apps / "tracking" / "index.html").write_text("<title>track</title>")
    (tmp_path / "secret.txt").write_text("no")
    web = WebServer(("127.0.0.1", 0), apps, RoadIndex([RESIDENTIAL, PRIMARY]))
    thread = threading.Thread(target=web.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{web.server_address[1]}"
    finally:
        web.shutdown()
        web.server_close()
        thread.join()


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def test_roads_are_geojson_lines_of_the_box(server: str) -> None:
    status, kind, body = _get(f"{server}/roads?bbox=14.3,35.8,14.6,35.95&zoom=15")
    assert (status, kind) == (200, "application/geo+json")
    features = json.loads(body)["features"]
    assert sorted(f["properties"]["kind"] for f in features) == ["primary", "residential"]
    assert all(f["geometry"]["type"] == "LineString" for f in features)
    assert _get(f"{server}/roads/bounds")[2] == b"[14.4, 35.88, 14.51, 35.91]"


def test_bad_road_requests_get_400_with_a_reason(server: str) -> None:
    status, _, body = _get(f"{server}/roads?bbox=1,2,3&zoom=15")
    assert status == 400 and b"bbox" in body
    status, _, body = _get(f"{server}/roads?bbox=14.3,35.8,14.6,35.95&zoom=99")
    assert status == 400 and b"zoom" in body


def test_apps_are_served_and_nothing_else(server: str) -> None:
    status, kind, body = _get(f"{server}/track/")
    assert (status, kind, body) == (200, "text/html", b"<title>track</title>")
    assert _get(f"{server}/track")[0] == 200  # redirected to /track/
    assert _get(f"{server}/dashboard/")[0] == 404  # not built here
    for path in ("/track/../secret.txt", "/track/%2e%2e/secret.txt", "/secret.txt", "/track/.x"):
        assert _get(server + path)[0] == 404, path
    assert _get(f"{server}/healthz")[0] == 200


def test_edge_sends_other_paths_to_the_web_server_only_when_asked() -> None:
    upstreams = {"gateway": 1, "tracking": 2}
    plain = json.loads(render_envoy_config(8080, 9901, upstreams))
    web = json.loads(render_envoy_config(8080, 9901, upstreams, options=EdgeOptions(web_port=8090)))
    routes = web["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[-1]["match"] == {"prefix": "/"}
    assert routes[-1]["route"] == {"cluster": WEB_CLUSTER}
    clusters = {c["name"]: c for c in web["static_resources"]["clusters"]}
    assert "typed_extension_protocol_options" not in clusters[WEB_CLUSTER]  # HTTP/1.1
    assert WEB_CLUSTER not in {c["name"] for c in plain["static_resources"]["clusters"]}
