"""switch.channel.Channel without sockets: trio's in-memory streams, virtual time."""

from __future__ import annotations

import contextlib
import socket

import pytest
import trio
import trio.testing
from switchkit import virtual

from payswitch.codecs.framing import FrameReader, encode_frame
from payswitch.switch.channel import Channel, ChannelClosed, ChannelLimits, Deadlines


class CountingStream(trio.abc.Stream):
    """Wraps a stream and counts send_all calls (one per wake-up, not per frame)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.sends: list[bytes] = []

    async def send_all(self, data) -> None:
        self.sends.append(bytes(data))
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes=None) -> bytes:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


@virtual
async def test_frame_deadline_counts_from_the_first_byte():
    left, right = trio.testing.memory_stream_pair()
    ch = Channel(left, ChannelLimits("len2", frame_timeout_ms=2000, idle_timeout_ms=60_000))
    await right.send_all(b"\x00\x05ab")
    started = trio.current_time()
    with pytest.raises(ChannelClosed) as e:
        await ch.receive_frame()
    assert e.value.reason == "frame timeout"
    assert trio.current_time() - started == pytest.approx(2.0)


@virtual
async def test_idle_timeout_is_not_restarted_by_chunks():
    left, right = trio.testing.memory_stream_pair()
    ch = Channel(left, ChannelLimits("len2", frame_timeout_ms=60_000, idle_timeout_ms=3000))

    async def trickle() -> None:
        for byte in b"\x00\x10" + b"x" * 16:
            await trio.sleep(0.5)
            await right.send_all(bytes([byte]))

    async with trio.open_nursery() as n:
        n.start_soon(trickle)
        with pytest.raises(ChannelClosed) as e:
            await ch.receive_frame()
        n.cancel_scope.cancel()
    assert e.value.reason == "idle timeout"
    assert trio.current_time() == pytest.approx(3.0)


@virtual
async def test_whole_frames_keep_the_channel_open():
    left, right = trio.testing.memory_stream_pair()
    ch = Channel(left, ChannelLimits("len2", frame_timeout_ms=1000, idle_timeout_ms=3000))
    for i in range(10):
        await trio.sleep(2.5)
        await right.send_all(encode_frame("len2", b"frame%d" % i))
        assert (await ch.receive_frame()).payload == b"frame%d" % i


@virtual
async def test_first_write_timeout_fails_every_pending_write_at_once():
    left, right = trio.testing.lockstep_stream_pair()  # nobody reads `right`
    ch = Channel(left, ChannelLimits("len2", write_timeout_ms=5000))
    failed_at: list[float] = []

    async def send(i: int) -> None:
        try:
            await ch.send_frame(b"answer %d" % i)
        except ChannelClosed as e:
            assert e.reason == "write timeout"
            failed_at.append(trio.current_time())

    async with trio.open_nursery() as n:
        for i in range(32):
            n.start_soon(send, i)
    assert failed_at == [pytest.approx(5.0)] * 32
    with pytest.raises(ChannelClosed):
        await ch.send_frame(b"later")


@virtual
async def test_frames_queued_during_a_write_go_out_in_one_batch():
    left, right = trio.testing.lockstep_stream_pair()
    stream = CountingStream(left)
    ch = Channel(stream, ChannelLimits("len2", write_timeout_ms=5000))
    got: list[bytes] = []

    async def read() -> None:
        reader = FrameReader("len2")
        while len(got) < 21:
            await trio.sleep(0.1)
            got.extend(f.payload for f in reader.feed(await right.receive_some()))

    async with trio.open_nursery() as n:
        n.start_soon(read)
        for i in range(21):
            n.start_soon(ch.send_frame, b"%d" % i)
    assert sorted(got) == sorted(b"%d" % i for i in range(21))
    assert len(stream.sends) < 21  # writes are batched per wake-up
    assert ch.frames_out == 21


@virtual
async def test_a_write_given_up_before_it_went_out_is_never_sent():
    left, right = trio.testing.lockstep_stream_pair()
    ch = Channel(left, ChannelLimits("len2", write_timeout_ms=5000))
    got: list[bytes] = []
    reading = trio.Event()

    async def read() -> None:
        await reading.wait()
        reader = FrameReader("len2")
        while len(got) < 2:
            got.extend(f.payload for f in reader.feed(await right.receive_some()))

    async with trio.open_nursery() as n:
        n.start_soon(read)
        n.start_soon(ch.send_frame, b"first")  # the writer, blocked until read
        await trio.sleep(0.1)
        with trio.move_on_after(1):
            await ch.send_frame(b"stale")  # waits behind it, then gives up
        reading.set()
        await ch.send_frame(b"next")
    assert got == [b"first", b"next"]


@virtual
async def test_oversize_frame_closes_before_it_is_buffered():
    left, right = trio.testing.memory_stream_pair()
    ch = Channel(left, ChannelLimits("len2", max_frame_bytes=100))
    await right.send_all(b"\x10\x00")
    with pytest.raises(ChannelClosed) as e:
        await ch.receive_frame()
    assert e.value.reason.startswith("framing")


def _socket_pair(buf_bytes: int = 4096) -> tuple[trio.SocketStream, trio.SocketStream]:
    """A real connected pair with small kernel buffers, so that they fill quickly."""
    a, b = trio.socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buf_bytes)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buf_bytes)
    return trio.SocketStream(a), trio.SocketStream(b)


FRAME_BYTES = 3000


def _frames(first: int, n: int) -> list[bytes]:
    return [bytes([i]) * FRAME_BYTES for i in range(first, first + n)]


@virtual
async def test_on_a_socket_frames_beyond_what_it_takes_at_once_arrive_whole():
    """Written at once while the kernel takes them, then part of a frame, the rest of it
    (and the frames queued meanwhile) once the peer reads: nothing lost, split or sent
    twice."""
    left, right = _socket_pair()
    ch = Channel(left, ChannelLimits("len2", max_frame_bytes=4096, write_timeout_ms=5000))
    got: list[bytes] = []

    async def read() -> None:
        await trio.sleep(1)  # the writers fill the socket first
        reader = FrameReader("len2", 4096)
        while len(got) < 60:
            got.extend(f.payload for f in reader.feed(await right.receive_some()))

    async def send(frames: list[bytes]) -> None:
        for f in frames:
            await ch.send_frame(f)

    async with left, right, trio.open_nursery() as n:
        n.start_soon(read)
        n.start_soon(send, _frames(0, 30))
        n.start_soon(send, _frames(30, 30))
    assert sorted(got) == _frames(0, 60)
    assert [f for f in got if f[0] < 30] == _frames(0, 30)  # each sender's in its order
    assert ch.frames_out == 60 and not ch.closed


@virtual
async def test_on_a_socket_nobody_reads_the_write_timeout_fails_every_queued_write():
    left, right = _socket_pair()
    ch = Channel(left, ChannelLimits("len2", max_frame_bytes=4096, write_timeout_ms=5000))
    failed_at: list[float] = []

    async def send(frame: bytes) -> None:
        try:
            await ch.send_frame(frame)
        except ChannelClosed as e:
            assert e.reason == "write timeout"
            failed_at.append(trio.current_time())

    async with left, right, trio.open_nursery() as n:
        for f in _frames(0, 60):  # far more than the socket's buffers hold
            n.start_soon(send, f)
    assert 0 < len(failed_at) < 60  # the first ones went out at once
    assert failed_at == [pytest.approx(5.0)] * len(failed_at)
    assert ch.closed_reason == "write timeout"


@virtual
async def test_close_wakes_a_reader_without_deadlines_on_a_socket():
    """An issuer link's channel has no idle timeout: between frames its read waits on
    the socket with no cancel scope, and close() (a write timeout elsewhere, a drop)
    still ends that wait at once, with the close's reason."""
    a, b = trio.socket.socketpair()
    ch = Channel(trio.SocketStream(a), ChannelLimits("len2"))
    peer = trio.SocketStream(b)
    await peer.send_all(encode_frame("len2", b"one"))
    assert (await ch.receive_frame()).payload == b"one"
    reasons: list[str] = []

    async def read() -> None:
        with pytest.raises(ChannelClosed) as e:
            await ch.receive_frame()
        reasons.append(e.value.reason)

    async with trio.open_nursery() as n:
        n.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()  # the reader waits on the socket
        started = trio.current_time()
        ch.close("write timeout")
    assert reasons == ["write timeout"] and trio.current_time() == started
    await peer.aclose()


