"""Schema-valid XML element tree -> model, checking what the XSD cannot.

The XSD has already fixed the structure, so the readers below only look things
up; what they check is coherence (counts, totals, balances, decimals per
currency) and the parts of the model the XSD leaves optional (names, BICs).
Every failure is an Iso20022Error naming the element.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from lxml import etree

from payswitch.codecs.iso20022 import model as m
from payswitch.codecs.iso20022.errors import Iso20022Error
from payswitch.codecs.iso20022.money import from_text, to_text
from payswitch.codecs.iso20022.safexml import element_path


class _Reader:
    def __init__(self, root) -> None:
        self.ns = "{" + etree.QName(root).namespace + "}"
        self._qualified: dict[str, str] = {}

    def _q(self, path: str) -> str:
        q = self._qualified.get(path)
        if q is None:
            q = self._qualified[path] = "/".join(self.ns + p for p in path.split("/"))
        return q

    def el(self, parent, path: str):
        found = parent.find(self._q(path))
        if found is not None:
            return found
        for step in path.split("/"):  # name the deepest element that is there
            child = parent.find(self.ns + step)
            if child is None:
                raise Iso20022Error(f"{step} is required here", path=element_path(parent))
            parent = child
        raise AssertionError(path)

    def opt_el(self, parent, path: str):
        return parent.find(self._q(path))

    def all(self, parent, path: str) -> list:
        return parent.findall(self._q(path))

    def text(self, parent, path: str) -> str:
        return self.el(parent, path).text or ""

    def opt(self, parent, path: str) -> str | None:
        found = self.opt_el(parent, path)
        return None if found is None else (found.text or "")

    def date(self, parent, path: str) -> dt.date:
        e = self.el(parent, path)
        try:
            return dt.date.fromisoformat(e.text or "")
        except ValueError:
            raise Iso20022Error("not a date this reader takes", path=element_path(e)) from None

    def time(self, parent, path: str) -> dt.datetime:
        e = self.el(parent, path)
        try:
            t = dt.datetime.fromisoformat(e.text or "")
        except ValueError:
            raise Iso20022Error("not a date-time this reader takes",
                                path=element_path(e)) from None
        # A time without zone is read as UTC: the convention of this project at rest.
        return t if t.tzinfo else t.replace(tzinfo=dt.UTC)

    def amount(self, parent, path: str) -> tuple[int, str]:
        e = self.el(parent, path)
        ccy = e.get("Ccy", "")
        try:
            return from_text(e.text or "", ccy), ccy
        except ValueError as x:
            raise Iso20022Error(str(x), path=element_path(e)) from None

    def bic(self, parent, path: str) -> str:
        agent = self.el(parent, path)
        found = self.opt_el(agent, "FinInstnId/BICFI")
        if found is None:
            raise Iso20022Error("agent without a BICFI is not supported",
                                path=element_path(agent))
        return found.text or ""

    def opt_bic(self, parent, path: str) -> str | None:
        return None if self.opt_el(parent, path) is None else self.bic(parent, path)

    def account(self, parent, path: str) -> m.Account:
        acct = self.el(parent, path)
        iban = self.opt(acct, "Id/IBAN")
        if iban is not None:
            return m.Account(iban)
        return m.Account(self.text(acct, "Id/Othr/Id"), iban=False)

    def reason(self, parent, path: str) -> m.Reason | None:
        e = self.opt_el(parent, path)
        if e is None:
            return None
        return m.Reason(self.opt(e, "Rsn/Cd"),
                        tuple(a.text or "" for a in self.all(e, "AddtlInf")))

    def count(self, parent, path: str, actual: int) -> None:
        e = self.el(parent, path)
        if int(e.text or "0") != actual:
            raise Iso20022Error(f"says {e.text} transactions, the message has {actual}",
                                path=element_path(e))

    def total(self, parent, path: str, items) -> None:
        e = self.opt_el(parent, path)
        if e is None:
            return
        minor, ccy = self.amount(parent, path)
        if {i.currency for i in items} != {ccy} or minor != sum(i.amount_minor for i in items):
            raise Iso20022Error("does not equal the sum of the transactions",
                                path=element_path(e))


def pain001(root) -> m.Pain001:
    r = _Reader(root)
    doc = r.el(root, "CstmrCdtTrfInitn")
    hdr = r.el(doc, "GrpHdr")
    payments = []
    for p in r.all(doc, "PmtInf"):
        transfers = []
        for t in r.all(p, "CdtTrfTxInf"):
            amount, ccy = r.amount(t, "Amt/InstdAmt")
            transfers.append(m.Transfer(
                end_to_end_id=r.text(t, "PmtId/EndToEndId"), amount_minor=amount, currency=ccy,
                creditor_agent=r.bic(t, "CdtrAgt"), creditor_name=r.text(t, "Cdtr/Nm"),
                creditor_account=r.account(t, "CdtrAcct"), remittance=r.opt(t, "RmtInf/Ustrd")))
        if r.opt_el(p, "NbOfTxs") is not None:
            r.count(p, "NbOfTxs", len(transfers))
        payments.append(m.PaymentInfo(
            payment_id=r.text(p, "PmtInfId"), requested_date=r.date(p, "ReqdExctnDt/Dt"),
            debtor_name=r.text(p, "Dbtr/Nm"), debtor_account=r.account(p, "DbtrAcct"),
            debtor_agent=r.bic(p, "DbtrAgt"), transfers=tuple(transfers)))
    r.count(hdr, "NbOfTxs", sum(len(p.transfers) for p in payments))
    _control_sum(r, hdr, doc)
    return m.Pain001(msg_id=r.text(hdr, "MsgId"), created=r.time(hdr, "CreDtTm"),
                     initiating_party=r.text(hdr, "InitgPty/Nm"), payments=tuple(payments))


def _control_sum(r: _Reader, hdr, doc) -> None:
    """CtrlSum, when sent, is the plain sum of the instructed amounts' numbers."""
    e = r.opt_el(hdr, "CtrlSum")
    if e is None:
        return
    amounts = doc.iterfind(r._q("PmtInf/CdtTrfTxInf/Amt/InstdAmt"))
    if Decimal(e.text or "0") != sum((Decimal(a.text or "0") for a in amounts), Decimal(0)):
        raise Iso20022Error("does not equal the sum of the instructed amounts",
                            path=element_path(e))


