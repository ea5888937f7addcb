"""Ports chosen ahead of binding: below the ephemeral range, free, never handed out twice."""

from __future__ import annotations

import socket

import pytest

from ops.servers import process
from ops.servers.process import (
    CHOSEN_PORTS,
    EPHEMERAL_LOW,
    ServerError,
    free_port,
    free_port_block,
    free_port_pair,
    port_is_free,
)


def test_ports_come_from_the_chosen_range_and_are_never_repeated() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(CHOSEN_PORTS[0] <= port < CHOSEN_PORTS[1] for port in ports)
    assert all(port_is_free(port) for port in ports)


def test_a_port_in_use_is_not_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    port = next(p for p in range(*CHOSEN_PORTS) if p not in process._handed_out and port_is_free(p))
    monkeypatch.setattr(process, "CHOSEN_PORTS", (port, port + 1))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        with pytest.raises(ServerError, match="no 1 consecutive free ports"):
            free_port()
    assert free_port() == port  # free again once the listener is gone


def test_blocks_and_pairs_are_free_below_the_ephemeral_range() -> None:
    first = free_port_block(4)
    second = free_port_block(4)
    assert not set(range(first, first + 4)) & set(range(second, second + 4))
    assert all(port_is_free(port) for port in range(first, first + 4))
    low = free_port_pair(10_000)
    assert port_is_free(low) and port_is_free(low + 10_000)
    assert low + 10_000 < EPHEMERAL_LOW
    assert low not in range(first, first + 4) and low not in range(second, second + 4)
