"""A simulated external delivery provider: a real HTTP server speaking both transports.

``python -m dispatch.providers.simulator --port P [--secret S] [--tick 0.5] [--fail]``

- ``POST /orders`` (signed): takes the order, answers ``{"external_id"}``; when the body
  carries a ``callback_url`` (webhook mode) every status change is POSTed there, signed.
- ``GET /orders/{external_id}`` (polling mode): ``{"external_id", "order_id", "status"}``.
- ``GET /health``: 200 once serving.

Every ``--tick`` seconds each open order moves one step through accepted, to_pickup,
at_pickup, picked_up and then delivered (or failed with ``--fail``).
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import urllib.request
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dispatch.providers.transport import SIGNATURE_HEADER, sign, signature_ok

log = logging.getLogger("provider-simulator")
STEPS = ("accepted", "to_pickup", "at_pickup", "picked_up")


@dataclass
class SimOrder:
    """One order the simulated provider carries."""

    order_id: str
    callback_url: str
    step: int = 0
    final: str = ""

    @property
    def status(self) -> str:
        return self.final or STEPS[self.step]


class Simulator:
    """The provider's state and its clock."""

    def __init__(self, secret: str, tick_s: float, fail: bool) -> None:
        self.secret = secret
        self.tick_s = tick_s
        self.fail = fail
        self.orders: dict[str, SimOrder] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def accept(self, data: dict[str, Any]) -> str:
        """Take an order; returns its external id."""
        external_id = "ext-" + uuid.uuid4().hex[:12]
        order = SimOrder(str(data["order_id"]), str(data.get("callback_url") or ""))
        with self.lock:
            self.orders[external_id] = order
        self._notify(external_id, order)
        return external_id

    def run_clock(self) -> None:
        """Advance every open order one step per tick until stopped."""
        while not self.stopped.wait(self.tick_s):
            with self.lock:
                moved = [(i, o) for i, o in self.orders.items() if not o.final]
                for _, order in moved:
                    if order.step + 1 < len(STEPS):
                        order.step += 1
                    else:
                        order.final = "failed" if self.fail else "delivered"
            for external_id, order in moved:
                self._notify(external_id, order)

    def _notify(self, external_id: str, order: SimOrder) -> None:
        if not order.callback_url:
            return
        body = json.dumps({"external_id": external_id, "status": order.status}).encode()
        request = urllib.request.Request(order.callback_url, data=body, method="POST")
        request.add_header("Content-Type", "application/json")
        request.add_header(SIGNATURE_HEADER, sign(self.secret, body))
        try:
            urllib.request.urlopen(request, timeout=5).close()
        except OSError as exc:  # the platform retries nothing here: polling would catch up
            log.warning("callback failed: %s", exc)


def handler_for(sim: Simulator) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to ``sim``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                self._answer(200, {"ok": True})
                return
            external_id = self.path.removeprefix("/orders/")
            with sim.lock:
                order = sim.orders.get(external_id)
            if not self.path.startswith("/orders/") or order is None:
                self._answer(404, {"error": "unknown order"})
                return
            body = {"external_id": external_id, "order_id": order.order_id}
            self._answer(200, body | {"status": order.status})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if not signature_ok(sim.secret, body, self.headers.get(SIGNATURE_HEADER, "")):
                self._answer(401, {"error": "bad signature"})
                return
            if self.path != "/orders":
                self._answer(404, {"error": "no such route"})
                return
            self._answer(201, {"external_id": sim.accept(json.loads(body))})

        def _answer(self, code: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.info(format, *args)

    return Handler


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", default="dev-only-provider")
    parser.add_argument("--tick", type=float, default=0.5, help="seconds per status step")
    parser.add_argument("--fail", action="store_true", help="fail deliveries instead")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    sim = Simulator(args.secret, args.tick, args.fail)
    server = ThreadingHTTPServer((args.host, args.port), handler_for(sim))
    clock = threading.Thread(target=sim.run_clock, daemon=True)
    clock.start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stopped.set()
        server.server_close()


if __name__ == "__main__":
    main()