def pacs008(root) -> m.Pacs008:
    r = _Reader(root)
    doc = r.el(root, "FIToFICstmrCdtTrf")
    hdr = r.el(doc, "GrpHdr")
    txs = []
    for t in r.all(doc, "CdtTrfTxInf"):
        amount, ccy = r.amount(t, "IntrBkSttlmAmt")
        txs.append(m.CreditTransfer(
            end_to_end_id=r.text(t, "PmtId/EndToEndId"), tx_id=r.text(t, "PmtId/TxId"),
            amount_minor=amount, currency=ccy, debtor_name=r.text(t, "Dbtr/Nm"),
            debtor_account=r.account(t, "DbtrAcct"), debtor_agent=r.bic(t, "DbtrAgt"),
            creditor_agent=r.bic(t, "CdtrAgt"), creditor_name=r.text(t, "Cdtr/Nm"),
            creditor_account=r.account(t, "CdtrAcct"), remittance=r.opt(t, "RmtInf/Ustrd"),
            charge_bearer=r.text(t, "ChrgBr")))
    r.count(hdr, "NbOfTxs", len(txs))
    r.total(hdr, "TtlIntrBkSttlmAmt", txs)
    return m.Pacs008(
        msg_id=r.text(hdr, "MsgId"), created=r.time(hdr, "CreDtTm"),
        settlement_date=r.date(hdr, "IntrBkSttlmDt"), instructing_agent=r.bic(hdr, "InstgAgt"),
        instructed_agent=r.bic(hdr, "InstdAgt"), transactions=tuple(txs),
        settlement_method=r.text(hdr, "SttlmInf/SttlmMtd"))


