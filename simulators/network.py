"""An issuer network simulator: a trio TCP server speaking one dialect and framing.

The switch connects out to it, as it would to VisaNet or Banknet. It answers sign-on,
echo and sign-off (0800 -> 0810 00), authorizations and financial requests by the
card table (``issuer.py``), reversals and advices (0400/0420 -> 0410/0430 00). Faults
are configurable: a fixed latency, a drop rate (request read, never answered), late
responses (answered after ``late_ms``, beyond the switch's timeout) and link drops
(the connection is closed on every Nth request, without an answer).

It records what it received, raw frame payloads and decoded messages, the last
``record_limit`` of each, for tests to assert on. Answers due at once are encoded as
their frames are read and sent in one write per read; answers that wait (each a task
that may sleep ``latency_ms`` / ``late_ms``) are capped at ``max_tasks``; past it the
simulator stops reading until one is sent. In-process::

    sim = NetworkSimulator("visa")
    port = await nursery.start(sim.serve)

As a process: ``payswitch simulate --network visa --port P``.

With ``hsm`` (an ``Hsm`` on the issuer's own token with ``devkeys.load_issuer_keys``)
the issuer checks PINs, CVVs and ARQCs for real (``issuer.py``). With ``mac=True``
too, every message both ways carries a MAC under ``devkeys.zak(network)``, as the
switch does on a link with ``mac = true`` (``codecs.iso8583.macing``); a message with a
missing or wrong MAC is counted (``mac_failures``) and dropped. ``Faults.bad_mac_rate``
sends that share of answers (not network management) with a corrupted MAC.
"""

from __future__ import annotations

import collections
import functools
import importlib
import logging
import random
import socket
from dataclasses import dataclass, field

import trio

from payswitch.codecs.errors import CodecError, FramingError
from payswitch.codecs.framing import FrameReader, encode_frame, reply_tpdu
from payswitch.codecs.iso8583 import Message, get, macing
from payswitch.hsm import Hsm, devkeys
from payswitch.hsm.keyexchange import KEY_CHANGE, KeyRing
from payswitch.simulators.issuer import Issuer

log = logging.getLogger("payswitch.simulators.network")

# Each network's own dialect and framing.
DEFAULTS = {
    "visa": ("visa", "vap"),
    "mastercard": ("mastercard", "len2"),
    "iso87ascii": ("iso87ascii", "len2"),
}
READ_BYTES = 65536
RECORD_LIMIT = 100_000  # frames kept in received / messages / sent (oldest dropped)
MAX_TASKS = 256  # answers pending at once (latency, late); past it reading waits


@dataclass
class Faults:
    latency_ms: int = 0
    drop_rate: float = 0.0
    late_rate: float = 0.0
    late_ms: int = 0
    link_drop_every: int = 0  # 0 = never
    bad_mac_rate: float = 0.0  # share of answers sent with a corrupted MAC (mac=True)


@dataclass
class Stats:
    connections: int = 0
    received: int = 0
    answered: int = 0
    silent: int = 0
    dropped: int = 0
    late: int = 0
    link_drops: int = 0
    format_errors: int = 0
    mac_failures: int = 0
    bad_macs_sent: int = 0
    tasks_peak: int = 0  # most answer tasks pending at once (<= max_tasks)
    by_mti: collections.Counter = field(default_factory=collections.Counter)
    by_code: collections.Counter = field(default_factory=collections.Counter)

    def as_dict(self) -> dict:
        d = dict(vars(self))
        d["by_mti"] = dict(self.by_mti)
        d["by_code"] = dict(self.by_code)
        return d


def reply_header(dialect_name: str, header):
    """The network header of a reply: the dialect's own rule when it has one
    (Visa BASE I swaps source and destination station ids), else the same header."""
    if header is None:
        return None
    fn = _reply_rule(dialect_name)
    return fn(header) if fn else header


@functools.cache
def _reply_rule(dialect_name: str):
    module = importlib.import_module(f"payswitch.codecs.iso8583.{dialect_name}")
    return getattr(module, "reply_header", None) or getattr(module.DIALECT, "reply_header",
                                                            None)


