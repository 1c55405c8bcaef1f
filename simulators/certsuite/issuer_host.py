"""issuer-host role: the network dials the bank's issuer host and runs the suite.

For each case the network side builds the request from its template (the test
card, amount, entry mode; with an HSM a real PIN block under the network's ZPK, the
CVV/iCVV in track 2 and a real ARQC in DE55, as ``simulators/terminal.py`` builds them
for a terminal), sends it in the network's dialect and framing (MACed when the suite
says so), waits for the answer and judges it (``checks.py``). The host must accept
the TEST keys of ``hsm/devkeys.py`` (ZPK, ZAK, CVK, MK-AC per network) and know the
test cards of ``simulators/cards.py``.
"""

from __future__ import annotations

import contextlib
import datetime as dt

import trio

from payswitch.codecs.iso8583 import Message
from payswitch.codecs.iso8583.message import NAME_BY_DE
from payswitch.codecs.tlv import decode_tlv
from payswitch.hsm import devkeys, emv
from payswitch.simulators.cards import card as card_named
from payswitch.simulators.cards import network_of
from payswitch.simulators.certsuite import checks, wire
from payswitch.simulators.certsuite.report import CaseResult, SuiteResult, describe
from payswitch.simulators.certsuite.suite import Case, Suite
from payswitch.simulators.terminal import CardCrypto, Terminal

WAIT_FACTOR = 2  # wait up to 2x a case's time limit, so a slow answer shows its time


class NetworkCrypto(CardCrypto):
    """Card data as the terminal token computes it, but the PIN block under the
    network's ZPK: what the network forwards to an issuer."""

    def __init__(self, hsm, network: str) -> None:
        super().__init__(hsm)
        self.network = network

    def pin_block(self, card, msg: Message) -> None:
        net = self.network if self.network in devkeys.NETWORKS else card.network or "visa"
        msg.pin_block = self.hsm.encrypt_pin(devkeys.zpk(net), card.entered_pin, card.pan)


class HsmCrypto:
    """MAC and ARPC verification for the check engine, in the network's HSM."""

    def __init__(self, codec: wire.Codec, hsm) -> None:
        self.codec = codec
        self.hsm = hsm

    def mac_ok(self, payload: bytes, msg: Message) -> bool:
        return bool(self.codec.mac_ok(payload, msg))

    def arpc_ok(self, request: Message, response: Message) -> bool:
        if self.hsm is None:
            return True  # no keys: presence is all that can be checked
        try:
            sent = {t.tag_hex: t.value for t in decode_tlv(request.emv)}
            got = {t.tag_hex: t.value for t in decode_tlv(response.emv)}["91"]
            cvn = emv.cvn_of(sent)  # the card's key path (CVN 10, 18, 16, 17)
        except Exception:  # noqa: BLE001 (the host's bytes)
            return False
        arc = (response.response_code or "").encode()[:2]
        pan = request.pan or ""
        want = self.hsm.generate_arpc(devkeys.mkac(network_of(pan) or "visa"), pan,
                                      (request.card_sequence or "000")[-2:],
                                      emv.atc_of(sent), sent["9F26"], arc=arc, cvn=cvn,
                                      un=sent.get("9F37"))
        return got == want + arc


def original_data(orig: Message) -> str:
    return checks.original_data_of(orig)


def now_de7() -> str:
    return dt.datetime.now(dt.UTC).strftime("%m%d%H%M%S")


class Builder:
    """Requests from case templates, with one STAN sequence for the whole run."""

    def __init__(self, suite: Suite, hsm=None) -> None:
        crypto = NetworkCrypto(hsm, suite.network) if hsm is not None else None
        self.term = Terminal("CERT0001", acquirer_id="400001", crypto=crypto)
        self.sent: dict[str, Message] = {}  # case name -> its request

    def build(self, case: Case) -> Message:
        t = self.term
        c = card_named(case.card) if case.card else None
        chip = case.entry == "chip"
        req = case.request
        if req in ("echo", "sign_on"):
            msg = Message(mti="0800", stan=t.next_stan(), transmission_time=now_de7(),
                          network_code="301" if req == "echo" else "001")
        elif req in ("reversal", "reversal_advice", "completion_0220", "repeat"):
            orig = self.sent[case.original]
            if req == "repeat":
                msg = orig.replace(mti=orig.mti[:3] + "1")
            else:
                mti = {"reversal": "0400", "reversal_advice": "0420",
                       "completion_0220": "0220"}[req]
                msg = orig.replace(mti=mti, stan=t.next_stan(), transmission_time=now_de7(),
                                   original_data=original_data(orig), pin_block=None,
                                   other={})
                if case.amount_minor:
                    msg.amount_minor = case.amount_minor
        else:
            if c is None:
                raise ValueError(f"case {case.name}: template {req} needs a card")
            msg = self._financial(req, c, case.amount_minor, chip, case.entry)
            if not case.pin:
                msg.pin_block = None
                msg.other.pop(62, None)
        if case.mti:
            msg.mti = case.mti
        for de, value in case.fields.items():
            name = NAME_BY_DE.get(de)
            if name and name not in ("pin_block", "emv", "mac"):
                setattr(msg, name, int(value) if name.endswith("_minor") else value)
            else:
                msg.other[de] = value
        self.sent[case.name] = msg
        return msg

    def _financial(self, req: str, c, amount: int, chip: bool, entry: str) -> Message:
        t = self.term
        if entry == "keyed" and req in ("purchase", "authorization"):
            msg = t.keyed_purchase(c, amount)
            msg.mti = "0100" if req == "authorization" else "0200"
            return msg
        if req == "cash":
            return t.withdrawal(c, amount, chip=chip)
        if req == "balance_inquiry":
            return t.balance_inquiry(c)
        msg = t.purchase(c, amount, chip=chip, mti="0100" if req == "authorization"
                         else "0200")
        if req == "refund":
            msg.processing_code = "200000"
        if req == "advice_0120":
            msg.mti = "0120"
            msg.response_code = "00"  # the network's stand-in decision
            msg.auth_code = "SI0001"
        return msg


