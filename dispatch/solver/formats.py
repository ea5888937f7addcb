"""Readers for the Solomon VRPTW and Li & Lim PDPTW benchmark text formats.

Both are planar: distance is the Euclidean distance of the coordinates and travel time equals
distance. Files keep their CRLF endings and pad with spaces (Solomon) or tabs (Li & Lim), so
everything is split on whitespace.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dispatch.solver.model import FloatMatrix, Node, NodeKind, Objective, Problem, Vehicle


class FormatError(ValueError):
    """The file is not a Solomon or Li & Lim instance."""


def _euclidean(xy: list[tuple[float, float]]) -> FloatMatrix:
    points = np.asarray(xy, dtype=np.float64)
    delta = points[:, None, :] - points[None, :, :]
    return np.asarray(np.sqrt((delta**2).sum(axis=2)), dtype=np.float64)


def _fleet(count: int, capacity: int, depot: Node) -> list[Vehicle]:
    return [Vehicle(0, 0, capacity, depot.ready, depot.due) for _ in range(count)]


def parse_solomon(text: str, name: str) -> Problem:
    """A Solomon-format VRPTW (also Gehring & Homberger); objective: DIMACS truncated arcs."""
    lines = [line.split() for line in text.splitlines()]
    try:
        at = next(k for k, row in enumerate(lines) if row[:1] == ["NUMBER"])
        count, capacity = (int(v) for v in lines[at + 1][:2])
        start = next(k for k, row in enumerate(lines) if row[:2] == ["CUST", "NO."])
        rows = [[float(v) for v in row] for row in lines[start + 1 :] if len(row) == 7]
    except (StopIteration, ValueError, IndexError) as exc:
        raise FormatError(f"{name}: not a Solomon-format file ({exc})") from exc
    if not rows or rows[0][0] != 0:
        raise FormatError(f"{name}: the first customer row must be the depot 0")
    nodes = [
        Node(
            external_id=int(r[0]),
            kind=NodeKind.DEPOT if k == 0 else NodeKind.DROP,
            amount=int(r[3]),
            ready=r[4],
            due=r[5],
            service=r[6],
        )
        for k, r in enumerate(rows)
    ]
    matrix = _euclidean([(r[1], r[2]) for r in rows])
    return Problem(
        name=name,
        nodes=nodes,
        vehicles=_fleet(count, capacity, nodes[0]),
        distance=matrix,
        duration=matrix,
        objective=Objective.TRUNCATED_DISTANCE,
    )


def parse_li_lim(text: str, name: str) -> Problem:
    """A Li & Lim PDPTW; objective: full-precision distance."""
    rows = [line.split() for line in text.splitlines() if line.strip()]
    try:
        count, capacity = int(rows[0][0]), int(rows[0][1])
        tasks = [[float(v) for v in row] for row in rows[1:]]
    except (ValueError, IndexError) as exc:
        raise FormatError(f"{name}: not a Li & Lim file ({exc})") from exc
    if any(len(t) != 9 for t in tasks) or not tasks or tasks[0][0] != 0:
        raise FormatError(f"{name}: every task row needs 9 columns and the depot comes first")
    index = {int(t[0]): k for k, t in enumerate(tasks)}
    nodes: list[Node] = []
    for k, t in enumerate(tasks):
        pickup_of, delivery_of = int(t[7]), int(t[8])
        if k == 0:
            kind, sibling = NodeKind.DEPOT, None
        elif delivery_of:
            kind, sibling = NodeKind.PICKUP, index.get(delivery_of)
        else:
            kind, sibling = NodeKind.DELIVERY, index.get(pickup_of)
        if k and sibling is None:
            raise FormatError(f"{name}: task {int(t[0])} has no valid sibling")
        nodes.append(Node(int(t[0]), kind, abs(int(t[3])), t[4], t[5], t[6], sibling))
    matrix = _euclidean([(t[1], t[2]) for t in tasks])
    return Problem(name, nodes, _fleet(count, capacity, nodes[0]), matrix, matrix)


def load_instance(path: Path) -> Problem:
    """Read a benchmark file, telling the format from its first line."""
    text = path.read_text()
    name = path.stem
    first = text.split(maxsplit=3)
    if len(first) >= 3 and all(tok.lstrip("-").isdigit() for tok in first[:3]):
        return parse_li_lim(text, name)
    return parse_solomon(text, name)
