"""Event hub and fan-out: bounded, ordered, and a slow client never stalls the others."""

from __future__ import annotations

import asyncio

from datawave.datasource.models import Event
from datawave.datasource.serve.events import Broadcaster, EventHub, Subscription


async def test_hub_since_long_polls_and_orders():
    hub = EventHub(capacity=5)
    assert await hub.since(-1) == {"seq": 0, "events": [], "gap": False}
    waiter = asyncio.ensure_future(hub.since(0, timeout_s=5))
    await asyncio.sleep(0.05)
    hub.publish([Event(type="discovery.started", source_id="a")])
    res = await asyncio.wait_for(waiter, 1)
    assert res["seq"] == 1 and [e["type"] for e in res["events"]] == ["discovery.started"]
    assert (await hub.since(1, timeout_s=0.01))["events"] == []


async def test_hub_reports_gap_when_reader_falls_behind():
    hub = EventHub(capacity=3)
    hub.publish([{"type": f"e{i}"} for i in range(10)])
    res = await hub.since(2, timeout_s=0)
    assert res["gap"] and [e["seq"] for e in res["events"]] == [8, 9, 10]
    restarted = await hub.since(50, timeout_s=0)
    assert restarted["gap"] and restarted["seq"] == 10


def test_subscription_filters():
    sub = Subscription(sources={"a"}, types={"discovery"})
    assert sub.matches({"type": "discovery.finished", "source_id": "a"})
    assert not sub.matches({"type": "drift", "source_id": "a"})
    assert not sub.matches({"type": "discovery.finished", "source_id": "b"})
    assert not sub.matches({"type": "discoveryx", "source_id": "a"})


async def test_slow_subscriber_overflows_alone():
    b = Broadcaster(feed=None)
    slow = Subscription(maxsize=4)
    fast = Subscription(maxsize=100)
    b.subs |= {slow, fast}
    b.dispatch({"type": "x", "seq": i} for i in range(10))
    assert slow.overflowed and not fast.overflowed
    got = [await fast.get() for _ in range(10)]
    assert [e["seq"] for e in got] == list(range(10))
    items = [await slow.get() for _ in range(slow.queue.qsize())]
    assert items[-1] is None  # the end marker: the WebSocket closes with 1013


async def test_broadcaster_follows_feed():
    hub = EventHub()
    b = Broadcaster(hub, poll_timeout_s=0.5)
    sub = b.subscribe(types={"drift"})
    await asyncio.sleep(0.05)
    hub.publish([{"type": "discovery.started"}, {"type": "drift", "source_id": "s"}])
    ev = await asyncio.wait_for(sub.get(), 2)
    assert ev["type"] == "drift"
    await b.stop()
