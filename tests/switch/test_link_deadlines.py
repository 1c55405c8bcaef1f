"""An issuer link's request deadlines, kept by its timer task (no cancel scope per
request): real socket pairs, virtual time. Each request times out at its own deadline,
also a shorter one sent after a longer one; an answered one never does; a request whose
own write is stuck on a full socket is given up at its deadline (the channel closed, as
cancelling that write did), one queued behind such a write is given up alone and never
written. Each test runs twice: requests written by their own tasks, and coalesced into
one write per scheduler round (Channel.run_writer, as a link session runs it)."""

from __future__ import annotations

import os
import socket
import sys

import pytest
import trio
import trio.testing
from switchkit import virtual

from payswitch.codecs.framing import FrameReader, encode_frame
from payswitch.codecs.iso8583 import Message, get
from payswitch.switch.channel import Channel, ChannelLimits
from payswitch.switch.config import LinkSection
from payswitch.switch.errors import IssuerTimeout
from payswitch.switch.links import ECHO, IssuerLink
from payswitch.switch.metrics import Metrics


def _socket_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return trio.SocketStream(a), trio.SocketStream(b)


def _fill(stream: trio.SocketStream) -> None:
    """Write until the kernel takes no more: the next write has to wait."""
    while True:
        try:
            os.write(stream.socket.fileno(), b"\0" * 4096)
        except BlockingIOError:
            return


COALESCE = False


@pytest.fixture(autouse=True, params=["own writes", "coalesced"])
def _writes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "COALESCE", request.param == "coalesced")


async def _start(link: IssuerLink, stream: trio.SocketStream, nursery: trio.Nursery,
                 ) -> Channel:
    """What a session runs: the channel, the timer task, the reader (and the writer)."""
    cfg = link.cfg
    link.mux._stan = 0  # STANs 000001, 000002... in the order requests are made
    link._channel = channel = Channel(stream, ChannelLimits(
        cfg.framing, cfg.max_frame_bytes, 0, 0, cfg.write_timeout_ms))
    nursery.start_soon(link._expire_loop)
    if COALESCE:
        nursery.start_soon(channel.run_writer)
    nursery.start_soon(link._reader, channel)
    await trio.testing.wait_all_tasks_blocked()
    assert channel.coalescing == COALESCE
    return channel


def _metric(link: IssuerLink, name: str) -> float:
    return link.metrics.registry.get_sample_value(name, {"link": link.name}) or 0


async def _timed(link: IssuerLink, timeout_ms: int, ended: dict, key: object) -> None:
    with pytest.raises(IssuerTimeout, match="^timeout on link"):
        await link._exchange(link._network_request(ECHO), timeout_ms)
    ended[key] = trio.current_time()


@virtual
async def test_each_unanswered_request_times_out_at_its_own_deadline():
    left, right = _socket_pair()
    link = IssuerLink(LinkSection("visa", "127.0.0.1", 9), Metrics())
    ended: dict = {}
    async with left, right, trio.open_nursery() as n:
        channel = await _start(link, left, n)
        async with trio.open_nursery() as m:
            m.start_soon(_timed, link, 5000, ended, "long")
            await trio.sleep(0.1)
            # shorter, after the timer went to sleep until the long one's deadline
            m.start_soon(_timed, link, 1000, ended, "short")
            m.start_soon(_timed, link, 3000, ended, "middle")
        assert ended == {"long": pytest.approx(5.0), "short": pytest.approx(1.1),
                         "middle": pytest.approx(3.1)}
        assert link.mux.in_flight == 0 and not channel.closed
        assert _metric(link, "link_timeouts_total") == 3
        # the first one's answer, now: recognised as late, handed to nobody
        dialect = get(link.cfg.dialect)
        late = Message(mti="0810", stan="000001",
                       transmission_time="1129010000", response_code="00",
                       network_code=ECHO)
        await right.send_all(encode_frame(link.cfg.framing, dialect.encode(late)))
        await trio.testing.wait_all_tasks_blocked()
        assert _metric(link, "link_late_responses_total") == 1
        n.cancel_scope.cancel()


