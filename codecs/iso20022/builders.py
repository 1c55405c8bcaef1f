"""Model -> XML element tree, in the element order of each message's XSD."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from lxml import etree

from payswitch.codecs.iso20022 import model as m
from payswitch.codecs.iso20022.money import to_text
from payswitch.codecs.iso20022.schemas import VERSIONS, namespace


class _Maker:
    """``E("Tag", child, "text", None, [children])``: None is skipped, lists flattened.

    E builds light (tag, attrs, text, children) tuples; ``element`` turns the finished
    tree into lxml elements top-down with SubElement, so every element inherits the
    root's default namespace instead of carrying (and reconciling) its own: 3x faster.
    """

    def __init__(self, version: str) -> None:
        self.version = version

    def __call__(self, tag: str, *children, **attrs):
        text: str | None = None
        kids: list = []
        self._add(kids, children)
        if kids and isinstance(kids[-1], str):
            text = kids.pop()
        return (tag, attrs, text, kids)

    def _add(self, out: list, children) -> None:
        for c in children:
            if c is None:
                continue
            if isinstance(c, list | tuple) and (not c or not isinstance(c[0], str)):
                self._add(out, c)
            else:
                out.append(c)

    def element(self, node):
        ns = namespace(self.version)
        root = etree.Element(f"{{{ns}}}{node[0]}", node[1], nsmap={None: ns})
        self._fill(root, node, f"{{{ns}}}")
        return root

    def _fill(self, el, node, ns: str) -> None:
        el.text = node[2]
        for child in node[3]:
            self._fill(etree.SubElement(el, ns + child[0], child[1]), child, ns)


def _ts(t: dt.datetime) -> str:
    if t.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware")  # UTC at rest: no guessing
    return t.isoformat()


def _agent(E, tag: str, bic: str | None):
    return None if bic is None else E(tag, E("FinInstnId", E("BICFI", bic)))


def _account(E, tag: str, a: m.Account):
    inner = E("IBAN", a.id) if a.iban else E("Othr", E("Id", a.id))
    return E(tag, E("Id", inner))


def _amount(E, tag: str, minor: int, ccy: str):
    return E(tag, to_text(minor, ccy), Ccy=ccy)


def _reason(E, tag: str, r: m.Reason | None):
    if r is None:
        return None
    return E(tag, E("Rsn", E("Cd", r.code)) if r.code else None,
             [E("AddtlInf", s) for s in r.info])


def _orig_group(E, msg_id: str, name: str):
    return E("OrgnlGrpInf", E("OrgnlMsgId", msg_id), E("OrgnlMsgNmId", name))


def _single_currency_total(E, tag: str, items) -> object:
    ccys = {i.currency for i in items}
    if len(ccys) != 1:
        return None
    return _amount(E, tag, sum(i.amount_minor for i in items), ccys.pop())


def pain001(msg: m.Pain001):
    E = _Maker(VERSIONS["pain.001"])
    n = sum(len(p.transfers) for p in msg.payments)

    def transfer(t: m.Transfer):
        return E("CdtTrfTxInf", E("PmtId", E("EndToEndId", t.end_to_end_id)),
                 E("Amt", _amount(E, "InstdAmt", t.amount_minor, t.currency)),
                 _agent(E, "CdtrAgt", t.creditor_agent), E("Cdtr", E("Nm", t.creditor_name)),
                 _account(E, "CdtrAcct", t.creditor_account),
                 E("RmtInf", E("Ustrd", t.remittance)) if t.remittance is not None else None)

    def payment(p: m.PaymentInfo):
        return E("PmtInf", E("PmtInfId", p.payment_id), E("PmtMtd", "TRF"),
                 E("NbOfTxs", str(len(p.transfers))),
                 E("ReqdExctnDt", E("Dt", p.requested_date.isoformat())),
                 E("Dbtr", E("Nm", p.debtor_name)), _account(E, "DbtrAcct", p.debtor_account),
                 _agent(E, "DbtrAgt", p.debtor_agent), [transfer(t) for t in p.transfers])

    return E.element(E("Document", E("CstmrCdtTrfInitn",
             E("GrpHdr", E("MsgId", msg.msg_id), E("CreDtTm", _ts(msg.created)),
               E("NbOfTxs", str(n)), E("InitgPty", E("Nm", msg.initiating_party))),
             [payment(p) for p in msg.payments])))


def pacs008(msg: m.Pacs008):
    E = _Maker(VERSIONS["pacs.008"])

    def tx(t: m.CreditTransfer):
        return E("CdtTrfTxInf",
                 E("PmtId", E("EndToEndId", t.end_to_end_id), E("TxId", t.tx_id)),
                 _amount(E, "IntrBkSttlmAmt", t.amount_minor, t.currency),
                 E("ChrgBr", t.charge_bearer),
                 E("Dbtr", E("Nm", t.debtor_name)), _account(E, "DbtrAcct", t.debtor_account),
                 _agent(E, "DbtrAgt", t.debtor_agent), _agent(E, "CdtrAgt", t.creditor_agent),
                 E("Cdtr", E("Nm", t.creditor_name)),
                 _account(E, "CdtrAcct", t.creditor_account),
                 E("RmtInf", E("Ustrd", t.remittance)) if t.remittance is not None else None)

    return E.element(E("Document", E("FIToFICstmrCdtTrf",
             E("GrpHdr", E("MsgId", msg.msg_id), E("CreDtTm", _ts(msg.created)),
               E("NbOfTxs", str(len(msg.transactions))),
               _single_currency_total(E, "TtlIntrBkSttlmAmt", msg.transactions),
               E("IntrBkSttlmDt", msg.settlement_date.isoformat()),
               E("SttlmInf", E("SttlmMtd", msg.settlement_method)),
               _agent(E, "InstgAgt", msg.instructing_agent),
               _agent(E, "InstdAgt", msg.instructed_agent)),
             [tx(t) for t in msg.transactions])))


def pacs002(msg: m.Pacs002):
    E = _Maker(VERSIONS["pacs.002"])

    def tx(t: m.TxStatus):
        return E("TxInfAndSts", E("OrgnlEndToEndId", t.original_end_to_end_id),
                 E("OrgnlTxId", t.original_tx_id) if t.original_tx_id is not None else None,
                 E("TxSts", t.status), _reason(E, "StsRsnInf", t.reason))

    return E.element(E("Document", E("FIToFIPmtStsRpt",
             E("GrpHdr", E("MsgId", msg.msg_id), E("CreDtTm", _ts(msg.created)),
               _agent(E, "InstgAgt", msg.instructing_agent),
               _agent(E, "InstdAgt", msg.instructed_agent)),
             E("OrgnlGrpInfAndSts", E("OrgnlMsgId", msg.original_msg_id),
               E("OrgnlMsgNmId", msg.original_msg_name),
               E("GrpSts", msg.group_status) if msg.group_status is not None else None,
               _reason(E, "StsRsnInf", msg.group_reason)),
             [tx(t) for t in msg.transactions])))


def pacs004(msg: m.Pacs004):
    E = _Maker(VERSIONS["pacs.004"])

    def tx(r: m.PaymentReturn):
        return E("TxInf", E("RtrId", r.return_id),
                 _orig_group(E, r.original_msg_id, r.original_msg_name),
                 E("OrgnlEndToEndId", r.original_end_to_end_id),
                 E("OrgnlTxId", r.original_tx_id),
                 _amount(E, "RtrdIntrBkSttlmAmt", r.amount_minor, r.currency),
                 _reason(E, "RtrRsnInf", r.reason))

    return E.element(E("Document", E("PmtRtr",
             E("GrpHdr", E("MsgId", msg.msg_id), E("CreDtTm", _ts(msg.created)),
               E("NbOfTxs", str(len(msg.returns))),
               _single_currency_total(E, "TtlRtrdIntrBkSttlmAmt", msg.returns),
               E("IntrBkSttlmDt", msg.settlement_date.isoformat()),
               E("SttlmInf", E("SttlmMtd", "CLRG")),
               _agent(E, "InstgAgt", msg.instructing_agent),
               _agent(E, "InstdAgt", msg.instructed_agent)),
             [tx(r) for r in msg.returns])))


def camt056(msg: m.Camt056):
    E = _Maker(VERSIONS["camt.056"])

    def tx(r: m.Recall):
        return E("TxInf", E("CxlId", r.cancellation_id),
                 _orig_group(E, r.original_msg_id, r.original_msg_name),
                 E("OrgnlEndToEndId", r.original_end_to_end_id),
                 E("OrgnlTxId", r.original_tx_id),
                 _amount(E, "OrgnlIntrBkSttlmAmt", r.amount_minor, r.currency),
                 E("OrgnlIntrBkSttlmDt", r.settlement_date.isoformat()),
                 _reason(E, "CxlRsnInf", r.reason))

    return E.element(E("Document", E("FIToFIPmtCxlReq",
             E("Assgnmt", E("Id", msg.assignment_id), E("Assgnr", _agent(E, "Agt", msg.assigner)),
               E("Assgne", _agent(E, "Agt", msg.assignee)), E("CreDtTm", _ts(msg.created))),
             E("Undrlyg", [tx(r) for r in msg.recalls]))))


def pacs028(msg: m.Pacs028):
    E = _Maker(VERSIONS["pacs.028"])

    def tx(r: m.StatusRequest):
        return E("TxInf", E("StsReqId", r.request_id),
                 _orig_group(E, r.original_msg_id, r.original_msg_name),
                 E("OrgnlEndToEndId", r.original_end_to_end_id),
                 E("OrgnlTxId", r.original_tx_id))

    return E.element(E("Document", E("FIToFIPmtStsReq",
             E("GrpHdr", E("MsgId", msg.msg_id), E("CreDtTm", _ts(msg.created)),
               _agent(E, "InstgAgt", msg.instructing_agent),
               _agent(E, "InstdAgt", msg.instructed_agent)),
             [tx(r) for r in msg.requests])))


def _entry(E, e: m.Entry, ccy: str):
    return E("Ntry", E("NtryRef", e.reference), _amount(E, "Amt", e.amount_minor, ccy),
             E("CdtDbtInd", "CRDT" if e.credit else "DBIT"), E("Sts", E("Cd", "BOOK")),
             E("BookgDt", E("Dt", e.booking_date.isoformat())),
             E("BkTxCd", E("Prtry", E("Cd", e.bank_tx_code))),
             None if e.end_to_end_id is None else E("NtryDtls", E("TxDtls", E("Refs", E(
                 "EndToEndId", e.end_to_end_id)))))


def _balance(E, code: str, minor: int, ccy: str, day: dt.date):
    return E("Bal", E("Tp", E("CdOrPrtry", E("Cd", code))), _amount(E, "Amt", abs(minor), ccy),
             E("CdtDbtInd", "DBIT" if minor < 0 else "CRDT"), E("Dt", E("Dt", day.isoformat())))


def _cash_account(E, a: m.Account, ccy: str):
    inner = E("IBAN", a.id) if a.iban else E("Othr", E("Id", a.id))
    return E("Acct", E("Id", inner), E("Ccy", ccy))


def camt053(msg: m.Camt053):
    E = _Maker(VERSIONS["camt.053"])

    def stmt(s: m.Statement):
        return E("Stmt", E("Id", s.id), _cash_account(E, s.account, s.currency),
                 _balance(E, "OPBD", s.opening_balance_minor, s.currency, s.opening_date),
                 _balance(E, "CLBD", s.closing_balance_minor, s.currency, s.closing_date),
                 [_entry(E, e, s.currency) for e in s.entries])

    return E.element(E("Document", E("BkToCstmrStmt",
             E("GrpHdr", E("MsgId", msg.msg_id), E("CreDtTm", _ts(msg.created))),
             [stmt(s) for s in msg.statements])))


def camt054(msg: m.Camt054):
    E = _Maker(VERSIONS["camt.054"])

    def ntfctn(n: m.Notification):
        return E("Ntfctn", E("Id", n.id), _cash_account(E, n.account, n.currency),
                 [_entry(E, e, n.currency) for e in n.entries])

    return E.element(E("Document", E("BkToCstmrDbtCdtNtfctn",
             E("GrpHdr", E("MsgId", msg.msg_id), E("CreDtTm", _ts(msg.created))),
             [ntfctn(n) for n in msg.notifications])))


BUILDERS: dict[type, Callable[[Any], Any]] = {
    m.Pain001: pain001, m.Pacs008: pacs008, m.Pacs002: pacs002, m.Pacs004: pacs004,
    m.Camt056: camt056, m.Pacs028: pacs028, m.Camt053: camt053, m.Camt054: camt054,
}