def pacs002(root) -> m.Pacs002:
    r = _Reader(root)
    doc = r.el(root, "FIToFIPmtStsRpt")
    hdr = r.el(doc, "GrpHdr")
    grp = r.el(doc, "OrgnlGrpInfAndSts")
    txs = tuple(m.TxStatus(
        original_end_to_end_id=r.text(t, "OrgnlEndToEndId"), status=r.text(t, "TxSts"),
        original_tx_id=r.opt(t, "OrgnlTxId"), reason=r.reason(t, "StsRsnInf"))
        for t in r.all(doc, "TxInfAndSts"))
    return m.Pacs002(
        msg_id=r.text(hdr, "MsgId"), created=r.time(hdr, "CreDtTm"),
        original_msg_id=r.text(grp, "OrgnlMsgId"), original_msg_name=r.text(grp, "OrgnlMsgNmId"),
        group_status=r.opt(grp, "GrpSts"), group_reason=r.reason(grp, "StsRsnInf"),
        transactions=txs, instructing_agent=r.opt_bic(hdr, "InstgAgt"),
        instructed_agent=r.opt_bic(hdr, "InstdAgt"))


def _return_reason(r: _Reader, parent, path: str) -> m.Reason:
    reason = r.reason(parent, path)
    if reason is None:
        raise Iso20022Error(f"{path} is required here", path=element_path(parent))
    return reason


def pacs004(root) -> m.Pacs004:
    r = _Reader(root)
    doc = r.el(root, "PmtRtr")
    hdr = r.el(doc, "GrpHdr")
    rets = []
    for t in r.all(doc, "TxInf"):
        amount, ccy = r.amount(t, "RtrdIntrBkSttlmAmt")
        rets.append(m.PaymentReturn(
            return_id=r.text(t, "RtrId"), original_msg_id=r.text(t, "OrgnlGrpInf/OrgnlMsgId"),
            original_msg_name=r.text(t, "OrgnlGrpInf/OrgnlMsgNmId"),
            original_end_to_end_id=r.text(t, "OrgnlEndToEndId"),
            original_tx_id=r.text(t, "OrgnlTxId"), amount_minor=amount, currency=ccy,
            reason=_return_reason(r, t, "RtrRsnInf")))
    r.count(hdr, "NbOfTxs", len(rets))
    r.total(hdr, "TtlRtrdIntrBkSttlmAmt", rets)
    return m.Pacs004(
        msg_id=r.text(hdr, "MsgId"), created=r.time(hdr, "CreDtTm"),
        settlement_date=r.date(hdr, "IntrBkSttlmDt"), instructing_agent=r.bic(hdr, "InstgAgt"),
        instructed_agent=r.bic(hdr, "InstdAgt"), returns=tuple(rets))


def camt056(root) -> m.Camt056:
    r = _Reader(root)
    doc = r.el(root, "FIToFIPmtCxlReq")
    a = r.el(doc, "Assgnmt")
    recalls = []
    for u in r.all(doc, "Undrlyg"):
        for t in r.all(u, "TxInf"):
            amount, ccy = r.amount(t, "OrgnlIntrBkSttlmAmt")
            recalls.append(m.Recall(
                cancellation_id=r.text(t, "CxlId"),
                original_msg_id=r.text(t, "OrgnlGrpInf/OrgnlMsgId"),
                original_msg_name=r.text(t, "OrgnlGrpInf/OrgnlMsgNmId"),
                original_end_to_end_id=r.text(t, "OrgnlEndToEndId"),
                original_tx_id=r.text(t, "OrgnlTxId"), amount_minor=amount, currency=ccy,
                settlement_date=r.date(t, "OrgnlIntrBkSttlmDt"),
                reason=_return_reason(r, t, "CxlRsnInf")))
    return m.Camt056(
        assignment_id=r.text(a, "Id"), created=r.time(a, "CreDtTm"),
        assigner=r.bic(a, "Assgnr/Agt"), assignee=r.bic(a, "Assgne/Agt"),
        recalls=tuple(recalls))


def pacs028(root) -> m.Pacs028:
    r = _Reader(root)
    doc = r.el(root, "FIToFIPmtStsReq")
    hdr = r.el(doc, "GrpHdr")
    reqs = tuple(m.StatusRequest(
        request_id=r.text(t, "StsReqId"), original_msg_id=r.text(t, "OrgnlGrpInf/OrgnlMsgId"),
        original_msg_name=r.text(t, "OrgnlGrpInf/OrgnlMsgNmId"),
        original_end_to_end_id=r.text(t, "OrgnlEndToEndId"),
        original_tx_id=r.text(t, "OrgnlTxId")) for t in r.all(doc, "TxInf"))
    return m.Pacs028(
        msg_id=r.text(hdr, "MsgId"), created=r.time(hdr, "CreDtTm"),
        instructing_agent=r.bic(hdr, "InstgAgt"), instructed_agent=r.bic(hdr, "InstdAgt"),
        requests=reqs)


