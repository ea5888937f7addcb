"""Scenarios as TOML files, and order streams replayed from CSV.

A scenario (see ``scenarios/smoke.toml``) has top-level keys and four tables::

    name = "smoke"            # shown in the report
    seed = 7                  # every random draw of the run derives from it
    city = ""                 # .osm.pbf path; empty = the platform's default city
    center = [35.90, 14.49]   # where the simulated city happens (lat, lng)
    radius_m = 2500.0
    start = "12:00"           # simulated time of day at the start
    duration_s = 900.0        # simulated seconds during which orders are placed
    speed = 20.0              # simulated seconds per wall second
    drain_s = 60.0            # wall seconds allowed after the last order to finish
    policy = "baseline"       # baseline (simulator assigns via AssignOrder) | platform
    tenant = "sim"

    [fleet]   drivers, capacity, speed_variation, offer_accept_rate, reattempt_wait_s
    [orders]  base_per_hour, lunch_peak_per_hour, dinner_peak_per_hour, peak_width_s,
              max_orders, window_s, replay_csv
    [origins] count, reject_rate, prep_min_s, prep_max_s, prep_distribution, prep_mode_s, api
    [customers] not_home_rate, instruction_change_rate, track_opens_min, track_opens_max
    [gps]     noise_m, outlier_rate

Replay CSV (header required): ``offset_s,origin_lat,origin_lng,dest_lat,dest_lng,window_s``
- offset in simulated seconds from the start, the drop-off window's length in simulated
seconds from the moment the order is placed. With a replay file the rate curve is unused.
"""

from __future__ import annotations

import csv
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

POLICIES = ("baseline", "platform")
PREP_DISTRIBUTIONS = ("uniform", "triangular")


class ScenarioError(ValueError):
    """A scenario or replay file that cannot be used; the message says which key and why."""


@dataclass(frozen=True, slots=True)
class Fleet:
    """The drivers."""

    drivers: int = 5
    capacity: int = 4
    # Each driver's speed is the road's speed times 1 +- this (drawn per driver and per leg).
    speed_variation: float = 0.15
    offer_accept_rate: float = 0.9
    # Simulated seconds before knocking again when the platform says "reattempt".
    reattempt_wait_s: float = 600.0


@dataclass(frozen=True, slots=True)
class Orders:
    """How orders arrive."""

    base_per_hour: float = 20.0
    lunch_peak_per_hour: float = 60.0
    dinner_peak_per_hour: float = 80.0
    # Standard deviation of each peak, simulated seconds.
    peak_width_s: float = 3600.0
    # Stop placing orders after this many (0 = no cap).
    max_orders: int = 0
    # Length of the promised drop-off window from the moment the order is placed.
    window_s: float = 2700.0
    replay_csv: str = ""


@dataclass(frozen=True, slots=True)
class Origins:
    """Restaurants and stores."""

    count: int = 5
    # Share of incoming orders an origin rejects.
    reject_rate: float = 0.05
    # Preparation time of an accepted order, simulated seconds: drawn from
    # ``prep_distribution`` (uniform, or triangular with its peak at ``prep_mode_s``; 0 = the
    # middle) between ``prep_min_s`` and ``prep_max_s``.
    prep_min_s: float = 300.0
    prep_max_s: float = 900.0
    prep_distribution: str = "uniform"
    prep_mode_s: float = 0.0
    # True: origins answer like real ones, through OriginService (they learn of orders on
    # WatchOriginOrders, accept with the drawn preparation or reject, and MarkReady when it is
    # over). False: they only cook; the platform's answer policy answers for them and a
    # rejection is the desk cancelling the order.
    api: bool = True


@dataclass(frozen=True, slots=True)
class Customers:
    """The people ordering."""

    not_home_rate: float = 0.05
    instruction_change_rate: float = 0.1
    track_opens_min: int = 1
    track_opens_max: int = 3


@dataclass(frozen=True, slots=True)
class Gps:
    """The GPS noise model."""

    # Standard deviation of the horizontal error, metres.
    noise_m: float = 5.0
    # Share of fixes that are far off (multipath), 10x the noise.
    outlier_rate: float = 0.01


@dataclass(frozen=True, slots=True)
class Scenario:
    """Everything one simulation run needs; reproducible from ``seed``."""

    name: str = "scenario"
    seed: int = 1
    city: str = ""
    center: tuple[float, float] = (35.8989, 14.5146)
    radius_m: float = 3000.0
    start: str = "11:00"
    duration_s: float = 3600.0
    speed: float = 20.0
    drain_s: float = 120.0
    policy: str = "baseline"
    tenant: str = "sim"
    fleet: Fleet = field(default_factory=Fleet)
    orders: Orders = field(default_factory=Orders)
    origins: Origins = field(default_factory=Origins)
    customers: Customers = field(default_factory=Customers)
    gps: Gps = field(default_factory=Gps)
    source: Path | None = None

    @property
    def start_s(self) -> float:
        """The start as simulated seconds since midnight."""
        hours, _, minutes = self.start.partition(":")
        return int(hours) * 3600.0 + int(minutes or 0) * 60.0


_TABLES: dict[str, type[Any]] = {
    "fleet": Fleet,
    "orders": Orders,
    "origins": Origins,
    "customers": Customers,
    "gps": Gps,
}