# -- deadlines kept by the shared Deadlines task (a listener's sockets) -----------------
def _pair_with(deadlines, **limits):
    a, b = trio.socket.socketpair()
    return (Channel(trio.SocketStream(a), ChannelLimits("len2", **limits), deadlines),
            trio.SocketStream(b))


@virtual
async def test_shared_deadlines_close_an_idle_socket_counted_from_its_last_whole_frame():
    deadlines = Deadlines()
    async with trio.open_nursery() as n:
        n.start_soon(deadlines.run)
        ch, peer = _pair_with(deadlines, frame_timeout_ms=60_000, idle_timeout_ms=3000)
        for i in range(5):  # 2.5 s apart: each whole frame restarts the idle time
            await trio.sleep(2.5)
            await peer.send_all(encode_frame("len2", b"f%d" % i))
            assert (await ch.receive_frame()).payload == b"f%d" % i
        last = trio.current_time()
        await peer.send_all(b"\x00\x10abc")  # a chunk of a frame does not
        with pytest.raises(ChannelClosed) as e:
            await ch.receive_frame()
        assert e.value.reason == "idle timeout"
        assert trio.current_time() == pytest.approx(last + 3.0)
        assert ch.stream.socket.fileno() == -1  # the socket is closed too
        n.cancel_scope.cancel()
    await peer.aclose()