def _entries(r: _Reader, parent, ccy: str) -> tuple[m.Entry, ...]:
    out = []
    for n in r.all(parent, "Ntry"):
        amount, this_ccy = r.amount(n, "Amt")
        if this_ccy != ccy:
            raise Iso20022Error("entry currency differs from the account's",
                                path=element_path(r.el(n, "Amt")))
        out.append(m.Entry(
            reference=r.text(n, "NtryRef"), amount_minor=amount,
            credit=r.text(n, "CdtDbtInd") == "CRDT", booking_date=r.date(n, "BookgDt/Dt"),
            end_to_end_id=r.opt(n, "NtryDtls/TxDtls/Refs/EndToEndId"),
            bank_tx_code=r.text(n, "BkTxCd/Prtry/Cd")))
    return tuple(out)


def _account_ccy(r: _Reader, parent) -> tuple[m.Account, str]:
    return r.account(parent, "Acct"), r.text(parent, "Acct/Ccy")


def _balance(r: _Reader, stmt, code: str, ccy: str) -> tuple[int, dt.date]:
    for b in r.all(stmt, "Bal"):
        if r.opt(b, "Tp/CdOrPrtry/Cd") == code:
            amount, this_ccy = r.amount(b, "Amt")
            if this_ccy != ccy:
                raise Iso20022Error("balance currency differs from the account's",
                                    path=element_path(r.el(b, "Amt")))
            sign = -1 if r.text(b, "CdtDbtInd") == "DBIT" else 1
            return sign * amount, r.date(b, "Dt/Dt")
    raise Iso20022Error(f"no {code} balance", path=element_path(stmt))


def camt053(root) -> m.Camt053:
    r = _Reader(root)
    doc = r.el(root, "BkToCstmrStmt")
    hdr = r.el(doc, "GrpHdr")
    stmts = []
    for s in r.all(doc, "Stmt"):
        account, ccy = _account_ccy(r, s)
        opening, opening_date = _balance(r, s, "OPBD", ccy)
        closing, closing_date = _balance(r, s, "CLBD", ccy)
        entries = _entries(r, s, ccy)
        moved = sum(e.amount_minor if e.credit else -e.amount_minor for e in entries)
        if opening + moved != closing:
            gap = to_text(abs(closing - opening - moved), ccy)
            raise Iso20022Error(
                f"closing balance is not opening plus entries ({gap} {ccy} apart)",
                path=element_path(s))
        stmts.append(m.Statement(
            id=r.text(s, "Id"), account=account, currency=ccy, opening_date=opening_date,
            opening_balance_minor=opening, closing_date=closing_date,
            closing_balance_minor=closing, entries=entries))
    return m.Camt053(msg_id=r.text(hdr, "MsgId"), created=r.time(hdr, "CreDtTm"),
                     statements=tuple(stmts))


def camt054(root) -> m.Camt054:
    r = _Reader(root)
    doc = r.el(root, "BkToCstmrDbtCdtNtfctn")
    hdr = r.el(doc, "GrpHdr")
    notes = []
    for n in r.all(doc, "Ntfctn"):
        account, ccy = _account_ccy(r, n)
        notes.append(m.Notification(id=r.text(n, "Id"), account=account, currency=ccy,
                                    entries=_entries(r, n, ccy)))
    return m.Camt054(msg_id=r.text(hdr, "MsgId"), created=r.time(hdr, "CreDtTm"),
                     notifications=tuple(notes))


PARSERS: dict[str, Callable[[Any], m.Message]] = {
    "pain.001": pain001, "pacs.008": pacs008, "pacs.002": pacs002, "pacs.004": pacs004,
    "camt.056": camt056, "pacs.028": pacs028, "camt.053": camt053, "camt.054": camt054,
}
