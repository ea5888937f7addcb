"""The Helm chart: the CI check passes, and the checks it relies on can fail.

Rendering goes through helm-sdkpy's lint (see ops/chart.py), so these tests run Helm's own
template engine on the real chart.
"""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from core.settings import PREFIX, Settings
from ops import chart
from ops.servers.process import ServerError

REPO = Path(__file__).resolve().parents[2]
CI = chart.CHART / "ci"
SERVICES = ("gateway", "tracking", "dispatch", "pod")


def _overlay(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CI / name).read_text())
    return data


@pytest.fixture(scope="module")
def minimal() -> chart.Render:
    return chart.render(chart.CHART, [_overlay("minimal-values.yaml")])


@pytest.fixture(scope="module")
def production() -> chart.Render:
    return chart.render(chart.CHART, [_overlay("production-values.yaml")])


def test_check_chart_script_passes() -> None:
    result = subprocess.run(
        ["bash", "scripts/check-chart.sh"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "production-values.yaml: ok" in result.stdout


def test_every_service_is_a_deployment_with_grpc_probes(minimal: chart.Render) -> None:
    assert minimal.failures == [] and minimal.lint_errors == []
    for name in SERVICES:
        deployment = minimal.find("Deployment", f"-{name}")
        pod = deployment["spec"]["template"]
        container = pod["spec"]["containers"][0]
        assert container["args"] == ["python", "-m", name]
        port = minimal.values["components"][name]["port"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": port}
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert "checksum/config" in pod["metadata"]["annotations"]
        headless = minimal.find("Service", f"-{name}-headless")
        assert headless["spec"]["clusterIP"] == "None"
    edge = minimal.find("Deployment", "-edge")
    assert edge["spec"]["template"]["spec"]["containers"][0]["args"][0] == "envoy"


def test_autoscalers_for_gateway_and_tracking_and_budgets(minimal: chart.Render) -> None:
    scaled = {
        m["spec"]["scaleTargetRef"]["name"].rsplit("-", 1)[1]
        for m in _kind(minimal, "HorizontalPodAutoscaler")
    }
    assert scaled == {"gateway", "tracking"}
    budgets = {
        m["metadata"]["name"].rsplit("-", 1)[1] for m in _kind(minimal, "PodDisruptionBudget")
    }
    assert {"gateway", "tracking", "pod", "edge"} <= budgets


def test_settings_and_secrets_name_real_settings(minimal: chart.Render) -> None:
    fields = {PREFIX + name.upper() for name in Settings.__dataclass_fields__}
    config = minimal.find("ConfigMap", "-config")["data"]
    assert config["LASTMILE_HOST"] == "0.0.0.0"
    assert set(config) <= fields
    secret = minimal.find("Secret", "-secrets")["data"]
    assert set(secret) <= fields
    assert {"LASTMILE_TOKEN_SECRET", "LASTMILE_DATABASE_URL", "LASTMILE_S3_SECRET_KEY"} <= set(
        secret
    )


def test_hooks_migrate_and_build_the_graph(minimal: chart.Render) -> None:
    migrate = minimal.find("Job", "-migrate")
    hooks = migrate["metadata"]["annotations"]["helm.sh/hook"]
    assert hooks == "pre-install,pre-upgrade"
    assert migrate["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "python",
        "-m",
        "ops.migrate",
    ]
    graph = minimal.find("Job", "-graph")
    args = graph["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["python", "-m", "ops.graph"]
    tracking = minimal.find("Deployment", "-tracking")["spec"]["template"]["spec"]
    assert any(v["name"] == "graph" for v in tracking["volumes"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"postgresql": {"enabled": True, "auth": {"password": "x"}}}, "not both"),
        ({"redis": {"enabled": True, "auth": {"password": "x"}}}, "not both"),
        ({"edge": {"tls": {"enabled": True, "secretName": ""}}}, "edge.tls.secretName"),
        ({"config": {"databaseUrl": "postgresql://x"}}, "set by the chart"),
    ],
)
def test_invalid_combinations_fail_with_a_message(change: dict[str, Any], message: str) -> None:
    rendered = chart.render(chart.CHART, [_overlay("minimal-values.yaml"), change])
    assert any(message in failure for failure in rendered.failures), rendered.failures


def test_schema_rejects_unknown_keys_in_lint_and_in_python() -> None:
    bad = {"components": {"gateway": {"replica": 3}}, "edgee": {}}
    rendered = chart.render(chart.CHART, [_overlay("minimal-values.yaml"), bad])
    assert rendered.lint_errors
    errors = chart.schema_errors(chart.CHART, rendered.values)
    assert any("edgee" in e for e in errors) and any("replica" in e for e in errors)


def test_kubernetes_validation_catches_a_broken_manifest(minimal: chart.Render) -> None:
    assert chart.validate_manifests(minimal.manifests, chart.KUBE_VERSION) == []
    broken = copy.deepcopy(minimal.find("Deployment", "-gateway"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpcc"] = {}
    assert chart.validate_manifests([broken], chart.KUBE_VERSION)


def test_edge_config_is_the_local_stacks_with_hashing_and_tls(production: chart.Render) -> None:
    config = chart.chart_envoy_config(production)
    assert config == chart.expected_envoy_config(production)
    routes = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]["route_config"]["virtual_hosts"][0]["routes"]
    tracking = [r for r in routes if r["match"]["prefix"] == "/lastmile.tracking.v1."]
    assert tracking[0]["route"]["hash_policy"] == [{"header": {"header_name": "x-lastmile-order"}}]
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    assert clusters["tracking"]["lb_policy"] == "RING_HASH"
    assert "lb_policy" not in clusters["gateway"]
    assert "transport_socket" in config["static_resources"]["listeners"][0]["filter_chains"][0]


def _kind(rendered: chart.Render, kind: str) -> list[dict[str, Any]]:
    return [m for m in rendered.manifests if m.get("kind") == kind]


def test_envoy_validation_rejects_a_broken_config(minimal: chart.Render, tmp_path: Path) -> None:
    config = chart.chart_envoy_config(minimal)
    chart.validate_envoy(config, tmp_path)
    broken = copy.deepcopy(config)
    broken["static_resources"]["clusters"][0]["lb_policy"] = "NOT_A_POLICY"
    with pytest.raises(ServerError):
        chart.validate_envoy(broken, tmp_path)


def test_defaults_lint_but_name_no_endpoints() -> None:
    rendered = chart.render(chart.CHART)
    assert rendered.lint_errors == []
    assert any("no database" in failure for failure in rendered.failures)


def test_every_alert_links_a_runbook_section_and_a_real_metric(production: chart.Render) -> None:
    """An alert whose runbook anchor or metric name drifted would page with nothing to read
    or never fire."""
    rules = production.find("PrometheusRule", "")["spec"]["groups"][0]["rules"]
    runbook = (REPO / "docs" / "runbook.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
        for line in runbook.splitlines()
        if line.startswith("## ")
    }
    code = "\n".join(p.read_text() for d in (*SERVICES, "core") for p in (REPO / d).rglob("*.py"))
    assert len(rules) >= 9
    for rule in rules:
        page, anchor = rule["annotations"]["runbook"].split("#")
        assert page == "docs/runbook.md" and anchor in anchors, rule["alert"]
        for metric in set(re.findall(r"lastmile_[a-z_]+", rule["expr"])):
            name = re.sub(r"_(bucket|count|total)$", "", metric)
            assert f'"{name}' in code, (rule["alert"], metric)
