"""The scheme deadline with the default config (10 s, 3 pacs.028 x 5 s) on trio's
MockClock, the peer over an in-memory stream and an in-memory book: the timing rules
on their own, without PostgreSQL or a socket."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from bankkit import DEBTOR, codec, creditor, pain001

from payswitch.codecs.iso20022 import model as m
from payswitch.simulators.instant import InstantPeer, PeerConfig
from payswitch.switch.instant import InstantConfig, InstantSwitch


class MemBook:
    blocking = False

    def __init__(self) -> None:
        self.rows: dict[str, list] = {}  # tx -> [state, msg_id, e2e, resolved_by]

    def prepare(self, ct: m.CreditTransfer, msg_id: str) -> str | None:
        self.rows.setdefault(ct.tx_id, ["pending", msg_id, ct.end_to_end_id, None])
        return None

    def state(self, tx_id):
        return self.rows[tx_id][0] if tx_id in self.rows else None

    def pending(self):
        return [(tx, r[1], r[2]) for tx, r in self.rows.items() if r[0] == "pending"]

    def tx_of_msg(self, msg_id):
        return [tx for tx, r in self.rows.items() if r[1] == msg_id]

    def resolve(self, tx_id, status, reason, by):
        row = self.rows[tx_id]
        if row[0] == "pending":
            row[0], row[3] = ("settled" if status == "ACSC" else "reversed"), by
        return row[0]


class DeafPeer(InstantPeer):
    """Never answers a status request either."""

    async def _on_document(self, doc, nursery):
        if b"pacs.028" not in doc:
            await super()._on_document(doc, nursery)


async def pay(peer: InstantPeer) -> tuple[MemBook, InstantSwitch, float]:
    book = MemBook()
    sw = InstantSwitch(book, codec(), InstantConfig())  # the scheme's defaults
    a, b = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as n:
        n.start_soon(peer.handle, b)
        await n.start(sw.run, a)
        start = trio.current_time()
        await sw.submit(pain001([1000], creditors=[creditor(0)], debtor=DEBTOR))
        took = trio.current_time() - start
        n.cancel_scope.cancel()
    return book, sw, took


@pytest.mark.parametrize("late_s, asked, by", [(9.9, 0, "pacs.002"), (10.1, 1, "pacs.002")])
def test_an_answer_inside_the_deadline_is_waited_for_after_it_is_asked_for(late_s, asked, by):
    peer = InstantPeer(codec(), PeerConfig(late_s=late_s, outcomes={creditor(0): "LATE"}))
    book, sw, took = trio.run(pay, peer, clock=trio.testing.MockClock(autojump_threshold=0))
    ((state, _, _, resolved_by),) = book.rows.values()
    assert (state, resolved_by, sw.stats["status_requests"]) == ("settled", by, asked)
    assert took == pytest.approx(min(late_s, 10.0), abs=0.01)


def test_no_answer_at_all_is_reversed_after_the_status_requests():
    peer = DeafPeer(codec(), PeerConfig(outcomes={creditor(0): "NEVER"}))
    book, sw, took = trio.run(pay, peer, clock=trio.testing.MockClock(autojump_threshold=0))
    ((state, _, _, resolved_by),) = book.rows.values()
    assert (state, resolved_by, sw.stats["status_requests"]) == ("reversed", "timeout", 3)
    assert took == pytest.approx(10.0 + 3 * 5.0, abs=0.01)
