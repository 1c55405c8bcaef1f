"""MUX of one issuer link: which waiter a response belongs to. No I/O.

The switch gives every outbound request its own STAN (unique among the link's pending
requests) and an RRN. A response is matched by STAN, then must agree on RRN and on the
acquiring institution (DE32) when both sides carry them, and on the MTI class. The
number of pending requests is bounded; over it, ``register`` refuses at once.

A request that timed out is forgotten but its key is remembered (bounded), so that its
response, arriving late, is recognised as late and never handed to anyone else.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import trio

from payswitch.codecs.iso8583.message import Message
from payswitch.switch.errors import LinkBusy

STAN_MODULUS = 1_000_000


def _matches(req: Message, resp: Message) -> bool:
    if resp.mti[:2] != req.mti[:2] or resp.is_request:
        return False
    if resp.rrn and req.rrn and resp.rrn != req.rrn:
        return False
    return not (resp.acquirer_id and req.acquirer_id and resp.acquirer_id != req.acquirer_id)


@dataclass(slots=True, eq=False)
class Waiter:
    """One request's wait for its response. The waiting task is parked and woken
    directly (no Event and parking lot per request: this is once per forwarded
    request), at the latest by ``Mux.expire`` once ``deadline`` has passed (the link's
    one timer task: no cancel scope per request)."""

    request: Message
    deadline: float = math.inf  # trio time; past it, Mux.expire wakes the wait
    response: Message | None = None
    failed: bool = False  # the link dropped while waiting
    expired: bool = False  # woken by Mux.expire: timed out
    sending: bool = False  # the caller is writing the request (not yet waiting)
    frame: int = 0  # the request's frame number in a coalescing Channel (0: none)
    done: bool = False  # answered, failed or expired: wait() returns at once
    task: Any = None  # the task parked in wait() (or in IssuerLink.request, inline)

    def matches(self, resp: Message) -> bool:
        return _matches(self.request, resp)

    def wake(self) -> None:
        self.done = True
        task, self.task = self.task, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    async def wait(self) -> None:
        """Until ``wake``; cancellable (the caller's timeout)."""
        if self.done:
            return
        self.task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self.abort)

    def abort(self, _: Any) -> trio.lowlevel.Abort:
        """The parked task was cancelled (wait_task_rescheduled's abort_fn)."""
        self.task = None
        return trio.lowlevel.Abort.SUCCEEDED


class Mux:
    def __init__(self, max_in_flight: int, late_memory: int) -> None:
        assert max_in_flight > 0
        self.max_in_flight = max_in_flight
        self.late_memory = late_memory
        self._pending: dict[str, Waiter] = {}
        self._expired: OrderedDict[str, Message] = OrderedDict()
        self._stan = random.randrange(1, STAN_MODULUS)
        # the STANs this process may use (--workers: a slice per worker, disjoint)
        self.stans = (1, STAN_MODULUS - 1)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def next_stan(self) -> str:
        lo, hi = self.stans
        for _ in range(self.max_in_flight + 1):
            self._stan = lo + (self._stan + 1 - lo) % (hi - lo + 1)  # lo..hi, wrapping
            stan = f"{self._stan:06d}"
            if stan not in self._pending:
                return stan
        raise AssertionError("no free STAN although in-flight is bounded")

    def register(self, request: Message) -> Waiter:
        if len(self._pending) >= self.max_in_flight:
            raise LinkBusy("link in-flight limit reached")
        assert request.stan and request.stan not in self._pending
        waiter = Waiter(request)
        self._pending[request.stan] = waiter
        return waiter

    def forget(self, waiter: Waiter, *, timed_out: bool) -> None:
        stan = waiter.request.stan
        assert stan is not None  # register() refuses a request without one
        if self._pending.get(stan) is waiter:
            del self._pending[stan]
        if timed_out:
            self._expired[stan] = waiter.request
            self._expired.move_to_end(stan)
            while len(self._expired) > self.late_memory:
                self._expired.popitem(last=False)

    def deliver(self, resp: Message) -> str:
        """Hand a response to its waiter: returns 'matched', 'late' or 'unmatched'."""
        stan = resp.stan or ""
        waiter = self._pending.get(stan)
        if waiter is not None and waiter.matches(resp):
            del self._pending[stan]
            waiter.response = resp
            waiter.wake()
            return "matched"
        old = self._expired.get(stan)
        if old is not None and _matches(old, resp):
            del self._expired[stan]
            return "late"
        return "unmatched"

    def expire(self, now: float) -> tuple[float, list[Waiter]]:
        """Wake every pending waiter whose deadline has passed (``expired``; the caller
        forgets it as timed out, as after its own timeout). Returns the earliest deadline
        still ahead (inf: none) and the waiters it woke."""
        woke, nxt = [], math.inf
        for waiter in self._pending.values():
            if waiter.done:
                continue
            if waiter.deadline <= now:
                waiter.expired = True
                waiter.wake()
                woke.append(waiter)
            elif waiter.deadline < nxt:
                nxt = waiter.deadline
        return nxt, woke

    def fail_all(self) -> None:
        """The link dropped: every waiter is woken with no response."""
        for waiter in self._pending.values():
            waiter.failed = True
            waiter.wake()
        self._pending.clear()
