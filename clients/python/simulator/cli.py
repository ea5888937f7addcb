"""``lastmile simulate``: run a scenario against a running platform and write its report, or
(``--load``) drive load from several processes."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from core.geo import LatLng
from core.settings import Settings
from simulator import report
from simulator.city import City, open_roads
from simulator.connection import Connection, addresses_of
from simulator.run import Progress, Simulation
from simulator.scenario import Scenario, ScenarioError, load

SCENARIOS_DIR = Path(__file__).resolve().parents[3] / "scenarios"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``lastmile simulate``."""
    parser.add_argument("scenario", nargs="?", help="scenario TOML file or a name in scenarios/")
    parser.add_argument("--osm", metavar="PBF", help="road network to drive on (.osm.pbf)")
    parser.add_argument("--speed", type=float, help="simulated seconds per wall second")
    parser.add_argument("--policy", choices=("baseline", "platform"), help="assignment policy")
    parser.add_argument("--seed", type=int, help="override the scenario's seed")
    parser.add_argument("--report-dir", metavar="DIR", help="where report.json/.html go")
    parser.add_argument("--target", metavar="HOST:PORT", help="platform edge (default: settings)")
    parser.add_argument("--load", action="store_true", help="load mode (drivers + customers)")
    parser.add_argument("--drivers", type=int, default=1000, help="load mode: driver streams")
    parser.add_argument("--customers", type=int, default=1000, help="load mode: Track streams")
    parser.add_argument("--seconds", type=float, default=60.0, help="load mode: duration")
    parser.add_argument("--processes", type=int, default=2, help="load mode: processes")


def resolve_scenario(name: str) -> Path:
    """A path, or a bare name of a file in ``scenarios/``."""
    path = Path(name)
    if path.is_file():
        return path
    candidate = SCENARIOS_DIR / (name if name.endswith(".toml") else f"{name}.toml")
    if candidate.is_file():
        return candidate
    raise ScenarioError(f"no scenario file {name!r} (nor {candidate})")


def with_overrides(scenario: Scenario, args: argparse.Namespace) -> Scenario:
    """Command-line values replace the file's."""
    changes: dict[str, Any] = {}
    if args.speed:
        changes["speed"] = args.speed
    if args.policy:
        changes["policy"] = args.policy
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.osm:
        changes["city"] = str(Path(args.osm).resolve())
    return dataclasses.replace(scenario, **changes)


async def simulate(
    scenario: Scenario,
    settings: Settings,
    target: str | None,
    report_dir: Path,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run ``scenario`` against the platform; returns the report's figures (also written)."""
    roads = open_roads(settings, Path(scenario.city) if scenario.city else None)
    city = City(roads, LatLng(*scenario.center), scenario.radius_m)
    connection = Connection(settings, addresses_of(settings, target), scenario.tenant)
    started = time.monotonic()
    try:
        recorder = await Simulation(scenario, connection, city, progress).run()
    finally:
        connection.close()
    summary = report.summarize(scenario, recorder, time.monotonic() - started)
    report.write(summary, report_dir)
    return summary


def _print_progress(line: str) -> None:
    print("\r" + line.ljust(100), end="", flush=True)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Entry point of the subcommand."""
    if args.load:
        from simulator.load import run_load

        try:
            return run_load(
                settings, args.target, args.drivers, args.customers, args.seconds, args.processes
            )
        except ValueError as exc:
            print(f"lastmile simulate --load: {exc}", file=sys.stderr)
            return 2
    if not args.scenario:
        print("lastmile simulate: give a SCENARIO (or --load)", file=sys.stderr)
        return 2
    try:
        scenario = with_overrides(load(resolve_scenario(args.scenario)), args)
    except (ScenarioError, OSError) as exc:
        print(f"lastmile simulate: {exc}", file=sys.stderr)
        return 2
    report_dir = Path(args.report_dir or settings.data_dir / "simulations" / scenario.name)
    summary = asyncio.run(simulate(scenario, settings, args.target, report_dir, _print_progress))
    print()
    by_outcome = summary["orders"]["by_outcome"]
    print(f"orders {summary['orders']['placed']}: {by_outcome}")
    print(
        f"on-time rate {summary['on_time_rate']}, time to delivery {summary['time_to_delivery_s']}"
    )
    print(f"report: {report_dir / 'report.html'}")
    return 0
