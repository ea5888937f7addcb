"""The rendered Envoy edge config is accepted by Envoy itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ops.servers.edge_guards import BUFFER_FILTER
from ops.servers.envoy import EdgeOptions, render_envoy_config, validate_config

UPSTREAMS = {"gateway": 50051, "tracking": 50052, "dispatch": 50053, "pod": 50054}


def test_rendered_config_passes_envoy_validation(tmp_path: Path) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(render_envoy_config(8080, 9901, UPSTREAMS))
    validate_config(path)


def test_config_with_explicit_origins_passes_validation(tmp_path: Path) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(render_envoy_config(8080, 9901, UPSTREAMS, ["http://localhost:5173"]))
    validate_config(path)


def test_routes_send_health_by_header_and_packages_by_prefix() -> None:
    config = json.loads(render_envoy_config(8080, 9901, UPSTREAMS))
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    routes = manager["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    by_match = {
        (
            r["match"]["prefix"],
            r["match"].get("headers", [{}])[0].get("string_match", {}).get("exact"),
        ): r["route"]["cluster"]
        for r in routes
    }
    assert by_match[("/grpc.health.v1.Health/", "pod")] == "pod"
    assert by_match[("/grpc.health.v1.Health/", None)] == "gateway"
    assert by_match[("/lastmile.tracking.v1.", None)] == "tracking"
    assert all(r["route"]["timeout"] == "0s" for r in routes)
    filters = [f["name"] for f in manager["typed_config"]["http_filters"]]
    assert filters == [
        "envoy.filters.http.grpc_web",
        "envoy.filters.http.cors",
        "envoy.filters.http.buffer",
        "envoy.filters.http.router",
    ]


def _routes(config: dict[str, Any]) -> list[dict[str, Any]]:
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    routes: list[dict[str, Any]] = manager["typed_config"]["route_config"]["virtual_hosts"][0][
        "routes"
    ]
    return routes


def test_every_route_has_a_body_limit_but_bidirectional_streams() -> None:
    options = EdgeOptions(max_request_bytes=4096, web_max_request_bytes=1024, web_port=8090)
    config = json.loads(render_envoy_config(8080, 9901, UPSTREAMS, options=options))
    limits = {}
    for route in _routes(config):
        per_route = route["typed_per_filter_config"][BUFFER_FILTER]
        limit = per_route.get("buffer", {}).get("max_request_bytes")
        limits[route["match"]["prefix"]] = "off" if per_route.get("disabled") else limit
    assert limits["/lastmile.dispatch.v1."] == 4096
    assert limits["/lastmile.tracking.v1."] == 4096
    assert limits["/grpc.health.v1.Health/"] == 4096
    assert limits["/"] == 1024  # the browser apps
    assert limits["/lastmile.driver.v1."] == "off"  # Connect: bidirectional
    assert limits["/grpc.reflection."] == "off"


@pytest.mark.parametrize("origins", [["*"], [], ["example.com"], ["http://a.example/"]])
def test_cors_needs_explicit_origins(origins: list[str]) -> None:
    with pytest.raises(ValueError):
        render_envoy_config(8080, 9901, UPSTREAMS, origins)


def test_cors_allows_exactly_the_listed_origins() -> None:
    config = json.loads(render_envoy_config(8080, 9901, UPSTREAMS, ["https://a.example"]))
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    host = manager["typed_config"]["route_config"]["virtual_hosts"][0]
    policy = host["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert policy["allow_origin_string_match"] == [{"exact": "https://a.example"}]


def test_unknown_service_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown services"):
        render_envoy_config(8080, 9901, {**UPSTREAMS, "billing": 1})
