"""A Track stream's inbox after the hub lost its subscription for a moment: the stream is
woken at once, learns that updates were missed, and what was queued before is dropped (the
snapshot it sends next is newer). Closed (the stream's link stopped working), it wakes its
reader at once and for good."""

from __future__ import annotations

import asyncio

from lastmile.tracking.v1 import tracking_service_pb2

from tracking.channel_hub import Inbox


def _eta() -> tracking_service_pb2.TrackResponse:
    update = tracking_service_pb2.TrackResponse()
    update.eta.SetInParent()
    return update


async def test_a_missed_mark_wakes_the_reader_and_clears_the_queue() -> None:
    inbox = Inbox(8)
    waiting = asyncio.create_task(inbox.get(30.0))
    await asyncio.sleep(0)  # the reader waits on an empty inbox
    inbox.mark_missed()
    assert await asyncio.wait_for(waiting, 5.0) is None
    assert inbox.take_missed()
    assert not inbox.take_missed()


async def test_updates_queued_before_the_mark_are_dropped() -> None:
    inbox = Inbox(8)
    inbox.put(_eta())
    inbox.put(_eta())
    inbox.mark_missed()
    assert inbox.take_missed()
    assert await inbox.get(0.01) is None
    inbox.put(_eta())
    assert await inbox.get(0.01) is not None


async def test_closing_wakes_the_reader_at_once_and_stays_closed() -> None:
    inbox = Inbox(8)
    waiting = asyncio.create_task(inbox.get(30.0))
    await asyncio.sleep(0)  # the reader waits on an empty inbox
    inbox.close()  # its link stopped working (tracking.link_checks)
    assert await asyncio.wait_for(waiting, 5.0) is None
    assert inbox.closed
    assert await asyncio.wait_for(inbox.get(30.0), 5.0) is None
