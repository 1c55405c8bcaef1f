"""Recording a request's answer in the journal (one transaction with its events and SAF
items), and keeping it in memory when the journal is down until it can be written."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from payswitch.switch import pans
from payswitch.switch.errors import StoreError, response_code_for
from payswitch.switch.journal import SafItem
from payswitch.switch.logs import log
from payswitch.switch.messages import respond
from payswitch.switch.services import Context, Services

UNWRITTEN_RETRY_S = 1.0  # how often answers whose journal write failed are retried


@dataclass(slots=True)
class Unwritten:
    ctx: Context
    owed_from: int  # ctx.saf[owed_from:] exist only because the sender was told 96

    @property
    def owed(self) -> list[SafItem]:
        return self.ctx.saf[self.owed_from:]


class Recorder:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.unwritten: list[Unwritten] = []
        self._wakeup = trio.Event()

    async def complete(self, ctx: Context, undo: Callable[[], Awaitable[None]]) -> None:
        """Write the answer. If the write fails the sender is told 96 instead, ``undo``
        (the manager aborting the participants) undoes what that sender will not see, and
        the answer, with what the undo queued, is kept to be written later."""
        svc, key, answer = self.svc, ctx.dup_key, ctx.response
        assert key is not None and answer is not None  # only a claimed, answered request
        if ctx.saf:  # an approval answered has none: no coroutine to make for nothing
            await pans.protect_saf(svc, ctx)
        try:
            await self._write(ctx)
        except StoreError as e:
            log("journal_failed", logging.ERROR, error=str(e), stan=ctx.request.stan,
                retry="in memory until written; recovery at the next start otherwise")
            before = len(ctx.saf)
            await undo()
            ctx.response = respond(ctx.request, response_code_for(e), rrn=answer.rrn)
            self._keep(Unwritten(ctx, before))
        finally:
            event = svc.in_flight_keys.pop(key, None)
            if event is not None:
                event.set()
        if ctx.saf:
            svc.wake_saf()

    async def _write(self, ctx: Context) -> bool:
        assert ctx.dup_key is not None and ctx.response is not None  # as in complete()
        return await self.svc.store.complete(
            ctx.dup_key, ctx.source, ctx.response, ctx.events, ctx.saf,
            self.svc.cfg.saf.expiry_s, ctx.reversal_of)

    def _keep(self, item: Unwritten) -> None:
        self.unwritten.append(item)
        if len(self.unwritten) > self.svc.cfg.switch.journal_retry_max:
            lost = self.unwritten.pop(0)
            log("journal_retry_dropped", logging.ERROR, stan=lost.ctx.request.stan,
                note="left to start-up recovery")
        self._wakeup.set()

    async def retry_loop(self) -> None:
        """Write the answers whose journal write failed, oldest first, once a second."""
        while True:
            if not self.unwritten:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
            await trio.sleep(UNWRITTEN_RETRY_S)
            while self.unwritten:
                if not await self._retry(self.unwritten[0]):
                    break
                self.unwritten.pop(0)

    async def _retry(self, item: Unwritten) -> bool:
        svc, ctx = self.svc, item.ctx
        try:
            await pans.protect_saf(svc, ctx)
            written = await self._write(ctx)
            # Already recorded: the first COMMIT succeeded, its ack was lost. The sender
            # was told 96 all the same: record that, and queue the reversal of the
            # approval it never saw (one transaction).
            assert ctx.dup_key is not None and ctx.response is not None  # as in complete()
            corrected = not written and await svc.store.correct(
                ctx.dup_key, ctx.response, item.owed, svc.cfg.saf.expiry_s)
        except StoreError:
            return False
        log("journal_retry_written", stan=ctx.request.stan,
            response_code=ctx.response.response_code, reversals=len(ctx.saf),
            corrected=corrected)
        if ctx.saf:
            svc.wake_saf()
        return True
