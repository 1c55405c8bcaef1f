"""The switch runtime's lifecycle: HSM, listeners, connections, issuer links, SAF, drain.

Each request is answered by the transaction manager (switch/txn.py) and its
participants (switch/participants/), which see ``Services``, never this class.

Task tree (trio structured concurrency)::

    Switch.run
    ├── IssuerLink.run            one per [[links]]: connect, sign on, MUX, echo
    ├── Switch._saf_loop          store-and-forward sender
    ├── Recorder.retry_loop       answers whose journal write failed, written later
    └── work nursery
        ├── _accept_loop          one per [[listeners]] socket
        └── _serve_connection     one per peer connection
            └── _handle           one per request in flight (bounded per connection;
                                  parked between requests, woken for the next):
                                  TransactionManager.handle

``stop()`` drains: stop accepting, stop reading, let requests in flight finish (up to
switch.drain_timeout_ms), sign off the links, return.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Any

import trio

from payswitch.codecs.errors import CodecError
from payswitch.codecs.framing import Frame, reply_tpdu
from payswitch.codecs.iso8583 import BITMAP_TWINS, Dialect, Message, get
from payswitch.hsm import AsyncHsm, Hsm, Policy, TokenConfig
from payswitch.hsm.token import ENV_CONF, module_path
from payswitch.routing.bins import BinTable, Router
from payswitch.routing.health import HealthConfig
from payswitch.switch import pans
from payswitch.switch.admission import Admission, LogSampler, MalformedWindow
from payswitch.switch.channel import Channel, ChannelClosed, ChannelLimits, Deadlines
from payswitch.switch.config import Config, ConfigError, ListenerSection
from payswitch.switch.errors import (
    IssuerTimeout,
    LinkBusy,
    LinkUnavailable,
    StoreError,
    UnknownAcquirer,
    UnknownTerminal,
)
from payswitch.switch.guards import make_guards, probe_loop
from payswitch.switch.journal import SafRow, Store, message_from_safe
from payswitch.switch.links import IssuerLink, transmission_time
from payswitch.switch.logs import log
from payswitch.switch.messages import reversal_item
from payswitch.switch.metrics import Metrics
from payswitch.switch.participants.admit import identify
from payswitch.switch.participants.cardchecks import check_standin_keys
from payswitch.switch.services import Origin, Services
from payswitch.switch.txn import TransactionManager
from payswitch.switch.workers import WorkerSpec, reuseport_listener

DRAIN_POLL_S = 0.01
OWNER_PROBE_S = 2.0  # how often the owner lock's connection is checked
SAF_LEASE_MARGIN_MS = 2000  # beyond send_timeout_ms, for the DB writes after a send
# DE39 of a 0430 (0230) that acknowledge a SAF message: 00; 25, the issuer has no such
# original (nothing to reverse); 94, duplicate (it has this one already). Any other
# answer (96, 91, ...) is not an acknowledgement: the message is sent again.
SAF_ACK_CODES = frozenset({"00", "25", "94"})


class Switch:
    def __init__(self, cfg: Config, store: Store | None = None,
                 router: Router | None = None, hsm: Hsm | None = None,
                 ledger: Any = None, worker: WorkerSpec | None = None,
                 relay_thread: bool = True) -> None:
        self.cfg = cfg
        self.worker = worker  # one of `serve --workers N`; None: the only process
        # The HSM: given (tests), or opened by run() from [hsm] and closed at its end.
        self._hsm_given = hsm
        self.hsm: AsyncHsm | None = None
        db = cfg.database
        self.store = store or Store(db.resolve_dsn(), db.pool_size, db.connect_timeout_s,
                                    db.statement_timeout_ms)
        if ledger is None and cfg.ledger.enabled:
            from payswitch.switch.ledgerwire import LedgerWire

            # relay_thread=False: `serve` runs the relay in a process (relayproc.py)
            ledger = LedgerWire(cfg, db.resolve_dsn(), relay_thread=relay_thread)
        self.ledger = ledger  # LedgerWire | None
        self.router = router or BinTable((r.prefix, r.link) for r in cfg.routes)
        self.metrics = Metrics()
        self.links = {x.name: IssuerLink(x, self.metrics) for x in cfg.links}
        self._sources = {x.name: self._known_sources(x) for x in cfg.listeners}
        self.ports: dict[str, int] = {}
        self.metrics_port = 0
        self._admission: dict[str, Admission[_Connection]] = {
            x.name: Admission(x.max_connections, x.max_connections_per_source,
                              x.max_unproven_connections) for x in cfg.listeners}
        self._log_samplers = {(x.name, what): LogSampler(x.log_sample_ms / 1000)
                              for x in cfg.listeners
                              for what in ("refused", "malformed", "open", "closed")}
        # what the participants see: never this object
        self.services = Services(cfg=cfg, store=self.store, router=self.router,
                                 links=self.links, metrics=self.metrics, ledger=ledger,
                                 fingerprint_key=pans.fingerprint_key(cfg),
                                 wake_saf=self._wake_saf)
        if worker is not None:  # numbers this worker's issuers see: disjoint slices
            self.services.rrn_range = worker.share(0, 999_999)
            for link in self.links.values():
                link.mux.stans = worker.share(1, 999_999)
        self.services.guards = make_guards(
            self.links, cfg.routing.health if cfg.routing else HealthConfig(), self.metrics)
        if cfg.risk is not None:  # a missing model file is a ConfigError here
            from payswitch.switch.risk import RiskEngine

            self.services.risk = RiskEngine(
                cfg.risk, cfg.path, use_de7=cfg.switch.risk_clock == "transmission_time")
        self.txn = TransactionManager(self.services)
        self._reading: set[trio.CancelScope] = set()
        self.deadlines = Deadlines()  # listeners' idle and frame deadlines (run by _run)
        self._accepting: list[trio.CancelScope] = []
        self._stop = trio.Event()
        self._saf_wakeup = trio.Event()

    # -- lifecycle --------------------------------------------------------------------
    def _open_hsm(self) -> Hsm | None:
        h = self.cfg.hsm
        if self._hsm_given is not None:
            return self._hsm_given
        if not h.enabled:
            log("hsm_disabled", logging.WARNING,
                note="no [hsm] token (development only): PIN blocks pass untranslated")
            return None
        conf = os.environ.get(ENV_CONF)
        if not conf:
            raise ConfigError(f"hsm: ${ENV_CONF} is not set (the SoftHSM2 configuration)")
        policy = Policy(pin_verify_max=h.pin_verify_max,
                        pin_verify_window_s=h.pin_verify_window_s,
                        pin_verify_cards=h.pin_verify_cards, derived_keys=h.derived_keys)
        return Hsm(TokenConfig(module=module_path(), conf=conf, label=h.token,
                               pin=h.resolve_pin()), policy=policy)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        sync_hsm = self._open_hsm()
        if sync_hsm is not None:
            self.hsm = AsyncHsm(sync_hsm, max_pending=self.cfg.hsm.max_pending,
                                calls=self.cfg.hsm.calls)
            self.services.hsm = self.hsm
            for link in self.links.values():
                link.hsm = self.hsm
            if self.ledger is not None:  # PAN token and event chain MAC from the HSM
                self.ledger.use_hsm(self.hsm, sync_hsm, self.cfg.hsm)
            log("hsm_open", token=sync_hsm.config.label)
            check_standin_keys(self.cfg, sync_hsm)
        try:
            await self._run(task_status=task_status)
        finally:
            if sync_hsm is not None and self._hsm_given is None:
                sync_hsm.close()

    async def _run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await self.store.migrate()
        await self.store.hold_owner_lock()  # before recovery: our rows are not "gone"
        # their holds are voided below (ledger_voids_due: the "recovered" journal rows,
        # and for a recovered 0400, its original's switch_reversal row)
        recovered = await self.store.recover(
            lambda out, link: reversal_item(out, link), self.cfg.saf.expiry_s)
        if recovered:
            log("recovered_in_flight", logging.WARNING, count=recovered,
                note="answered 91; reversals queued for those sent to an issuer")
        if self.services.risk is not None:  # before any listener: the windows are whole
            n = await self.store.risk_inputs(self.services.risk.replay)
            log("risk_state_rebuilt", authorizations=n)
        try:
            async with trio.open_nursery() as root:
                if self.ledger is not None:
                    # before any listener: every approval needs its hold written
                    await self.ledger.start(root)
                    # reversed originals, and requests answered 91 (recovered) or 96
                    # (ledger outcome unknown) before a crash: a hold still pending is
                    # voided, by the original's key (idempotent)
                    for key in await self.store.ledger_voids_due():
                        self.ledger.void_later(key)
                root.start_soon(self.deadlines.run)
                for link in self.links.values():
                    root.start_soon(link.run)
                root.start_soon(self._saf_loop)
                root.start_soon(probe_loop, self.services.guards, self.links)
                root.start_soon(self.txn.recorder.retry_loop)
                root.start_soon(self._owner_loop)
                if self.cfg.switch.recovery_min_age_s:
                    root.start_soon(self._recovery_loop)
                async with trio.open_nursery() as work:
                    for lst in self.cfg.listeners:
                        sockets = await self._listen(lst)
                        self.ports[lst.name] = sockets[0].socket.getsockname()[1]
                        work.start_soon(self._accept_loop, lst, sockets)
                    if self.cfg.switch.metrics_port:
                        self.metrics.watch(self)  # scrape-time gauges: HSM, ledger, backlogs
                        self.metrics_port = self.metrics.serve(
                            self.cfg.switch.metrics_host, self.cfg.switch.metrics_port
                            + (self.worker.index if self.worker else 0))  # one per worker
                    log("switch_ready", listeners=self.ports, metrics_port=self.metrics_port)
                    task_status.started(self)
                    await self._stop.wait()
                    await self._drain()
                    work.cancel_scope.cancel()
                with trio.move_on_after(self.cfg.switch.drain_timeout_ms / 1000 + 1):
                    async with trio.open_nursery() as offs:
                        for link in self.links.values():
                            offs.start_soon(link.sign_off)
                root.cancel_scope.cancel()
        finally:
            self.metrics.close()
            self.store.close()
            self.store.release_owner()
            if self.ledger is not None:
                self.ledger.close()
        log("switch_stopped")

    def stop(self) -> None:
        self._stop.set()

    async def _listen(self, lst: ListenerSection) -> list[trio.SocketListener]:
        if self.worker is None:
            return await trio.open_tcp_listeners(lst.port, host=lst.host)
        # the parent reserved the port; every worker listens on it (SO_REUSEPORT)
        return [await reuseport_listener(lst.host, self.worker.ports[lst.name])]

    async def _recovery_loop(self) -> None:
        """Open requests of a process that died and was not started again (a worker
        fewer, a drain that timed out): answered 91, 0420 queued, holds voided."""
        sw = self.cfg.switch
        while True:
            await trio.sleep(sw.recovery_interval_s)
            keys: list[str] = []
            try:
                count = await self.store.recover(reversal_item, self.cfg.saf.expiry_s, keys,
                                                 min_age_s=sw.recovery_min_age_s)
            except StoreError as e:
                log("recovery_failed", logging.ERROR, error=str(e))
                continue
            if count:
                log("recovered_in_flight", logging.WARNING, count=count,
                    note="a gone process's requests: 91 recorded, reversals queued")
                self._wake_saf()
                for key in keys if self.ledger is not None else ():
                    self.ledger.void_later(key)

    async def _owner_loop(self) -> None:
        """Keep the owner lock: if its connection died (database restart), take it again,
        so that another worker's start-up does not take over our open requests."""
        while True:
            await trio.sleep(OWNER_PROBE_S)
            if not await self.store.owner_lock_alive():
                log("owner_lock_lost", logging.ERROR, owner=self.store.owner)

    async def _drain(self) -> None:
        log("switch_draining", in_flight=self.txn.in_flight)
        for scope in self._accepting:
            scope.cancel()
        for scope in list(self._reading):
            scope.cancel()
        with trio.move_on_after(self.cfg.switch.drain_timeout_ms / 1000) as scope:
            while self.txn.in_flight:
                await trio.sleep(DRAIN_POLL_S)
        log("switch_drained", complete=not scope.cancelled_caught, in_flight=self.txn.in_flight)

    def _known_sources(self, lst: ListenerSection) -> frozenset[str] | None:
        """Addresses a listener accepts connections from; None = any.

        ``allowed_sources`` when set; else, on a terminal listener whose terminals all
        have a ``source``, those addresses (an unknown address is closed at once).
        """
        if lst.allowed_sources:
            return frozenset(lst.allowed_sources)
        if lst.kind == "acquirer":
            return None  # checked per connection against [[acquirers]]
        mine = [t for t in self.cfg.terminals if t.listener in ("", lst.name)]
        if mine and all(t.source for t in mine):
            return frozenset(t.source for t in mine)
        return None

    # -- listeners --------------------------------------------------------------------
    async def _accept_loop(self, lst: ListenerSection, sockets: list[trio.SocketListener],
                           ) -> None:
        accepting = trio.CancelScope()
        self._accepting.append(accepting)
        async with trio.open_nursery() as conns:
            try:
                with accepting:
                    async with trio.open_nursery() as accepts:
                        for sock in sockets:
                            accepts.start_soon(self._accept_one_socket, lst, sock, conns)
            finally:
                for sock in sockets:
                    sock.socket.close()  # no new connections; the open ones drain

    async def _accept_one_socket(self, lst: ListenerSection, sock: trio.SocketListener,
                                 conns: trio.Nursery) -> None:
        while True:
            try:
                stream = await sock.accept()
            except OSError as e:  # EMFILE and such: back off, keep serving the others
                log("accept_failed", logging.ERROR, listener=lst.name, error=type(e).__name__)
                await trio.sleep(0.1)
                continue
            conns.start_soon(self._serve_connection, lst, stream)

    def _refuse(self, lst: ListenerSection, peer: str, reason: str) -> None:
        self.metrics.refused.labels(lst.name, reason).inc()
        skipped = self._log_samplers[lst.name, "refused"].sample(trio.current_time())
        if skipped is not None:  # a flood of refusals is one line per log_sample_ms
            log("connection_refused", logging.WARNING, listener=lst.name, peer=peer,
                reason=reason, not_logged=skipped)

    async def _serve_connection(self, lst: ListenerSection, stream: trio.SocketStream) -> None:
        peer = stream.socket.getpeername()[0]
        async with stream:
            acquirer = None
            sources = self._sources[lst.name]
            if sources is not None and peer not in sources:
                return self._refuse(lst, peer, "source not allowed")
            if lst.kind == "acquirer":
                acquirer = next((a for a in self.cfg.acquirers
                                 if a.listener == lst.name and a.source == peer), None)
                if acquirer is None:
                    return self._refuse(lst, peer, "unknown acquirer host")
            conn = _Connection(self, lst, stream, Origin(lst.kind, lst.name, peer, acquirer))
            admission = self._admission[lst.name]
            # an acquirer host is proven by its address; a terminal by its first request
            admitted, evicted = admission.admit(conn, peer, proven=acquirer is not None)
            for old in evicted:
                old.close("evicted for a new connection (unproven, oldest)")
            if not admitted:
                return self._refuse(lst, peer, "too many connections")
            try:
                await conn.serve()
            finally:
                admission.release(conn)

    # -- one request ------------------------------------------------------------------
    def _is_known(self, req: Message, origin: Origin) -> bool:
        """A configured terminal or acquirer (its connection is then never evicted)."""
        try:
            identify(self.services, req, origin)
        except (UnknownTerminal, UnknownAcquirer):
            return False
        return True

    def _wake_saf(self) -> None:
        self._saf_wakeup.set()

    # -- store and forward ------------------------------------------------------------
    async def _saf_loop(self) -> None:
        saf = self.cfg.saf
        while True:
            self._saf_wakeup = trio.Event()
            rows: list[SafRow] = []
            await self._saf_expire()
            up = [n for n, link in self.links.items() if link.state == "signed_on"]
            if up:
                try:
                    # Leased for one send: after a crash the rows are due again soon.
                    rows = await self.store.saf_due(up, saf.batch,
                                                    saf.send_timeout_ms + SAF_LEASE_MARGIN_MS)
                except StoreError as e:
                    log("saf_store_failed", logging.ERROR, error=str(e))
            # The batch is sent at once (bounded by saf.batch and each link's in-flight
            # limit), so that one silent issuer holds up nothing for long.
            async with trio.open_nursery() as nursery:
                for row in rows:
                    nursery.start_soon(self._saf_send_guarded, row)
            if len(rows) < saf.batch:
                with trio.move_on_after(saf.retry_interval_ms / 1000):
                    await self._saf_wakeup.wait()

    async def _saf_expire(self) -> None:
        """Rows past saf.expiry_s are given up whether or not their link is up."""
        try:
            expired = await self.store.saf_expire(self.cfg.saf.batch)
        except StoreError as e:
            log("saf_store_failed", logging.ERROR, error=str(e))
            return
        for row in expired:
            self.metrics.saf_expired.labels(row.link).inc()
            log("saf_expired", logging.ERROR, link=row.link, saf_id=row.id, mti=row.mti,
                attempts=row.attempts, reason="expiry_s passed")

    async def _saf_send_guarded(self, row: SafRow) -> None:
        try:
            await self._saf_send(row)
        except Exception:  # a bug here must not stop payments; it is logged
            log("saf_send_bug", logging.ERROR, exc_info=True, saf_id=row.id)

    async def _saf_send(self, row: SafRow) -> None:
        saf = self.cfg.saf
        link = self.links[row.link]
        if row.expires_at <= datetime.now(UTC):  # past saf.expiry_s: given up, not sent
            await self.store.saf_failed(row, "expired", 0, max_attempts=0)
            self.metrics.saf_expired.labels(link.name).inc()
            log("saf_expired", logging.ERROR, link=link.name, saf_id=row.id, mti=row.mti,
                attempts=row.attempts, reason="expiry_s passed")
            return
        msg = message_from_safe(
            row.message, mti=row.mti if row.attempts == 0 else row.mti[:3] + "1",  # repeat
        ).replace(stan=link.next_stan(), transmission_time=transmission_time(),
                  pan=await pans.stored(self.services, row.pan_enc, row.dup_key,
                                        saf_id=row.id))
        self.metrics.saf_sent.labels(link.name).inc()
        try:
            resp = None
            try:
                resp = await link.request(msg, saf.send_timeout_ms)
            except (IssuerTimeout, LinkUnavailable, LinkBusy) as e:
                error, sent = type(e).__name__, isinstance(e, IssuerTimeout)
            else:
                error, sent = f"DE39 {resp.response_code}", True
            if resp is None or resp.response_code not in SAF_ACK_CODES:
                # Busy or down: nothing was sent, so no attempt is counted.
                retry_ms = min(saf.retry_interval_ms * 2 ** min(row.attempts, 16),
                               saf.retry_max_ms)
                expired = await self.store.saf_failed(row, error, retry_ms,
                                                      saf.max_attempts, counted=sent)
                log("saf_retry" if not expired else "saf_expired",
                    logging.WARNING if not expired else logging.ERROR, link=link.name,
                    saf_id=row.id, mti=msg.mti, attempts=row.attempts + sent, error=error)
                if expired:
                    self.metrics.saf_expired.labels(link.name).inc()
                return
            await self.store.saf_acked(row, resp)
        except StoreError as e:
            log("saf_store_failed", logging.ERROR, error=str(e), saf_id=row.id)
            return
        self.metrics.saf_done.labels(link.name).inc()
        log("saf_acknowledged", link=link.name, saf_id=row.id, mti=msg.mti, rrn=msg.rrn,
            response_code=resp.response_code)


