"""Helpers of the webhook tests: a real HTTP receiver (a threaded ``http.server`` started by
the test) answering per endpoint from a script, the WebhookService stub of a tenant, and the
delivery log read through ListWebhookDeliveries."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lastmile.integration.v1 import integration_pb2 as ipb
from lastmile.integration.v1 import integration_service_pb2 as wpb
from lastmile.integration.v1 import integration_service_pb2_grpc
from lastmile.pod.v1 import pod_pb2

from core import topics
from dispatch.webhooks.signing import verify
from tests.integration.orders_support import Client

#: Answer only after the sender gave up waiting (the tests' webhook timeout is 1 s).
HANG = "hang"
HANG_S = 3.0
#: Behaviour of one request: an HTTP status, HANG, or (seconds to wait, HTTP status).
Behavior = int | str | tuple[float, int]


@dataclass(frozen=True)
class Received:
    """One request the receiver got."""

    endpoint: str
    headers: dict[str, str]
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        """The JSON body."""
        result: dict[str, Any] = json.loads(self.body)
        return result

    @property
    def delivery_id(self) -> str:
        return self.headers["x-lastmile-delivery"]

    def signed_by(self, secret: str) -> bool:
        """Whether the signature header verifies with ``secret`` (the receiver's clock)."""
        return verify(secret, self.headers["x-lastmile-signature"], self.body, time.time())


class Receiver:
    """A threaded HTTP server on a free loopback port. Each endpoint (``/<name>``) answers
    from its script (one behaviour per request), then with its default."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        self._scripts: dict[str, deque[Behavior]] = {}
        self._defaults: dict[str, Behavior] = {}
        self.stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def endpoint(self, name: str, script: Iterable[Behavior] = (), default: Behavior = 200) -> str:
        """The URL of endpoint ``name``, answering ``script`` then ``default``."""
        with self._lock:
            self._scripts[name] = deque(script)
            self._defaults[name] = default
        return f"http://127.0.0.1:{self._server.server_port}/{name}"

    def answer_with(self, name: str, default: Behavior) -> None:
        """Change an endpoint's default answer (the receiver got fixed, or broke)."""
        with self._lock:
            self._defaults[name] = default

    def received(self, name: str) -> list[Received]:
        """Requests to ``name`` in arrival order."""
        with self._lock:
            return [r for r in self._requests if r.endpoint == name]

    def _record(self, name: str, headers: dict[str, str], body: bytes) -> Behavior:
        with self._lock:
            self._requests.append(Received(name, headers, body))
            script = self._scripts.get(name)
            if script:
                return script.popleft()
            return self._defaults.get(name, 404)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            behavior = receiver._record(self.path.strip("/"), headers, body)
            code = 200
            if behavior == HANG:
                receiver.stopping.wait(HANG_S)
            elif isinstance(behavior, tuple):
                receiver.stopping.wait(behavior[0])
                code = behavior[1]
            elif isinstance(behavior, int):
                code = behavior
            try:
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                pass  # the sender gave up and closed the connection

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    return Handler


class Hooks:
    """WebhookService of a tenant."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.stub = integration_service_pb2_grpc.WebhookServiceStub(client.channel)
        self.md = client.md

    def create(self, url: str, *event_types: str) -> ipb.Webhook:
        request = wpb.CreateWebhookRequest(url=url, event_types=list(event_types))
        webhook: ipb.Webhook = self.stub.CreateWebhook(request, metadata=self.md).webhook
        return webhook

    def webhooks(self) -> list[ipb.Webhook]:
        return list(self.stub.ListWebhooks(wpb.ListWebhooksRequest(), metadata=self.md).webhooks)

    def deliveries(self, webhook_id: str, state: int = 0) -> list[ipb.WebhookDelivery]:
        """Every delivery of the webhook (all pages), newest first."""
        found: list[ipb.WebhookDelivery] = []
        token = ""
        while True:
            request = wpb.ListWebhookDeliveriesRequest(
                webhook_id=webhook_id,
                page_token=token,
                state=state,  # type: ignore[arg-type]
            )
            page = self.stub.ListWebhookDeliveries(request, metadata=self.md)
            found += page.deliveries
            token = page.next_page_token
            if not token:
                return found

    def redeliver(self, delivery_id: str) -> ipb.WebhookDelivery:
        request = wpb.RedeliverWebhookRequest(delivery_id=delivery_id)
        delivery: ipb.WebhookDelivery = self.stub.RedeliverWebhook(
            request, metadata=self.md
        ).delivery
        return delivery


def types_by_order(requests: Iterable[Received]) -> dict[str, list[str]]:
    """The event types each order's requests carried, in arrival order."""
    found: dict[str, list[str]] = {}
    for request in requests:
        body = request.payload
        found.setdefault(body["order_id"], []).append(body["type"])
    return found


def append_proof(r: Any, tenant_id: str, order_id: str, driver_id: str, proof_id: str) -> None:
    """A confirmed photo proof on the bus, as pod's outbox relay appends it."""
    proof = pod_pb2.Proof(
        proof_id=proof_id,
        order_id=order_id,
        driver_id=driver_id,
        kind=pod_pb2.PROOF_KIND_PHOTO,
        attempt=1,
        record_hash="f" * 64,
    )
    proof.confirmed_at.GetCurrentTime()
    fields = {"order": order_id, "tenant": tenant_id, "data": proof.SerializeToString()}
    r.xadd(topics.PROOF_EVENTS, fields)
