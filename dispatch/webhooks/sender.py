"""The webhook sender (a component of the dispatch process): POSTs due deliveries, signed,
at most ``webhook_concurrency`` at a time, and records each attempt (dispatch.webhooks.queue
decides what follows: delivered, a retry after the backoff, or dead).

HTTP goes through ``urllib.request`` in a thread pool of the sender's own, as the provider
clients do (dispatch/providers/transport.py); redirects are not followed (a 3xx is a failed
attempt, so a moved endpoint is noticed rather than silently re-targeted) and an answer is
awaited for at most ``webhook_timeout_s``. On a graceful stop the requests in flight are
given that long to finish and be recorded; what is left is sent again after its lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from core import metrics
from core.workers import cancel
from dispatch.context import DispatchContext
from dispatch.webhooks import queue
from dispatch.webhooks.queue import Claimed, Outcome
from dispatch.webhooks.signing import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    signature_header,
)

log = logging.getLogger(__name__)
USER_AGENT = "lastmile-webhooks/1"
#: Most bytes of an answer read (and dropped): enough to reuse nothing, but to end cleanly.
_MAX_ANSWER = 64 * 1024


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Turns every redirect into an HTTPError carrying the 3xx code."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        """Never follow."""
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)
_RESULTS: dict[int, str] = {
    queue.DELIVERED: "delivered",
    queue.RETRYING: "retrying",
    queue.DEAD: "dead",
}


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> tuple[int, str]:
    """POST ``body`` (blocking); (HTTP status, error text) — status 0 when no answer came."""
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            response.read(_MAX_ANSWER)
            status = int(response.status)
            return status, "" if 200 <= status < 300 else f"HTTP {status}"
    except urllib.error.HTTPError as exc:
        with contextlib.closing(exc):
            return exc.code, f"HTTP {exc.code} {exc.reason}".strip()
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            return 0, f"no answer within {timeout_s:g} s"
        return 0, f"unreachable: {exc.reason}"
    except TimeoutError:
        return 0, f"no answer within {timeout_s:g} s"
    except (OSError, ValueError) as exc:
        return 0, f"failed: {exc}"


class WebhookSender:
    """See the module docstring."""

    service_names: tuple[str, ...] = ()

    def __init__(self, ctx: DispatchContext) -> None:
        self._ctx = ctx
        settings = ctx.settings
        self._timeout_s = settings.webhook_timeout_s
        self._slots = max(1, settings.webhook_concurrency)
        self._executor = ThreadPoolExecutor(self._slots, thread_name_prefix="webhook")
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def register(self, server: object) -> None:
        """No servicer: a worker."""

    async def start(self) -> None:
        """Start sending."""
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="webhook-sender")

    async def stop(self) -> None:
        """Stop claiming, let the requests in flight finish (up to the timeout), stop."""
        self._stopping = True
        self._ctx.webhook_wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self._timeout_s + 2.0)
            except TimeoutError:
                await cancel(self._task)
            self._task = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        inflight: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping:
                free = self._slots - len(inflight)
                if free > 0:
                    for claimed in await self._claim(free):
                        inflight.add(asyncio.create_task(self.attempt(claimed)))
                inflight = await self._wait(inflight)
            if inflight:
                await asyncio.wait(inflight)
        finally:
            for task in inflight:
                task.cancel()

    async def _claim(self, limit: int) -> list[Claimed]:
        lease_s = self._timeout_s + queue.LEASE_MARGIN_S
        try:
            async with self._ctx.database.pool.acquire() as conn:
                return await queue.claim(conn, limit, lease_s)
        except Exception:
            log.exception("claiming webhook deliveries failed; retrying")
            return []

    async def _wait(self, inflight: set[asyncio.Task[None]]) -> set[asyncio.Task[None]]:
        """Until a request finished, a wake-up (new work) or the poll interval; returns what
        is still in flight."""
        wakeup = self._ctx.webhook_wakeup
        if wakeup.is_set():
            wakeup.clear()
            if len(inflight) < self._slots:
                return inflight  # new work was announced while claiming: claim again
        waiter = asyncio.create_task(wakeup.wait())
        try:
            await asyncio.wait(
                {*inflight, waiter},
                timeout=self._ctx.settings.webhook_poll_interval_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            waiter.cancel()
        return {t for t in inflight if not t.done()}

    async def attempt(self, claimed: Claimed) -> None:
        """POST one delivery and record the outcome; a failure to record leaves the delivery
        to be sent again when its lease ends."""
        outcome = await self._post(claimed)
        try:
            async with self._ctx.database.pool.acquire() as conn:
                state = await queue.record(conn, self._ctx.settings, claimed.delivery_id, outcome)
        except Exception:
            log.exception(
                "recording a webhook attempt failed", extra={"delivery": claimed.delivery_id}
            )
            return
        if state is not None:
            metrics.WEBHOOK_ATTEMPTS.labels(_RESULTS.get(state, "failed_late")).inc()
        self._ctx.webhook_wakeup.set()  # the next delivery of the order may be due now

    async def _post(self, claimed: Claimed) -> Outcome:
        body = claimed.body.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_HEADER: claimed.event_type,
            DELIVERY_HEADER: claimed.delivery_id,
            SIGNATURE_HEADER: signature_header(claimed.secret, int(time.time()), body),
        }
        started_at = dt.datetime.now(dt.UTC)
        clock = time.perf_counter()
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(
            self._executor, post, claimed.url, body, headers, self._timeout_s
        )
        try:
            # urllib's timeout bounds each socket operation; this bounds the whole request.
            code, error = await asyncio.wait_for(call, self._timeout_s)
        except TimeoutError:
            code, error = 0, f"no answer within {self._timeout_s:g} s"
        latency_ms = (time.perf_counter() - clock) * 1000.0
        return Outcome(started_at, code, latency_ms, error)
