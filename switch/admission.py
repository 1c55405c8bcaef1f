"""Who a listener lets in, and how much junk it takes: pure bookkeeping, no I/O.

``Admission`` decides per accepted connection (issue 9, finding 4). A connection is
*unproven* until a request on it identifies a configured terminal (acquirer
connections are proven by their source address at once). Unproven connections are
bounded in total (``max_unproven_connections``) and everyone per source address
(``max_connections_per_source``); when a bound is reached, the *oldest unproven*
connection is evicted to make room, so idle or slow sockets can delay a terminal's
reconnect by one eviction, never lock it out. Only when every slot is held by proven
connections is the newcomer refused.

``MalformedWindow`` counts bad frames per connection (finding 6) and ``LogSampler``
turns a flood of one log line into one line per interval carrying the count.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable
from typing import Generic, TypeVar

C = TypeVar("C", bound=Hashable)  # a connection


class Admission(Generic[C]):
    def __init__(self, max_connections: int, per_source: int, max_unproven: int) -> None:
        self.max_connections = max_connections
        self.per_source = per_source
        self.max_unproven = max_unproven
        self._peer: dict[C, str] = {}  # every admitted connection -> its source
        self._by_source: dict[str, int] = {}
        self._unproven: OrderedDict[C, str] = OrderedDict()  # oldest first
        self.admitted_total = 0  # connections ever admitted

    def __len__(self) -> int:
        return len(self._peer)

    @property
    def unproven(self) -> int:
        return len(self._unproven)

    def admit(self, conn: C, peer: str, proven: bool,
              ) -> tuple[bool, list[C]]:
        """(admitted, connections to evict). Evicted ones are released here already."""
        evict: list[C] = []
        if self._by_source.get(peer, 0) >= self.per_source:
            old = self._oldest_unproven(peer)
            if old is None:
                return False, []
            evict.append(old)
            self.release(old)
        if len(self._peer) >= self.max_connections or (
                not proven and len(self._unproven) >= self.max_unproven):
            old = self._oldest_unproven()
            if old is None:
                return False, evict
            evict.append(old)
            self.release(old)
        self._peer[conn] = peer
        self.admitted_total += 1
        self._by_source[peer] = self._by_source.get(peer, 0) + 1
        if not proven:
            self._unproven[conn] = peer
        return True, evict

    def prove(self, conn: C) -> None:
        self._unproven.pop(conn, None)

    def is_proven(self, conn: C) -> bool:
        return conn in self._peer and conn not in self._unproven

    def release(self, conn: C) -> None:
        """Forget a connection (idempotent)."""
        peer = self._peer.pop(conn, None)
        if peer is None:
            return
        self._unproven.pop(conn, None)
        left = self._by_source[peer] - 1
        if left:
            self._by_source[peer] = left
        else:
            del self._by_source[peer]

    def _oldest_unproven(self, peer: str | None = None) -> C | None:
        for conn, source in self._unproven.items():
            if peer is None or source == peer:
                return conn
        return None


class MalformedWindow:
    """True once more than ``limit`` bad frames fell within ``window_s``."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self.total = 0
        self._times: deque[float] = deque()

    def hit(self, now: float) -> bool:
        self.total += 1
        self._times.append(now)
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()
        return len(self._times) > self.limit


class LogSampler:
    """At most one line per ``interval_s``; the line says how many were skipped."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._next = float("-inf")
        self._skipped = 0

    def sample(self, now: float) -> int | None:
        """None: skip this line. Else: log it, with this many skipped since the last."""
        if now < self._next:
            self._skipped += 1
            return None
        skipped, self._skipped = self._skipped, 0
        self._next = now + self.interval_s
        return skipped