async def run_case(link: wire.Link, builder: Builder, case: Case, suite: Suite,
                   crypto: HsmCrypto, answers: dict[str, Message]) -> CaseResult:
    start = trio.current_time()
    msg = builder.build(case)
    wait_s = case.time_limit_ms * WAIT_FACTOR / 1000
    resp, payload, latency_s = await link.request(msg, wait_s)
    ex = checks.Exchange(msg, resp, latency_s * 1000, payload, mac=suite.mac)
    if case.send_twice and resp is not None:
        ex.second, _, _ = await link.request(msg, wait_s)
    if case.request == "repeat":
        ex.second = answers.get(case.original)
    if resp is not None:
        answers[case.name] = resp
    # Without the network's keys an ARPC cannot be verified: not judged (see the report).
    names = [c for c in case.checks if crypto.hsm is not None or c != "arpc"]
    violations = checks.judge_exchange(ex, names, case.expect_codes,
                                       case.time_limit_ms, crypto)
    if link.closed and resp is None:
        violations.append(checks.Violation("link", "connection", "open", "closed by the host"))
    return CaseResult(case.name, case.mandatory, violations, [],
                      (trio.current_time() - start) * 1000, case.description)


def _codec(suite: Suite, hsm) -> wire.Codec:
    if suite.mac and hsm is None:
        raise wire.LinkError(f"suite {suite.name} MACs the link: it needs the network's "
                             "keys (--hsm-token)")
    return wire.Codec(suite.network, hsm, suite.mac)


async def run_issuer_suite(suite: Suite, host: str, port: int, hsm=None,
                           case_names: list[str] | None = None) -> SuiteResult:
    """Dial the issuer host at host:port and run the suite's cases in order (one link)."""
    codec = _codec(suite, hsm)
    async with wire.dial(host, port, codec, on_request=answer_network) as link:
        return await run_cases(link, suite, hsm, case_names, f"{host}:{port}")


async def answer_network(link: wire.Link, msg: Message, payload: bytes, at_s: float):
    """The host's own sign-on / echo / sign-off toward the network: 0810 00."""
    if msg.mti in ("0800", "0801"):
        resp = msg.replace(mti="0810", response_code="00", mac=None)
        with contextlib.suppress(wire.LinkError):
            await link.send(resp)


async def run_issuer_suite_listening(suite: Suite, host: str, port: int, hsm=None,
                                     case_names: list[str] | None = None,
                                     wait_s: float = 60.0,
                                     task_status=trio.TASK_STATUS_IGNORED) -> SuiteResult:
    """For issuer hosts that dial the network: listen on host:port (0: a free port,
    given to ``task_status``), wait up to ``wait_s`` for the host to connect (and
    sign on, if it does), then run the cases over that connection."""
    listener = wire.Listener(_codec(suite, hsm), answer_network, host, port, max_links=1)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(listener.serve)
        task_status.started(bound)
        with trio.fail_after(wait_s):
            while not listener.links:
                await trio.sleep(0.05)
            await trio.sleep(0.2)  # room for the host's own sign-on first
        link = listener.links[0]
        result = await run_cases(link, suite, hsm, case_names, f"listening on {host}:{bound}")
        nursery.cancel_scope.cancel()
    return result


async def run_cases(link: wire.Link, suite: Suite, hsm, case_names, target: str
                    ) -> SuiteResult:
    codec = link.codec
    crypto = HsmCrypto(codec, hsm)
    builder = Builder(suite, hsm)
    results: list[CaseResult] = []
    answers: dict[str, Message] = {}
    for case in suite.cases:
        if case_names and case.name not in case_names:
            continue
        mark = len(link.frames)
        try:
            res = await run_case(link, builder, case, suite, crypto, answers)
        except wire.LinkError as e:
            res = CaseResult(case.name, case.mandatory, [checks.Violation(
                "link", "connection", "open", str(e))], description=case.description)
        t0 = link.frames[mark].at_s if len(link.frames) > mark else 0.0
        res.messages = [describe(f.msg, "network->host" if f.direction == "sent"
                                 else "host->network", (f.at_s - t0) * 1000, f.error)
                        for f in link.frames[mark:]]
        results.append(res)
    notes = []
    if hsm is None and any("arpc" in c.checks for c in suite.cases):
        notes.append("ARPC not judged and cards carry no real PIN/CVV/ARQC: no network "
                     "keys (--hsm-token)")
    return SuiteResult(suite.name, suite.role, suite.network, target, results, notes)
