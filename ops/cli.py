"""The ``lastmile`` command line: bring the platform up, check it, show its settings, sign
tokens."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from core.auth import Role
from core.settings import Settings, describe
from ops import health
from ops.stack import SERVICES, LocalStack


def _solver_arguments(solve: argparse.ArgumentParser) -> None:
    from dispatch.solver.cli import add_arguments

    add_arguments(solve)


def _simulator_arguments(simulate: argparse.ArgumentParser) -> None:
    from simulator.cli import add_arguments

    add_arguments(simulate)


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    if getattr(args, "osm", None):
        settings = settings.replace(osm_pbf=Path(args.osm).resolve())
    return settings


def cmd_up(args: argparse.Namespace) -> int:
    """Start everything, print where it runs, wait for Ctrl-C, stop everything."""
    settings = _settings(args)
    if not settings.osm_pbf.is_file():
        print(f"lastmile up: no OSM extract at {settings.osm_pbf}", file=sys.stderr)
        return 2
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    stack = LocalStack(settings, settings.data_dir, progress=lambda m: print(m, flush=True))
    try:
        stack.start()
    except Exception as exc:
        print(f"lastmile up: failed: {exc}", file=sys.stderr)
        return 1
    print("\nthe platform is up:", flush=True)
    for component in stack.components:
        print(f"  {component.name:<16} {component.address:<22} pid {component.pid()}")
    print(f"  {'grpc-web edge':<16} http://{settings.host}:{settings.edge_port}")
    _print_app_links(settings)
    print(f"  {'data and logs':<16} {settings.data_dir}")
    print("ready. Ctrl-C stops everything.", flush=True)
    simulation = _start_simulation(settings, args.simulate) if args.simulate else None
    stopping.wait()
    print("\nstopping...", flush=True)
    if simulation is not None and simulation.poll() is None:
        simulation.terminate()
        simulation.wait(timeout=10)
    stack.stop()
    print("stopped.", flush=True)
    return 0


def _print_app_links(settings: Settings) -> None:
    """Where the browser apps are, with a dev dispatcher token signed for this stack."""
    from core.auth import issue_token

    edge = f"http://{settings.host}:{settings.edge_port}"
    dispatcher = issue_token(settings, "dev-dispatcher", Role.DISPATCHER, settings.web_dev_tenant)
    print(f"  {'dashboard':<16} {edge}/dashboard/#token={dispatcher}")
    print(f"  {'tracking links':<16} {edge}/track/#token=<the order's tracking_token>")


def cmd_status(args: argparse.Namespace) -> int:
    """Health of every service, directly and through the edge; non-zero if any is not serving."""
    settings = _settings(args)
    edge = f"{settings.host}:{settings.edge_port}"
    healthy = True
    print(f"{'service':<10} {'direct':<14} {'via edge':<14}")
    for name in SERVICES:
        direct = health.check(f"{settings.host}:{settings.port_of(name)}")
        via_edge = health.check(edge, via_edge_to=name)
        healthy &= direct == via_edge == "SERVING"
        print(f"{name:<10} {direct:<14} {via_edge:<14}")
    return 0 if healthy else 1


def cmd_config(args: argparse.Namespace) -> int:
    """Every setting with its environment variable, default and meaning."""
    for variable, default, doc in describe():
        print(f"{variable}\n    {doc}\n    default: {default}")
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    """List the ping entries the tracking processor could not read, or replay them."""
    return asyncio.run(_dead_letters(Settings.from_env(), args.replay, args.limit))


async def _dead_letters(settings: Settings, replay: bool, limit: int) -> int:
    from core.bus import Bus
    from tracking import dead_letters

    bus = Bus(settings)
    await bus.start()
    try:
        if replay:
            sent = await dead_letters.replay(bus)
            print(f"{sent} entries appended back to their ping shards")
            return 0
        print(f"{await dead_letters.count(bus)} ping entries set aside")
        for letter in await dead_letters.buried(bus, limit):
            driver = letter.fields.get(b"driver", b"?").decode(errors="replace")
            print(f"{letter.stream} {letter.entry_id}  driver {driver}  {letter.error}")
        return 0
    finally:
        await bus.stop()


def cmd_token(args: argparse.Namespace) -> int:
    """Print a token signed with this deployment's key: a service token for an integrator's
    backend, or a dispatcher, origin or driver token for trying the platform out."""
    from core.auth import issue_token

    settings = Settings.from_env()
    for flag, value in (("--tenant", args.tenant), ("--subject", args.subject)):
        if not value.strip():
            print(f"lastmile token: {flag} must not be empty", file=sys.stderr)
            return 2
    if args.ttl_s is not None and args.ttl_s <= 0:
        print("lastmile token: --ttl-s must be positive", file=sys.stderr)
        return 2
    if settings.token_secret == Settings.from_env({}).token_secret:
        print(
            "lastmile token: signed with the development key; set LASTMILE_TOKEN_SECRET"
            " to the deployment's key",
            file=sys.stderr,
        )
    print(issue_token(settings, args.subject, Role(args.role), args.tenant, args.ttl_s))
    return 0


def cmd_solve(args: argparse.Namespace) -> int:
    """Solve a VRPTW/PDPTW benchmark file and print the checked solution as JSON."""
    from dispatch.solver import cli as solver_cli  # solvers load only for this command

    return solver_cli.run(args)


def cmd_bench(args: argparse.Namespace) -> int:
    """Run one benchmark of bench/ (its own servers, bounded in time); extra args go to it."""
    import subprocess

    from core.settings import PROJECT_ROOT

    if not (PROJECT_ROOT / "bench" / f"{args.name}.py").is_file():
        print(f"lastmile bench: no benchmark bench/{args.name}.py", file=sys.stderr)
        return 2
    argv = [sys.executable, "-m", f"bench.{args.name}", *args.bench_args]
    return subprocess.run(argv, cwd=PROJECT_ROOT, check=False).returncode


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run a simulation scenario (or load mode) against the running platform."""
    from simulator import cli as simulator_cli  # the simulator loads only for this command

    return simulator_cli.run(args, Settings.from_env())


