"""A headless Chromium for the end-to-end tests, driven through ``clients/web/e2e/browser.mjs``
(playwright-core with Debian's chromium) one JSON line at a time."""

from __future__ import annotations

import itertools
import json
import queue
import subprocess
import threading
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DRIVER_SCRIPT = REPO / "clients" / "web" / "e2e" / "browser.mjs"
CALL_TIMEOUT_S = 60.0


class BrowserError(AssertionError):
    """The browser could not do what the test asked."""


class Browser:
    """One Chromium page; methods block until the browser answers."""

    def __init__(self, width: int, height: int, mobile: bool = False) -> None:
        """Start the driver script and launch Chromium with a fresh profile."""
        self._process = subprocess.Popen(
            ["node", str(DRIVER_SCRIPT)],
            cwd=DRIVER_SCRIPT.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._ids = itertools.count(1)
        threading.Thread(target=self._read, daemon=True).start()
        self.call("launch", width=width, height=height, mobile=mobile)

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._answers.put(line)
        self._answers.put(None)

    def call(self, op: str, timeout: float = CALL_TIMEOUT_S, **args: Any) -> Any:
        """Run one operation of browser.mjs and return its value."""
        assert self._process.stdin is not None
        request_id = next(self._ids)
        self._process.stdin.write(json.dumps({"id": request_id, "op": op, **args}) + "\n")
        self._process.stdin.flush()
        try:
            line = self._answers.get(timeout=timeout)
        except queue.Empty as exc:
            raise BrowserError(f"browser did not answer {op} within {timeout}s") from exc
        if line is None:
            raise BrowserError(f"browser driver exited during {op}")
        answer = json.loads(line)
        assert answer["id"] == request_id, answer
        if not answer["ok"]:
            raise BrowserError(f"{op} failed: {answer['error']}")
        return answer["value"]

    def goto(self, url: str) -> None:
        """Open ``url`` and wait for its load event."""
        self.call("goto", url=url)

    def eval(self, expression: str) -> Any:
        """Evaluate a JavaScript expression in the page; its JSON value."""
        return self.call("eval", expression=expression)

    def wait(self, expression: str, timeout_s: float = 15.0) -> Any:
        """Poll ``expression`` in the page until truthy; its value (BrowserError on timeout)."""
        return self.call(
            "wait", timeout=timeout_s + 10, expression=expression, timeoutMs=timeout_s * 1000
        )

    def click(self, selector: str) -> None:
        """Click the element matching ``selector``."""
        self.call("click", selector=selector)

    def fill(self, selector: str, value: str) -> None:
        """Type ``value`` into the field matching ``selector`` (replacing its content)."""
        self.call("fill", selector=selector, value=value)

    def mouse(self, x: float, y: float, double: bool = False) -> None:
        """A (double) click at page coordinates."""
        self.call("mouse", x=x, y=y, double=double)

    def screenshot(self, path: Path, full_page: bool = False) -> None:
        """Save a PNG of the viewport (or of the whole page), scrolled to the top."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.eval("window.scrollTo(0, 0)")
        self.call("screenshot", path=str(path.resolve()), fullPage=full_page)

    def console_errors(self) -> list[str]:
        """Every console error and uncaught page error so far."""
        errors: list[str] = self.call("errors")
        return errors

    def close(self) -> None:
        """Close Chromium and the driver (killed by PID if it does not exit)."""
        try:
            if self._process.poll() is None:
                self.call("close", timeout=20)
        finally:
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
