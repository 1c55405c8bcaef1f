"""Link health and circuit breakers: pure state, the clock passed in (``now_ms``).

``WindowCounter`` counts events in a sliding window of ``buckets`` buckets of
``bucket_ms`` each: an event at ``t`` falls in bucket ``t // bucket_ms``, and the window
at ``now`` is the buckets ``now // bucket_ms - buckets + 1 .. now // bucket_ms``.
Memory is fixed (one int per bucket); time never has to go backwards (an older event
than the window is dropped, a clock step back is treated as "now").

``LinkHealth`` keeps per link: EWMA latency, and over the window the counts of sent,
timeouts, approvals and errors (format / MAC), from which the rates follow.

``Breaker``: closed -> open when, over the window, at least ``min_requests`` were sent
and (timeouts + errors) / sent >= ``failure_rate``; open -> half-open once
``open_ms`` has passed: ``probe_due(now)`` then says "send one 0800 echo now", and the
echo's result closes it or opens it again for another ``open_ms``. While open or
half-open, ``allow(now)`` is False: no authorization waits for the link's timeout.
Every transition is kept (bounded) for metrics and the demo report.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
OK, TIMEOUT, ERROR = "ok", "timeout", "error"


class WindowCounter:
    def __init__(self, buckets: int, bucket_ms: int) -> None:
        if buckets < 1 or bucket_ms < 1:
            raise ValueError("a window needs >= 1 bucket of >= 1 ms")
        self.buckets, self.bucket_ms = buckets, bucket_ms
        self._counts = [0] * buckets
        self._ids = [-1] * buckets  # which absolute bucket each slot holds
        self._latest = -1
        # the window ending at bucket _latest, kept as events come: the breaker reads
        # three totals after every forwarded request, and the window only moves once
        # a bucket (summed again then), not once an event
        self._sum = 0
        # total() past _latest (a counter with no event lately: a link's timeouts and
        # errors, read after every request) summed once per bucket, not once per read;
        # any add or clear forgets it
        self._past_at, self._past_sum = -1, 0

    def add(self, now_ms: int, n: int = 1) -> None:
        b = now_ms // self.bucket_ms
        if b <= self._latest - self.buckets:
            return  # older than the window
        self._past_at = -1
        if b > self._latest:
            self._latest = b
            self._sum = self._window_sum(b)
        slot = b % self.buckets
        if self._ids[slot] != b:  # the slot held a bucket outside every window now
            self._ids[slot], self._counts[slot] = b, 0
        self._counts[slot] += n
        self._sum += n

    def total(self, now_ms: int) -> int:
        newest = now_ms // self.bucket_ms
        if newest <= self._latest:  # a clock step back is read as "now"
            return self._sum
        if newest != self._past_at:
            self._past_at, self._past_sum = newest, self._window_sum(newest)
        return self._past_sum

    def _window_sum(self, newest: int) -> int:
        oldest = newest - self.buckets + 1
        return sum(c for c, b in zip(self._counts, self._ids, strict=True)
                   if oldest <= b <= newest)

    def clear(self) -> None:
        self._counts = [0] * self.buckets
        self._ids = [-1] * self.buckets
        self._sum = 0
        self._past_at = -1


@dataclass(frozen=True, slots=True)
class HealthConfig:
    window_ms: int = 60_000
    buckets: int = 12
    ewma_alpha: float = 0.2  # weight of the newest latency sample
    min_requests: int = 10  # the breaker does not judge fewer sends than this
    failure_rate: float = 0.5  # (timeouts + errors) / sent that opens the breaker
    open_ms: int = 10_000  # how long an open breaker waits before a probe
    max_transitions: int = 256  # kept for metrics / reports

    def __post_init__(self) -> None:
        checks = {"buckets": self.buckets >= 1, "window_ms": self.window_ms >= self.buckets,
                  "ewma_alpha": 0 < self.ewma_alpha <= 1,
                  "min_requests": self.min_requests >= 1,
                  "failure_rate": 0 < self.failure_rate <= 1,
                  "open_ms": self.open_ms >= 1, "max_transitions": self.max_transitions >= 1}
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"health.{key}: out of range")


def health_config(d: dict, prefix: str) -> HealthConfig:
    """``HealthConfig`` from a TOML table; an unknown key or a bad value is refused with
    the key named."""
    known = set(HealthConfig.__dataclass_fields__)
    for k, v in d.items():
        if k not in known:
            raise ValueError(f"{prefix}.{k}: unknown key")
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"{prefix}.{k}: must be a number")
    try:
        return HealthConfig(**d)
    except ValueError as e:
        raise ValueError(str(e).replace("health.", f"{prefix}.", 1)) from None


class LinkHealth:
    def __init__(self, config: HealthConfig | None = None) -> None:
        self.config = c = config or HealthConfig()
        size = c.window_ms // c.buckets
        self.sent, self.timeouts, self.approvals, self.errors = (
            WindowCounter(c.buckets, size) for _ in range(4))
        self.latency_ewma_ms: float | None = None

    def record(self, now_ms: int, outcome: str, latency_ms: float | None = None,
               approved: bool = False) -> None:
        """One request's fate: OK (answered; ``approved`` when DE39 00), TIMEOUT, ERROR."""
        self.sent.add(now_ms)
        if outcome == TIMEOUT:
            self.timeouts.add(now_ms)
        elif outcome == ERROR:
            self.errors.add(now_ms)
        elif approved:
            self.approvals.add(now_ms)
        if latency_ms is not None and outcome == OK:
            a = self.config.ewma_alpha
            prev = self.latency_ewma_ms
            self.latency_ewma_ms = latency_ms if prev is None else prev + a * (latency_ms - prev)

    def rates(self, now_ms: int) -> dict[str, float]:
        sent = self.sent.total(now_ms)
        if not sent:
            return {"sent": 0, "timeout_rate": 0.0, "error_rate": 0.0, "approval_rate": 0.0}
        return {"sent": sent, "timeout_rate": self.timeouts.total(now_ms) / sent,
                "error_rate": self.errors.total(now_ms) / sent,
                "approval_rate": self.approvals.total(now_ms) / sent}

    def failure_rate(self, now_ms: int) -> tuple[int, float]:
        sent = self.sent.total(now_ms)
        bad = self.timeouts.total(now_ms) + self.errors.total(now_ms)
        return sent, (bad / sent if sent else 0.0)