def _start_simulation(settings: Settings, scenario: str) -> subprocess.Popen[bytes]:
    """``lastmile simulate SCENARIO`` as a child of ``lastmile up`` (stopped with it)."""
    env = {**os.environ, **settings.to_env()}
    return subprocess.Popen([sys.executable, "-m", "ops", "simulate", scenario], env=env)


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``lastmile``."""
    root = argparse.ArgumentParser(
        prog="lastmile", description="Last-mile delivery platform: run and operate it locally."
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = commands.add_parser("up", help="start the whole platform on loopback (Ctrl-C stops it)")
    up.add_argument("--osm", metavar="PBF", help="OpenStreetMap extract to serve (default: Malta)")
    up.add_argument(
        "--simulate", metavar="SCENARIO", help="also run a simulation once ready (e.g. demo)"
    )
    up.set_defaults(run=cmd_up)
    status = commands.add_parser("status", help="health of every service, direct and via edge")
    status.set_defaults(run=cmd_status)
    config = commands.add_parser("config", help="list every setting and its default")
    config.set_defaults(run=cmd_config)
    dead = commands.add_parser(
        "dead-letters", help="ping entries the tracking processor could not read; --replay"
    )
    dead.add_argument("--replay", action="store_true", help="append them back to their shards")
    dead.add_argument("--limit", type=int, default=20, help="most listed (default 20)")
    dead.set_defaults(run=cmd_dead_letters)
    token = commands.add_parser("token", help="print a signed token for a role and tenant")
    token.add_argument("role", choices=[role.value for role in Role])
    token.add_argument("--tenant", required=True, help="the operator the caller acts for")
    token.add_argument(
        "--subject",
        required=True,
        help="who calls: a backend's name, a dispatcher, an origin id or a driver id",
    )
    token.add_argument(
        "--ttl-s", type=int, help="lifetime in seconds (default LASTMILE_TOKEN_TTL_S)"
    )
    token.set_defaults(run=cmd_token)
    solve = commands.add_parser("solve", help="solve a Solomon / Li & Lim file, print JSON")
    _solver_arguments(solve)
    solve.set_defaults(run=cmd_solve)
    simulate = commands.add_parser(
        "simulate", help="run a simulated city (scenario TOML) or load against the platform"
    )
    _simulator_arguments(simulate)
    simulate.set_defaults(run=cmd_simulate)
    bench = commands.add_parser("bench", help="run a benchmark: tracking, ingest, search, ...")
    bench.add_argument("name", help="bench/<name>.py")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="passed to the benchmark")
    bench.set_defaults(run=cmd_bench)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lastmile``."""
    args = parser().parse_args(argv)
    return int(args.run(args))
