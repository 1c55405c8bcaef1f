"""The demo's bank-payments phase: instant payments with the peer bank, an ACH payout
file with the operator's returns and NOC, and a camt.053 at the end of the day.

``run(dsn, mac)`` (mac: the ledger's event MAC callable) returns a report dict;
``format_lines(report)`` its text. ``payswitch demo`` calls both, before its ledger
verify. Everything runs in this process on loopback: the peer bank is
``simulators.instant.InstantPeer`` on 127.0.0.1 port 0, the ACH operator is
``simulators.ach.AchOperator`` (files in, files out).

The scheme deadline is 10 s; the demo uses 1 s (and a late answer after 4 s) so the
phase takes seconds. Schemas: ``$PAYSWITCH_ISO20022_SCHEMAS`` or the cache ``make
setup`` fills; a message whose XSD is in neither is checked by the model alone and
named in ``unvalidated``.
"""

from __future__ import annotations

import datetime as dt

import psycopg
import trio

from payswitch.codecs import bankcli, nacha
from payswitch.codecs.iso20022 import SchemaStore
from payswitch.codecs.iso20022 import model as m
from payswitch.codecs.iso20022.wire import Codec
from payswitch.ledger import new_account
from payswitch.ledger.statements import camt053, camt054
from payswitch.ledger.types import Transfer
from payswitch.simulators.ach import AchOperator, OperatorConfig
from payswitch.simulators.instant import InstantPeer, PeerConfig
from payswitch.switch.ach_desk import AchDesk
from payswitch.switch.instant import InstantConfig, InstantSwitch
from payswitch.switch.instant_book import (
    InstantBook,
    customer_account_id,
    det_id,
    settlement_account_id,
)

DEBTOR = "DE89370400440532013000"
CREDITORS = [f"FR7630006000011234567890{i:03d}" for i in range(5)]
PEER_RULES = {CREDITORS[1]: "RJCT:AC04", CREDITORS[2]: "LATE"}
DEMO_INSTANT = InstantConfig(deadline_s=1.0, status_wait_s=3.0, status_tries=2)
MERCHANTS = {"merchant-a": ("111000025", "4000001", 125_00), "merchant-b": ("021000021",
                                                                           "4000002", 980_00),
             "merchant-c": ("091000019", "4000003", 42_50)}
ACH_OUTCOMES = {"4000002": "R03", "4000003": "C01"}


def _pain001(now: dt.datetime) -> m.Pain001:
    transfers = tuple(m.Transfer(f"DEMO-E2E-{i}", 1000 * (i + 1), "EUR", "PEERDEFFXXX",
                                 f"SUPPLIER {i}", m.Account(iban), f"invoice {i}")
                      for i, iban in enumerate(CREDITORS))
    return m.Pain001(f"DEMO-PAIN-{now:%Y%m%d%H%M%S}", now, "DEMO CORP", (m.PaymentInfo(
        "DEMO-PMT-1", now.date(), "DEMO CORP", m.Account(DEBTOR), "PAYSDEFFXXX",
        transfers),))


async def _instant(book: InstantBook, codec: Codec) -> dict:
    peer = InstantPeer(codec, PeerConfig(late_s=4.0, outcomes=PEER_RULES))
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    # the batch goes through the same path as `payswitch iso20022 submit FILE`
    pain = codec.parse(codec.build(_pain001(now)), expect="pain.001")
    assert isinstance(pain, m.Pain001)
    sw = InstantSwitch(book, codec, DEMO_INSTANT)
    async with trio.open_nursery() as n:
        port = await n.start(peer.serve)
        await n.start(sw.run, await trio.open_tcp_stream("127.0.0.1", port))
        states = await sw.submit(pain)
        credit, answer = await peer.send_credit(amount_minor=25_00, currency="EUR",
                                                creditor_iban=DEBTOR,
                                                debtor_iban="NL91ABNA0417164300")
        dup, _ = await peer.send_credit(amount_minor=7_00, currency="EUR",
                                        creditor_iban=DEBTOR, debtor_iban="NL91ABNA0417164300")
        recall = await peer.send_recall(dup)
        n.cancel_scope.cancel()
    counts: dict[str, int] = {}
    for s in states.values():
        counts[s] = counts.get(s, 0) + 1
    agree = all((s == "settled") == (peer.view.get(tx) == "ACSC") for tx, s in states.items())
    return {"pain001_instructions": len(states), "states": counts,
            "pacs008_sent": sw.stats["sent"], "pacs028_sent": sw.stats["status_requests"],
            "timeouts": sw.stats["timeouts"], "peer_agrees": agree,
            "inbound_credit": answer.transactions[0].status
            if isinstance(answer, m.Pacs002) else None,
            "recall_answer": type(recall).__name__ if recall else None,
            "inbound_transfer_id": det_id("in", credit.instructing_agent,
                                          credit.transactions[0].tx_id)}


