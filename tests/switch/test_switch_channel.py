"""Issue 9, findings 4, 5 and 6, at the socket: real sockets on 127.0.0.1, port 0,
virtual time (trio's MockClock). The switch runs with a no-op journal (these are
connection-handling faults: the requests are 0800 echo tests, answered by the switch
itself), so no thread hop disturbs the virtual clock.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import Any

import iso8583
import trio
import trio.testing
from switchkit import DIALECT, TERMINAL, Terminal

from payswitch.codecs.framing import FrameReader, encode_frame
from payswitch.codecs.iso8583 import Message, get
from payswitch.switch import logs
from payswitch.switch.config import parse
from payswitch.switch.server import Switch

BOUND_S = 600  # virtual seconds: a test that hangs fails instead


class NoJournal:
    """The Store calls Switch.run makes before and around connections; nothing kept."""

    async def migrate(self) -> None:
        pass

    async def recover(self, *args: Any, **kw: Any) -> int:
        return 0

    async def hold_owner_lock(self) -> None:
        pass

    async def owner_lock_alive(self) -> bool:
        return True

    def release_owner(self) -> None:
        pass

    async def saf_expire(self, limit: int) -> list:
        return []

    async def saf_due(self, *args: Any) -> list:
        return []

    def close(self) -> None:
        pass


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(record.getMessage())


def virtual(fn):
    """Run ``fn(switch_factory)`` under MockClock(autojump_threshold=0)."""
    def wrapper() -> None:
        async def main() -> None:
            with trio.fail_after(BOUND_S):
                await fn()
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    wrapper.__name__ = fn.__name__
    return wrapper


def config(**listener: Any) -> Any:
    return parse({
        "listeners": [{"name": "pos", "port": 0, **listener}],
        "terminals": [{"id": TERMINAL, "listener": "pos"}],
    })


class switch_running:
    def __init__(self, **listener: Any) -> None:
        self.cfg = config(**listener)

    async def __aenter__(self) -> Switch:
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        self.sw = await self._nursery.start(Switch(self.cfg, store=NoJournal()).run)
        return self.sw

    async def __aexit__(self, *exc: Any) -> None:
        self._nursery.cancel_scope.cancel()
        await self._nursery_cm.__aexit__(*exc)


def echo(stan: str = "000001", terminal: str = TERMINAL) -> Message:
    return Message(mti="0800", transmission_time="1128120000", stan=stan,
                   network_code="301", terminal_id=terminal)


async def connect(port: int, source: str = "127.0.0.1", rcvbuf: int = 0,
                  ) -> trio.SocketStream:
    sock = trio.socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


async def until(pred, step_s: float = 0.01) -> None:
    while not pred():
        await trio.sleep(step_s)


async def closed_by_peer(stream: trio.SocketStream) -> bool:
    """Read until the switch closes; True on EOF or reset."""
    try:
        while await stream.receive_some(65536):
            pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    return True


# -- finding 4: idle and slow connections ---------------------------------------------
@virtual
async def test_300_idle_sockets_do_not_lock_a_terminal_out():
    """Today: max_connections (256) idle sockets and the terminal is refused."""
    async with switch_running() as sw:
        port = sw.ports["pos"]
        idle = [await connect(port, f"127.0.0.{2 + i % 10}") for i in range(300)]
        refused = sw.metrics.refused.labels("pos", "too many connections")
        # every one of them has been accepted, then admitted or refused
        await until(lambda: sw._admission["pos"].admitted_total
                    + refused._value.get() >= 300)
        started = trio.current_time()
        term = Terminal(await connect(port))
        resp = await term.request(echo(), timeout_s=5)
        assert resp.response_code == "00"
        assert trio.current_time() - started < 1.0
        # once proven by a configured terminal's request, later floods do not evict it
        idle += [await connect(port, "127.0.0.20") for _ in range(300)]
        assert (await term.request(echo("000002"), timeout_s=5)).response_code == "00"
        for s in [*idle, term.stream]:
            await s.aclose()


@virtual
async def test_per_source_cap_closes_that_sources_oldest_idle_socket():
    async with switch_running(max_connections_per_source=8) as sw:
        port = sw.ports["pos"]
        idle = [await connect(port, "127.0.0.5") for _ in range(10)]
        await until(lambda: sw._admission["pos"].admitted_total >= 10)
        assert await closed_by_peer(idle[0]) and await closed_by_peer(idle[1])
        assert sw._admission["pos"]._by_source == {"127.0.0.5": 8}
        term = Terminal(await connect(port, "127.0.0.5"))  # same address: still gets in
        assert (await term.request(echo())).response_code == "00"
        assert await closed_by_peer(idle[2])
        for s in [*idle, term.stream]:
            await s.aclose()


@virtual
async def test_slowloris_is_closed_at_the_frame_deadline():
    """Today: the idle timer restarts on every byte, so one byte a second lives forever."""
    async with switch_running() as sw:  # defaults: frame 5 s, idle 300 s
        stream = await connect(sw.ports["pos"])
        frame = encode_frame("len2", DIALECT.encode(echo()))
        started = trio.current_time()

        async def trickle() -> None:
            for byte in frame:
                await trio.sleep(1)
                try:
                    await stream.send_all(bytes([byte]))
                except trio.BrokenResourceError:
                    return

        async with trio.open_nursery() as n:
            n.start_soon(trickle)
            assert await closed_by_peer(stream)
            n.cancel_scope.cancel()
        await stream.aclose()
        assert 5 <= trio.current_time() - started <= 7


@virtual
async def test_idle_timeout_counts_whole_frames_not_chunks():
    async with switch_running(frame_timeout_ms=60_000, idle_timeout_ms=10_000) as sw:
        term = Terminal(await connect(sw.ports["pos"]))
        assert (await term.request(echo())).response_code == "00"
        started = trio.current_time()
        frame = encode_frame("len2", DIALECT.encode(echo("000002")))

        async def trickle() -> None:
            for byte in frame:
                await trio.sleep(1)
                try:
                    await term.stream.send_all(bytes([byte]))
                except trio.BrokenResourceError:
                    return

        async with trio.open_nursery() as n:
            n.start_soon(trickle)
            assert await closed_by_peer(term.stream)
            n.cancel_scope.cancel()
        await term.aclose()
        assert 10 <= trio.current_time() - started <= 11.5


# -- finding 5: a client that never reads ---------------------------------------------
@virtual
async def test_a_client_that_never_reads_costs_one_write_timeout():
    """Today each of the 32 answers in flight waits its own write timeout (32 x)."""
    async with switch_running(write_timeout_ms=2000) as sw:
        stream = await connect(sw.ports["pos"], rcvbuf=2048)
        burst = b"".join(encode_frame("len2", DIALECT.encode(echo(f"{i % 999999:06d}")))
                         for i in range(20_000))
        started = trio.current_time()
        # the switch stops reading once 32 answers wait to be written, so this send
        # ends only when the switch closes (reset: unread requests were dropped)
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(burst)
        closed_after = trio.current_time() - started
        await stream.aclose()
        print(f"closed after {closed_after:.3f} virtual s")
        assert closed_after <= 2 * 2.0, closed_after
        # and the listener still serves everyone else
        term = Terminal(await connect(sw.ports["pos"]))
        assert (await term.request(echo())).response_code == "00"
        await term.aclose()


# -- finding 6: junk frames -----------------------------------------------------------
@virtual
async def test_junk_frames_close_the_connection_and_the_log_is_sampled():
    """Today: 200 junk frames are 200 WARNING lines, and the sender stays connected."""
    lines = Lines()
    logs.LOGGER.addHandler(lines)
    try:
        # defaults: more than 10 malformed in 10 s closes; one line per 1000 ms
        async with switch_running() as sw:
            port = sw.ports["pos"]
            good = Terminal(await connect(port))
            began = trio.current_time()
            for attempt in range(5):  # a flooder that reconnects
                junk = await connect(port, "127.0.0.9")
                flood_started = trio.current_time()
                with contextlib.suppress(trio.BrokenResourceError):
                    await junk.send_all(b"".join(
                        encode_frame("len2", b"\xff" * 40 + bytes([i])) for i in range(200)))
                assert await closed_by_peer(junk)
                assert trio.current_time() - flood_started < 1
                await junk.aclose()
                resp = await good.request(echo(f"{attempt + 1:06d}"))
                assert resp.response_code == "00"
            await good.aclose()
            seconds = int(trio.current_time() - began) + 1
        # 1000 junk frames on five connections within a few seconds of virtual time (the
        # default malformed_delay_ms slows each): one sampled line per log_sample_ms for
        # the frames and for the closes, not one per frame or per connection
        assert 1 <= lines.events.count("malformed_message") <= seconds + 1 <= 5
        assert lines.events.count("connection_closed") <= seconds + 2  # + the terminal
        assert lines.events.count("connection_open") <= seconds + 1
    finally:
        logs.LOGGER.removeHandler(lines)


@virtual
async def test_a_junk_sender_is_slowed_before_it_is_closed_a_terminal_never():
    """Each malformed frame on an unproven connection delays the next read by
    malformed_delay_ms: 200 junk frames sent at once are closed after 11 read in no
    less than 10 delays. A configured terminal that sends a bad frame is not delayed."""
    async with switch_running(malformed_delay_ms=100) as sw:
        port = sw.ports["pos"]
        junk = await connect(port, "127.0.0.9")
        started = trio.current_time()
        with contextlib.suppress(trio.BrokenResourceError):
            await junk.send_all(b"".join(
                encode_frame("len2", b"\xff" * 40 + bytes([i])) for i in range(200)))
        assert await closed_by_peer(junk)
        assert trio.current_time() - started >= 0.99  # 10 delays of 100 ms, virtual time
        await junk.aclose()

        good = Terminal(await connect(port))
        assert (await good.request(echo("000001"))).response_code == "00"  # proven
        await good.send_raw(b"\xff" * 40)
        started = trio.current_time()
        assert (await good.request(echo("000002"))).response_code == "00"
        assert trio.current_time() - started < 0.1  # not made to wait
        await good.aclose()


# -- finding 8: binary bitmap, ASCII fields -------------------------------------------
BINBITMAP = get("iso87binbitmap")


async def exchange(stream: trio.SocketStream, payload: bytes) -> bytes:
    await stream.send_all(encode_frame("len2", payload))
    reader = FrameReader("len2", 4096)
    while True:
        data = await stream.receive_some(65536)
        assert data, "switch closed the connection"
        frames = reader.feed(data)
        if frames:
            return frames[0].payload


@virtual
async def test_binary_bitmap_listener_answers_in_kind_and_30_where_mti_stan_read():
    """Today the dialect does not exist, and such frames get no answer at all."""
    async with switch_running(dialect="iso87binbitmap") as sw:
        stream = await connect(sw.ports["pos"])
        resp = BINBITMAP.decode(await exchange(stream, BINBITMAP.encode(echo())))
        assert (resp.mti, resp.stan, resp.response_code) == ("0810", "000001", "00")
        # a processing code with a letter in it: a format error, MTI and STAN readable
        bad, _ = iso8583.encode({"t": "0200", "3": "00A000", "11": "004711",
                                 "41": TERMINAL}, BINBITMAP.spec)
        bad = bytes(bad)
        resp = BINBITMAP.decode(await exchange(stream, bad))
        assert (resp.mti, resp.stan, resp.response_code) == ("0210", "004711", "30")
        await stream.aclose()


@virtual
async def test_binary_bitmap_frame_on_an_ascii_listener_gets_30_it_can_read():
    """Today: iso87ascii cannot read the STAN behind a binary bitmap: dropped silently."""
    async with switch_running() as sw:  # dialect iso87ascii
        stream = await connect(sw.ports["pos"])
        resp = BINBITMAP.decode(await exchange(stream, BINBITMAP.encode(echo("000042"))))
        assert (resp.mti, resp.stan, resp.response_code) == ("0810", "000042", "30")
        await stream.aclose()


@virtual
async def test_a_connection_served_one_by_one_then_pipelined_ends_when_its_peer_closes():
    """Requests one at a time, then a pipelined burst, on one connection: each answered
    once; when the peer closes, the switch closes its side and releases the connection
    (its handler tasks, parked between requests, end with it)."""
    lines = Lines()
    logs.LOGGER.addHandler(lines)
    try:
        async with switch_running() as sw:
            term = Terminal(await connect(sw.ports["pos"]))
            for i in range(1, 6):
                assert (await term.request(echo(f"{i:06d}"))).response_code == "00"
            for i in range(6, 14):
                await term.send(echo(f"{i:06d}"))
            stans = sorted([(await term.recv()).stan for _ in range(8)])
            assert stans == [f"{i:06d}" for i in range(6, 14)]
            assert len(sw._admission["pos"]) == 1
            await term.stream.send_eof()
            assert await closed_by_peer(term.stream)
            await until(lambda: len(sw._admission["pos"]) == 0)
            await term.aclose()
    finally:
        logs.LOGGER.removeHandler(lines)
    assert lines.events.count("connection_closed") == 1
