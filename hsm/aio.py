"""``AsyncHsm``: the ``Hsm`` operations as trio coroutines.

Two ways to run a call (``calls``):

* ``"inline"``: the synchronous ``Hsm`` method runs in the trio thread. For a token in
  this process (SoftHSM2) a call is tens of µs of C, less than the thread hop it would
  need: a 200-byte retail MAC costs 70 µs of CPU inline against 172 µs through a
  worker thread (``python -m benchmarks.run hsm_calls``; hsm/README.md). The loop is blocked for the
  call's duration, and for another thread's call holding ``session.LIBRARY_LOCK``
  (one operation, the ledger writer's event MAC).
* ``"thread"``: each call runs in a worker thread (``trio.to_thread.run_sync``) under
  a ``CapacityLimiter`` of 1: the library serves one thread at a time anyway
  (``session.LIBRARY_LOCK``), so more threads would only queue inside the lock.
  Waiting callers queue in trio (cheap, cancellable while waiting); the queue is
  bounded by ``max_pending``: past it a call fails fast with ``HsmBusyError`` instead
  of piling up, and the switch answers "system malfunction". For an HSM whose calls
  wait (a networked one), so that the loop serves other requests meanwhile. A call
  already running in the thread is not abandoned on cancellation: it must finish to
  keep the session consistent.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from payswitch.hsm.core import Hsm
from payswitch.hsm.errors import HsmBusyError

DEFAULT_MAX_PENDING = 256
CALL_MODES = ("inline", "thread")

# Methods that are safe and useful to call from trio (everything but lifecycle).
ASYNC_METHODS = frozenset(
    {
        "import_key_components", "import_key_cryptogram", "generate_key", "delete_key",
        "key_info", "list_keys", "has_key", "random",
        "encrypt_pin", "translate_pin", "dukpt_encrypt_pin", "translate_pin_dukpt",
        "generate_pvv", "verify_pin_pvv", "generate_ibm3624_offset", "verify_pin_ibm3624",
        "generate_pvv_clear", "generate_ibm3624_offset_clear",
        "generate_key_tr31", "import_key_tr31",
        "generate_cvv", "verify_cvv", "generate_cvv2", "verify_cvv2",
        "generate_icvv", "verify_icvv",
        "generate_mac", "verify_mac",
        "generate_arqc", "verify_arqc", "generate_arpc",
        "pan_token", "encrypt_pan", "protect_pan", "decrypt_pan", "event_mac",
    }
)


class AsyncHsm:
    """``await ahsm.translate_pin(...)``: same names and arguments as ``Hsm``."""

    def __init__(self, hsm: Hsm, *, max_pending: int = DEFAULT_MAX_PENDING,
                 calls: str = "thread") -> None:
        if max_pending < 1:
            raise ValueError("max_pending >= 1")
        if calls not in CALL_MODES:
            raise ValueError(f"calls: one of {', '.join(CALL_MODES)}")
        self.hsm = hsm
        self.max_pending = max_pending
        self.inline = calls == "inline"
        self._limiter: trio.CapacityLimiter | None = None
        self._pending = 0

    @property
    def pending(self) -> int:
        """Calls waiting or running now (for metrics)."""
        return self._pending

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.inline:  # never more than this one call pending
            return fn(*args, **kwargs)
        if self._pending >= self.max_pending:
            raise HsmBusyError(f"{self._pending} HSM operations pending (max {self.max_pending})")
        if self._limiter is None:
            self._limiter = trio.CapacityLimiter(1)
        self._pending += 1
        try:
            return await trio.to_thread.run_sync(
                functools.partial(fn, *args, **kwargs), limiter=self._limiter
            )
        finally:
            self._pending -= 1

    # The calls the switch makes, typed (services.Hsm); the rest via __getattr__. The
    # per-authorization ones call the method straight when inline (one layer fewer).
    async def verify_mac(self, *args: Any, **kw: Any) -> bool:
        if self.inline:
            return self.hsm.verify_mac(*args, **kw)
        return bool(await self.call(self.hsm.verify_mac, *args, **kw))

    async def generate_mac(self, *args: Any, **kw: Any) -> bytes:
        if self.inline:
            return self.hsm.generate_mac(*args, **kw)
        return bytes(await self.call(self.hsm.generate_mac, *args, **kw))

    async def translate_pin(self, *args: Any, **kw: Any) -> bytes:
        if self.inline:
            return self.hsm.translate_pin(*args, **kw)
        return bytes(await self.call(self.hsm.translate_pin, *args, **kw))

    async def translate_pin_dukpt(self, *args: Any, **kw: Any) -> bytes:
        if self.inline:
            return self.hsm.translate_pin_dukpt(*args, **kw)
        return bytes(await self.call(self.hsm.translate_pin_dukpt, *args, **kw))

    async def pan_token(self, *args: Any, **kw: Any) -> str:
        return str(await self.call(self.hsm.pan_token, *args, **kw))

    async def encrypt_pan(self, *args: Any, **kw: Any) -> bytes:
        return bytes(await self.call(self.hsm.encrypt_pan, *args, **kw))

    async def protect_pan(self, *args: Any, **kw: Any) -> tuple[str, bytes]:
        if self.inline:
            return self.hsm.protect_pan(*args, **kw)
        token, blob = await self.call(self.hsm.protect_pan, *args, **kw)
        return token, blob

    async def decrypt_pan(self, *args: Any, **kw: Any) -> str:
        return str(await self.call(self.hsm.decrypt_pan, *args, **kw))

    async def verify_pin_pvv(self, *args: Any, **kw: Any) -> bool:
        return bool(await self.call(self.hsm.verify_pin_pvv, *args, **kw))

    async def verify_cvv(self, *args: Any, **kw: Any) -> bool:
        return bool(await self.call(self.hsm.verify_cvv, *args, **kw))

    async def verify_arqc(self, *args: Any, **kw: Any) -> tuple[bool, bytes | None]:
        ok, arpc = await self.call(self.hsm.verify_arqc, *args, **kw)
        return ok, arpc

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name not in ASYNC_METHODS:
            raise AttributeError(name)
        method = getattr(self.hsm, name)

        async def run(*args: Any, **kwargs: Any) -> Any:
            return await self.call(method, *args, **kwargs)

        run.__name__ = name
        run.__doc__ = method.__doc__
        return run