def _build[T](kind: type[T], raw: dict[str, Any], where: str) -> T:
    """A dataclass from a TOML table: unknown keys and wrong types are refused by name."""
    known = {f.name: f for f in fields(kind)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known or key == "source":
            raise ScenarioError(f"{where}{key}: unknown key")
        default = getattr(kind(), key)
        if isinstance(default, tuple):
            if not isinstance(value, list) or len(value) != len(default):
                raise ScenarioError(f"{where}{key}: expected a list of {len(default)} numbers")
            value = tuple(float(v) for v in value)
        elif isinstance(default, float) and isinstance(value, int | float):
            value = float(value)
        elif type(value) is not type(default):
            raise ScenarioError(f"{where}{key}: expected {type(default).__name__}")
        values[key] = value
    return kind(**values)


def _preparation(origins: Origins) -> None:
    if origins.prep_min_s < 0:
        raise ScenarioError("origins.prep_min_s must not be negative")
    if origins.prep_distribution not in PREP_DISTRIBUTIONS:
        raise ScenarioError(
            f"origins.prep_distribution: one of {', '.join(PREP_DISTRIBUTIONS)},"
            f" got {origins.prep_distribution!r}"
        )
    if origins.prep_mode_s and not origins.prep_min_s <= origins.prep_mode_s <= origins.prep_max_s:
        raise ScenarioError("origins.prep_mode_s must lie between prep_min_s and prep_max_s")


def _rate(value: float, name: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ScenarioError(f"{name}: a rate between 0 and 1, got {value}")


def validate(scenario: Scenario) -> Scenario:
    """Refuse values no run can use; returns the scenario."""
    if scenario.policy not in POLICIES:
        raise ScenarioError(f"policy: one of {', '.join(POLICIES)}, got {scenario.policy!r}")
    if scenario.speed <= 0 or scenario.duration_s <= 0 or scenario.radius_m <= 0:
        raise ScenarioError("speed, duration_s and radius_m must be positive")
    try:
        if not 0 <= scenario.start_s < 86400:
            raise ValueError
    except ValueError as exc:
        raise ScenarioError(f"start: HH:MM, got {scenario.start!r}") from exc
    if scenario.fleet.drivers < 1 or scenario.origins.count < 1:
        raise ScenarioError("fleet.drivers and origins.count must be at least 1")
    if scenario.origins.prep_min_s > scenario.origins.prep_max_s:
        raise ScenarioError("origins.prep_min_s must not exceed origins.prep_max_s")
    _preparation(scenario.origins)
    if scenario.customers.track_opens_min > scenario.customers.track_opens_max:
        raise ScenarioError("customers.track_opens_min must not exceed track_opens_max")
    _rate(scenario.fleet.offer_accept_rate, "fleet.offer_accept_rate")
    _rate(scenario.origins.reject_rate, "origins.reject_rate")
    _rate(scenario.customers.not_home_rate, "customers.not_home_rate")
    _rate(scenario.customers.instruction_change_rate, "customers.instruction_change_rate")
    _rate(scenario.gps.outlier_rate, "gps.outlier_rate")
    return scenario


def parse(text: str, source: Path | None = None) -> Scenario:
    """A scenario from TOML text."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"not valid TOML: {exc}") from exc
    tables = {name: _build(kind, raw.pop(name, {}), f"{name}.") for name, kind in _TABLES.items()}
    top = _build(Scenario, raw, "")
    return validate(replace(top, source=source, **tables))


def load(path: Path) -> Scenario:
    """A scenario from a TOML file; a relative ``orders.replay_csv`` is taken from its folder."""
    return parse(path.read_text(), source=path.resolve())


@dataclass(frozen=True, slots=True)
class ReplayOrder:
    """One order of a replayed stream."""

    offset_s: float
    origin: tuple[float, float]
    destination: tuple[float, float]
    window_s: float


REPLAY_COLUMNS = ("offset_s", "origin_lat", "origin_lng", "dest_lat", "dest_lng", "window_s")


def read_replay(path: Path) -> list[ReplayOrder]:
    """The orders of a replay CSV, sorted by offset; bad rows are refused with their line."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != REPLAY_COLUMNS:
            raise ScenarioError(f"{path}: header must be {','.join(REPLAY_COLUMNS)}")
        orders = []
        for line, row in enumerate(reader, start=2):
            try:
                values = {key: float(row[key]) for key in REPLAY_COLUMNS}
            except (TypeError, ValueError) as exc:
                raise ScenarioError(f"{path}:{line}: every column must be a number") from exc
            if values["offset_s"] < 0 or values["window_s"] <= 0:
                raise ScenarioError(f"{path}:{line}: negative offset or empty window")
            orders.append(
                ReplayOrder(
                    values["offset_s"],
                    (values["origin_lat"], values["origin_lng"]),
                    (values["dest_lat"], values["dest_lng"]),
                    values["window_s"],
                )
            )
    return sorted(orders, key=lambda o: o.offset_s)


def replay_path(scenario: Scenario) -> Path | None:
    """The scenario's replay file, relative paths resolved against the scenario's folder."""
    if not scenario.orders.replay_csv:
        return None
    path = Path(scenario.orders.replay_csv)
    if not path.is_absolute() and scenario.source is not None:
        path = scenario.source.parent / path
    return path