def _ach(desk: AchDesk, day: dt.date) -> dict:
    funding = 0xDE30
    desk.led.create_accounts([new_account(funding, 840, 9)] + [
        new_account(_payable(p), 840, 2, debits_must_not_exceed_credits=True)
        for p in MERCHANTS])
    desk.led.create_transfers([Transfer(_payable(p) + 1, funding, _payable(p), amount, 840, 1)
                               for p, (_, _, amount) in MERCHANTS.items()])
    for p, (routing, account, _) in MERCHANTS.items():
        desk.add_payee(p, _payable(p), p.upper(), routing, account)
    made = desk.originate(day)
    if made is None:
        return {"entries": 0}
    text, f = made
    op = AchOperator(OperatorConfig(outcomes=ACH_OUTCOMES))
    answer = op.submit(text, dt.datetime.combine(day, dt.time(10), dt.UTC))
    settled = desk.settle(max(answer.settlement_dates.values()))
    ret = desk.process(nacha.write(answer.returns)) if answer.returns else None
    noc = desk.process(nacha.write(answer.nocs)) if answer.nocs else None
    return {"file_entries": len(f.entries()), "file_total_minor": sum(
        e.amount for e in f.entries()), "ack_accepted": answer.ack.accepted,
        "settled_minor": settled, "returns": ret.codes if ret else {},
        "returned_minor": ret.returned_minor if ret else 0,
        "nocs": noc.codes if noc else {},
        "payee_after_noc": desk.payee("merchant-c")[1]}


def _payable(payee: str) -> int:
    return 0xDE31 * 1000 + sorted(MERCHANTS).index(payee) * 10


def _statement(dsn: str, codec: Codec, book: InstantBook, day: dt.date,
               report_credit: int) -> dict:
    accounts = [(customer_account_id(DEBTOR), m.Account(DEBTOR), "EUR"),
                (settlement_account_id("EUR"), m.Account("INSTANT-SETTLEMENT-EUR",
                                                         iban=False), "EUR")]
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with psycopg.connect(dsn) as conn:
        doc = camt053(conn, accounts, day, now)
        note = camt054(conn, report_credit, accounts[0][0], accounts[0][1], "EUR", now)
    codec.build(doc)  # XSD-validated
    if note is not None:
        codec.build(note)
    balances = {b.id: b.credits_posted - b.debits_posted
                for b in book.led.lookup_accounts([a for a, _, _ in accounts])}
    equal = all(s.closing_balance_minor == balances[a]
                for s, (a, _, _) in zip(doc.statements, accounts, strict=True))
    return {"statements": len(doc.statements),
            "camt054_for_inbound_credit": note is not None,
            "entries": sum(len(s.entries) for s in doc.statements),
            "customer_closing_minor": doc.statements[0].closing_balance_minor,
            "equals_ledger": equal}


def run(dsn: str, mac) -> dict:
    codec = Codec(SchemaStore(bankcli.schema_dir(None, None)), require_schemas=False)
    day = dt.datetime.now(dt.UTC).date()
    book = InstantBook(dsn, mac)
    desk = AchDesk(dsn, mac)
    try:
        book.open_customer(DEBTOR, "EUR", 1_000_000)
        instant = trio.run(_instant, book, codec)
        report = {"instant": instant, "ach": _ach(desk, day),
                  "camt053": _statement(dsn, codec, book, day,
                                        instant.pop("inbound_transfer_id"))}
    finally:
        book.close()
        desk.close()
    report["unvalidated"] = sorted(codec.unvalidated)
    report["ok"] = (report["instant"]["peer_agrees"] and report["camt053"]["equals_ledger"]
                    and report["camt053"]["camt054_for_inbound_credit"]
                    and report["ach"].get("ack_accepted", False))
    return report


def format_lines(r: dict) -> list[str]:
    i, a, c = r["instant"], r["ach"], r["camt053"]
    return [
        f"  bank payments: pain.001 with {i['pain001_instructions']} instructions -> "
        f"{i['pacs008_sent']} pacs.008 -> {i['states']}; {i['pacs028_sent']} pacs.028 "
        f"(late answer), peer agrees {i['peer_agrees']}; inbound credit "
        f"{i['inbound_credit']}, recall answered {i['recall_answer']}",
        f"    ACH payout file: {a.get('file_entries', 0)} entries, "
        f"{a.get('file_total_minor', 0)} cents, settled {a.get('settled_minor', 0)}; returns "
        f"{a.get('returns')} ({a.get('returned_minor', 0)} cents back to payables), "
        f"NOCs {a.get('nocs')}",
        f"    camt.053: {c['statements']} statements, {c['entries']} entries, closing "
        f"balances equal the ledger: {c['equals_ledger']}; camt.054 for the inbound credit: "
        f"{c['camt054_for_inbound_credit']}",
        f"    messages without an XSD here (model-checked only): "
        f"{', '.join(r['unvalidated']) or 'none'}"]