@virtual
async def test_an_answered_request_is_not_timed_out_later():
    left, right = _socket_pair()
    link = IssuerLink(LinkSection("visa", "127.0.0.1", 9), Metrics())
    dialect = get(link.cfg.dialect)

    async def issuer() -> None:
        reader = FrameReader(link.cfg.framing, 4096)
        while True:
            for frame in reader.feed(await right.receive_some()):
                req = dialect.decode(frame.payload)
                resp = Message(mti=req.response_mti, stan=req.stan, response_code="00",
                               transmission_time=req.transmission_time,
                               network_code=req.network_code)
                await right.send_all(encode_frame(link.cfg.framing, dialect.encode(resp)))

    async with left, right, trio.open_nursery() as n:
        await _start(link, left, n)
        n.start_soon(issuer)
        for _ in range(3):
            resp = await link._exchange(link._network_request(ECHO), 2000)
            assert resp.response_code == "00"
        await trio.sleep(10)  # well past every deadline
        assert _metric(link, "link_timeouts_total") == 0 and link.mux.in_flight == 0
        n.cancel_scope.cancel()


def _stuck_link() -> tuple[trio.SocketStream, trio.SocketStream, IssuerLink]:
    """A link (20 s write timeout) whose issuer reads nothing: the next write waits."""
    left, right = _socket_pair()
    _fill(left)
    link = IssuerLink(LinkSection("visa", "127.0.0.1", 9, write_timeout_ms=20_000),
                      Metrics())
    return left, right, link


@virtual
async def test_a_write_stuck_past_the_deadline_is_given_up_then_and_closes_the_link():
    left, right, link = _stuck_link()
    ended: dict = {}
    async with left, right, trio.open_nursery() as n:
        channel = await _start(link, left, n)
        await _timed(link, 2000, ended, "stuck")
        assert ended == {"stuck": pytest.approx(2.0)}  # not the 20 s write timeout
        assert channel.closed_reason == "write interrupted"
        n.cancel_scope.cancel()


async def _queue_behind_a_stuck_writer(m: trio.Nursery, link, ended: dict) -> None:
    """A request (10 s) stuck in its write, then one (1 s) queued behind it: at 5 s the
    queued one has been given up alone, after 1 s."""
    m.start_soon(_timed, link, 10_000, ended, "writer")
    await trio.testing.wait_all_tasks_blocked()
    m.start_soon(_timed, link, 1000, ended, "queued")
    await trio.sleep(5)
    assert ended == {"queued": pytest.approx(1.0)}


@virtual
async def test_a_request_queued_behind_a_stuck_write_is_given_up_alone_and_never_sent():
    left, right, link = _stuck_link()
    ended: dict = {}
    async with left, right, trio.open_nursery() as n:
        channel = await _start(link, left, n)
        async with trio.open_nursery() as m:
            await _queue_behind_a_stuck_writer(m, link, ended)
            assert not channel.closed  # one request given up, the link still up
        assert ended["writer"] == pytest.approx(10.0)
        assert channel.closed_reason == "write interrupted"
        received = b""
        with trio.move_on_after(1):
            while data := await right.receive_some():
                received += data
        assert b"000002" not in received
        n.cancel_scope.cancel()


@virtual
async def test_a_request_given_up_behind_a_write_that_then_completes_is_never_sent():
    """The stuck write completes (the issuer reads again at 3 s) after the request queued
    behind it was given up (1 s): that one never reaches the issuer, the link stays up."""
    left, right, link = _stuck_link()
    ended: dict = {}
    received = bytearray()

    async def issuer_reads_late() -> None:
        await trio.sleep(3)
        while data := await right.receive_some():
            received.extend(data)

    async with left, right, trio.open_nursery() as n:
        channel = await _start(link, left, n)
        n.start_soon(issuer_reads_late)
        async with trio.open_nursery() as m:
            await _queue_behind_a_stuck_writer(m, link, ended)
            assert not channel.closed and not channel.in_write(1)  # the first went out
            assert b"000001" in received and b"000002" not in received
            m.cancel_scope.cancel()
        n.cancel_scope.cancel()
