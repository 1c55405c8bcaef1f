"""Outbound issuer network links: connect, sign on, echo, MUX, sign off.

One ``IssuerLink`` per configured link runs as a task in the switch's nursery. It
connects with exponential backoff (reconnect_min_ms..reconnect_max_ms), signs on
(0800 DE70 001, waits for 0810 DE39 00) before carrying traffic, sends an echo test
(0800 DE70 301) when the link has been idle for echo_interval_ms, and signs off
(DE70 002) when the switch stops. Its state (down / connecting / signed_on) is in the
``link_state`` gauge and in the logs.

With ``mac = true`` every message on the link, both ways and network management
included, carries a MAC under the link's ZAK (``codecs.iso8583.macing`` says what it
covers). A received message whose MAC is missing or wrong is dropped, logged and
counted (``link_mac_failures_total``): a request waiting for it times out, so the
terminal gets 91 and a 0420 reversal is queued, as for any unanswered request; the
link stays up (one bad message is not a reason to drop the others in flight).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import trio

from payswitch.codecs.errors import CodecError
from payswitch.codecs.iso8583 import Message, get, macing
from payswitch.hsm.errors import HsmError
from payswitch.hsm.keyexchange import KEY_CHANGE
from payswitch.switch.channel import Channel, ChannelClosed, ChannelLimits
from payswitch.switch.config import LinkSection
from payswitch.switch.errors import IssuerTimeout, LinkBusy, LinkUnavailable, SwitchError
from payswitch.switch.linkkeys import LinkKeys
from payswitch.switch.linkstate import LinkEvent, LinkMachine, LinkState
from payswitch.switch.logs import log
from payswitch.switch.metrics import LINK_STATES, Metrics
from payswitch.switch.mux import Mux
from payswitch.switch.services import Hsm

SIGNON, SIGNOFF, ECHO = "001", "002", "301"


_de7_second = -1
_de7_text = ""


def transmission_time() -> str:
    """DE7, MMDDhhmmss in UTC (formatted once a second: strftime is called on every
    forwarded request, and glibc's checks of the time zone made it a visible row)."""
    global _de7_second, _de7_text
    second = int(time.time())
    if second != _de7_second:
        _de7_text = time.strftime("%m%d%H%M%S", time.gmtime(second))
        _de7_second = second
    return _de7_text


class IssuerLink:
    def __init__(self, cfg: LinkSection, metrics: Metrics) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.dialect = get(cfg.dialect)
        self.metrics = metrics
        self.mux = Mux(cfg.max_in_flight, cfg.late_memory)
        # connect / sign-on / sign-off / backoff decisions: linkstate.py's table
        self.machine = LinkMachine(cfg.reconnect_min_ms, cfg.reconnect_max_ms)
        self.signed_on = trio.Event()  # set while signed on; replaced when it drops
        self._channel: Channel | None = None
        self._session_scope: trio.CancelScope | None = None
        self._timer: trio.CancelScope | None = None  # _expire_loop's sleep
        self._last_activity = 0.0
        self.hsm: Hsm | None = None  # set by the switch when it has one (MAC links need it)
        self.keys = LinkKeys(cfg)  # current ZPK / ZAK labels, changed by 0800 key change
        metrics.link_state.labels(self.name).set(0)
        # the counters' children per MTI / DE39: labels() takes a lock and builds its key
        # on every call, twice per forwarded request
        self._requests: dict[str, Any] = {}
        self._responses: dict[str, Any] = {}
        # read when scraped: not two locked gauge updates per request
        metrics.link_in_flight.labels(self.name).set_function(lambda: self.mux.in_flight)

    # -- state ------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """down | connecting | signed_on (the public view of ``machine.state``)."""
        return self.machine.public

    def _event(self, event: LinkEvent, **why: Any) -> LinkState:
        before = self.machine.state
        after = self.machine.handle(event)
        if after is not before:
            log("link_state", link=self.name, state=after.value, previous=before.value,
                on=event.value, **why)
        self.metrics.link_state.labels(self.name).set(LINK_STATES[self.state])
        if after is LinkState.SIGNED_ON:
            self.signed_on.set()
        elif self.signed_on.is_set():
            self.signed_on = trio.Event()
        return after

    @property
    def zpk(self) -> str:
        """The ZPK label PIN blocks are translated to now (``linkkeys.py``)."""
        return self.keys.zpk.current

    # -- traffic ----------------------------------------------------------------------
    def next_stan(self) -> str:
        return self.mux.next_stan()

    async def request(self, msg: Message, timeout_ms: int | None = None, *,
                      network: bool = False) -> Message:
        """Send a request and wait for its response.

        Raises LinkUnavailable (not signed on: nothing sent), LinkBusy (in-flight limit:
        nothing sent) or IssuerTimeout (sent, outcome unknown). ``network``: sign-on,
        echo, sign-off, which go before (and after) the link carries traffic.

        One coroutine from the call to the wait (no helper for the exchange, no
        ``Waiter.wait``): each of a forwarded request's waits resumes every coroutine
        between it and the handler task.
        """
        if not network and not self.machine.carries_traffic:
            raise LinkUnavailable(f"link {self.name} is {self.state}")
        timeout_ms = timeout_ms or self.cfg.request_timeout_ms
        waiter = self.mux.register(msg)
        waiter.deadline = deadline = trio.current_time() + timeout_ms / 1000
        timer = self._timer
        if timer is not None and deadline < timer.deadline:
            timer.deadline = deadline  # earlier than the timer task's next wake-up
        sent = False
        channel = self._channel
        try:
            sent = True  # from here on, some bytes may have left
            if (channel is not None and channel.coalescing
                    and (not self.cfg.mac or getattr(self.hsm, "inline", False))):
                # Queued for the end of this scheduler round, written then with the
                # other requests queued meanwhile (Channel.send_later): nothing waits.
                # Past the deadline it is taken back if still queued, and the timer
                # task closes the channel if it is in a write (as below).
                waiter.frame = await self._send(msg)
            elif (channel is not None and channel.sends_at_once
                    and (not self.cfg.mac or getattr(self.hsm, "inline", False))):
                # Nothing here can wait but this task's own write of a full socket: no
                # cancel scope; past the deadline, the timer task closes the channel
                # under that write, as cancelling it did ("write interrupted").
                waiter.sending = True
                try:
                    await self._send(msg)
                finally:
                    waiter.sending = False
            else:  # queued behind another write, or a MAC from an HSM thread
                with trio.CancelScope(deadline=deadline):
                    waiter.frame = await self._send(msg)
            if not waiter.done:  # Waiter.wait inline; the timer task wakes it at its deadline
                waiter.task = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(waiter.abort)
            if waiter.response is not None:
                return waiter.response
            why = "link dropped" if waiter.failed else "timeout"
            self._timed_out(msg, why)
            raise IssuerTimeout(f"{why} on link {self.name}")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            if not sent:
                raise LinkUnavailable(f"link {self.name} write failed") from None
            if waiter.expired:  # the timer closed the channel under this write
                self._timed_out(msg, "timeout")
                raise IssuerTimeout(f"timeout on link {self.name}") from None
            self._timed_out(msg, "write failed")
            raise IssuerTimeout(f"link {self.name} write failed: {type(e).__name__}") from None
        finally:
            if waiter.frame and waiter.response is None and channel is not None:
                channel.unqueue(waiter.frame)  # given up before it left: never sent
            self.mux.forget(waiter, timed_out=waiter.response is None and sent)

    async def _exchange(self, msg: Message, timeout_ms: int) -> Message:
        """A network management request (sign-on, echo, sign-off): sent in any state."""
        return await self.request(msg, timeout_ms, network=True)

    async def _expire_loop(self) -> None:
        """The deadlines of this link's requests, kept by one task per session instead of
        a cancel scope per request: wakes each request still waiting at its deadline,
        then sleeps until the earliest one left (moved earlier by ``_exchange`` when a
        shorter one comes)."""
        while True:
            nxt, woke = self.mux.expire(trio.current_time())
            channel = self._channel
            if channel is not None and any(
                    w.sending or (w.frame and channel.in_write(w.frame)) for w in woke):
                channel.close("write interrupted")
            with trio.CancelScope(deadline=nxt) as self._timer:
                await trio.sleep_forever()

    def _timed_out(self, msg: Message, why: str) -> None:
        """Counted and logged for every IssuerTimeout (each one queues a 0420): a write
        that failed once sent counts too, as a link drop does."""
        self.metrics.link_timeouts.labels(self.name).inc()
        log("link_timeout", logging.WARNING, link=self.name, mti=msg.mti, stan=msg.stan,
            rrn=msg.rrn, reason=why)

    async def _send(self, msg: Message) -> int:
        """Send ``msg``: queued for the round's write when the channel coalesces (its
        frame number returned), else written (0)."""
        channel = self._channel
        if channel is None:
            raise LinkUnavailable(f"link {self.name} is not connected")
        if self.cfg.mac:
            body, hex_form = macing.unsigned(self.dialect, msg)
            if self.hsm is None:
                raise LinkUnavailable(f"link {self.name}: MAC configured but no [hsm]")
            try:
                mac = await self.hsm.generate_mac(self.keys.zak.current, body)
            except HsmError as e:  # nothing was sent
                log("link_mac_failed", logging.ERROR, link=self.name, error=str(e))
                raise LinkUnavailable(f"link {self.name}: cannot MAC ({type(e).__name__})",
                                      ) from None
            payload = macing.signed(body, hex_form, mac)
        else:
            payload = self.dialect.encode(msg)
        frame = 0
        try:
            if channel.coalescing:
                frame = channel.send_later(payload)
            else:
                # one write timeout closes the channel and fails every queued write
                await channel.send_frame(payload)
        except ChannelClosed as e:
            self._drop(e.reason)
            raise
        self._last_activity = trio.current_time()
        if msg.is_request:
            counter = self._requests.get(msg.mti)
            if counter is None:
                counter = self._requests[msg.mti] = self.metrics.link_requests.labels(
                    self.name, msg.mti)
            counter.inc()
        return frame

    def _network_request(self, code: str) -> Message:
        return Message(mti="0800", transmission_time=transmission_time(),
                       stan=self.next_stan(), network_code=code)

    # -- connection lifecycle ---------------------------------------------------------
    async def run(self) -> None:
        """Connect, sign on, serve; on any drop, back off and do it again, until stopped."""
        while self._event(LinkEvent.START) is LinkState.CONNECTING:
            stream = None
            with trio.move_on_after(self.cfg.connect_timeout_ms / 1000):
                try:
                    stream = await trio.open_tcp_stream(self.cfg.host, self.cfg.port)
                except OSError as e:
                    log("link_connect_failed", logging.WARNING, link=self.name,
                        error=type(e).__name__, detail=str(e),
                        retry_in_ms=self.machine.backoff_ms)
            if stream is None:
                self._event(LinkEvent.CONNECT_FAILED)
            elif self._event(LinkEvent.CONNECTED) is LinkState.SIGNING_ON:
                await self._session(stream)
                self._event(LinkEvent.DROPPED)
            else:
                await trio.aclose_forcefully(stream)  # stopped while connecting
            if self.machine.state is LinkState.STOPPED:
                return
            await trio.sleep(self.machine.next_delay_ms() / 1000)

    async def _session(self, stream: trio.SocketStream) -> None:
        """One connection's life: sign on, then serve until it drops."""
        cfg = self.cfg
        self._channel = channel = Channel(stream, ChannelLimits(
            cfg.framing, cfg.max_frame_bytes, cfg.frame_timeout_ms, 0, cfg.write_timeout_ms))
        try:
            async with stream, trio.open_nursery() as nursery:
                self._session_scope = nursery.cancel_scope
                nursery.start_soon(self._expire_loop)
                nursery.start_soon(channel.run_writer)  # the requests' writes, coalesced
                nursery.start_soon(self._reader, channel)
                try:
                    resp = await self._exchange(self._network_request(SIGNON),
                                                self.cfg.signon_timeout_ms)
                except (IssuerTimeout, LinkUnavailable) as e:
                    self._drop(f"sign-on: {e}")
                    return
                if resp.response_code != "00":
                    self._drop(f"sign-on refused with DE39 {resp.response_code}")
                    return
                if self._event(LinkEvent.SIGNON_OK) is not LinkState.SIGNED_ON:
                    self._drop("stopped while signing on")
                    return
                nursery.start_soon(self._echo_loop)
        finally:
            self._channel = None
            self._session_scope = None
            self._timer = None
            self.mux.fail_all()

    def _drop(self, reason: str) -> None:
        """Close the current connection (the run loop reconnects)."""
        if self._session_scope is not None:
            log("link_dropped", logging.WARNING, link=self.name, reason=reason)
            self._session_scope.cancel()

    async def _reader(self, channel: Channel) -> None:
        """Frames in order (size cap, frame deadline: ``Channel``); any end drops."""
        while True:
            try:
                frame = await channel.receive_frame()
            except ChannelClosed as e:
                self._drop(e.reason)
                return
            self._last_activity = trio.current_time()
            await self._on_frame(frame.payload)

    async def _on_frame(self, payload: bytes) -> None:
        try:
            msg = self.dialect.decode(payload)
        except CodecError as e:
            log("link_undecodable", logging.WARNING, link=self.name, error=str(e),
                mti=e.mti, stan=e.stan, bytes=len(payload))
            return
        if self.cfg.mac and not await self._mac_ok(payload, msg):
            self.metrics.link_mac_failures.labels(self.name).inc()
            log("link_mac_invalid", logging.WARNING, link=self.name, mti=msg.mti,
                stan=msg.stan, rrn=msg.rrn, action="dropped",
                missing=msg.mac is None)
            return
        if msg.is_request:
            await self._on_request(msg)
            return
        code = msg.response_code or ""
        counter = self._responses.get(code)
        if counter is None:
            counter = self._responses[code] = self.metrics.link_responses.labels(
                self.name, code)
        counter.inc()
        outcome = self.mux.deliver(msg)
        if outcome == "late":
            self.metrics.link_late.labels(self.name).inc()
            log("late_response", logging.WARNING, link=self.name, mti=msg.mti, stan=msg.stan,
                rrn=msg.rrn, response_code=msg.response_code,
                note="request already timed out and reversed; not delivered")
        elif outcome == "unmatched":
            self.metrics.link_unmatched.labels(self.name).inc()
            log("unmatched_response", logging.WARNING, link=self.name, mti=msg.mti,
                stan=msg.stan, rrn=msg.rrn)

    async def _mac_ok(self, payload: bytes, msg: Message) -> bool:
        body = macing.mac_input(payload, msg)
        if body is None or msg.mac is None or self.hsm is None:
            return False
        try:  # during a key change's grace period the old ZAK is accepted too
            for zak in self.keys.zak.accepted():
                if await self.hsm.verify_mac(zak, body, msg.mac):
                    return True
            return False
        except HsmError as e:  # HSM down or busy: the message cannot be trusted
            log("link_mac_unchecked", logging.ERROR, link=self.name, error=str(e))
            return False

    async def _on_request(self, msg: Message) -> None:
        """Network management from the issuer side (echo tests, key changes: linkkeys.py)."""
        if msg.mti[:2] != "08":
            log("link_unsolicited_request", logging.WARNING, link=self.name, mti=msg.mti,
                stan=msg.stan)
            return
        code = "00"
        if msg.network_code == KEY_CHANGE:
            code = await self.keys.key_change(self.hsm, self.cfg.dialect, msg)
        resp = Message(mti=msg.response_mti, transmission_time=msg.transmission_time,
                       stan=msg.stan, response_code=code, network_code=msg.network_code)
        try:
            await self._send(resp)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, LinkUnavailable):
            self._drop("write failed")

    async def _echo_loop(self) -> None:
        interval_s = self.cfg.echo_interval_ms / 1000
        if interval_s <= 0:
            return
        while True:
            due = self._last_activity + interval_s
            if trio.current_time() < due:
                await trio.sleep_until(due)
                continue
            try:
                resp = await self._exchange(self._network_request(ECHO),
                                            self.cfg.signon_timeout_ms)
            except LinkBusy:  # requests in flight: no room for the echo; try later
                self._last_activity = trio.current_time()
                continue
            except SwitchError:  # any other (a crash here would stop the whole switch)
                self._drop("echo test unanswered")
                return
            if resp.response_code != "00":
                log("echo_refused", logging.WARNING, link=self.name, code=resp.response_code)
            self._last_activity = trio.current_time()

    async def echo(self) -> bool:
        """One 0800 echo test (a breaker's half-open probe): answered 00 within
        signon_timeout_ms. Never raises."""
        try:
            resp = await self._exchange(self._network_request(ECHO), self.cfg.signon_timeout_ms)
        except SwitchError:
            return False
        return resp.response_code == "00"

    async def sign_off(self) -> None:
        """Tell the issuer we stop (bounded by signoff_timeout_ms); stop reconnecting."""
        timeout_ms = self.cfg.signoff_timeout_ms
        if self._event(LinkEvent.STOP, reason="signing off") is LinkState.SIGNING_OFF:
            with trio.move_on_after(timeout_ms / 1000):
                with contextlib.suppress(SwitchError):  # LinkBusy too: we stop anyway
                    await self._exchange(self._network_request(SIGNOFF), timeout_ms)
            self._drop("signed off")