@dataclass(slots=True)
class Breaker:
    config: HealthConfig = field(default_factory=HealthConfig)
    state: str = CLOSED
    opened_at_ms: int = 0
    probing: bool = False  # an echo is out (half-open)
    transitions: deque = field(default_factory=deque)  # (now_ms, from, to)

    def _go(self, now_ms: int, to: str) -> None:
        self.transitions.append((now_ms, self.state, to))
        while len(self.transitions) > self.config.max_transitions:
            self.transitions.popleft()
        self.state = to

    def allow(self, now_ms: int) -> bool:
        """May an authorization be sent on this link now?"""
        return self.state == CLOSED

    def after_result(self, now_ms: int, health: LinkHealth) -> None:
        """Call after ``health.record``: trips the breaker on the window's failure rate."""
        if self.state != CLOSED:
            return
        sent, rate = health.failure_rate(now_ms)
        if sent >= self.config.min_requests and rate >= self.config.failure_rate:
            self.opened_at_ms = now_ms
            self._go(now_ms, OPEN)

    def probe_due(self, now_ms: int) -> bool:
        """True once per cool-down: the caller sends one 0800 echo and reports it."""
        if self.state == OPEN and now_ms - self.opened_at_ms >= self.config.open_ms:
            self._go(now_ms, HALF_OPEN)
            self.probing = True
            return True
        return False

    def probe_result(self, now_ms: int, ok: bool, health: LinkHealth) -> None:
        if self.state != HALF_OPEN:
            return
        self.probing = False
        if ok:
            for counter in (health.sent, health.timeouts, health.errors, health.approvals):
                counter.clear()  # judge the link afresh, not by the outage
            self._go(now_ms, CLOSED)
        else:
            self.opened_at_ms = now_ms
            self._go(now_ms, OPEN)