class NetworkSimulator:
    def __init__(self, network: str = "visa", *, dialect: str | None = None,
                 framing: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 faults: Faults | None = None, issuer: Issuer | None = None,
                 seed: int | None = None, max_frame_bytes: int = 8192,
                 hsm: Hsm | None = None, mac: bool = False,
                 record_limit: int = RECORD_LIMIT, max_tasks: int = MAX_TASKS,
                 key_grace_s: float = 60.0) -> None:
        d, f = DEFAULTS.get(network, ("iso87ascii", "len2"))
        self.network = network
        self.dialect_name = dialect or d
        self.dialect = get(self.dialect_name)
        self.framing = framing or f
        self.host = host
        self.port = port
        self.faults = faults or Faults()
        if mac and hsm is None:
            raise ValueError("mac=True needs an hsm with the link's ZAK")
        self.hsm = hsm
        # working keys, changed by change_key() (keychange.py); old ones kept key_grace_s
        self.zpk_ring = KeyRing(devkeys.zpk(network), key_grace_s, trio.current_time)
        self.zak_ring = KeyRing(devkeys.zak(network), key_grace_s,
                                trio.current_time) if mac else None
        self.key_changes = 0
        self.key_change_log: list[dict] = []  # {key_type, kcv, code}: for reports
        self.key_change_answers: dict[str, trio.Event] = {}  # STAN -> 0810 came
        self.key_change_codes: dict[str, str] = {}  # STAN -> its DE39
        self.conns: set[SocketConn] = set()
        self.issuer = issuer or Issuer(seed=seed, hsm=hsm)
        self.issuer.zpk_rings[network] = self.zpk_ring
        self.max_frame_bytes = max_frame_bytes
        self.stats = Stats()
        self.received: collections.deque[bytes] = collections.deque(maxlen=record_limit)
        self.messages: collections.deque[Message] = collections.deque(maxlen=record_limit)
        self.sent: collections.deque[bytes] = collections.deque(maxlen=record_limit)
        self._rng = random.Random(seed)
        # One task per answer (it may sleep latency_ms / late_ms): capped over all
        # connections, so a flood or long late_ms cannot grow memory without bound;
        # when full, reading waits (TCP back-pressure on the switch).
        self.max_tasks = max_tasks
        self._slots = trio.Semaphore(max_tasks)

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def drop_links(self) -> None:
        """Close every open connection now (tests: link drop from the network side)."""
        for conn in list(self.conns):
            await conn.aclose()

    @property
    def mac_key(self) -> str | None:
        return self.zak_ring.current if self.zak_ring else None

    async def change_key(self, key_type: str = "ZPK", **kw) -> str:
        """Send the switch a new ZPK / ZAK (0800 key change); its 0810's DE39."""
        from payswitch.simulators.keychange import change_key
        return await change_key(self, key_type, **kw)

    def requests(self, *mtis: str) -> list[Message]:
        return [m for m in self.messages if not mtis or m.mti in mtis]

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.stats.connections += 1
        conn = SocketConn(stream)
        self.conns.add(conn)
        reader = FrameReader(self.framing, self.max_frame_bytes)
        count = 0
        every = self.faults.link_drop_every
        try:
            async with trio.open_nursery() as nursery:
                up = True
                while up:
                    try:
                        data = await conn.receive_some()
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        break  # reset by the peer, or closed by drop_links()
                    if not data:
                        break
                    try:
                        frames = reader.feed(data)
                    except FramingError:
                        log.warning("%s: bad frame length, dropping the link", self.network)
                        break
                    now: list[tuple[bytes, Message]] = []  # answers due at once
                    for frame in frames:
                        count += 1
                        if every and count % every == 0:
                            self._record(frame.payload)
                            self.stats.link_drops += 1
                            up = False  # the Nth message is read, never answered
                            break
                        answer = self._on_frame(conn, frame)
                        if answer is None:
                            continue
                        resp, tpdu, delay_ms = answer
                        if not delay_ms:
                            framed = self._encode(resp, tpdu)
                            if framed is not None:
                                now.append((framed, resp))
                            continue
                        await self._slots.acquire()
                        self.stats.tasks_peak = max(
                            self.stats.tasks_peak, self.max_tasks - self._slots.value)
                        nursery.start_soon(self._send_slot, conn, *answer)
                    # One write per read: the answers to every frame it brought.
                    await self._write(conn, now)
                nursery.cancel_scope.cancel()
        finally:
            self.conns.discard(conn)
            await conn.aclose()

    def _record(self, payload: bytes) -> Message | CodecError:
        """Keep the bytes (and the decoded message) for tests; count by MTI."""
        self.stats.received += 1
        self.received.append(payload)
        try:
            msg = self.dialect.decode(payload)
        except CodecError as e:
            return e
        self.messages.append(msg)
        self.stats.by_mti[msg.mti] += 1
        return msg

    def _on_frame(self, conn: SocketConn, frame) -> tuple | None:
        """Record and check a frame; the (response, tpdu, delay_ms) to send, if any."""
        msg = self._record(frame.payload)
        if self.mac_key and not isinstance(msg, CodecError):
            body = macing.mac_input(frame.payload, msg)
            if body is None or not any(self.hsm.verify_mac(k, body, msg.mac)
                                       for k in self.zak_ring.accepted()):
                self.stats.mac_failures += 1
                log.warning("%s: missing or wrong MAC on %s STAN %s: dropped", self.network,
                            msg.mti, msg.stan)
                return None
        if isinstance(msg, CodecError):
            log.warning("%s: undecodable message (%s)", self.network, msg)
            self.stats.format_errors += 1
            if msg.mti and msg.stan and int(msg.mti[2]) % 2 == 0:
                resp = Message(mti=msg.mti[:2] + str(int(msg.mti[2]) + 1) + "0",
                               stan=msg.stan, response_code="30")
                return resp, frame.tpdu, 0
            return None
        if msg.mti == "0810" and msg.stan in self.key_change_answers:
            self.key_change_codes[msg.stan] = msg.response_code or ""
            self.key_change_answers[msg.stan].set()
            return None
        if msg.mti == "0800" and msg.network_code == KEY_CHANGE:  # from the switch
            from payswitch.simulators.keychange import receive_key_change
            resp = receive_key_change(self, msg)
        else:
            resp = self.issuer.respond(msg)
        if resp is None:
            self.stats.silent += 1
            return None
        delay_ms = self.faults.latency_ms
        if msg.mti not in ("0800", "0801"):
            if self.faults.drop_rate and self._rng.random() < self.faults.drop_rate:
                self.stats.dropped += 1
                return None
            if self.faults.late_rate and self._rng.random() < self.faults.late_rate:
                self.stats.late += 1
                delay_ms += self.faults.late_ms
        resp.header = reply_header(self.dialect_name, msg.header)
        return resp, frame.tpdu, delay_ms

    async def _send_slot(self, conn: SocketConn, resp: Message, tpdu: bytes | None,
                         delay_ms: int) -> None:
        try:
            await self._send(conn, resp, tpdu, delay_ms)
        finally:
            self._slots.release()

    async def _send(self, conn: SocketConn, resp: Message, tpdu: bytes | None, delay_ms: int):
        if delay_ms:
            await trio.sleep(delay_ms / 1000)
        data = self._encode(resp, tpdu)
        if data is not None:
            await self._write(conn, [(data, resp)])

    def _encode(self, resp: Message, tpdu: bytes | None) -> bytes | None:
        """The framed answer (MACed on a MAC link), recorded in ``sent``; None if it
        cannot be encoded."""
        try:
            if self.mac_key:
                body, hex_form = macing.unsigned(self.dialect, resp)
                mac = self.hsm.generate_mac(self.mac_key, body)
                if (resp.mti[:2] != "08" and self.faults.bad_mac_rate
                        and self._rng.random() < self.faults.bad_mac_rate):
                    mac = bytes([mac[0] ^ 0x01]) + mac[1:]
                    self.stats.bad_macs_sent += 1
                payload = macing.signed(body, hex_form, mac)
            else:
                payload = self.dialect.encode(resp)
        except CodecError as e:
            log.error("%s: cannot encode %s: %s", self.network, resp.mti, e)
            return None
        # Recorded before it leaves: a test that has the answer can then find it here
        # (another thread reads ``sent``; appending after send_all was a race).
        self.sent.append(payload)
        return encode_frame(self.framing, payload, reply_tpdu(tpdu) if tpdu else None,
                            max_frame_bytes=self.max_frame_bytes)

    async def _write(self, conn: SocketConn, answers: list[tuple[bytes, Message]]) -> None:
        """Send framed answers in one write; counted once they are sent."""
        if not answers:
            return
        async with conn.lock:
            try:
                await conn.send_all(b"".join(data for data, _ in answers))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
        self.stats.answered += len(answers)
        for _, resp in answers:
            self.stats.by_code[resp.response_code] += 1


class SocketConn:
    """One TCP connection on plain non-blocking socket calls, trio only to wait when
    one would block (a simulator's or the benchmark client's CPU is taken from the
    switch on a small machine). One reader; writers take ``lock``."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.sock = socket.socket(fileno=stream.socket.detach())
        self.sock.setblocking(False)
        self.lock = trio.Lock()
        self.closed = False

    async def receive_some(self) -> bytes:
        """Bytes the peer sent, b"" at EOF."""
        waited = False
        while True:
            if self.closed:
                raise trio.ClosedResourceError
            try:
                data = self.sock.recv(READ_BYTES)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.sock)
                waited = True
                continue
            except OSError as e:
                raise trio.BrokenResourceError(e) from e
            if not waited:
                await trio.lowlevel.checkpoint()  # the other connections get their turn
            return data

    async def send_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.closed:
                raise trio.ClosedResourceError
            try:
                view = view[self.sock.send(view):]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.sock)
            except OSError as e:
                raise trio.BrokenResourceError(e) from e

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            trio.lowlevel.notify_closing(self.sock)  # wakes a pending wait: Closed...
            self.sock.close()
        await trio.lowlevel.checkpoint()
