"""One framed TCP connection, the one place the switch reads and writes frames.

The framing itself is sans-I/O (``codecs.framing``); this is the few lines of trio
around it, with every bound the design asks of a socket (``ChannelLimits``):

* a frame longer than ``max_frame_bytes`` closes the channel before it is buffered;
* **frame deadline**: a frame must be complete ``frame_timeout_ms`` after its first
  byte, so a sender trickling one byte a second (slowloris) is closed;
* **idle timeout** on whole frames: the channel closes when no *complete* frame
  arrived for ``idle_timeout_ms`` (a chunk of a frame does not restart it);
* a frame is written at once when the socket takes it (no wait, no scheduler round);
  when the socket is full, one writer at a time waits in ``send_all``, and frames
  queued meanwhile go out together in the next write;
* **write timeout**: the first ``send_all`` not done after ``write_timeout_ms`` closes
  the channel, and every write still queued fails at once with ``ChannelClosed``
  (a peer that never reads costs one write timeout, not one per pending answer).

A channel may also **coalesce** its writes (an issuer link, which many handler tasks
write to at once): while ``run_writer`` runs, ``send_later`` queues a frame and returns
its number without writing; the frames queued during one trio scheduler round go out in
one write just before the scheduler next waits for I/O (``RoundWriter``, a trio
instrument), and what the socket does not take then is written by the ``run_writer``
task, bounded by the write timeout, as above. A queued frame can be taken back
(``unqueue``) until that write.

On a socket, the idle and frame deadlines may be kept by a shared ``Deadlines`` task
instead of a cancel scope around every read (a terminal listener: one scope per request
was a visible share of the switch's CPU); it closes the channel when one passes, which
ends the read the same way.

After any of these the channel is closed for good (the socket too): ``receive_frame``
and ``send_frame`` raise ``ChannelClosed`` with the reason. End of stream from the peer
ends reading only: answers in flight may still be written (a peer may half-close).
"""

from __future__ import annotations

import contextlib
import heapq
import math
import os
from dataclasses import dataclass

import trio

from payswitch.codecs.errors import FramingError
from payswitch.codecs.framing import Frame, FrameReader, encode_frame

READ_CHUNK_BYTES = 65536


class ChannelClosed(trio.BrokenResourceError):
    """The channel is closed (timeout, peer gone, bad framing); ``reason`` says why.

    A ``trio.BrokenResourceError``, so that code written against plain streams keeps
    catching it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ChannelLimits:
    framing: str
    max_frame_bytes: int = 4096
    frame_timeout_ms: int = 0  # 0 = no frame deadline
    idle_timeout_ms: int = 0  # 0 = no idle timeout
    write_timeout_ms: int = 5000


class Deadlines:
    """The read deadlines of many socket channels, kept by one task (``run``).

    A channel arms an entry only when its deadline comes earlier than the one it has
    armed already: idle deadlines only move later, so a busy connection arms about once
    per idle period, not once per read. When an entry is due the channel decides
    (``_deadline_due``): closed if its current read's deadline has passed, armed again
    otherwise. Entries of closed channels are dropped when they outnumber the live ones
    (bounded by the open channels, not by how many were ever opened)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Channel]] = []
        self._seq = 0
        self._closed = 0  # entries whose channel is closed
        self._sleep: trio.CancelScope | None = None

    def arm(self, channel: Channel, deadline: float) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, channel))
        if self._sleep is not None and deadline < self._sleep.deadline:
            self._sleep.deadline = deadline  # earlier than the task's wake-up

    def closed(self) -> None:
        """An armed channel closed: its entry is dead weight until due."""
        self._closed += 1
        if self._closed > 64 and self._closed * 2 > len(self._heap):
            self._heap = [e for e in self._heap if not e[2].closed]
            heapq.heapify(self._heap)
            self._closed = 0

    def __len__(self) -> int:
        return len(self._heap)

    async def run(self) -> None:
        """Close the channels whose deadline passed; sleep until the next one."""
        while True:
            now = trio.current_time()
            while self._heap and self._heap[0][0] <= now:
                deadline, _, channel = heapq.heappop(self._heap)
                if channel.closed:
                    self._closed = max(0, self._closed - 1)
                else:
                    channel._deadline_due(deadline, now)
            wake_at = self._heap[0][0] if self._heap else math.inf
            with trio.CancelScope(deadline=wake_at) as self._sleep:
                await trio.sleep_forever()
            self._sleep = None


