"""The transaction manager: runs a request through its participants.

Each participant ``prepare``s in turn (decides; may refuse with a typed error). When
one refuses, the manager answers with the error's DE39 (``errors.response_code_for``,
the one place errors become codes) and calls ``abort`` on the participants asked so
far in reverse order, the refusing one first: each undoes what its own prepare did
(``Forward`` queues the 0420, ``PostLedger`` / ``AuthorizeOnus`` void the hold). The
answer is then journalled (``record.Recorder``); when that write fails the sender is
told 96 and the participants are aborted the same way, since the sender will never see
what they did.

The paths (which participants, in which order, per message class) are in
``switch/participants/__init__.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import trio

from payswitch.codecs.iso8583 import Message
from payswitch.codecs.iso8583.dialect import redact
from payswitch.switch.errors import response_code_for
from payswitch.switch.logs import log
from payswitch.switch.messages import respond
from payswitch.switch.participants import NOT_CARRIED, PATHS, Participant, Path
from payswitch.switch.record import Recorder
from payswitch.switch.services import Context, Origin, Services


class _Bound:
    """A path with its participants made (once per switch)."""

    def __init__(self, path: Path, svc: Services) -> None:
        self.head = [p(svc) for p in path.head]
        self.onus = [p(svc) for p in path.onus]
        self.offus = [p(svc) for p in path.offus]


class TransactionManager:
    def __init__(self, svc: Services, paths: Mapping[str, Path] = PATHS) -> None:
        self.svc = svc
        self.recorder = Recorder(svc)
        self._paths = {mti: _Bound(p, svc) for mti, p in paths.items()}
        self._not_carried = _Bound(NOT_CARRIED, svc)
        self.in_flight = 0  # requests being answered (the drain waits for 0)
        # the metrics' children per MTI (and DE39): prometheus_client's labels() takes a
        # lock and builds its key on every call, four times a request
        self._counted: dict[str, tuple[Any, Any]] = {}  # attempts, duration
        self._answered: dict[tuple[str, str], tuple[Any, Any]] = {}  # responses, success
        # read when scraped: not two locked gauge updates per request
        svc.metrics.in_flight.set_function(lambda: self.in_flight)

    def _path(self, mti: str) -> _Bound:
        if mti[:2] == "08":  # network management: 0800, 0820, ...
            mti = "080"
        return self._paths.get(mti[:3], self._not_carried)

    async def handle(self, req: Message, origin: Origin, payload: bytes | None = None,
                     ) -> Message:
        """Answer one request (``payload``: its bytes as received, for a terminal MAC).

        Prepare every participant of the request's path; on a refusal, answer it and
        abort; then journal the answer (the request's owner only). One coroutine for
        the whole loop: each wait of a participant suspends and resumes every frame
        between it and the scheduler, so no helper coroutine sits in between."""
        started = trio.current_time()
        self.in_flight += 1
        mti = req.mti
        attempts, duration = self._counted.get(mti) or self._count(mti)
        attempts.inc()
        ctx = Context(request=req, origin=origin, payload=payload)
        path = self._path(mti)
        asked: list[Participant] = []
        try:
            try:
                steps, last = path.head, False
                while True:
                    for p in steps:
                        asked.append(p)  # a refusing participant is aborted too (half done)
                        if p.sync:
                            p.check(ctx)
                        else:
                            await p.prepare(ctx)
                        if ctx.done:  # answered early (a duplicate replayed)
                            break
                    if ctx.done or last:
                        break
                    steps, last = path.onus if ctx.onus is not None else path.offus, True
                assert ctx.response is not None, "path ended without a response"
            except Exception as e:
                self._refuse(ctx, e)
                await self._abort(asked, ctx)
                asked = []  # undone: a journal failure below has nothing more to undo
            if ctx.owner:
                await self.recorder.complete(ctx, lambda: self._abort(asked, ctx))
            resp = ctx.response
            assert resp is not None  # every request is answered
            code = resp.response_code or ""
            answered, success = self._answered.get((mti, code)) or self._answer(mti, code)
            answered.inc()
            if success is not None:
                success.inc()
            log("request_done", level=logging.INFO if code == "00" else logging.WARNING,
                mti=mti, stan=req.stan, terminal=req.terminal_id, pan=req.pan,
                amount_minor=req.amount_minor, response_code=code, rrn=resp.rrn,
                link=ctx.route.link if ctx.route else None, replayed=ctx.done,
                error=ctx.error, ms=round((trio.current_time() - started) * 1000, 1))
            return resp
        finally:
            self.in_flight -= 1
            duration.observe(trio.current_time() - started)

    def _count(self, mti: str) -> tuple[Any, Any]:
        m = self.svc.metrics
        children = self._counted[mti] = (m.attempts.labels(mti), m.duration.labels(mti))
        return children

    def _answer(self, mti: str, code: str) -> tuple[Any, Any]:
        """A series appears when first counted, as before: success only once approved."""
        m = self.svc.metrics
        children = self._answered[mti, code] = (
            m.responses.labels(mti, code), m.success.labels(mti) if code == "00" else None)
        return children

    @staticmethod
    async def _abort(asked: list[Participant], ctx: Context) -> None:
        for p in reversed(asked):
            try:
                await p.abort(ctx)
            except Exception:  # a bug: the other aborts must still run
                log("abort_failed", logging.ERROR, exc_info=True, participant=p.name,
                    stan=ctx.request.stan)

    @staticmethod
    def _refuse(ctx: Context, e: Exception) -> None:
        """The one place an error becomes the answer's DE39."""
        req = ctx.request
        code = response_code_for(e)
        ctx.error = redact(f"{type(e).__name__}: {e}")  # no digit run of a PAN
        if code == "96":  # a bug or the database: the traceback is wanted
            log("request_failed", logging.ERROR, exc_info=True, mti=req.mti,
                stan=req.stan, terminal=req.terminal_id, error=ctx.error)
        rrn = ctx.outbound.rrn if ctx.outbound else None
        ctx.response = respond(req, code, rrn=rrn)
