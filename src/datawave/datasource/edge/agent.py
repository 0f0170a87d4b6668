"""The edge agent: runs tests, discoveries and health checks next to the sources, and ships
the results to the core through a store-and-forward outbox.

Delivery is at-least-once: a result is first committed to the LMDB outbox (so a SIGKILL loses
nothing), then sent in batches as NATS requests on ``dw.edge.<site>.sync`` over the leaf link,
and deleted only when the core acknowledges the highest sequence number it applied. The core
skips records at or below its per-node high-water mark, so a batch resent after a lost ack is
applied once. While the hub is unreachable the agent keeps working and the outbox grows; the
sync loop backs off (0.2 s doubling to 2 s) and drains it when the link is back.

Source secrets arrive sealed to this node's key (``sources.json`` holds them sealed too); the
agent opens them only right before it connects (:meth:`EdgeAgent._open_config`) and queues a
``credential.use`` record for each use, which the core appends to its audit log.

An agent is an async context manager that owns its tasks (sync, heartbeat, optional health
loop) and its NATS connection, like nats.py's ``Client``. Nothing here uses Ray: a "full" agent
gets a ``discover_runner`` that ships the connector call to Ray (a local instance it starts, by
default), injected by the CLI (the only layer that may import Ray): ``cli/edge.py``
``start_ray_runner``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

import msgpack
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from datawave.datasource.connectors import Connector, ConnectorRegistry, merge_secrets
from datawave.datasource.edge.cache import EdgeCache
from datawave.datasource.edge.delta import plan_delta
from datawave.datasource.edge.natsproc import edge_inbox_prefix
from datawave.datasource.edge.protocol import (
    HEALTH_CONCURRENCY,
    HEALTH_TIMEOUT_S,
    MAX_MESSAGE_BYTES,
    BadMessage,
    decode,
    encode,
    subject,
)
from datawave.datasource.edge.sources import SourceBook
from datawave.datasource.errors import DatawaveError, EdgeError, NotFound, redact
from datawave.datasource.models import (
    DiscoveryResult,
    HealthReport,
    HealthState,
    RunStatus,
    StepResult,
    StepStatus,
    TestReport,
)
from datawave.datasource.security.edgekeys import EdgeSealingKey
from datawave.datasource.security.secrets import SecretResolver

__all__ = ["AgentState", "DiscoverRunner", "EdgeAgent", "LinkState"]

log = logging.getLogger(__name__)


def _agent_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("datawave-datasource")
    except PackageNotFoundError:  # a source checkout, not installed
        return "0+unknown"


AGENT_VERSION: Final = _agent_version()

_EPOCH_KEY: Final = "outbox.epoch"
_BASELINE: Final = "base:"
_RESULT: Final = "result:"
_BACKOFF_MIN_S: Final = 0.2
_BACKOFF_MAX_S: Final = 2.0
#: Commands answered from the present and never recorded as done: a resent one runs again.
_ANSWER_NOW: Final = frozenset({"test", "check_health"})

#: Runs ``connector.discover()`` somewhere: in this process (default) or on a local Ray.
DiscoverRunner = Callable[[str, Mapping[str, Any]], Awaitable[DiscoveryResult]]


class AgentState(StrEnum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class LinkState(StrEnum):
    """What the agent last saw of the path to the core (not just its local leaf)."""

    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


class EdgeAgent:
    """One edge node's agent.

    Args:
        site: The edge site (subjects are ``dw.edge.<site>.*``).
        nats_url: The local leaf server (loopback); the agent never dials the hub itself.
        cache: The node's LMDB cache; its node id is the agent's.
        sources: Source definitions sent by the core.
        registry: Connector plugins.
        batch_size: Outbox records per sync request (also capped by ``MAX_MESSAGE_BYTES``).
        window: Sync requests in flight at once.
        request_timeout_s: How long a sync request waits for the core's ack.
        heartbeat_s: Heartbeat period; the fleet view is at most this stale.
        health_interval_s: Check every source this often; ``None`` only on command.
        discover_runner: Where connector discoveries run (see :data:`DiscoverRunner`).
        mode: ``"light"`` or ``"full"``; reported in heartbeats.
        sealing_key: Opens the secrets the core sealed to this site (``None``: the node has
            no key, and a source with secrets fails to connect, saying why).
        resolver: Resolves secret references (``env:``, ``file:``, plugins) in this process,
            right before connecting; ``None`` passes references through unresolved.
    """

    def __init__(
        self,
        site: str,
        nats_url: str,
        cache: EdgeCache,
        sources: SourceBook,
        *,
        registry: ConnectorRegistry | None = None,
        batch_size: int = 1000,
        window: int = 4,
        request_timeout_s: float = 5.0,
        heartbeat_s: float = 1.0,
        health_interval_s: float | None = None,
        discover_runner: DiscoverRunner | None = None,
        mode: str = "light",
        version: str = AGENT_VERSION,
        sealing_key: EdgeSealingKey | None = None,
        resolver: SecretResolver | None = None,
    ) -> None:
        self.site = site
        self.node = cache.node
        self.nats_url = nats_url
        self.cache = cache
        self.sources = sources
        self.registry = registry or ConnectorRegistry()
        self.batch_size = batch_size
        self.window = window
        self.request_timeout_s = request_timeout_s
        self.heartbeat_s = heartbeat_s
        self.health_interval_s = health_interval_s
        self.mode = mode
        self.version = version
        self._sealing_key = sealing_key
        self._resolver = resolver
        self._discover_runner = discover_runner or self._discover_here
        self.state = AgentState.NEW
        self.link = LinkState.UNKNOWN
        self.last_sync_at: float | None = None
        self.counters: dict[str, int] = {
            "sent": 0, "acked": 0, "batches": 0, "send_failures": 0, "rejected": 0,
            "commands": 0, "discoveries": 0,
        }  # fmt: skip
        self._nc: Client | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._busy: dict[str, asyncio.Task[Any]] = {}
        self.epoch = self._init_epoch()

    # Lifetime ---------------------------------------------------------------------------------
    async def __aenter__(self) -> EdgeAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, *, connect_timeout_s: float = 30.0) -> None:
        """Connect to the local leaf server (retrying) and start the loops.

        Raises:
            EdgeError: The local server did not answer within ``connect_timeout_s``.
        """
        deadline = time.monotonic() + connect_timeout_s
        delay = _BACKOFF_MIN_S
        while True:
            try:
                self._nc = await nats.connect(
                    self.nats_url,
                    inbox_prefix=edge_inbox_prefix(self.site),
                    name=f"datawave-agent-{self.site}-{self.node}",
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    error_cb=self._on_nats_error,
                )
                break
            except (OSError, nats.errors.Error) as exc:
                if time.monotonic() + delay > deadline:
                    raise EdgeError(
                        f"cannot reach the local leaf server at {self.nats_url}: {exc}",
                        url=self.nats_url,
                    ) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)
        await self._nc.subscribe(subject(self.site, "cmd"), cb=self._on_command)
        await self._nc.flush()
        self.state = AgentState.RUNNING
        self._tasks = [
            asyncio.create_task(self._sync_loop(), name="edge-sync"),
            asyncio.create_task(self._heartbeat_loop(), name="edge-heartbeat"),
        ]
        if self.health_interval_s:
            self._tasks.append(asyncio.create_task(self._health_loop(), name="edge-health"))
        log.info("edge agent %s/%s running (%s mode)", self.site, self.node, self.mode)

    async def stop(self, *, grace_s: float = 5.0) -> None:
        """Stop the loops and close the connection; the outbox keeps what was not acked.

        Bounded by ``grace_s`` per step: a stuck request never keeps the process alive.
        """
        self.state = AgentState.STOPPED
        tasks = [*self._tasks, *self._busy.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)
        self._tasks, self._busy = [], {}
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.close(), timeout=grace_s)

    # Work -------------------------------------------------------------------------------------
    async def enqueue(self, records: list[dict[str, Any]]) -> list[int]:
        """Commit records to the outbox and wake the sync loop; returns their sequence numbers."""
        seqs = await self.cache.aoutbox_append(records)
        self._wake.set()
        return seqs

    async def test(self, source_ref: str) -> TestReport:
        """Test a source's connection here; the report is queued for the core as well."""
        src = self.sources.get(source_ref)
        try:
            async with await self._connector(src, "test") as conn:
                report = await conn.test_connection()
        except DatawaveError as exc:
            report = TestReport(
                ok=False, duration_ms=0.0,
                steps=[StepResult(name="connect", status=StepStatus.FAILED, duration_ms=0.0,
                                  error=redact(str(exc)), error_code=exc.code)],
            )  # fmt: skip
        report = report.model_copy(update={"source_id": src["id"], "tested_at": datetime.now(UTC)})
        await self.enqueue([_record("test", src["id"], report=report.model_dump(mode="json"))])
        return report

    async def check_health(
        self,
        source_ids: Sequence[str] | None = None,
        *,
        timeouts: Sequence[float] | None = None,
    ) -> list[HealthReport]:
        """Check sources once (every source by default), concurrently; each sample is queued
        for the core as well, and one report per id comes back, in order.

        Args:
            source_ids: The sources to check; an id this edge does not hold reports ``unknown``
                with the reason.
            timeouts: Seconds per check, aligned with ``source_ids`` (default
                :data:`HEALTH_TIMEOUT_S`): a check past it reports ``down``.
        """
        ids = list(self.sources.ids() if source_ids is None else source_ids)
        limits = list(timeouts) if timeouts else [HEALTH_TIMEOUT_S] * len(ids)
        if len(limits) != len(ids):
            raise EdgeError("health check: one timeout per source id, or none")
        gate = asyncio.Semaphore(HEALTH_CONCURRENCY)

        async def one(sid: str, timeout_s: float) -> HealthReport:
            async with gate:
                return await self._check_one(sid, timeout_s)

        reports = list(await asyncio.gather(*(one(s, t) for s, t in zip(ids, limits, strict=True))))
        known = [r for r in reports if r.state is not HealthState.UNKNOWN]
        if known:
            await self.enqueue(
                [_record("health", r.source_id or "", report=r.model_dump(mode="json"))
                 for r in known]
            )  # fmt: skip
        return reports

    async def _check_one(self, source_id: str, timeout_s: float) -> HealthReport:
        started = datetime.now(UTC)
        try:
            src = self.sources.get(source_id)
        except NotFound:
            return HealthReport(source_id=source_id, state=HealthState.UNKNOWN, checked_at=started,
                                error=f"source {source_id} is not on edge site {self.site}")  # fmt: skip
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                async with await self._connector(src, "health") as conn:
                    rep = await conn.check_health()
        except TimeoutError:
            rep = HealthReport(state=HealthState.DOWN,
                               latency_ms=round((time.perf_counter() - t0) * 1000, 3),
                               error=f"health check timed out after {timeout_s:g}s")  # fmt: skip
        except Exception as exc:  # a broken driver or config: the report carries it
            rep = HealthReport(state=HealthState.DOWN,
                               error=redact(str(exc) or type(exc).__name__))  # fmt: skip
        return rep.model_copy(update={"source_id": src["id"], "checked_at": started})

    async def discover(
        self, source_ref: str, *, run_id: str | None = None, full: bool = False
    ) -> dict[str, Any]:
        """Discover a source and queue only what changed since the last shipped baseline.

        Returns:
            A summary: ``run_id``, ``status``, ``full``, ``shipped_tables``, ``tables``.
        """
        src = self.sources.get(source_ref)
        sid = src["id"]
        run_id = run_id or str(uuid.uuid4())
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        try:
            config = await self._open_config(src, "discover")
            result = await self._discover_runner(src["type"], config)
        except Exception as exc:  # any failure finishes the run at the core, with the reason
            error = redact(str(exc) or type(exc).__name__)
            await self.enqueue([_record("discovery", sid, run_id=run_id, status=RunStatus.FAILED.value,
                                        started_at=started.isoformat(), error=error)])  # fmt: skip
            return {"run_id": run_id, "status": RunStatus.FAILED.value, "error": error}
        elapsed_ms = int((time.perf_counter() - t0) * 1000)
        if result.failures and not result.complete_schemas:
            await self.enqueue([_record("discovery", sid, run_id=run_id, status=RunStatus.FAILED.value,
                                        started_at=started.isoformat(),
                                        error=result.failures[0])])  # fmt: skip
            return {"run_id": run_id, "status": RunStatus.FAILED.value, "error": result.failures[0]}
        baseline = None if full else await self.cache.aget("snapshots", _BASELINE + sid)
        payload, new_base = plan_delta(baseline, result)
        status = RunStatus.SUCCEEDED if result.complete else RunStatus.PARTIAL
        record = _record(
            "discovery", sid, run_id=run_id, status=status.value, started_at=started.isoformat(),
            connector_ms=elapsed_ms, delta=payload,
        )  # fmt: skip
        if len(encode({"records": [record]})) > MAX_MESSAGE_BYTES // 2:
            raise EdgeError(
                f"discovery of {src['name']} changed too much to ship in one record; "
                "split the source with discovery filters", source_id=sid,
            )  # fmt: skip
        # Queue the record and keep the new baseline and the cached result in one step each;
        # a crash in between ships a delta against the old baseline again: still correct.
        await self.enqueue([record])
        await self.cache.aput_many(
            "snapshots",
            [(_BASELINE + sid, new_base),
             (_RESULT + sid, {"source": {k: src[k] for k in ("id", "name", "type")},
                              "at": started.isoformat(), "status": status.value,
                              "result": result.model_dump(mode="json", by_alias=True)})],
        )  # fmt: skip
        self.counters["discoveries"] += 1
        return {
            "run_id": run_id,
            "status": status.value,
            "full": payload["full"],
            "tables": len(result.tables),
            "shipped_tables": len(payload["tables"]),
        }

    def forget_baseline(self, source_id: str) -> None:
        """Make the next discovery of ``source_id`` ship everything (core asked to resync)."""
        self.cache.delete_many("snapshots", [_BASELINE + source_id])

    # Internals: connectors ----------------------------------------------------------------------
    async def _connector(self, src: Mapping[str, Any], purpose: str) -> Connector:
        return self.registry.create(src["type"], await self._open_config(src, purpose))

    async def _open_config(self, src: Mapping[str, Any], purpose: str) -> dict[str, Any]:
        """The source's full config: its secrets opened with this node's key, right now.

        Each opening queues a ``credential.use`` record (``purpose``: test, discover, health)
        for the core's audit log. Secret references resolve here, in the edge's environment.
        The opened values live only in the returned dict.

        Raises:
            EdgeError: The secrets cannot be opened here (no key, another key, tampered), or
                the core holds none this edge can open.
        """
        sealed = src.get("sealed")
        if not sealed:
            if src.get("secrets") == "unavailable":
                raise EdgeError(
                    f"the core holds the secrets of {src.get('name')} under its own key, not "
                    "sealed to this edge: re-join the site or re-enter them on the core",
                    source_id=src.get("id"),
                )  # fmt: skip
            return dict(src["config"])
        if self._sealing_key is None:
            raise EdgeError("this node has no sealing key: re-join the site to open secrets",
                            source_id=src.get("id"))  # fmt: skip
        try:
            blob = base64.b64decode(str(sealed), validate=True)
        except (ValueError, binascii.Error):
            raise EdgeError("sealed secrets are not base64", source_id=src.get("id")) from None
        plain = await asyncio.to_thread(self._sealing_key.open, blob,
                                        context=str(src["id"]).encode())  # fmt: skip
        secrets = msgpack.unpackb(plain)
        await self.enqueue([_record("audit", src["id"], action="credential.use",
                                    purpose=purpose)])  # fmt: skip
        return merge_secrets(src["config"], secrets, resolver=self._resolver)

    async def _discover_here(self, type_: str, config: Mapping[str, Any]) -> DiscoveryResult:
        async with self.registry.create(type_, config) as conn:
            return await conn.discover()

    # Internals: sync ------------------------------------------------------------------------------
    async def _sync_loop(self) -> None:
        """Keep up to ``window`` batches in flight; ack in order; rewind on any failure.

        Batches are sent in sequence order on one connection, and the core applies a batch only
        if it starts right after what it already holds (or what this outbox says it acked), so
        a lost batch is never skipped over: the core answers with its mark and we resend.
        """
        delay = _BACKOFF_MIN_S
        acked = await asyncio.to_thread(self.cache.outbox_acked)
        last_sent = acked
        inflight: deque[tuple[int, int, asyncio.Task[dict[str, Any]]]] = deque()

        async def drop_inflight() -> None:
            for *_, task in inflight:
                task.cancel()
            await asyncio.gather(*(task for *_, task in inflight), return_exceptions=True)
            inflight.clear()

        try:
            while True:
                while len(inflight) < self.window:
                    entries = await asyncio.to_thread(
                        self.cache.outbox_read_raw, last_sent, self.batch_size
                    )
                    if not entries:
                        break
                    data, last, count = self._frame(entries, acked)
                    inflight.append((last, count, asyncio.create_task(self._request(data))))
                    last_sent = last
                if not inflight:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=0.5)
                    continue
                last, count, task = inflight.popleft()
                try:
                    reply = await task
                except (nats.errors.Error, OSError, EdgeError) as exc:
                    await drop_inflight()
                    last_sent = acked
                    self.counters["send_failures"] += 1
                    if self.link is not LinkState.DOWN:
                        log.warning("edge %s: sync to core failed (%s); retrying with backoff",
                                    self.site, str(exc) or type(exc).__name__)  # fmt: skip
                    self.link = LinkState.DOWN
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _BACKOFF_MAX_S)
                    continue
                delay = _BACKOFF_MIN_S
                ack = int(reply["ack"])
                self.counters["batches"] += 1
                self.counters["sent"] += count
                self.link = LinkState.UP
                self.last_sync_at = time.time()
                if ack > acked:
                    self.counters["acked"] += ack - acked
                    await self.cache.aoutbox_ack(ack)
                    acked = ack
                for sid in reply.get("resync") or ():
                    await asyncio.to_thread(self.forget_baseline, str(sid))
                if ack < last:  # the core did not take all of it (a gap): resend from its mark
                    await drop_inflight()
                    last_sent = acked
        finally:
            await drop_inflight()

    def _frame(self, entries: list[tuple[int, bytes]], acked: int) -> tuple[bytes, int, int]:
        """Frame stored records (msgpack, as committed) into one batch that fits a message;
        returns (data, last seq, records). Records are not decoded: they ship as stored."""
        packer = msgpack.Packer(use_bin_type=True)
        head = b"".join([
            packer.pack_map_header(4),
            packer.pack("node"), packer.pack(self.node),
            packer.pack("epoch"), packer.pack(self.epoch),
            packer.pack("acked"), packer.pack(acked),
            packer.pack("records"),
        ])  # fmt: skip
        budget = MAX_MESSAGE_BYTES - len(head) - 5
        size, n = 0, 0
        for _, raw in entries:
            if size + len(raw) > budget:
                break
            size += len(raw)
            n += 1
        if n == 0:
            # A record that can never be sent would block the outbox forever: send a stub in
            # its place, so the core counts the loss and the sequence stays whole.
            seq, raw = entries[0]
            rec = msgpack.unpackb(raw)
            log.error("edge %s: outbox record %s is too large to send; dropped",
                      self.site, rec.get("rid"))  # fmt: skip
            stub = {"seq": seq, "rid": rec.get("rid"), "kind": "dropped",
                    "source_id": rec.get("source_id")}  # fmt: skip
            entries, n = [(seq, packer.pack(stub))], 1
        body = packer.pack_array_header(n) + b"".join(raw for _, raw in entries[:n])
        return head + body, entries[n - 1][0], n

    async def _request(self, data: bytes) -> dict[str, Any]:
        assert self._nc is not None
        msg = await self._nc.request(
            subject(self.site, "sync"), data, timeout=self.request_timeout_s
        )
        try:
            reply = decode(msg.data, required=("ack",))
        except BadMessage as exc:
            self.counters["rejected"] += 1
            raise EdgeError(f"core sent a bad sync reply: {exc.reason}") from exc
        if reply.get("error"):
            raise EdgeError(f"core refused the sync batch: {reply['error']}")
        return reply

    # Internals: heartbeat and commands ----------------------------------------------------------
    def heartbeat_payload(self) -> dict[str, Any]:
        first = self.cache.outbox_read(limit=1)
        oldest = first[0].record.get("at") if first else None
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = None
        return {
            "node": self.node,
            "site": self.site,
            "version": self.version,
            "mode": self.mode,
            "load": load,
            "queue_depth": self.cache.outbox_depth(),
            "lag_s": max(0.0, time.time() - oldest) if isinstance(oldest, int | float) else 0.0,
            "last_sync_at": self.last_sync_at,
            "link_state": self.link.value,
            "sources_digest": self.sources.digest,
            "rejected": self.counters["rejected"],
            "at": time.time(),
        }

    async def _heartbeat_loop(self) -> None:
        while True:
            with contextlib.suppress(nats.errors.Error, OSError, EdgeError):
                assert self._nc is not None
                payload = await asyncio.to_thread(self.heartbeat_payload)
                await self._nc.publish(subject(self.site, "heartbeat"), encode(payload))
            await asyncio.sleep(self.heartbeat_s)

    async def _health_loop(self) -> None:
        assert self.health_interval_s
        while True:
            try:
                await self.check_health()
            except Exception:  # the loop outlives any one bad round
                log.exception("edge %s: health round failed", self.site)
            await asyncio.sleep(self.health_interval_s)

    async def _on_command(self, msg: Msg) -> None:
        try:
            cmd = decode(msg.data, required=("id", "kind"))
            cid, kind, args = str(cmd["id"]), str(cmd["kind"]), cmd.get("args") or {}
            if not isinstance(args, dict):
                raise BadMessage("args is not a map")
        except BadMessage as exc:
            self.counters["rejected"] += 1
            log.warning("edge %s: %s", self.site, exc)
            with contextlib.suppress(Exception):
                await msg.respond(encode({"ok": False, "error": exc.message}))
            return
        self.counters["commands"] += 1
        done = await self.cache.aget("cursors", f"cmd.{cid}")
        if done is None:
            try:
                result = await self._run_command(kind, args)
                done = {"ok": True, "result": result}
            except DatawaveError as exc:
                done = {"ok": False, "error": redact(exc.message), "code": exc.code}
            except (KeyError, TypeError, ValueError) as exc:  # malformed args: say so, carry on
                self.counters["rejected"] += 1
                done = {"ok": False, "error": f"bad arguments for {kind[:32]!r}: "
                                              f"{type(exc).__name__}"}  # fmt: skip
            if kind not in _ANSWER_NOW:  # a test is worth repeating; the rest is done once
                await self.cache.aput_many("cursors", [(f"cmd.{cid}", done)])
        with contextlib.suppress(Exception):
            await msg.respond(encode({"id": cid, **done}))

    async def _run_command(self, kind: str, args: dict[str, Any]) -> Any:
        if kind == "sources.set":
            await asyncio.to_thread(self.sources.replace, args.get("sources") or [])
            return {"digest": self.sources.digest}
        if kind == "test":
            return (await self.test(str(args["source_id"]))).model_dump(mode="json")
        if kind == "discover":
            sid = str(args["source_id"])
            self.sources.get(sid)  # NotFound now rather than in the background
            self._background(
                f"discover:{sid}",
                self.discover(sid, run_id=args.get("run_id"), full=bool(args.get("full"))),
            )
            return {"accepted": True}
        if kind == "health":
            self._background("health", self.check_health())
            return {"accepted": True}
        if kind == "check_health":
            ids, limits = args.get("source_ids"), args.get("timeouts")
            if not isinstance(ids, list) or (limits is not None and not isinstance(limits, list)):
                raise EdgeError("check_health: source_ids (and timeouts) must be lists")
            reports = await self.check_health(
                [str(i) for i in ids], timeouts=[float(t) for t in limits] if limits else None
            )
            return [r.model_dump(mode="json") for r in reports]
        if kind == "resync":
            await asyncio.to_thread(self.forget_baseline, str(args["source_id"]))
            return {"forgotten": True}
        raise EdgeError(f"unknown command {kind!r}", kind=kind)

    def _background(self, key: str, coro: Awaitable[Any]) -> None:
        running = self._busy.get(key)
        if running is not None and not running.done():
            coro.close()  # type: ignore[attr-defined]
            return  # the same work is already running: one run serves both requests

        async def guarded() -> None:
            try:
                await coro
            except NotFound as exc:
                log.warning("edge %s: %s", self.site, exc)
            except Exception:
                log.exception("edge %s: background %s failed", self.site, key)

        self._busy[key] = asyncio.create_task(guarded(), name=f"edge-{key}")

    async def _on_nats_error(self, exc: Exception) -> None:
        log.debug("edge %s: nats: %s", self.site, exc)

    def _init_epoch(self) -> str:
        epoch = self.cache.get_cursor(_EPOCH_KEY)
        if epoch is None:
            epoch = uuid.uuid4().hex
            self.cache.set_cursor(_EPOCH_KEY, epoch)
        return str(epoch)


def _record(kind: str, source_id: str, **data: Any) -> dict[str, Any]:
    return {"kind": kind, "source_id": source_id, "at": time.time(), **data}


def cached_result(cache: EdgeCache, source_ref: str) -> dict[str, Any] | None:
    """The last discovery of a source held in the cache (by id or name); works offline."""
    hit = cache.get("snapshots", _RESULT + source_ref)
    if hit is not None:
        return dict(hit)
    for _, value in cache.iter("snapshots", _RESULT):
        if value.get("source", {}).get("name") == source_ref:
            return dict(value)
    return None
