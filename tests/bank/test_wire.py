"""The instant link's framing (codecs/iso20022/wire.py), and hostile input on the link."""

from __future__ import annotations

import pytest
import trio
from bankkit import DEBTOR
from hypothesis import given
from hypothesis import strategies as st
from test_instant import linked

from payswitch.codecs.errors import FramingError
from payswitch.codecs.iso20022 import model as m
from payswitch.codecs.iso20022.wire import FrameBuffer, encode
from payswitch.simulators.instant import PeerConfig

docs = st.lists(st.binary(min_size=1, max_size=300), max_size=8)


@given(docs, st.lists(st.integers(1, 50), min_size=1, max_size=20))
def test_any_chunking_gives_back_the_documents(documents, cuts):
    stream = b"".join(encode(d) for d in documents)
    buf, out, i, k = FrameBuffer(), [], 0, 0
    while i < len(stream):
        n = cuts[k % len(cuts)]
        out += buf.feed(stream[i:i + n])
        i, k = i + n, k + 1
    assert out == documents


@given(st.integers(301, 2**32 - 1))
def test_a_length_over_the_cap_is_refused_before_buffering(n):
    with pytest.raises(FramingError):
        FrameBuffer(max_frame_bytes=300).feed(n.to_bytes(4, "big") + b"x")
    with pytest.raises(FramingError):
        encode(b"x" * 301, max_frame_bytes=300)


HOSTILE = [
    b"not xml at all",
    b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><d>&x;</d>',
    b"<Document xmlns='urn:iso:std:iso:20022:tech:xsd:pacs.008.001.08'><FIToFICstmrCdtTrf/>"
    b"</Document>",
    b"<Document xmlns='urn:iso:std:iso:20022:tech:xsd:camt.999.001.01'/>",
    b"<a>" * 100 + b"</a>" * 100,
]


def test_hostile_documents_get_a_pacs002_rjct_and_the_link_stays_up(pg_dsn):
    async def main():
        got = []
        async with trio.open_nursery() as n:
            peer, sw, book = await linked(pg_dsn, PeerConfig(), n)
            book.open_customer(DEBTOR, "EUR", 0)
            send, recv = trio.open_memory_channel(10)
            peer._answers["NOTPROVIDED"] = send
            for doc in HOSTILE:
                await peer.send_raw(doc)
                with trio.fail_after(5):
                    got.append(await recv.receive())
            _, answer = await peer.send_credit(amount_minor=1, currency="EUR",
                                               creditor_iban=DEBTOR, debtor_iban=DEBTOR)
            n.cancel_scope.cancel()
        book.close()
        return got, answer, sw.stats

    got, answer, stats = trio.run(main)
    assert all(isinstance(g, m.Pacs002) and g.group_status == "RJCT" for g in got)
    assert len(got) == len(HOSTILE) == stats["rejected_inbound"]
    assert answer.transactions[0].status == "ACSC"  # still serving


def test_a_credit_in_a_currency_we_do_not_keep_is_refused_not_a_crash(pg_dsn):
    async def main():
        async with trio.open_nursery() as n:
            peer, sw, book = await linked(pg_dsn, PeerConfig(), n)
            book.open_customer(DEBTOR, "EUR", 0)
            _, odd = await peer.send_credit(amount_minor=100, currency="XTS",
                                            creditor_iban=DEBTOR, debtor_iban=DEBTOR)
            _, fine = await peer.send_credit(amount_minor=100, currency="EUR",
                                             creditor_iban=DEBTOR, debtor_iban=DEBTOR)
            n.cancel_scope.cancel()
        book.close()
        return odd, fine

    odd, fine = trio.run(main)
    assert odd is not None and odd.transactions[0].status == "RJCT"
    assert fine.transactions[0].status == "ACSC"


def test_a_store_failure_on_an_inbound_message_does_not_take_the_link_down(pg_dsn):
    async def main():
        async with trio.open_nursery() as n:
            peer, sw, book = await linked(pg_dsn, PeerConfig(answer_timeout_s=1.0), n)
            book.open_customer(DEBTOR, "EUR", 0)
            book.db.close()  # the table connection is gone (database restarted, say)
            book.led.conn.close()
            _, lost = await peer.send_credit(amount_minor=100, currency="EUR",
                                             creditor_iban=DEBTOR, debtor_iban=DEBTOR)
            send, recv = trio.open_memory_channel(1)
            peer._answers["NOTPROVIDED"] = send
            await peer.send_raw(b"not xml")
            with trio.fail_after(5):
                still_up = await recv.receive()
            n.cancel_scope.cancel()
        return lost, still_up, sw.stats

    lost, still_up, stats = trio.run(main)
    assert lost is None  # no answer we cannot stand behind: the sender asks again
    assert still_up.group_status == "RJCT" and stats["store_errors"] == 1