@virtual
async def test_shared_deadlines_close_a_trickled_frame_at_its_frame_deadline():
    deadlines = Deadlines()
    async with trio.open_nursery() as n:
        n.start_soon(deadlines.run)
        ch, peer = _pair_with(deadlines, frame_timeout_ms=2000, idle_timeout_ms=60_000)

        async def trickle() -> None:
            for byte in b"\x00\x08abcdefgh":
                await trio.sleep(0.5)
                with contextlib.suppress(trio.BrokenResourceError):
                    await peer.send_all(bytes([byte]))

        n.start_soon(trickle)
        with pytest.raises(ChannelClosed) as e:
            await ch.receive_frame()
        assert e.value.reason == "frame timeout"
        assert trio.current_time() == pytest.approx(0.5 + 2.0)  # from the first byte
        n.cancel_scope.cancel()
    await peer.aclose()


@virtual
async def test_shared_deadlines_do_not_keep_entries_of_closed_channels():
    """Thousands of short connections (a junk flood) leave no growing heap behind."""
    deadlines = Deadlines()
    async with trio.open_nursery() as n:
        n.start_soon(deadlines.run)
        for _ in range(2000):
            ch, peer = _pair_with(deadlines, frame_timeout_ms=5000, idle_timeout_ms=300_000)
            await peer.send_all(encode_frame("len2", b"x"))
            assert (await ch.receive_frame()).payload == b"x"
            await peer.aclose()
            with pytest.raises(ChannelClosed):  # end of stream: closed
                await ch.receive_frame()
            await ch.aclose()
        assert len(deadlines) <= 200
        n.cancel_scope.cancel()