class _Handler:
    """A connection's handler task parked between requests (``_Connection._handle``)."""

    __slots__ = ("job", "task")

    def __init__(self) -> None:
        self.task: trio.lowlevel.Task | None = None  # set while parked
        self.job: tuple[Message, Frame] | None = None

    def give(self, job: tuple[Message, Frame] | None) -> None:
        """Wake the parked task with its next request (None: end)."""
        task, self.task = self.task, None
        self.job = job
        if task is not None:
            trio.lowlevel.reschedule(task)

    def abort(self, _: Any) -> trio.lowlevel.Abort:
        self.task = None  # cancelled while parked (the connection's nursery ends)
        return trio.lowlevel.Abort.SUCCEEDED


class _Connection:
    """One peer connection: a Channel (frame cap and deadline, idle timeout, write
    timeout), one task per request in flight (reused: parked between requests), and
    the count of its malformed frames."""

    def __init__(self, sw: Switch, lst: ListenerSection, stream: trio.SocketStream,
                 origin: Origin) -> None:
        self.sw = sw
        self.lst = lst
        self.origin = origin
        self.dialect = get(lst.dialect)
        self.channel = Channel(stream, ChannelLimits(
            lst.framing, lst.max_frame_bytes, lst.frame_timeout_ms, lst.idle_timeout_ms,
            lst.write_timeout_ms), sw.deadlines)
        self.slots = trio.Semaphore(lst.max_in_flight_per_connection)
        self.reading = trio.CancelScope()
        # handler tasks parked between requests (at most the in-flight cap): a request
        # wakes one instead of spawning a task, the costliest step of trio's per request
        self._idle: list[_Handler] = []
        self._read_done = False
        # proven once (a configured terminal's request, or an acquirer host): stays so
        self.proven = False
        self.malformed = MalformedWindow(lst.max_malformed_frames,
                                         lst.malformed_window_ms / 1000)

    def close(self, reason: str) -> None:
        """Close now: reading stops, answers still queued fail (see Channel)."""
        self.channel.close(reason)
        self.reading.cancel()

    async def serve(self) -> None:
        # every connection is unproven when it opens: sampled like the junk it may be
        skipped = self.sw._log_samplers[self.lst.name, "open"].sample(trio.current_time())
        if skipped is not None:
            log("connection_open", logging.DEBUG, listener=self.lst.name,
                peer=self.origin.peer, not_logged=skipped)
        self.sw._reading.add(self.reading)
        reason = "drain"
        try:
            async with trio.open_nursery() as tasks:
                try:
                    with self.reading:
                        reason = await self._read_loop(tasks)
                finally:  # the parked handlers end; busy ones end after their request
                    self._read_done = True
                    for handler in self._idle:
                        handler.give(None)
                    self._idle.clear()
        finally:
            self.sw._reading.discard(self.reading)
            reason = self.channel.closed_reason or reason
            # idle, slow or junk sockets (never proven by a configured terminal) would
            # be one line per connection: sampled. A proven connection always logs.
            proven = self.sw._admission[self.lst.name].is_proven(self)
            skipped = 0 if proven else self.sw._log_samplers[self.lst.name, "closed"].sample(
                trio.current_time())
            if skipped is not None:
                log("connection_closed", listener=self.lst.name, peer=self.origin.peer,
                    reason=reason, frames_in=self.channel.frames_in,
                    frames_out=self.channel.frames_out, malformed=self.malformed.total,
                    not_logged=skipped)

    async def _read_loop(self, tasks: trio.Nursery) -> str:
        """Frames are decoded here, and a task is started only for a request or a 30
        to send: a junk frame that is dropped costs its decode and no task."""
        while True:
            try:
                frame = await self.channel.receive_frame()
            except ChannelClosed as e:
                return e.reason
            try:  # a free slot is taken without a scheduler round
                self.slots.acquire_nowait()
            except trio.WouldBlock:
                await self.slots.acquire()  # backpressure: stop reading when full
            try:
                req = self.dialect.decode(frame.payload)
            except CodecError as e:
                resp, dialect = self._format_error(e, frame.payload)
                if resp is None:
                    self.slots.release()
                else:
                    tasks.start_soon(self._answer, resp, frame.tpdu, dialect)
                await self._tarpit()
                continue
            self._dispatch(tasks, req, frame)

    def _dispatch(self, tasks: trio.Nursery, req: Message, frame: Frame) -> None:
        while self._idle:
            handler = self._idle.pop()
            if handler.task is not None:  # else cancelled while parked: gone
                handler.give((req, frame))
                return
        tasks.start_soon(self._handle, req, frame)

    async def _handle(self, req: Message, frame: Frame) -> None:
        """A handler task: this request, then the ones it is given while parked, until
        the connection stops reading. The request's work is inline, not a coroutine of
        its own: every wait of a participant suspends and resumes each frame between it
        and the scheduler."""
        handler = _Handler()
        while True:
            try:
                if self.channel.closed:  # read before a close (junk, timeout): not served
                    pass
                elif not req.is_request:
                    log("unexpected_response", logging.WARNING, listener=self.lst.name,
                        peer=self.origin.peer, mti=req.mti, stan=req.stan)
                else:
                    if not self.proven:
                        admission = self.sw._admission[self.lst.name]
                        if admission.is_proven(self):  # an acquirer host: by its address
                            self.proven = True
                        elif self.sw._is_known(req, self.origin):
                            admission.prove(self)  # a configured terminal: never evicted
                            self.proven = True
                    resp = await self.sw.txn.handle(req, self.origin, frame.payload)
                    await self._send(resp, frame.tpdu)
            finally:
                self.slots.release()
            if self._read_done:
                return
            handler.task = trio.lowlevel.current_task()
            self._idle.append(handler)
            await trio.lowlevel.wait_task_rescheduled(handler.abort)
            if handler.job is None:
                return
            req, frame = handler.job

    async def _tarpit(self) -> None:
        """A connection no configured terminal has spoken on waits after each malformed
        frame: a junk flood then costs the switch a few frames per connection per
        second (its socket buffer fills and the sender blocks) instead of as many as
        it can write; a configured terminal is never slowed."""
        if self.lst.malformed_delay_ms and not self.channel.closed and \
                not self.sw._admission[self.lst.name].is_proven(self):
            await trio.sleep(self.lst.malformed_delay_ms / 1000)

    async def _answer(self, resp: Message, tpdu: bytes | None, dialect: Dialect) -> None:
        try:
            await self._send(resp, tpdu, dialect)
        finally:
            self.slots.release()

    def _twin_reads(self, e: CodecError, payload: bytes) -> tuple[CodecError, Dialect]:
        """A frame whose STAN we cannot read may be the same message with the other
        kind of bitmap (iso87ascii <-> iso87binbitmap): if that dialect decodes it
        whole, its MTI and STAN are used, and the 30 goes back in the sender's form."""
        twin = BITMAP_TWINS.get(self.dialect.name)
        if twin is None or e.stan is not None or e.mti is None:
            return e, self.dialect
        other = get(twin)
        try:
            msg = other.decode(payload)
        except CodecError:
            return e, self.dialect
        return CodecError(f"{twin} message on a {self.dialect.name} listener",
                          mti=msg.mti, stan=msg.stan), other

    def _format_error(self, e: CodecError, payload: bytes,
                      ) -> tuple[Message | None, Dialect]:
        e, dialect = self._twin_reads(e, payload)
        size = len(payload)
        readable = e.mti is not None and e.stan is not None and int(e.mti[2]) % 2 == 0
        too_many = self.malformed.hit(trio.current_time())
        action = "answered 30" if readable else "dropped"
        if too_many:
            action = "connection closed: over max_malformed_frames"
        skipped = self.sw._log_samplers[self.lst.name, "malformed"].sample(
            trio.current_time())
        if skipped is not None:  # sampled: one line per log_sample_ms per listener
            log("malformed_message", logging.WARNING, listener=self.lst.name,
                peer=self.origin.peer, error=str(e), mti=e.mti, stan=e.stan, bytes=size,
                action=action, not_logged=skipped)
        if too_many:
            self.close(f"over {self.lst.max_malformed_frames} malformed frames "
                       f"in {self.lst.malformed_window_ms} ms")
            return None, dialect
        if not readable or e.mti is None:
            return None, dialect
        self.sw.metrics.responses.labels(e.mti, "30").inc()
        return Message(mti=e.mti[:2] + str(int(e.mti[2]) + 1) + "0", stan=e.stan,
                       response_code="30"), dialect

    async def _send(self, resp: Message, tpdu: bytes | None,
                    dialect: Dialect | None = None) -> None:
        try:
            payload = (dialect or self.dialect).encode(resp)
            await self.channel.send_frame(payload, reply_tpdu(tpdu) if tpdu else None)
        except ChannelClosed:
            self.reading.cancel()  # logged once, with the reason, when serve() ends
        except CodecError as e:
            log("response_unencodable", logging.ERROR, error=str(e), mti=resp.mti,
                stan=resp.stan)
