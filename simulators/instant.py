"""Instant-payments peer: a participant bank on the other end of the switch's instant
link (framed TCP, ``codecs/iso20022/wire.py``; see switch/instant.py for why TCP).

It takes the switch's pacs.008 and answers pacs.002 ACSC or RJCT within the scheme
deadline, or late, or never; it answers pacs.028 with the status it decided (RJCT AB06
for a payment it never received); it sends inbound pacs.008 credits and camt.056
recalls (``send_credit``, ``send_recall``) and waits for their answers.

The decision is taken when a pacs.008 arrives and kept in ``view`` (tx_id -> status):
only the *answer* is late or missing, as with a real bank whose reply is lost. By
creditor IBAN first (``outcomes``: "ACSC", "RJCT:AC04", "LATE", "LATE:RJCT:AM04",
"NEVER"), else at random for the configured shares, seeded per transaction id. A
repeated pacs.008 (same tx id) gets the same decision, answered at once. A message
that is not valid gets a pacs.002 RJCT with path and reason.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field

import trio

from payswitch.codecs.errors import FramingError
from payswitch.codecs.iso20022 import model as m
from payswitch.codecs.iso20022.api import rejection
from payswitch.codecs.iso20022.errors import Iso20022Error
from payswitch.codecs.iso20022.wire import Codec, FrameBuffer, encode

PACS008 = "pacs.008.001.08"
READ_BYTES = 65536


@dataclass(frozen=True)
class PeerConfig:
    bic: str = "PEERDEFFXXX"
    switch_bic: str = "PAYSDEFFXXX"
    late_s: float = 12.0  # when a "late" answer is sent (after the 10 s deadline)
    answer_timeout_s: float = 15.0  # how long send_credit / send_recall wait
    reject_share: float = 0.0
    late_share: float = 0.0
    never_share: float = 0.0
    seed: int = 0
    outcomes: dict[str, str] = field(default_factory=dict)
    max_frame_bytes: int = 1 << 20


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


class InstantPeer:
    def __init__(self, codec: Codec, config: PeerConfig | None = None) -> None:
        self.codec = codec
        self.cfg = config or PeerConfig()
        self.view: dict[str, str] = {}  # tx_id -> ACSC | RJCT, decided on receipt
        self.reasons: dict[str, str] = {}
        self.received: list[m.Message] = []
        self.rejections_sent = 0
        self._stream: trio.abc.Stream | None = None
        self._send_lock = trio.Lock()
        self._answers: dict[str, trio.MemorySendChannel] = {}
        self._counter = 0

    def decide(self, ct: m.CreditTransfer) -> tuple[str, str | None, str]:
        """(status, reason, timing) with timing now | late | never."""
        rule = self.cfg.outcomes.get(ct.creditor_account.id)
        if rule is None:
            c = self.cfg
            u = random.Random(f"{c.seed}|{ct.tx_id}").random()
            rule = ("RJCT:AC04" if u < c.reject_share else
                    "LATE" if u < c.reject_share + c.late_share else
                    "NEVER" if u < c.reject_share + c.late_share + c.never_share else "ACSC")
        timing = "now"
        if rule.startswith(("LATE", "NEVER")):
            timing, _, rule = rule.partition(":")
            timing, rule = timing.lower(), rule or "ACSC"
        status, _, reason = rule.partition(":")
        return status, reason or None, timing

    async def _send(self, msg: m.Message) -> None:
        if self._stream is None:
            return
        data = encode(self.codec.build(msg), self.cfg.max_frame_bytes)
        async with self._send_lock:
            await self._stream.send_all(data)

    def _id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{now():%Y%m%d%H%M%S}{self._counter:06d}"

    # -- serving the switch's link -----------------------------------------------------

    async def serve(self, port: int = 0, *,
                    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on 127.0.0.1; one link at a time (a new one replaces the old)."""
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self.handle, listeners)

    async def handle(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        frames = FrameBuffer(self.cfg.max_frame_bytes)
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    data = await stream.receive_some(READ_BYTES)
                except trio.BrokenResourceError:
                    data = b""
                if not data:
                    break
                try:
                    docs = frames.feed(data)
                except FramingError:
                    break
                for doc in docs:
                    await self._on_document(doc, nursery)
            nursery.cancel_scope.cancel()  # late answers die with their link
        if self._stream is stream:
            self._stream = None
        await trio.aclose_forcefully(stream)

    async def _on_document(self, doc: bytes, nursery: trio.Nursery) -> None:
        try:
            msg = self.codec.parse(doc)
        except Iso20022Error as e:
            self.rejections_sent += 1
            await self._send(rejection(e, msg_id=self._id("R"), created=now(),
                                       instructing_agent=self.cfg.bic,
                                       instructed_agent=self.cfg.switch_bic))
            return
        self.received.append(msg)
        if isinstance(msg, m.Pacs008):
            for ct in msg.transactions:
                await self._on_payment(msg, ct, nursery)
        elif isinstance(msg, m.Pacs028):
            for r in msg.requests:
                status = self.view.get(r.original_tx_id)
                reason = self.reasons.get(r.original_tx_id) if status else "AB06"
                await self._answer(r.original_msg_id, r.original_end_to_end_id,
                                   r.original_tx_id, status or "RJCT", reason)
        elif isinstance(msg, m.Pacs002 | m.Pacs004):
            key = msg.original_msg_id if isinstance(msg, m.Pacs002) else (
                msg.returns[0].original_msg_id if msg.returns else "")
            chan = self._answers.get(key)
            if chan is None and isinstance(msg, m.Pacs004):
                chan = self._answers.get("recall")
            if chan is not None:
                chan.send_nowait(msg)

    async def _on_payment(self, msg: m.Pacs008, ct: m.CreditTransfer,
                          nursery: trio.Nursery) -> None:
        if ct.tx_id in self.view:  # a repeat: the same decision, at once
            await self._answer(msg.msg_id, ct.end_to_end_id, ct.tx_id, self.view[ct.tx_id],
                               self.reasons.get(ct.tx_id))
            return
        status, reason, timing = self.decide(ct)
        self.view[ct.tx_id] = status
        if reason:
            self.reasons[ct.tx_id] = reason
        if timing == "now":
            await self._answer(msg.msg_id, ct.end_to_end_id, ct.tx_id, status, reason)
        elif timing == "late":
            nursery.start_soon(self._late, msg.msg_id, ct.end_to_end_id, ct.tx_id,
                               status, reason)

    async def _late(self, *args) -> None:
        await trio.sleep(self.cfg.late_s)
        await self._answer(*args)

    async def _answer(self, msg_id: str, e2e: str, tx_id: str, status: str,
                      reason: str | None) -> None:
        await self._send(m.Pacs002(
            self._id("S"), now(), msg_id, PACS008,
            transactions=(m.TxStatus(e2e, status, tx_id, m.Reason(reason) if reason else None),),
            instructing_agent=self.cfg.bic, instructed_agent=self.cfg.switch_bic))

    # -- what the peer starts ----------------------------------------------------------

    async def _request(self, key: str, msg: m.Message) -> m.Message | None:
        send, recv = trio.open_memory_channel[m.Message](1)
        self._answers[key] = send
        try:
            await self._send(msg)
            with trio.move_on_after(self.cfg.answer_timeout_s):
                return await recv.receive()
            return None
        finally:
            self._answers.pop(key, None)

    async def send_credit(self, *, amount_minor: int, currency: str, creditor_iban: str,
                          creditor_name: str = "BENEFICIARY", debtor_iban: str,
                          debtor_name: str = "PEER CUSTOMER") -> tuple[m.Pacs008,
                                                                       m.Message | None]:
        """An inbound credit to one of our customers; returns it and the answer."""
        tx = self._id("X")
        ct = m.CreditTransfer(self._id("E"), tx, amount_minor, currency, debtor_name,
                              m.Account(debtor_iban), self.cfg.bic, self.cfg.switch_bic,
                              creditor_name, m.Account(creditor_iban))
        msg = m.Pacs008(self._id("M"), now(), now().date(), self.cfg.bic,
                        self.cfg.switch_bic, (ct,))
        return msg, await self._request(msg.msg_id, msg)

    async def send_recall(self, credit: m.Pacs008, reason: str = "DUPL") -> m.Message | None:
        """camt.056 for the credit we sent; the answer is a pacs.004 or a pacs.002."""
        (ct,) = credit.transactions
        recall = m.Recall(self._id("C"), credit.msg_id, PACS008, ct.end_to_end_id, ct.tx_id,
                          ct.amount_minor, ct.currency, credit.settlement_date,
                          m.Reason(reason))
        msg = m.Camt056(self._id("A"), now(), self.cfg.bic, self.cfg.switch_bic, (recall,))
        # a pacs.004 refers to the credit's msg id; a refusal to the camt.056's
        send, recv = trio.open_memory_channel[m.Message](2)
        self._answers[credit.msg_id] = self._answers[msg.assignment_id] = send
        try:
            await self._send(msg)
            with trio.move_on_after(self.cfg.answer_timeout_s):
                return await recv.receive()
            return None
        finally:
            self._answers.pop(credit.msg_id, None)
            self._answers.pop(msg.assignment_id, None)

    async def send_raw(self, document: bytes) -> None:
        """Any bytes as one frame (tests: an invalid message)."""
        assert self._stream is not None
        async with self._send_lock:
            await self._stream.send_all(encode(document))
