"""Offline checks of the Helm chart (``helm/``): lint, render, Kubernetes schemas, Envoy config.

Helm here is PyPI ``helm-sdkpy`` (Helm's Go library behind a C ABI). It lints a chart but has no
``template`` action, its install action has no dry-run or client-only option (it always talks to
a cluster), and its lint result carries severities without messages. Two facts make rendering
possible anyway: lint renders every template, and in lint mode Helm's ``fail`` only logs its
message (to stderr) instead of aborting. So :func:`render` lints a copy of the chart holding one
extra template that ``fail``s with every other template ``include``d: the log line is the
rendered manifest. ``fail`` calls of the chart itself (invalid values) are logged the same way
and come back as :attr:`Render.failures`.

Lint takes no values files either: the copy's ``values.yaml`` is the chart's defaults deep-merged
with the overlay, as ``helm -f`` merges them. Lint runs in a child process (the Go runtime logs
to the process's stderr, and one bad chart must not take the caller down).

Usage: ``python -m ops.chart [--chart helm] [--kube-version 1.31]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# No type stubs ship with these (kubernetes-validate has none at all); their results are
# checked where they are used.
import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import yaml  # type: ignore[import-untyped]

from core.settings import Settings
from ops.servers.envoy import EdgeOptions, render_envoy_config, validate_config

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm"
KUBE_VERSION = "1.31"
PROBE = "zz-render-probe.yaml"
_BEGIN, _END = "<<lastmile-render>>", "<<lastmile-end>>"
_FAIL_LOG = re.compile(r'funcMap fail message=("(?:[^"\\]|\\.)*")')
# Helm lint severities (helm.sh/helm/v4/pkg/lint/support).
_ERROR_SEVERITY = 3
_SEVERITY = {1: "info", 2: "warning", 3: "error"}
# Kinds of CRDs the chart may render; kubernetes-validate has only the built-in schemas.
_CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}
_LINT_CHILD = """
import asyncio, json, sys
import helm_sdkpy
result = asyncio.run(helm_sdkpy.Lint(helm_sdkpy.Configuration()).run(sys.argv[1]))
print(json.dumps(result))
"""


class ChartError(RuntimeError):
    """The chart failed a check; the message says which and why."""


@dataclass
class Render:
    """What one lint+render of the chart with some values gave."""

    values: dict[str, Any]
    lint_messages: list[tuple[str, str]]
    manifests: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def lint_errors(self) -> list[str]:
        """Lint messages of error severity, as ``path``."""
        return [path for severity, path in self.lint_messages if severity == "error"]

    def find(self, kind: str, name_suffix: str) -> dict[str, Any]:
        """The one manifest of ``kind`` whose name ends with ``name_suffix``."""
        found = [
            m
            for m in self.manifests
            if m.get("kind") == kind and str(m["metadata"]["name"]).endswith(name_suffix)
        ]
        if len(found) != 1:
            raise ChartError(f"expected one {kind} *{name_suffix}, found {len(found)}")
        return found[0]


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``overlay`` over ``base`` the way Helm merges values files (maps merge, the rest replaces)."""
    merged = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def chart_values(chart: Path, overlays: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The chart's default values with ``overlays`` merged in order."""
    values: dict[str, Any] = yaml.safe_load((chart / "values.yaml").read_text()) or {}
    for overlay in overlays:
        values = deep_merge(values, overlay)
    return values


def schema_errors(chart: Path, values: Mapping[str, Any]) -> list[str]:
    """values.schema.json violations, readable (Helm's lint result only says that one failed)."""
    schema = json.loads((chart / "values.schema.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(values), key=lambda e: list(e.absolute_path))
    ]


def _go_unquote(quoted: str) -> str:
    # strconv.Quote output: JSON-compatible except \x.., \a and \v escapes.
    fixed = re.sub(r"\\x([0-9a-fA-F]{2})", r"\\u00\1", quoted)
    return str(json.loads(fixed.replace("\\a", "\\u0007").replace("\\v", "\\u000b")))


def _probe_template(chart: Path) -> str:
    files = sorted(
        p.name
        for p in (chart / "templates").iterdir()
        if p.suffix in {".yaml", ".yml"} and not p.name.startswith("_")
    )
    parts = " ".join(
        f'(include (print $.Template.BasePath "/{name}") $) "\\n---\\n"' for name in files
    )
    return f'{{{{- fail (print "{_BEGIN}" {parts} "{_END}") }}}}\n'


def _lint_copy(copy_dir: Path) -> tuple[dict[str, Any], str]:
    result = subprocess.run(
        [sys.executable, "-c", _LINT_CHILD, str(copy_dir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise ChartError(f"helm lint crashed:\n{result.stdout}\n{result.stderr}")
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return data, result.stderr


def render(chart: Path, overlays: Sequence[Mapping[str, Any]] = ()) -> Render:
    """Lint the chart with the merged values and capture the rendered manifests."""
    values = chart_values(chart, overlays)
    with tempfile.TemporaryDirectory(prefix="lastmile-chart-") as tmp:
        copy_dir = Path(tmp) / chart.name
        shutil.copytree(chart, copy_dir, ignore=shutil.ignore_patterns("ci"))
        (copy_dir / "values.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
        # The probe only logs (lint mode), so one lint gives both the verdict and the output.
        (copy_dir / "templates" / PROBE).write_text(_probe_template(copy_dir))
        plain, log = _lint_copy(copy_dir)
    messages = [
        (_SEVERITY.get(int(m["Severity"]), str(m["Severity"])), str(m["Path"]))
        for m in plain.get("Messages") or []
    ]
    rendered = Render(values, messages)
    texts = [_go_unquote(q) for q in _FAIL_LOG.findall(log)]
    manifests = [t for t in texts if t.startswith(_BEGIN)]
    # Lint renders more than once: keep each chart failure once, in order.
    rendered.failures = list(dict.fromkeys(t for t in texts if not t.startswith(_BEGIN)))
    if manifests:
        body = manifests[0].removeprefix(_BEGIN).removesuffix(_END)
        rendered.manifests = [d for d in yaml.safe_load_all(body) if d]
    return rendered


def validate_manifests(manifests: Sequence[Mapping[str, Any]], kube_version: str) -> list[str]:
    """Every manifest against the Kubernetes schemas (strict: unknown fields are errors)."""
    errors = []
    for manifest in manifests:
        if manifest.get("kind") in _CUSTOM_KINDS:
            continue
        name = f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(dict(manifest), kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{name}: {exc.message}")
        except (
            kubernetes_validate.SchemaNotFoundError,
            kubernetes_validate.InvalidSchemaError,
        ) as e:
            errors.append(f"{name}: {e}")
    return errors


def expected_envoy_config(rendered: Render, namespace: str = "default") -> dict[str, Any]:
    """What ops.servers.envoy renders for the edge the values describe (Kubernetes DNS hosts)."""
    values = rendered.values
    components = {n: c for n, c in values["components"].items() if c["enabled"]}
    fullname = rendered.find("ConfigMap", "-config")["metadata"]["name"].removesuffix("-config")
    edge = values["edge"]
    tls = bool(edge["tls"]["enabled"])
    options = EdgeOptions(
        listen_address="0.0.0.0",
        hosts={n: f"{fullname}-{n}-headless.{namespace}.svc.cluster.local" for n in components},
        hash_header=edge["consistentHashHeader"] or None,
        tls_cert="/etc/envoy/tls/tls.crt" if tls else None,
        tls_key="/etc/envoy/tls/tls.key" if tls else None,
        max_request_bytes=int(edge["maxRequestBytes"]),
    )
    text = render_envoy_config(
        edge["port"],
        edge["adminPort"],
        {n: int(c["port"]) for n, c in components.items()},
        edge["allowedOrigins"],
        options,
    )
    config: dict[str, Any] = json.loads(text)
    return config


def chart_envoy_config(rendered: Render) -> dict[str, Any]:
    """The Envoy config in the chart's edge ConfigMap."""
    data = rendered.find("ConfigMap", "-edge")["data"]["envoy.yaml"]
    config: dict[str, Any] = yaml.safe_load(data)
    return config


def validate_envoy(config: Mapping[str, Any], work_dir: Path) -> None:
    """``envoy --mode validate`` on ``config``; TLS files are replaced by a throwaway pair."""
    text = json.dumps(config)
    if "/etc/envoy/tls/" in text:
        cert, key = work_dir / "tls.crt", work_dir / "tls.key"
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
                *("-subj", "/CN=edge.test", "-keyout", str(key), "-out", str(cert)),
            ],
            check=True,
            capture_output=True,
        )
        text = text.replace("/etc/envoy/tls/tls.crt", str(cert))
        text = text.replace("/etc/envoy/tls/tls.key", str(key))
    path = work_dir / "envoy.yaml"
    path.write_text(text)
    validate_config(path)


def unknown_settings(values: Mapping[str, Any]) -> list[str]:
    """``config`` keys (global and per component) that name no field of core.settings."""
    fields = set(Settings.__dataclass_fields__)
    blocks = {"config": values.get("config") or {}}
    for name, component in (values.get("components") or {}).items():
        blocks[f"components.{name}.config"] = component.get("config") or {}
    return [
        f"{where}.{key}"
        for where, block in blocks.items()
        for key in block
        if re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower() not in fields
    ]


def check_values_file(
    chart: Path, values_file: Path | None, kube_version: str = KUBE_VERSION
) -> list[str]:
    """Every check for one values file (None: the defaults, which lint but need endpoints)."""
    overlays = [yaml.safe_load(values_file.read_text()) or {}] if values_file else []
    label = values_file.name if values_file else "default values"
    rendered = render(chart, overlays)
    problems = [f"{label}: schema: {e}" for e in schema_errors(chart, rendered.values)]
    problems += [f"{label}: helm lint error in {p}" for p in rendered.lint_errors]
    problems += [f"{label}: unknown setting {k}" for k in unknown_settings(rendered.values)]
    if values_file is None:
        return problems  # the defaults name no database: rendering them fails by design
    problems += [f"{label}: chart fail: {f}" for f in rendered.failures]
    if not rendered.manifests:
        return [*problems, f"{label}: nothing rendered"]
    problems += [f"{label}: {e}" for e in validate_manifests(rendered.manifests, kube_version)]
    if rendered.values["edge"]["enabled"]:
        if chart_envoy_config(rendered) != expected_envoy_config(rendered):
            problems.append(f"{label}: the chart's Envoy config differs from render_envoy_config")
        with tempfile.TemporaryDirectory(prefix="lastmile-envoy-") as tmp:
            try:
                validate_envoy(chart_envoy_config(rendered), Path(tmp))
            except Exception as exc:  # ServerError or openssl failing: reported, not raised
                problems.append(f"{label}: envoy --mode validate: {exc}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Check the chart with its defaults and every ``ci/*.yaml``; non-zero on any problem."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chart", type=Path, default=CHART)
    parser.add_argument("--kube-version", default=KUBE_VERSION)
    args = parser.parse_args(argv)
    chart: Path = args.chart.resolve()
    files: list[Path | None] = [None, *sorted((chart / "ci").glob("*.yaml"))]
    problems: list[str] = []
    for values_file in files:
        found = check_values_file(chart, values_file, args.kube_version)
        label = values_file.name if values_file else "default values"
        print(f"chart {label}: {'ok' if not found else f'{len(found)} problem(s)'}")
        problems += found
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
