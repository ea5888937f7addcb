"""The rendered Envoy edge config is accepted by Envoy itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.servers.envoy import render_envoy_config, validate_config

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
        "envoy.filters.http.router",
    ]


def test_unknown_service_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown services"):
        render_envoy_config(8080, 9901, {**UPSTREAMS, "billing": 1})
