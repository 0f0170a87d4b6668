"""How events reach API clients, kept simple and bounded.

::

    owner shards ──drain()──► EventHub (one actor: ring buffer, sequence numbers)
                                  ▲ long-poll since(seq)
    API replica: Broadcaster ─────┘  one poll loop per replica
        ├─► WebSocket /v1/events   bounded queue per client; overflow → close 1013
        └─► SSE /v1/jobs/{id}/events

The owners already buffer their events (``SourceOwner.events``); ``drain()`` hands them over
and empties the buffer, so exactly one reader may drain: the hub's pump. Replicas read the
hub with ``since(seq)``, which never removes anything, so any number of replicas can follow.
The hub keeps the last ``capacity`` events; a replica that falls further behind is told
(``gap: true``) and carries on from the oldest event kept. A client never stalls the others:
fan-out uses ``put_nowait`` into the client's own bounded queue and a full queue closes that
client with code 1013 (try again later).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

__all__ = ["Broadcaster", "EventHub", "Subscription", "pump_forever"]

log = logging.getLogger(__name__)


def _as_dict(event: Any) -> dict[str, Any]:
    if hasattr(event, "model_dump"):
        return dict(event.model_dump(mode="json"))
    return dict(event)


class EventHub:
    """A ring buffer of events with sequence numbers and a long-poll reader."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._buf: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._seq = 0
        self._waiters: set[asyncio.Future[None]] = set()

    @property
    def seq(self) -> int:
        return self._seq

    def publish(self, events: Iterable[Any]) -> int:
        n = 0
        for ev in events:
            self._seq += 1
            self._buf.append({**_as_dict(ev), "seq": self._seq})
            n += 1
        if n:
            for w in self._waiters:
                if not w.done():
                    w.set_result(None)
            self._waiters.clear()
        return n

    async def since(self, seq: int, timeout_s: float = 10.0, limit: int = 1000) -> dict[str, Any]:
        if seq < 0 or seq > self._seq:  # "from now", or the hub restarted under the reader
            return {"seq": self._seq, "events": [], "gap": seq > self._seq}
        if seq == self._seq and timeout_s > 0:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.add(fut)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, timeout_s)
            self._waiters.discard(fut)
        oldest = self._buf[0]["seq"] if self._buf else self._seq + 1
        gap = seq + 1 < oldest and seq != self._seq
        out = [e for e in self._buf if e["seq"] > seq][:limit]
        last = out[-1]["seq"] if out else seq
        return {"seq": last, "events": out, "gap": gap}


async def pump_forever(
    hub: EventHub,
    drainers: Callable[[], Sequence[Callable[[], Awaitable[list[Any]]]]],
    *,
    interval_s: float = 0.25,
    timeout_s: float = 5.0,
) -> None:
    """Move events from every owner into ``hub`` until cancelled; a failing owner is skipped."""
    while True:
        calls = drainers()

        async def one(drain: Callable[[], Awaitable[list[Any]]]) -> list[Any]:
            try:
                return await asyncio.wait_for(drain(), timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # owner restarting: try again on the next tick
                log.debug("event drain failed: %s", exc)
                return []

        for batch in await asyncio.gather(*(one(d) for d in calls)):
            if batch:
                hub.publish(batch)
        await asyncio.sleep(interval_s)


class Subscription:
    """One client's filtered view of the stream, with its own bounded queue."""

    def __init__(
        self,
        *,
        sources: set[str] | None = None,
        types: set[str] | None = None,
        job_id: str | None = None,
        maxsize: int = 256,
    ) -> None:
        self.sources = sources or None
        self.types = types or None
        self.job_id = job_id
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize)
        self.overflowed = False

    def matches(self, ev: dict[str, Any]) -> bool:
        if self.sources is not None and ev.get("source_id") not in self.sources:
            return False
        if self.job_id is not None and ev.get("job_id") != self.job_id:
            return False
        if self.types is not None:
            t = str(ev.get("type", ""))
            if not any(t == p or t.startswith(p + ".") for p in self.types):
                return False
        return True

    def offer(self, ev: dict[str, Any]) -> None:
        if self.overflowed or not self.matches(ev):
            return
        try:
            self.queue.put_nowait(ev)
        except asyncio.QueueFull:
            self.overflowed = True
            # Make room for the end marker so the reader wakes up and closes.
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
            self.queue.put_nowait(None)

    async def get(self) -> dict[str, Any] | None:
        """The next event, or ``None`` once the client fell too far behind."""
        return await self.queue.get()


class Broadcaster:
    """One poll loop per replica that fans hub events out to subscriptions."""

    def __init__(self, feed: Any, *, poll_timeout_s: float = 5.0) -> None:
        self.feed = feed
        self.poll_timeout_s = poll_timeout_s
        self.subs: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self.seq = -1

    def subscribe(self, **kwargs: Any) -> Subscription:
        sub = Subscription(**kwargs)
        self.subs.add(sub)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subs.discard(sub)

    def dispatch(self, events: Iterable[dict[str, Any]]) -> None:
        for ev in events:
            for sub in list(self.subs):
                sub.offer(ev)

    async def _run(self) -> None:
        while True:
            try:
                res = await self.feed.since(self.seq, self.poll_timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("event feed unavailable: %s", exc)
                await asyncio.sleep(1.0)
                continue
            self.seq = int(res["seq"])
            self.dispatch(res["events"])

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