class RoundWriter(trio.abc.Instrument):
    """Writes the frames coalescing channels queued during a scheduler round, once per
    channel, when the round ends (trio calls ``before_io_wait`` then): one system call
    where each sender made its own, with no task step (a flush task would be one per
    round, and a round more of latency).

    An instrument that raises is removed by trio, and the frames queued afterwards would
    never go out: nothing here raises (a channel it cannot write is closed)."""

    def __init__(self) -> None:
        self.dirty: list[Channel] = []

    def before_io_wait(self, timeout: float) -> None:
        if self.dirty:
            dirty, self.dirty = self.dirty, []
            for channel in dirty:
                channel._round_flush()


_round_writer: trio.lowlevel.RunVar[RoundWriter] = trio.lowlevel.RunVar("round_writer")


def round_writer() -> RoundWriter:
    """This trio run's RoundWriter (added as an instrument on first use)."""
    try:
        return _round_writer.get()
    except LookupError:
        writer = RoundWriter()
        trio.lowlevel.add_instrument(writer)
        _round_writer.set(writer)
        return writer


class Channel:
    """Frames over one ``trio`` stream: ``receive_frame`` / ``send_frame``."""

    def __init__(self, stream: trio.abc.Stream, limits: ChannelLimits,
                 deadlines: Deadlines | None = None) -> None:
        self.stream = stream
        self.limits = limits
        # kept by a shared task instead of a cancel scope per read (on a socket)
        self._deadlines = deadlines if getattr(stream, "socket", None) is not None else None
        self._armed = math.inf  # the earliest entry this channel has in _deadlines
        self._waiting_until: float | None = None  # deadline of the read now waiting
        self._reader = FrameReader(limits.framing, limits.max_frame_bytes)
        now = trio.current_time()
        self._last_frame_at = now  # idle is counted from the last whole frame
        self._read_at = now  # when the last chunk arrived
        self._cut_since_read = False  # a frame was cut from the buffer since that read
        self._frame_started_at: float | None = None  # first byte of a partial frame
        self._recv_scope: trio.CancelScope | None = None
        self._out: list[tuple[int, bytes]] = []  # (frame number, bytes), not yet written
        self._queued = 0  # frames ever queued / ever written: a waiter's frame is out
        self._written = 0  # when _written >= its number
        self._writing = False
        self._progress = trio.Event()
        # coalescing (run_writer running): the round's writer, the parked writer task,
        # what the socket left of a round's write, and whether this round has queued
        self._rounds: RoundWriter | None = None
        self._writer_task: trio.lowlevel.Task | None = None
        self._rest: tuple[memoryview, int, int] | None = None
        self._dirty = False
        self.closed_reason: str | None = None
        self._eof = False
        self.frames_in = 0
        self.frames_out = 0

    @property
    def sends_at_once(self) -> bool:
        """A socket with no write going on or queued: ``send_frame`` writes now and waits
        only when the socket is full, as the writer, which ``close`` wakes."""
        return (not self._writing and not self._out
                and getattr(self.stream, "socket", None) is not None)

    @property
    def closed(self) -> bool:
        return self.closed_reason is not None

    def close(self, reason: str) -> None:
        """Close now (idempotent): readers and queued writers get ChannelClosed."""
        if self.closed_reason is not None:
            return
        self.closed_reason = reason
        self._out.clear()
        if self._deadlines is not None and self._armed != math.inf:
            self._deadlines.closed()  # its entry is left to be dropped
        if self._recv_scope is not None:
            self._recv_scope.cancel()
        self._progress.set()
        sock = getattr(self.stream, "socket", None)
        if sock is not None:  # wakes a writer blocked in send_all (trio notifies it)
            sock.close()

    async def aclose(self, reason: str = "closed") -> None:
        self.close(reason)
        await trio.aclose_forcefully(self.stream)

    # -- reading ----------------------------------------------------------------------
    def _read_deadline(self) -> float:
        lim = self.limits
        deadline = math.inf
        if lim.idle_timeout_ms:
            deadline = self._last_frame_at + lim.idle_timeout_ms / 1000
        if lim.frame_timeout_ms and self._frame_started_at is not None:
            deadline = min(deadline, self._frame_started_at + lim.frame_timeout_ms / 1000)
        return deadline

    def _expired(self) -> str:
        lim = self.limits
        started = self._frame_started_at
        if lim.frame_timeout_ms and started is not None and \
                trio.current_time() >= started + lim.frame_timeout_ms / 1000:
            return "frame timeout"
        return "idle timeout"

    async def receive_frame(self) -> Frame:
        """The next whole frame; ChannelClosed when there will be none (frames read
        before a close are dropped: after junk or a timeout the rest is not served).

        Frames are cut from what was read one per call, not a whole chunk at once: a
        junk sender closed at its 11th bad frame costs 11 cuts, not one per frame of
        the 64 KiB it sent."""
        while True:
            if self.closed_reason is not None:
                raise ChannelClosed(self.closed_reason)
            frame = self._next_frame()
            if frame is not None:
                break
            if self.closed_reason is not None:  # bad framing
                raise ChannelClosed(self.closed_reason)
            if self._eof:
                raise ChannelClosed("peer closed")
            self._note_partial()
            data: bytes | bytearray = b""
            deadline = self._read_deadline()
            if self._deadlines is not None and deadline != math.inf:
                data = await self._receive_by(deadline)
                if self.closed_reason is not None:
                    raise ChannelClosed(self.closed_reason)
                if not data:
                    self._eof = True
                else:
                    self._reader.append(data)
                    self._read_at = trio.current_time()
                continue
            # No deadline (an issuer link between frames) on a socket: no cancel scope
            # (one a read otherwise); close() wakes the wait by closing the socket.
            scope = None
            if deadline != math.inf or getattr(self.stream, "socket", None) is None:
                scope = self._recv_scope = trio.CancelScope(deadline=deadline)
            with scope or contextlib.nullcontext():
                try:
                    data = await self._receive()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                    self.close(f"read failed: {type(e).__name__}")
                finally:
                    self._recv_scope = None
            if self.closed_reason is not None:
                raise ChannelClosed(self.closed_reason)
            if scope is not None and scope.cancelled_caught:
                self.close(self._expired())
            elif not data:
                self._eof = True  # the peer may still read the answers in flight
            else:
                self._reader.append(data)
                self._read_at = trio.current_time()
        self.frames_in += 1
        return frame

    async def _receive_by(self, deadline: float) -> bytes | bytearray:
        """The next chunk, with ``deadline`` kept by the Deadlines task: it closes the
        channel (and so the socket, which ends the wait) when the deadline passes."""
        if trio.current_time() >= deadline:  # as a cancel scope already past its deadline
            self.close(self._expired())
            return b""
        if deadline < self._armed:
            self._armed = deadline
            assert self._deadlines is not None
            self._deadlines.arm(self, deadline)
        self._waiting_until = deadline
        try:
            return await self._receive()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            self.close(f"read failed: {type(e).__name__}")  # keeps a timeout's reason
            return b""
        finally:
            self._waiting_until = None

    def _deadline_due(self, deadline: float, now: float) -> None:
        """From Deadlines.run: an entry of this channel is due."""
        if deadline == self._armed:
            self._armed = math.inf
        waiting = self._waiting_until
        if waiting is None:
            return  # between reads: the next read looks at its own deadline
        if now >= waiting:
            self.close(self._expired())
        elif waiting < self._armed:
            self._armed = waiting
            assert self._deadlines is not None
            self._deadlines.arm(self, waiting)

    async def _receive(self) -> bytes | bytearray:
        """The next chunk. On a socket: wait until it is readable, then read the
        descriptor (trio's receive_some first tries a read that, between requests,
        nearly always fails, through several layers of wrappers)."""
        sock = getattr(self.stream, "socket", None)
        if sock is None:
            return await self.stream.receive_some(READ_CHUNK_BYTES)
        while True:
            fd = sock.fileno()  # -1 once closed
            if fd < 0:
                raise trio.ClosedResourceError("socket closed")
            await trio.lowlevel.wait_readable(fd)
            try:
                return os.read(fd, READ_CHUNK_BYTES)
            except BlockingIOError:  # woken without data: wait again
                continue

    def _next_frame(self) -> Frame | None:
        try:
            frame = self._reader.next_frame()
        except FramingError as e:
            self.close(f"framing: {e}")  # the stream cannot be trusted any more
            return None
        if frame is not None:
            # every whole frame was completed by the last chunk read: had it been
            # whole before, it would have been taken before that read
            self._last_frame_at = self._read_at
            self._cut_since_read = True
        return frame

    def _note_partial(self) -> None:
        """Before a read: when did the partial frame in the buffer (if any) begin?"""
        if not self._reader.buffered:
            self._frame_started_at = None
        elif self._frame_started_at is None or self._cut_since_read:
            self._frame_started_at = self._read_at  # it began in the last chunk
        self._cut_since_read = False

    # -- writing ----------------------------------------------------------------------
    async def send_frame(self, payload: bytes, tpdu: bytes | None = None) -> None:
        """Queue one frame and return once it is written (or raise ChannelClosed).

        ``FramingError`` (too long for the framing) is raised before anything is
        queued, and leaves the channel open."""
        if self.closed_reason is not None:
            raise ChannelClosed(self.closed_reason)
        data = encode_frame(self.limits.framing, payload, tpdu, self.limits.max_frame_bytes)
        self._queued += 1
        mine = self._queued
        self._out.append((mine, data))
        try:
            while self._written < mine:
                if self.closed_reason is not None:
                    raise ChannelClosed(self.closed_reason)
                if self._writing:
                    await self._progress.wait()
                elif (rest := self._flush()) is not None:
                    await self._send_rest(*rest)
        except trio.Cancelled:
            # given up before it was taken for writing: it is never sent (a request
            # that timed out must not reach the peer later with someone else's batch)
            self._out = [(n, d) for n, d in self._out if n != mine]
            raise

    def _flush(self) -> tuple[memoryview, int, int] | None:
        """Write everything queued so far: what the socket takes at once without a
        wait (the common case: no scheduler round, no cancel scope, not even a
        coroutine); else what is left, for ``_send_rest`` (one send_all bounded by
        write_timeout_ms)."""
        out = self._out
        last, count = out[-1][0], len(out)
        # one frame (every answer to a terminal): its bytes as they are, no join
        batch = out[0][1] if count == 1 else b"".join([d for _, d in out])
        out.clear()
        try:
            sent = self._send_now(batch)
        except OSError as e:
            self.close(f"write failed: {type(e).__name__}")
            raise ChannelClosed(self.closed_reason or "write failed") from None
        if sent == len(batch):
            self.frames_out += count
            self._written = last
            return None
        return memoryview(batch)[sent:], last, count

    def _send_now(self, batch: bytes) -> int:
        """Bytes of ``batch`` the socket took without waiting (0 for a stream that is
        not a socket). Written on the descriptor itself: trio's send would add a
        scheduler round to every frame. A closed socket's fileno is -1 (EBADF)."""
        sock = getattr(self.stream, "socket", None)
        if sock is None:
            return 0
        try:
            return os.write(sock.fileno(), batch)
        except BlockingIOError:
            return 0

    async def _send_rest(self, data: memoryview, last: int, count: int) -> None:
        self._writing = True
        done = False
        try:
            with trio.move_on_after(self.limits.write_timeout_ms / 1000):
                await self.stream.send_all(data)
                done = True
            if not done:
                self.close("write timeout")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            self.close(f"write failed: {type(e).__name__}")
        finally:
            self._writing = False
            if done:
                self.frames_out += count
                self._written = last
            else:  # cancelled or failed mid-write: frame boundaries are lost
                self.close(self.closed_reason or "write interrupted")
            progress, self._progress = self._progress, trio.Event()
            progress.set()
        if not done:
            raise ChannelClosed(self.closed_reason or "write interrupted")

    # -- coalesced writing ------------------------------------------------------------
    @property
    def coalescing(self) -> bool:
        """``send_later`` may be used: ``run_writer`` is running."""
        return self._rounds is not None

    def send_later(self, payload: bytes, tpdu: bytes | None = None) -> int:
        """Queue one frame for the end of this scheduler round; its number (for
        ``unqueue`` and ``in_write``). Raises ChannelClosed, or ``FramingError`` before
        anything is queued. A write that fails closes the channel, which the reader
        sees (its socket is closed)."""
        if self.closed_reason is not None:
            raise ChannelClosed(self.closed_reason)
        assert self._rounds is not None, "send_later without run_writer"
        data = encode_frame(self.limits.framing, payload, tpdu, self.limits.max_frame_bytes)
        self._queued += 1
        self._out.append((self._queued, data))
        if not self._dirty:
            self._dirty = True
            self._rounds.dirty.append(self)
        return self._queued

    def unqueue(self, number: int) -> bool:
        """Take frame ``number`` back if it was not taken for writing yet (a request
        given up before it left must not reach the peer later)."""
        for i, (n, _) in enumerate(self._out):
            if n == number:
                del self._out[i]
                return True
        return False

    def in_write(self, number: int) -> bool:
        """Frame ``number`` was taken for writing and is not all written yet."""
        return number > self._written and all(n != number for n, _ in self._out)

    def _round_flush(self) -> None:
        """From RoundWriter: write what this round queued (never raises)."""
        self._dirty = False
        if self.closed_reason is not None or self._writing or not self._out:
            return  # a writer busy with a full socket takes these after its write
        try:
            rest = self._flush()
        except ChannelClosed:
            return
        except Exception as e:  # a bug: the frames' senders are told by the close
            self.close(f"write failed: {type(e).__name__}")
            return
        if rest is None:
            return
        task, self._writer_task = self._writer_task, None
        if task is None:  # the writer task ended (its session is ending)
            self.close("write interrupted")
            return
        self._writing = True  # no round writes past it until the writer is done
        self._rest = rest
        trio.lowlevel.reschedule(task)

    async def run_writer(self) -> None:
        """Coalesce this channel's ``send_later`` frames while this task runs (in the
        nursery of the channel's user); it writes what a full socket did not take."""
        self._rounds = round_writer()
        try:
            while True:
                self._writer_task = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._writer_aborted)
                rest, self._rest = self._rest, None
                while rest is not None:
                    await self._send_rest(*rest)  # ChannelClosed ends the task
                    rest = self._flush() if self._out else None  # queued meanwhile
        except ChannelClosed:
            return
        finally:
            self._rounds = None
            self._writer_task = None
            self._writing = False

    def _writer_aborted(self, _: object) -> trio.lowlevel.Abort:
        self._writer_task = None
        return trio.lowlevel.Abort.SUCCEEDED
