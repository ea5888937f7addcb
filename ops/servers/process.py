"""A child process we own: started in its own session, watched, and stopped by its PID.

Every real server of the local stack runs through :class:`ManagedProcess`, so starting,
readiness polling, log capture and shutdown behave the same for all of them.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

POLL_INTERVAL_S = 0.05
LOG_TAIL_LINES = 40


class ServerError(RuntimeError):
    """A server could not be started, did not become ready, or could not be stopped."""


def venv_bin(name: str) -> Path:
    """Path of an executable installed in this interpreter's environment (envoy, weed, buf)."""
    return Path(sys.executable).parent / name


def port_is_free(port: int) -> bool:
    """Whether a TCP listener could bind 127.0.0.1:``port`` at this moment."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR, so connections lingering in TIME_WAIT from a previous run
        # do not keep them from listening; neither must they fail this check.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def ensure_free(port: int, what: str) -> None:
    """Raise :class:`ServerError` if ``port`` is taken.

    Checked before starting a server, because a readiness probe would otherwise be answered
    by whoever already listens there (often the dev stack) while our server dies.
    """
    if not port_is_free(port):
        raise ServerError(f"{what}: port 127.0.0.1:{port} is already in use")


# Ports for servers chosen ahead of binding: below Linux's ephemeral range (32768+), where
# outgoing connections take their local ports, so none can take a chosen port meanwhile (a
# kernel-picked port once did, between a test's choice and its server's bind).
CHOSEN_PORTS = (11000, 22000)
EPHEMERAL_LOW = 32768
_ATTEMPTS = 500
# Handed out by this process: chosen ports are free when chosen, not yet bound, and must not
# be chosen twice.
_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now, from ``CHOSEN_PORTS``, not
    handed out before by this process."""
    return free_port_block(1)


def free_port_block(size: int) -> int:
    """The first of ``size`` consecutive free ports (as :func:`free_port`)."""
    return _choose(lambda port: range(port, port + size), f"{size} consecutive free ports")


def free_port_pair(offset: int) -> int:
    """A free port ``p`` such that ``p + offset`` is free too (as :func:`free_port`; ``p +
    offset`` may lie above the range, not in the ephemeral one).

    Some servers (SeaweedFS) derive a second port by adding a fixed offset and do not
    always honour an explicit one, so both must be free.
    """
    return _choose(lambda port: (port, port + offset), f"a free port pair {offset} apart")


def _choose(ports_from: Callable[[int], Iterable[int]], what: str) -> int:
    low, high = CHOSEN_PORTS
    rng = random.SystemRandom()
    for _ in range(_ATTEMPTS):
        ports = set(ports_from(rng.randrange(low, high)))
        if max(ports) < EPHEMERAL_LOW and not ports & _handed_out and all(map(port_is_free, ports)):
            _handed_out.update(ports)
            return min(ports)
    raise ServerError(f"no {what} in [{low}, {high})")


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a text file, or an empty string if it does not exist."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """One long-running child process whose stdout and stderr are appended to a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        """Describe the process; nothing runs until :meth:`start`.

        ``env`` is added on top of this process's environment rather than replacing it,
        so PATH and locale settings stay usable by the child.
        """
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env or {})
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """PID of the child, or None before :meth:`start`."""
        return self._popen.pid if self._popen else None

    @property
    def running(self) -> bool:
        """Whether the child has been started and has not exited."""
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit status once the child has exited (negative: killed by that signal)."""
        return self._popen.poll() if self._popen else None

    def start(self) -> None:
        """Start the child in a new session so its whole process group can be signalled."""
        if self.running:
            raise ServerError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- {self.name}: {' '.join(self.argv)}\n".encode())
            log.flush()
            # The child keeps its own copy of the descriptor; ours closes with the block.
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                cwd=self.cwd,
                start_new_session=True,
            )

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the log, for error messages."""
        return tail(self.log_path, lines)

    def wait_ready(
        self,
        check: Callable[[], bool],
        timeout: float,
        interval: float = POLL_INTERVAL_S,
    ) -> None:
        """Poll ``check`` until it returns True; raise :class:`ServerError` on death or timeout.

        An exception from ``check`` counts as "not ready yet" (connection refused is the
        normal answer while a server boots); the last one is reported if time runs out.
        """
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while True:
            if not self.running:
                raise self._failure(f"exited with status {self.returncode} before being ready")
            try:
                if check():
                    return
            except Exception as exc:
                last_error = exc
            if time.monotonic() >= deadline:
                detail = f" (last check error: {last_error!r})" if last_error else ""
                raise self._failure(f"not ready after {timeout:.1f}s{detail}")
            time.sleep(interval)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds; return the exit status."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self._popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self._popen.wait(timeout=grace)
        # Helpers the leader spawned may outlive it; the group id is still the leader's pid.
        self._signal_group(signal.SIGKILL)
        return self._popen.returncode

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._popen is not None
        # Nothing left in the group, or (PermissionError) the id now belongs to another user.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, sig)

    def _failure(self, what: str) -> ServerError:
        return ServerError(f"{self.name} {what}; last lines of {self.log_path}:\n{self.log_tail()}")