# -- coalesced writes (send_later / run_writer: an issuer link's channel) -------------
def _count_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The write system calls the channel makes (their sizes)."""
    from payswitch.switch import channel as channel_module

    writes: list[int] = []
    real = channel_module.os.write

    def write(fd: int, data) -> int:
        writes.append(len(data))
        return real(fd, data)

    monkeypatch.setattr(channel_module.os, "write", write)
    return writes


async def _read_frames(stream: trio.SocketStream, count: int) -> list[bytes]:
    reader, got = FrameReader("len2", 4096), []
    while len(got) < count:
        got.extend(f.payload for f in reader.feed(await stream.receive_some()))
    return got


def test_frames_queued_by_many_tasks_in_one_round_go_out_in_one_write(monkeypatch):
    """Six senders run in the same scheduler round: their frames leave in one system
    call at the end of the round, in the order queued, and none of them waited."""
    writes = _count_writes(monkeypatch)
    frames = [b"request %d" % i for i in range(6)]
    queued: list[tuple[int, bytes]] = []

    async def run() -> None:
        left, right = _socket_pair(65536)
        ch = Channel(left, ChannelLimits("len2", max_frame_bytes=4096))
        async with left, right, trio.open_nursery() as n:
            n.start_soon(ch.run_writer)
            go = trio.Event()

            async def send(frame: bytes) -> None:
                await go.wait()  # all six woken together: one round
                queued.append((ch.send_later(frame), frame))

            async with trio.open_nursery() as senders:
                for f in frames:
                    senders.start_soon(send, f)
                await trio.testing.wait_all_tasks_blocked()
                go.set()
            got = await _read_frames(right, 6)
            assert got == [f for _, f in sorted(queued)]  # whole, in the order queued
            assert sorted(got) == frames
            assert ch.frames_out == 6
            n.cancel_scope.cancel()

    virtual(run)()
    assert writes == [sum(len(f) + 2 for f in frames)]  # one system call, every frame


@virtual
async def test_a_frame_taken_back_before_the_round_ends_is_never_written():
    left, right = _socket_pair(65536)
    ch = Channel(left, ChannelLimits("len2", max_frame_bytes=4096))
    async with left, right, trio.open_nursery() as n:
        n.start_soon(ch.run_writer)
        await trio.testing.wait_all_tasks_blocked()
        ch.send_later(b"first")
        given_up = ch.send_later(b"given up")
        ch.send_later(b"third")
        assert ch.unqueue(given_up) and not ch.unqueue(given_up)
        assert await _read_frames(right, 2) == [b"first", b"third"]
        assert not ch.unqueue(1) and not ch.in_write(1)  # written: nothing to take back
        n.cancel_scope.cancel()


@virtual
async def test_what_a_full_socket_leaves_of_a_round_is_written_by_the_writer_task():
    """More than the socket takes: the rest (and the frames queued while it waits) go
    out whole once the peer reads; a frame in that write cannot be taken back."""
    left, right = _socket_pair()
    ch = Channel(left, ChannelLimits("len2", max_frame_bytes=4096, write_timeout_ms=5000))
    async with left, right, trio.open_nursery() as n:
        n.start_soon(ch.run_writer)
        await trio.testing.wait_all_tasks_blocked()
        numbers = [ch.send_later(f) for f in _frames(0, 30)]
        await trio.sleep(1)  # the round's write took part; the writer task waits
        assert any(ch.in_write(k) for k in numbers) and not ch.unqueue(numbers[-1])
        late = [ch.send_later(f) for f in _frames(30, 5)]  # behind the waiting write
        assert not any(ch.in_write(k) for k in late)
        got = await _read_frames(right, 35)
        assert got == _frames(0, 35)
        assert ch.frames_out == 35 and not ch.closed
        n.cancel_scope.cancel()


@virtual
async def test_a_coalesced_write_nobody_reads_closes_the_channel_at_the_write_timeout():
    left, right = _socket_pair()
    ch = Channel(left, ChannelLimits("len2", max_frame_bytes=4096, write_timeout_ms=5000))
    async with left, right, trio.open_nursery() as n:
        n.start_soon(ch.run_writer)
        await trio.testing.wait_all_tasks_blocked()
        for f in _frames(0, 60):  # far more than the socket's buffers hold
            ch.send_later(f)
        started = trio.current_time()
        while not ch.closed:
            await trio.sleep(0.5)
        assert ch.closed_reason == "write timeout"
        assert trio.current_time() - started == pytest.approx(5.0, abs=0.5)
        assert not ch.coalescing  # the writer task ended with the channel
        with pytest.raises(ChannelClosed):
            ch.send_later(b"after")


@virtual
async def test_a_round_write_that_fails_closes_the_channel_and_rounds_go_on():
    """The peer is gone: the round's write fails (EPIPE) inside the scheduler's hook,
    which closes the channel and raises nothing into trio (which would remove the hook):
    another channel's frames still go out at the end of later rounds."""
    left, right = _socket_pair(65536)
    other, peer = _socket_pair(65536)
    ch = Channel(left, ChannelLimits("len2", max_frame_bytes=4096))
    ok = Channel(other, ChannelLimits("len2", max_frame_bytes=4096))
    async with left, other, peer, trio.open_nursery() as n:
        n.start_soon(ch.run_writer)
        n.start_soon(ok.run_writer)
        await trio.testing.wait_all_tasks_blocked()
        await right.aclose()
        ch.send_later(b"to nobody")
        ok.send_later(b"same round")
        await trio.testing.wait_all_tasks_blocked()
        assert ch.closed_reason == "write failed: BrokenPipeError"
        with pytest.raises(ChannelClosed):
            ch.send_later(b"after")
        with pytest.raises(ChannelClosed, match="write failed"):
            await ch.receive_frame()
        ok.send_later(b"a later round")
        assert await _read_frames(peer, 2) == [b"same round", b"a later round"]
        n.cancel_scope.cancel()
