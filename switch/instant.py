"""Instant credit transfers (SEPA Instant style) with one participant bank over a
framed TCP link: pain.001 in -> one pacs.008 per transaction out -> pacs.002 back.

Transport: a framed TCP link (4-byte length + one XML document,
``codecs/iso20022/wire.py``) rather than MQTT. The scheme is request/answer under a
10-second deadline between two parties: a link gives order, one round trip and a
failure we see at once, with nothing in between to run; what must survive a crash is
our own state, which lives in PostgreSQL (``instant_book.py``), not in a broker.
Whatever a link loses is recovered by asking (pacs.028), as the scheme does.

Per payment: row + ledger hold, pacs.008 sent, wait ``deadline_s`` for its pacs.002.
No answer: a pacs.028 status request, up to ``status_tries`` times, each waiting
``status_wait_s``; still nothing: reversed (timeout, AB05). A late pacs.002 after that
is applied by the ledger's rule (posted or voided once) and a disagreement logged.
On start, ``recover()`` asks pacs.028 for every payment still pending (a crash
between hold and answer); a peer that never received one answers RJCT and it is
reversed. Inbound pacs.008 credits our customer and is answered pacs.002; a camt.056
recall is answered by a pacs.004 or a pacs.002 RJCT (camt.029 is not in the codec).
A message that is not valid is answered by a pacs.002 RJCT naming path and reason.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Protocol

import psycopg
import trio

import payswitch.ledger as L
from payswitch.codecs.errors import FramingError
from payswitch.codecs.iso20022 import model as m
from payswitch.codecs.iso20022.api import rejection
from payswitch.codecs.iso20022.errors import Iso20022Error
from payswitch.codecs.iso20022.wire import Codec, FrameBuffer, encode
from payswitch.switch.instant_book import InstantBook, ref

log = logging.getLogger("payswitch.instant")
PACS008 = "pacs.008.001.08"
READ_BYTES = 65536


@dataclass(frozen=True)
class InstantConfig:
    bic: str = "PAYSDEFFXXX"  # ours
    peer_bic: str = "PEERDEFFXXX"  # the participant bank at the other end
    deadline_s: float = 10.0  # scheme deadline for the pacs.002 (SEPA Instant: 10 s)
    status_wait_s: float = 5.0  # per pacs.028
    status_tries: int = 3
    max_frame_bytes: int = 1 << 20
    max_in_flight: int = 64  # payments of one submit waiting at once
    hold_timeout_s: int = 7 * 86400


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def to_pacs008(pain: m.Pain001, cfg: InstantConfig) -> list[m.Pacs008]:
    """One pacs.008 per instruction; ids derived from the pain.001's, so a rerun of the
    same file names the same payments."""
    out = []
    for pi in pain.payments:
        for t in pi.transfers:
            tx_id = ref("T", pain.msg_id, pi.payment_id, t.end_to_end_id)
            ct = m.CreditTransfer(t.end_to_end_id, tx_id, t.amount_minor, t.currency,
                                  pi.debtor_name, pi.debtor_account, cfg.bic,
                                  t.creditor_agent, t.creditor_name, t.creditor_account,
                                  t.remittance)
            out.append(m.Pacs008(ref("M", tx_id), now(), now().date(), cfg.bic,
                                 cfg.peer_bic, (ct,)))
    return out


class Book(Protocol):
    """What the link needs of ``InstantBook`` (tests use an in-memory one)."""

    def prepare(self, ct: m.CreditTransfer, msg_id: str) -> str | None: ...
    def state(self, tx_id: str) -> str | None: ...
    def pending(self) -> list[tuple[str, str, str]]: ...
    def tx_of_msg(self, msg_id: str) -> list[str]: ...
    def resolve(self, tx_id: str, status: str, reason: str | None, by: str) -> str | None: ...
    def credit(self, ct: m.CreditTransfer, instructing_agent: str,
               msg_id: str) -> m.TxStatus: ...
    def recall(self, r: m.Recall, assigner: str) -> m.PaymentReturn | m.TxStatus: ...


class InstantSwitch:
    def __init__(self, book: InstantBook | Book, codec: Codec, config: InstantConfig) -> None:
        self.book, self.codec, self.cfg = book, codec, config
        self._db = trio.Lock()  # the book has one connection each: one caller at a time
        self._send_lock = trio.Lock()
        self._stream: trio.abc.Stream | None = None
        self._waiting: dict[str, trio.Event] = {}
        self.stats = {"sent": 0, "status_requests": 0, "late_answers": 0, "timeouts": 0,
                      "inbound_credits": 0, "recalls": 0, "rejected_inbound": 0,
                      "store_errors": 0}

    async def _book(self, fn, *args):
        async with self._db:
            if not getattr(self.book, "blocking", True):  # an in-memory book (tests)
                return fn(*args)
            return await trio.to_thread.run_sync(fn, *args)

    async def _send(self, msg: m.Message) -> None:
        data = encode(self.codec.build(msg), self.cfg.max_frame_bytes)
        assert self._stream is not None, "not connected"
        async with self._send_lock:
            await self._stream.send_all(data)

    # -- the link ----------------------------------------------------------------------

    async def run(self, stream: trio.abc.Stream, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read and handle what the peer sends until the link closes."""
        self._stream = stream
        frames = FrameBuffer(self.cfg.max_frame_bytes)
        task_status.started()
        try:
            while data := await stream.receive_some(READ_BYTES):
                try:
                    docs = frames.feed(data)
                except FramingError as e:
                    log.warning("instant_bad_frame", extra={"fields": {"error": str(e)}})
                    return  # the stream cannot be trusted: drop the link
                for doc in docs:
                    await self._handle(doc)
        finally:
            await trio.aclose_forcefully(stream)

    async def _handle(self, doc: bytes) -> None:
        try:
            msg = self.codec.parse(doc)
        except Iso20022Error as e:
            self.stats["rejected_inbound"] += 1
            log.warning("instant_invalid_inbound", extra={"fields": {"path": e.path}})
            await self._send(self._rejection(e))
            return
        try:
            await self._dispatch(msg)
        except (L.LedgerError, psycopg.Error) as e:
            # no answer we could not stand behind: the sender's own timeout and status
            # request cover it; our outgoing payments are recovered by recover()
            self.stats["store_errors"] += 1
            log.warning("instant_store_error", extra={"fields": {"error": type(e).__name__}})

    async def _dispatch(self, msg: m.Message) -> None:
        if isinstance(msg, m.Pacs002):
            await self._on_status(msg)
        elif isinstance(msg, m.Pacs008):
            await self._on_credit(msg)
        elif isinstance(msg, m.Camt056):
            await self._on_recall(msg)
        else:
            err = Iso20022Error("not a message the instant link takes", path="/Document",
                                message_type=m.MESSAGE_TYPES[type(msg)])
            await self._send(self._rejection(err))

    def _rejection(self, e: Iso20022Error) -> m.Pacs002:
        return rejection(e, msg_id=ref("R", e.msg_id, e.path, now()), created=now(),
                         instructing_agent=self.cfg.bic, instructed_agent=self.cfg.peer_bic)

    async def _on_status(self, msg: m.Pacs002) -> None:
        statuses = [(s.original_tx_id, s.status, s.reason) for s in msg.transactions]
        if not statuses and msg.group_status in ("ACSC", "RJCT"):
            txs = await self._book(self.book.tx_of_msg, msg.original_msg_id)
            statuses = [(tx, msg.group_status, msg.group_reason) for tx in txs]
        for tx_id, status, reason in statuses:
            if not tx_id or status not in ("ACSC", "RJCT"):
                continue  # ACCP/PDNG: not final, keep waiting
            waiter = self._waiting.get(tx_id)
            if waiter is None:
                self.stats["late_answers"] += 1
            await self._book(self.book.resolve, tx_id, status,
                             reason.code if reason else None, "pacs.002")
            if waiter is not None:
                waiter.set()

    async def _on_credit(self, msg: m.Pacs008) -> None:
        results = []
        for ct in msg.transactions:
            results.append(await self._book(self.book.credit, ct, msg.instructing_agent,
                                            msg.msg_id))
            self.stats["inbound_credits"] += 1
        await self._send(m.Pacs002(ref("S", msg.msg_id), now(), msg.msg_id, PACS008,
                                   transactions=tuple(results),
                                   instructing_agent=self.cfg.bic,
                                   instructed_agent=msg.instructing_agent))

    async def _on_recall(self, msg: m.Camt056) -> None:
        returns: list[m.PaymentReturn] = []
        refusals: list[m.TxStatus] = []
        for r in msg.recalls:
            self.stats["recalls"] += 1
            out = await self._book(self.book.recall, r, msg.assigner)
            if isinstance(out, m.PaymentReturn):
                returns.append(out)
            else:
                refusals.append(out)
        if returns:
            await self._send(m.Pacs004(ref("P", msg.assignment_id), now(), now().date(),
                                       self.cfg.bic, msg.assigner, tuple(returns)))
        if refusals:
            await self._send(m.Pacs002(ref("N", msg.assignment_id), now(),
                                       msg.assignment_id, "camt.056.001.09",
                                       transactions=tuple(refusals),
                                       instructing_agent=self.cfg.bic,
                                       instructed_agent=msg.assigner))

    # -- outgoing payments -------------------------------------------------------------

    async def submit(self, pain: m.Pain001) -> dict[str, str]:
        """Every instruction of the pain.001 to a final state: tx_id -> state."""
        results: dict[str, str] = {}
        limit = trio.Semaphore(self.cfg.max_in_flight)

        async def one(p: m.Pacs008) -> None:
            async with limit:
                results[p.transactions[0].tx_id] = await self.pay(p)

        async with trio.open_nursery() as n:
            for p in to_pacs008(pain, self.cfg):
                n.start_soon(one, p)
        return results

    async def pay(self, p: m.Pacs008) -> str:
        (ct,) = p.transactions
        if await self._book(self.book.prepare, ct, p.msg_id) is not None:
            return await self._book(self.book.state, ct.tx_id) or "rejected"
        waiter = self._waiting.setdefault(ct.tx_id, trio.Event())
        try:
            await self._send(p)
            self.stats["sent"] += 1
            with trio.move_on_after(self.cfg.deadline_s):
                await waiter.wait()
            if not waiter.is_set():
                await self._ask(ct.tx_id, p.msg_id, ct.end_to_end_id, waiter)
        finally:
            self._waiting.pop(ct.tx_id, None)
        return await self._book(self.book.state, ct.tx_id)

    async def _ask(self, tx_id: str, msg_id: str, e2e: str, waiter: trio.Event) -> None:
        for attempt in range(self.cfg.status_tries):
            self.stats["status_requests"] += 1
            await self._send(m.Pacs028(ref("Q", tx_id, attempt, now()), now(), self.cfg.bic,
                                       self.cfg.peer_bic,
                                       (m.StatusRequest(ref("Q", tx_id, attempt), msg_id,
                                                        PACS008, e2e, tx_id),)))
            with trio.move_on_after(self.cfg.status_wait_s):
                await waiter.wait()
            if waiter.is_set():
                return
        self.stats["timeouts"] += 1
        await self._book(self.book.resolve, tx_id, "RJCT", "AB05", "timeout")

    async def recover(self) -> int:
        """Ask for every payment left pending (after a crash); returns how many."""
        rows = await self._book(self.book.pending)

        async def one(tx_id: str, msg_id: str, e2e: str) -> None:
            waiter = self._waiting.setdefault(tx_id, trio.Event())
            try:
                await self._ask(tx_id, msg_id, e2e, waiter)
            finally:
                self._waiting.pop(tx_id, None)

        async with trio.open_nursery() as n:
            for row in rows:
                n.start_soon(one, *row)
        return len(rows)
