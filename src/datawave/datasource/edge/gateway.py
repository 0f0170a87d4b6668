"""The core's side of the edge link: joins, sync, heartbeats and commands.

:class:`EdgeGateway` is a plain async class (the Ray actor in ``actors/gateway.py`` only
hosts it). It connects to the hub as the core user and serves, for every site at once:

- ``dw.edge.*.register``: redeems a join token (one-time, signed, unexpired), records the
  node's sealing key, signs its TLS certificate request and adds the node to the fleet
  registry; every refusal is an ``edge.join`` audit entry with outcome ``denied``;
- ``dw.edge.*.renew``: signs a new certificate for a registered node (``edge.cert.renew``);
- ``dw.edge.*.sync``: applies outbox batches to the metadata store, skipping records at or
  below the node's high-water mark, and acks the highest sequence number it holds. Discovery
  records go through the same planning as a core discovery and emit the same
  :class:`~datawave.datasource.models.Event` s;
- ``dw.edge.*.heartbeat``: updates the fleet view and, when the edge is reachable, delivers
  the site's pending commands (stored core-side, so they wait while the edge is offline);
- ``dw.edge.<site>.cmd`` requests that answer the present and are never queued: a connection
  :meth:`~EdgeGateway.test` and on-demand health checks (:meth:`~EdgeGateway.check_health`);
  an offline edge gets a report that says so, never a hang.

Every edge message is checked: its subject's site (enforced by the hub) must own the node and
the sources it writes. Anything malformed is answered with an error, counted in
``counters["rejected"]``, and the gateway carries on.

Source definitions go to the edge with their secrets as the store holds them: sealed to the
site's key (:mod:`datawave.datasource.security.edgekeys`), which the gateway cannot open. The
agent opens them right before connecting and reports each use; the gateway appends those to
the audit log as ``credential.use`` by ``edge:<site>``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from datawave.datasource.edge.delta import apply_delta
from datawave.datasource.edge.protocol import (
    HEALTH_CONCURRENCY,
    HEALTH_TIMEOUT_S,
    BadMessage,
    decode,
    encode,
    site_of,
    subject,
    wildcard,
)
from datawave.datasource.edge.sources import sources_digest
from datawave.datasource.edge.tls import CsrSigner
from datawave.datasource.edge.tokens import TokenIssuer, parse_unverified
from datawave.datasource.errors import DatawaveError, NotFound, TokenRejected, redact
from datawave.datasource.models import (
    Event,
    HealthReport,
    HealthState,
    RunStatus,
    RunSummary,
    TestReport,
)
from datawave.datasource.security.edgekeys import PUBLIC_KEY_BYTES, is_edge_sealed
from datawave.datasource.store import EdgeNode, MetadataStore

__all__ = ["EdgeGateway"]

log = logging.getLogger(__name__)

QUEUE = "datawave-gateway"
#: Durable commands: stored until the edge acknowledges them.
DURABLE_KINDS = frozenset({"sources.set", "discover", "health", "resync"})
#: What an edge may append to the core's audit log through its outbox.
EDGE_AUDIT_ACTIONS = frozenset({"credential.use"})


class EdgeGateway:
    """Applies what edges send and delivers what the core asks of them.

    Args:
        store: The metadata store (the fleet registry lives there too).
        issuer: Redeems join tokens; ``None`` refuses every join.
        nats_url: The hub's client URL.
        user, password: The hub's core user.
        sink: Receives every :class:`Event` (discovery, drift, tests, health, fleet).
        on_fleet_change: Called with the fleet after a heartbeat or a link change (metrics).
        offline_after_s: A node silent this long is shown ``offline``.
        flush_s: Heartbeats are written in one transaction this often (the fleet view lags
            a heartbeat by at most this).
        cert_signer: Signs an edge's certificate request at join and renewal (the hub's leaf
            listener requires TLS); ``None``: the hub runs without leaf TLS.
    """

    def __init__(
        self,
        store: MetadataStore,
        issuer: TokenIssuer | None,
        nats_url: str,
        *,
        user: str | None = None,
        password: str | None = None,
        sink: Callable[[Event], None] | None = None,
        on_fleet_change: Callable[[list[EdgeNode]], None] | None = None,
        offline_after_s: float = 5.0,
        command_timeout_s: float = 5.0,
        flush_s: float = 0.25,
        cert_signer: CsrSigner | None = None,
    ) -> None:
        self.store = store
        self.issuer = issuer
        self.nats_url = nats_url
        self._user, self._password = user, password
        self.sink = sink
        self.on_fleet_change = on_fleet_change
        self.offline_after_s = offline_after_s
        self.command_timeout_s = command_timeout_s
        self.flush_s = flush_s
        self.cert_signer = cert_signer
        self.counters: dict[str, int] = {
            "applied": 0, "duplicates": 0, "rejected": 0, "batches": 0, "heartbeats": 0,
            "registered": 0, "refused": 0, "commands_sent": 0, "gaps": 0,
        }  # fmt: skip
        self.rejected_by_reason: dict[str, int] = {}
        self._nc: Client | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._dispatching: dict[str, asyncio.Lock] = {}
        self._digests: dict[str, tuple[float, str]] = {}
        self._pending_sites: set[str] = set()
        self._beats: dict[str, tuple[str, dict[str, Any]]] = {}
        self._node_sites: dict[str, str] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._sync_lock = asyncio.Lock()

    # Lifetime ---------------------------------------------------------------------------------
    async def __aenter__(self) -> EdgeGateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._nc = await nats.connect(
            self.nats_url, user=self._user, password=self._password, name="datawave-gateway",
            max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=5,
            error_cb=self._on_nats_error, disconnected_cb=self._on_disconnect,
            reconnected_cb=self._on_reconnect,
        )  # fmt: skip
        for kind, cb in (
            ("register", self._on_register),
            ("renew", self._on_renew),
            ("sync", self._on_sync),
            ("heartbeat", self._on_heartbeat),
        ):
            await self._nc.subscribe(wildcard(kind), queue=QUEUE, cb=cb)
        await self._nc.flush()
        self._pending_sites = await asyncio.to_thread(self.store.sites_with_pending_commands)
        self._tasks = [asyncio.create_task(self._watch(), name="gateway-watch")]
        log.info("edge gateway serving on %s", redact(self.nats_url))

    async def _on_nats_error(self, exc: Exception) -> None:
        # Reconnect attempts while the hub is down fail by the dozen: not worth a traceback.
        log.debug("edge gateway: nats: %s", exc)

    async def _on_disconnect(self) -> None:
        log.warning("edge gateway: disconnected from the hub; reconnecting")

    async def _on_reconnect(self) -> None:
        log.info("edge gateway: reconnected to the hub")

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.close()

    # Commands from the core ---------------------------------------------------------------------
    async def command(
        self, site: str, kind: str, args: Mapping[str, Any], *, command_id: str | None = None
    ) -> str:
        """Queue a durable command for ``site`` and try to deliver it now; returns its id."""
        if kind not in DURABLE_KINDS:
            raise DatawaveError(f"unknown edge command {kind!r}")
        cid = command_id or str(uuid.uuid4())
        await asyncio.to_thread(self.store.add_edge_command, cid, site, kind, dict(args))
        self._pending_sites.add(site)
        await self.dispatch(site)
        return cid

    async def _ask(
        self, site: str, kind: str, args: Mapping[str, Any], timeout_s: float
    ) -> tuple[dict[str, Any] | None, str]:
        """One command answered now (not queued); ``(answer, "")`` or ``(None, why not)``."""
        assert self._nc is not None
        msg = encode({"id": str(uuid.uuid4()), "kind": kind, "args": dict(args)})
        try:
            reply = await self._nc.request(subject(site, "cmd"), msg, timeout=timeout_s)
            answer = decode(reply.data, required=("ok",))
        except (nats.errors.Error, BadMessage) as exc:
            return None, f"edge site {site}: {_why_no_answer(exc)}"
        if not answer["ok"]:
            return None, f"edge site {site}: {answer.get('error')}"
        return answer, ""

    async def test(self, site: str, source_id: str, *, timeout_s: float = 30.0) -> TestReport:
        """Run a connection test on the edge now (not queued: a test answers the present)."""
        answer, why = await self._ask(site, "test", {"source_id": source_id}, timeout_s)
        if answer is None:
            return _edge_failure(source_id, why)
        return TestReport.model_validate(answer["result"])

    async def check_health(
        self, site: str, source_ids: Sequence[str], *, timeouts: Sequence[float] | None = None
    ) -> list[HealthReport]:
        """Check sources on their edge now and return one report per id, in order.

        Not queued, like a test: a health check answers the present. The edge also queues
        the samples in its outbox, so the store gets them through sync like its own rounds.
        An edge that does not answer (offline, no agent, too slow) yields ``unknown`` reports
        saying why, within the checks' timeouts plus ``command_timeout_s``.
        """
        ids = [str(s) for s in source_ids]
        if not ids:
            return []
        limits = [float(t) for t in timeouts] if timeouts else None
        if limits is not None and len(limits) != len(ids):
            raise DatawaveError("check_health: one timeout per source id, or none")
        waves = -(-len(ids) // HEALTH_CONCURRENCY)  # the edge runs that many checks at once
        wait_s = max(limits or [HEALTH_TIMEOUT_S]) * waves + self.command_timeout_s
        answer, why = await self._ask(
            site, "check_health", {"source_ids": ids, "timeouts": limits}, wait_s
        )
        if answer is None:
            return _health_unknown(ids, why)
        result = answer.get("result")
        try:
            reports = [HealthReport.model_validate(r) for r in result or ()]
        except (TypeError, ValueError):  # pydantic's ValidationError is a ValueError
            reports = []
        if [r.source_id for r in reports] != ids:
            return _health_unknown(ids, f"edge site {site}: malformed health answer")
        return reports

    async def discover(self, site: str, source_id: str, *, job_id: str | None = None) -> RunSummary:
        """Start a discovery on the edge: the run is recorded now and finished when the edge's
        result arrives through sync (minutes or days later if the edge is offline)."""
        run_id = str(uuid.uuid4())
        run = await asyncio.to_thread(
            self.store.start_run, run_id, source_id, job_id=job_id, origin=f"edge:{site}"
        )
        await self.command(site, "discover", {"source_id": source_id, "run_id": run_id},
                           command_id=f"discover-{run_id}")  # fmt: skip
        return run

    async def dispatch(self, site: str) -> int:
        """Deliver pending commands of ``site`` in order; stops at the first undeliverable one."""
        lock = self._dispatching.setdefault(site, asyncio.Lock())
        if lock.locked() or self._nc is None:
            return 0
        sent = 0
        async with lock:
            pending = await asyncio.to_thread(self.store.pending_edge_commands, site)
            if not pending:
                self._pending_sites.discard(site)
            for cmd in pending:
                data = encode({"id": cmd.id, "kind": cmd.kind, "args": cmd.args})
                await asyncio.to_thread(self.store.mark_edge_command_sent, cmd.id)
                try:
                    reply = await self._nc.request(
                        subject(site, "cmd"), data, timeout=self.command_timeout_s
                    )
                    answer = decode(reply.data, required=("ok",))
                except (nats.errors.Error, BadMessage):
                    break  # offline or confused: keep it pending, the next heartbeat retries
                status = "done" if answer["ok"] else "failed"
                await asyncio.to_thread(
                    self.store.finish_edge_command, cmd.id, status,
                    {k: v for k, v in answer.items() if k != "id"},
                )  # fmt: skip
                sent += 1
                self.counters["commands_sent"] += 1
        return sent

    # Handlers ---------------------------------------------------------------------------------
    async def _on_register(self, msg: Msg) -> None:
        """Admit a node: check the request, sign its CSR, redeem its token (once), then record
        its sealing key and put it in the fleet. Every refusal is audited (before the reply,
        so whoever sees the refusal finds it in the log) as ``edge.join`` denied."""
        site, node = "?", None
        try:
            site = site_of(msg.subject)
            req = decode(msg.data, required=("token", "seal_key"))
            token = str(req["token"])
            node = str(req.get("node"))[:64] if req.get("node") else None
            seal_key = req["seal_key"]
            if not isinstance(seal_key, bytes) or len(seal_key) != PUBLIC_KEY_BYTES:
                raise BadMessage("seal_key must be a 32-byte X25519 public key")
            if parse_unverified(token).site != site:
                raise TokenRejected("join token rejected: it is for another site",
                                    reason="wrong site")  # fmt: skip
            if self.issuer is None:
                raise TokenRejected("join token rejected: this core takes no joins",
                                    reason="joins disabled")  # fmt: skip
            cert = None
            if self.cert_signer is not None:  # a genuine token first, then the CSR, then redeem:
                await asyncio.to_thread(self.issuer.verify, token)  # a bad CSR keeps the token
                csr = req.get("csr")
                if not isinstance(csr, bytes):
                    raise BadMessage("csr missing: this hub requires TLS (upgrade the edge)")
                cert = await asyncio.to_thread(self.cert_signer, site, csr)
            elif req.get("csr") is not None:  # the edge expects a certificate it cannot get
                raise BadMessage("this core signs no certificates (its hub has no leaf TLS)")
            creds = await asyncio.to_thread(self.issuer.redeem, token)
        except BadMessage as exc:
            await self._refuse_join(msg, site, node, exc.reason, exc.message, bad=True)
            return
        except TokenRejected as exc:
            reason = str(exc.context.get("reason") or "refused")
            await self._refuse_join(msg, site, node, reason, exc.message)
            return
        except DatawaveError as exc:  # the CSR did not sign
            await self._refuse_join(msg, site, node, "bad certificate request",
                                    f"join refused: {exc.message}")  # fmt: skip
            return
        key = await asyncio.to_thread(self._admit, site, creds.node, seal_key)
        self._node_sites[creds.node] = site
        self.counters["registered"] += 1
        self._emit("edge.joined", data={"site": site, "node": creds.node})
        await self._reply(msg, {"ok": True, "site": site, "node": creds.node, "cert": cert,
                                "seal_key_id": key})  # fmt: skip
        await self._fleet_changed()

    async def _refuse_join(
        self, msg: Msg, site: str, node: str | None, reason: str, error: str, *, bad: bool = False
    ) -> None:
        log.warning("edge gateway: join for site %s refused: %s", site[:64], reason)
        await asyncio.to_thread(self._audit, "edge.join", site, outcome="denied",
                                detail={"reason": reason, "node": node})  # fmt: skip
        if bad:
            await self._reject(msg, reason, error)
            return
        self.counters["refused"] += 1
        await self._reply(msg, {"ok": False, "reason": reason, "error": error})

    def _admit(self, site: str, node: str, seal_key: bytes) -> str:
        key = self.store.put_edge_key(site, seal_key)
        self.store.register_edge_node(node, site)
        moved = self.store.reseal_site_secrets(site)
        if moved:
            log.info("edge %s: sealed the secrets of %d source(s) to its key", site, moved)
        self._audit("edge.join", site, detail={"node": node, "seal_key_id": key.key_id,
                                               "resealed": moved})  # fmt: skip
        return key.key_id

    async def _on_renew(self, msg: Msg) -> None:
        """Sign a new certificate for a node already in the fleet (its link proves the old)."""
        site = "?"
        try:
            site = site_of(msg.subject)
            req = decode(msg.data, required=("node", "csr"))
            node = await self._node_of(site, req)
            if self.cert_signer is None:
                raise BadMessage("this hub has no leaf TLS: nothing to renew")
            csr = req["csr"]
            if not isinstance(csr, bytes):
                raise BadMessage("csr must be bytes")
            cert = await asyncio.to_thread(self.cert_signer, site, csr)
        except BadMessage as exc:
            await asyncio.to_thread(self._audit, "edge.cert.renew", site, outcome="denied",
                                    detail={"reason": exc.reason})  # fmt: skip
            await self._reject(msg, exc.reason, exc.message)
            return
        except DatawaveError as exc:
            await asyncio.to_thread(self._audit, "edge.cert.renew", site, outcome="denied",
                                    detail={"reason": "bad certificate request"})  # fmt: skip
            await self._reply(msg, {"ok": False, "error": f"renewal refused: {exc.message}"})
            return
        await asyncio.to_thread(self._audit, "edge.cert.renew", site, detail={"node": node.node})
        await self._reply(msg, {"ok": True, "cert": cert})

    async def _on_heartbeat(self, msg: Msg) -> None:
        """Buffer the heartbeat; :meth:`_flush_heartbeats` writes them in one transaction."""
        try:
            site = site_of(msg.subject)
            hb = decode(msg.data, required=("node",))
            node_id = str(hb["node"])[:64]
            if self._node_sites.get(node_id) != site:
                node = await self._node_of(site, hb)
                self._node_sites[node.node] = node.site
        except BadMessage as exc:
            self._count_reject(exc.reason)
            return
        self.counters["heartbeats"] += 1
        values: dict[str, Any] = {k: hb.get(k) for k in ("load", "queue_depth", "lag_s",
                                                         "sources_digest")}  # fmt: skip
        values = {k: (v if isinstance(v, int | float | str) else None) for k, v in values.items()}
        version = hb.get("version")
        values["version"] = str(version)[:64] if version is not None else None
        values["link_state"] = "up"  # we heard it: its link to the core works
        values["at"] = datetime.now(UTC)
        self._beats[node_id] = (site, values)

    async def _flush_heartbeats(self) -> None:
        beats, self._beats = self._beats, {}
        if not beats:
            return
        came_back = await asyncio.to_thread(
            self.store.record_edge_heartbeats, [(n, v) for n, (_, v) in beats.items()]
        )
        for node in came_back:
            self._emit("edge.link", data={"site": beats[node][0], "node": node, "state": "up"})
        back_sites = {beats[n][0] for n in came_back}
        for site, values in {s: v for s, v in beats.values()}.items():
            if values.get("sources_digest") != await self._site_digest(site):
                pending = await asyncio.to_thread(self.store.pending_edge_commands, site)
                if not any(c.kind == "sources.set" for c in pending):
                    await asyncio.to_thread(
                        self.store.add_edge_command, str(uuid.uuid4()), site, "sources.set",
                        {"sources": await asyncio.to_thread(self._site_sources, site)},
                    )  # fmt: skip
                self._pending_sites.add(site)
            if site in self._pending_sites or site in back_sites:
                self._spawn(self.dispatch(site))
        await self._fleet_changed()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _on_sync(self, msg: Msg) -> None:
        try:
            site = site_of(msg.subject)
            batch = decode(msg.data, required=("node", "epoch", "records"))
            node = await self._node_of(site, batch)
            records = batch["records"]
            if not isinstance(records, list) or not all(
                isinstance(r, dict) and isinstance(r.get("seq"), int) for r in records
            ):
                raise BadMessage("records must be maps with an integer seq")
        except BadMessage as exc:
            await self._reject(msg, exc.reason, exc.message)
            return
        async with self._sync_lock:  # one batch at a time: the high-water mark is ordered
            acked_hint = batch.get("acked")
            ack, resync = await asyncio.to_thread(
                self._apply_batch, site, node.node, str(batch["epoch"]), records,
                acked_hint if isinstance(acked_hint, int) else 0,
            )  # fmt: skip
        self.counters["batches"] += 1
        await self._reply(msg, {"ack": ack, "resync": resync})

    # Applying records (worker thread) -------------------------------------------------------
    def _apply_batch(
        self, site: str, node: str, epoch: str, records: list[dict[str, Any]], acked: int = 0
    ) -> tuple[int, list[str]]:
        """Apply the records past the node's mark; returns (new mark, sources to resync).

        The edge's own ack cursor (``acked``) counts as applied too: it only moves on our acks,
        so it is ahead of the stored mark only if the store lost it (restored from a backup).
        A batch that starts beyond the mark + 1 means an earlier batch was lost on the way: it
        is not applied, and the reply (the mark) makes the edge resend from there.
        """
        hwm = max(self.store.edge_sync_position(node, epoch[:64]), acked)
        if records and min(r["seq"] for r in records) > hwm + 1:
            self.counters["gaps"] += 1
            return hwm, []
        own = {r.id for r in self.store.list_sources(edge_site=site)}
        resync: list[str] = []
        health: dict[str, str] = {}
        top = hwm
        for rec in sorted(records, key=lambda r: r["seq"]):
            seq = rec["seq"]
            if seq <= hwm:
                self.counters["duplicates"] += 1
                continue
            top = max(top, seq)
            try:
                self._apply_record(site, rec, own, health, resync)
                self.counters["applied"] += 1
            except (BadMessage, KeyError, TypeError, ValueError) as exc:
                # A record that can never apply must not block the ones behind it: skip it.
                reason = exc.reason if isinstance(exc, BadMessage) else "bad record"
                self._count_reject(reason)
                log.warning("edge %s: skipped record %s: %s", site, rec.get("rid"), reason)
        if health:
            for sid, state in health.items():
                self.store.set_health(sid, state)
        if top > hwm:
            self.store.advance_edge_seq(node, epoch[:64], top)
        return top, resync

    def _apply_record(
        self,
        site: str,
        rec: dict[str, Any],
        own: set[str],
        health: dict[str, str],
        resync: list[str],
    ) -> None:
        kind, sid = rec.get("kind"), rec.get("source_id")
        if kind == "dropped":
            raise BadMessage("dropped on the edge: too large to send")
        if kind == "event":
            self._emit(str(rec.get("type", "edge.event")), source_id=sid,
                       data={"site": site, "rid": rec.get("rid"), **(rec.get("data") or {})})  # fmt: skip
            return
        if sid not in own:
            raise BadMessage("source not owned by this site")
        if kind == "audit":
            action = rec.get("action")
            if action not in EDGE_AUDIT_ACTIONS:
                raise BadMessage("audit action not allowed from an edge")
            used = rec.get("at")
            self._audit(str(action), site, source_id=sid, detail={
                "purpose": str(rec.get("purpose"))[:32], "rid": rec.get("rid"),
                "used_at": datetime.fromtimestamp(used, UTC).isoformat()
                if isinstance(used, int | float) else None,
            })  # fmt: skip
            return
        if kind == "discovery":
            if self._apply_discovery(site, sid, rec):
                resync.append(sid)
        elif kind == "test":
            report = TestReport.model_validate(rec["report"])
            self.store.record_test(sid, report.model_copy(update={"source_id": sid}))
            self._emit("test.finished", source_id=sid, data={"site": site, "ok": report.ok})
        elif kind == "health":
            sample = HealthReport.model_validate(rec["report"])
            health[sid] = sample.state.value
            self._emit("health.checked", source_id=sid,
                       data={"site": site, "rid": rec.get("rid"), "state": sample.state.value,
                             "latency_ms": sample.latency_ms})  # fmt: skip
        else:
            raise BadMessage(f"unknown record kind {str(kind)[:32]!r}")

    def _apply_discovery(self, site: str, sid: str, rec: dict[str, Any]) -> bool:
        run_id = str(rec["run_id"])
        try:
            run = self.store.get_run(run_id)
            if run.status is not RunStatus.RUNNING:
                return False  # finished already: a replay
        except NotFound:
            started = _parse_ts(rec.get("started_at"))
            self.store.start_run(run_id, sid, origin=f"edge:{site}", started_at=started)
            run = self.store.get_run(run_id)
        self._emit("discovery.started", source_id=sid, run_id=run_id, job_id=run.job_id,
                   data={"site": site})  # fmt: skip
        if rec.get("status") == RunStatus.FAILED.value:
            error = redact(str(rec.get("error") or "failed on the edge"))
            self.store.finish_run(run_id, RunStatus.FAILED, errors=[error])
            self._emit("discovery.failed", source_id=sid, run_id=run_id, job_id=run.job_id,
                       data={"error": error, "site": site})  # fmt: skip
            return False
        payload = rec["delta"]
        cs, counters, diverged = apply_delta(self.store, sid, run_id, payload, datetime.now(UTC))
        written = self.store.apply_changes(cs)
        counters.update(rows_written=written, connector_ms=int(rec.get("connector_ms", 0)),
                        queries=int(payload.get("queries", 0)),
                        shipped_tables=len(payload.get("tables", ())))  # fmt: skip
        status = RunStatus(rec.get("status", RunStatus.SUCCEEDED.value))
        self.store.finish_run(
            run_id, status, counters=counters, errors=list(payload.get("failures", ())),
            warnings=list(payload.get("warnings", ())),
            snapshot_id=cs.snapshot.id if cs.snapshot else None, drift_events=len(cs.drift),
        )  # fmt: skip
        for e in cs.drift:
            self._emit("drift", source_id=sid, run_id=run_id, job_id=run.job_id,
                       data=e.model_dump(mode="json", exclude={"source_id", "run_id"}))  # fmt: skip
        self._emit("discovery.finished", source_id=sid, run_id=run_id, job_id=run.job_id,
                   data={"status": status.value, "counters": counters, "site": site})  # fmt: skip
        if diverged:
            log.info("edge %s: source %s diverged from the core; asking for a full run", site, sid)
        return diverged

    # Helpers ----------------------------------------------------------------------------------
    async def _node_of(self, site: str, payload: dict[str, Any]) -> EdgeNode:
        node = await asyncio.to_thread(self.store.get_edge_node, str(payload["node"])[:64])
        if node is None or node.site != site or node.left_at is not None:
            raise BadMessage("unknown node for this site")
        return node

    def _site_sources(self, site: str) -> list[dict[str, Any]]:
        """The site's source definitions: public config plus the secrets blob sealed to the
        site's key, as stored (this process cannot open it)."""
        out = []
        for rec in self.store.list_sources(edge_site=site):
            entry: dict[str, Any] = {"id": rec.id, "name": rec.name, "type": rec.type,
                                     "config": rec.config, "version": rec.version}  # fmt: skip
            blob = self.store.get_sealed_secrets(rec.id)
            if is_edge_sealed(blob):
                assert blob is not None
                entry["sealed"] = base64.b64encode(blob).decode()
            elif blob:  # still under the core's KEK: never sent in clear
                entry["secrets"] = "unavailable"
            out.append(entry)
        return out

    async def _site_digest(self, site: str) -> str:
        cached = self._digests.get(site)
        if cached is not None and time.monotonic() - cached[0] < 1.0:
            return cached[1]
        recs = await asyncio.to_thread(self.store.list_sources, edge_site=site)
        digest = sources_digest((r.id, r.version) for r in recs)
        self._digests[site] = (time.monotonic(), digest)
        return digest

    async def _watch(self) -> None:
        """Write buffered heartbeats and mark silent nodes offline, every ``flush_s``."""
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                await self._flush_heartbeats()
                cutoff = datetime.now(UTC) - timedelta(seconds=self.offline_after_s)
                gone = await asyncio.to_thread(self.store.mark_edges_offline, cutoff)
                for node in gone:
                    self._emit("edge.link", data={"node": node, "state": "offline"})
                if gone:
                    await self._fleet_changed()
            except Exception:
                log.exception("edge gateway: watch round failed")

    async def _fleet_changed(self) -> None:
        if self.on_fleet_change is None:
            return
        try:
            self.on_fleet_change(await asyncio.to_thread(self.store.list_edge_nodes))
        except Exception:  # metrics never break the link
            log.exception("edge gateway: fleet listener failed")

    def _emit(self, type_: str, *, source_id: str | None = None, run_id: str | None = None,
              job_id: str | None = None, data: dict[str, Any] | None = None) -> None:  # fmt: skip
        if self.sink is None:
            return
        try:
            # Fields are ours (strings and plain data): skip validation on this hot path.
            event = Event.model_construct(type=type_, source_id=source_id, run_id=run_id,
                                          job_id=job_id, at=datetime.now(UTC), data=data or {})  # fmt: skip
            self.sink(event)
        except Exception:
            log.exception("edge gateway: event sink failed")

    def _audit(
        self, action: str, site: str, *, outcome: str = "ok", source_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        """Append to the audit log as ``edge:<site>``; a failing log never stops the link."""
        try:
            self.store.append_audit(action, principal=f"edge:{site[:64]}", outcome=outcome,
                                    source_id=source_id, target=f"site:{site[:64]}",
                                    detail=detail)  # fmt: skip
        except Exception:
            log.exception("edge gateway: cannot append %s to the audit log", action)

    def _count_reject(self, reason: str) -> None:
        self.counters["rejected"] += 1
        self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + 1

    async def _reject(self, msg: Msg, reason: str, message: str) -> None:
        self._count_reject(reason)
        log.warning("edge gateway: %s on %s", message, msg.subject[:200])
        await self._reply(msg, {"ok": False, "ack": 0, "error": message})

    async def _reply(self, msg: Msg, payload: dict[str, Any]) -> None:
        if not msg.reply:
            return
        with contextlib.suppress(nats.errors.Error, OSError):
            await msg.respond(encode(payload))


def _edge_failure(source_id: str, error: str) -> TestReport:
    from datawave.datasource.models import StepResult, StepStatus

    return TestReport(
        source_id=source_id, ok=False, duration_ms=0.0, tested_at=datetime.now(UTC),
        steps=[StepResult(name="reach_edge", status=StepStatus.FAILED, duration_ms=0.0,
                          error=error, error_code="edge_offline")],
    )  # fmt: skip


def _why_no_answer(exc: Exception) -> str:
    if isinstance(exc, nats.errors.NoRespondersError | nats.errors.TimeoutError):
        return "no agent answers (edge offline?)"
    return str(exc) or type(exc).__name__


def _health_unknown(source_ids: Sequence[str], error: str) -> list[HealthReport]:
    now = datetime.now(UTC)
    return [HealthReport(source_id=sid, state=HealthState.UNKNOWN, error=error, checked_at=now)
            for sid in source_ids]  # fmt: skip


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(value)
    return None
