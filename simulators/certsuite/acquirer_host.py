"""acquirer-host role: the certifier is the network an acquirer host dials.

It listens in the network's dialect and framing (``wire.Listener``), answers
sign-on, echo, reversals and advices with 00 and authorizations per script: the
issuer decision of ``simulators/issuer.py`` (the test card table), no answer at all
(the host must time out, answer its terminal 91/68 and send a reversal), or an answer
after the host's timeout (a late response: the host must still reverse). The cases
are driven through the host's own terminal port (iso87ascii, ``--target``), each with
its own amount, so the certifier finds what the host sent for it by PAN and amount.

What the host sends is judged (``checks.py``): mandatory and conditional fields per
MTI and processing code, formats and lengths, STAN/RRN unique, DE90 and the amount on
reversals, a reversal after a timeout, sign-on before traffic, echo, MAC.
"""

from __future__ import annotations

import contextlib

import trio

from payswitch.codecs.iso8583 import Message
from payswitch.simulators.cards import card as card_named
from payswitch.simulators.certsuite import checks, wire
from payswitch.simulators.certsuite.report import CaseResult, SuiteResult, describe
from payswitch.simulators.certsuite.suite import Case, Suite
from payswitch.simulators.issuer import Issuer, response_to
from payswitch.simulators.network import reply_header
from payswitch.simulators.terminal import CardCrypto, Terminal, TransportError, open_link

POLL_S = 0.05  # how often a case looks for what the host sent (bounded by its deadline)


class NetworkSide:
    """The network's listener: records what the host sends, answers per script."""

    def __init__(self, suite: Suite, hsm=None, host: str = "127.0.0.1", port: int = 0,
                 issuer: Issuer | None = None) -> None:
        self.suite = suite
        self.codec = wire.Codec(suite.network, hsm, suite.mac)
        self.issuer = issuer or Issuer(hsm=hsm)
        self.listener = wire.Listener(self.codec, self.on_request, host, port)
        self.seen: list[checks.Seen] = []
        self.script: dict[tuple[str, int], str] = {}  # (PAN, amount) -> network_answer
        self.late_s = suite.host_timeout_ms / 1000 + 0.5

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        await self.listener.serve(task_status=task_status)

    async def on_request(self, link: wire.Link, msg: Message, payload: bytes,
                         at_s: float) -> None:
        seen = checks.Seen(msg, payload, at_s, self.codec.mac_ok(payload, msg))
        seen.extra["link"] = id(link)
        if len(self.seen) >= wire.MAX_FRAMES:
            return  # a host flooding the network: nothing more is recorded or answered
        self.seen.append(seen)
        if seen.mac_ok is False:
            return  # a network drops what it cannot authenticate
        answer = "issuer"
        if msg.mti in checks.FIN:
            answer = self.script.get((Issuer.pan_of(msg) or "", msg.amount_minor or 0),
                                     "issuer")
        if answer == "no_answer":
            return
        resp = (self.issuer.respond(msg) if msg.mti in checks.FIN
                else response_to(msg, "00"))
        if resp is None:
            return
        resp.header = reply_header(self.codec.dialect.name, msg.header)
        if answer == "late":
            await trio.sleep(self.late_s)  # past the host's timeout, by design
        seen.answered = True
        with contextlib.suppress(wire.LinkError):
            await link.send(resp)


def find(seen: list[checks.Seen], pan: str, amount: int, mtis: set[str]) -> list:
    return [s for s in seen if s.msg.mti in mtis and (Issuer.pan_of(s.msg) or "") == pan
            and (s.msg.amount_minor or 0) == amount]


def reversals_of(seen: list[checks.Seen], pan: str, amount: int) -> list:
    """Reversals for this card and amount, or whose DE90 points at one of its
    originals (a store-and-forward 0420 may carry the PAN only as its DE90 link)."""
    origs = {(s.msg.stan, s.msg.transmission_time) for s in find(seen, pan, amount,
                                                                   checks.FIN)}
    out = []
    for s in seen:
        if s.msg.mti not in checks.REVERSAL:
            continue
        de90 = s.msg.original_data or ""
        if (Issuer.pan_of(s.msg) == pan and s.msg.amount_minor == amount) or \
                (de90[4:10], de90[10:20]) in origs:
            out.append(s)
    return out


class Driver:
    """The terminal side: builds each case's request and sends it to the host."""

    def __init__(self, target: tuple[str, int], hsm=None, terminal_id: str = "DEMO0001",
                 timeout_s: float = 15.0) -> None:
        self.target = target
        self.term = Terminal(terminal_id, crypto=CardCrypto(hsm) if hsm else None)
        self.timeout_s = timeout_s

    def build(self, case: Case) -> Message:
        c = card_named(case.card)
        chip = case.entry == "chip"
        if case.request == "cash":
            return self.term.withdrawal(c, case.amount_minor, chip=chip)
        if case.request == "balance_inquiry":
            return self.term.balance_inquiry(c)
        if case.entry == "keyed":
            return self.term.keyed_purchase(c, case.amount_minor)
        return self.term.purchase(c, case.amount_minor, chip=chip)

    async def send(self, msg: Message):
        host, port = self.target
        async with open_link(host, port) as link:
            return await link.request(msg, self.timeout_s)


async def _wait_for(predicate, deadline_s: float):
    while True:
        got = predicate()
        if got or trio.current_time() >= deadline_s:
            return got
        await trio.sleep(POLL_S)


async def run_case(net: NetworkSide, driver: Driver, case: Case, sent: dict) -> list:
    """The violations of one case (the messages are cut from ``net.seen`` later)."""
    suite = net.suite
    out: list[checks.Violation] = []
    if case.request == "wait":
        await trio.sleep(case.wait_ms / 1000)
        return _session_checks(net, case)
    if case.request == "reversal":  # the terminal reverses an earlier case
        orig_req, _ = sent[case.original]
        msg = orig_req.replace(mti="0400", stan=driver.term.next_stan(),
                               original_data=checks.original_data_of(orig_req),
                               pin_block=None, other={})
        c = card_named(_card_of(orig_req))
    else:
        msg = driver.build(case)
        c = card_named(case.card)
    net.script[(c.pan, msg.amount_minor or 0)] = case.network_answer
    try:
        result = await driver.send(msg)
    except TransportError as e:
        return [checks.Violation("link", "terminal connection", "open", str(e))]
    sent[case.name] = (msg, result.response)
    code = result.response.response_code if result.response else None
    if "de39_allowed" in case.checks and case.expect_codes and code not in case.expect_codes:
        out.append(checks.Violation("de39_allowed", "DE39 to the terminal",
                                    "/".join(case.expect_codes), code or "no answer"))
    amount = msg.amount_minor or 0
    deadline = trio.current_time() + suite.reversal_within_ms / 1000
    if case.request == "reversal" or "reversal_sent" in case.checks:
        revs = await _wait_for(lambda: reversals_of(net.seen, c.pan, amount), deadline)
    else:
        revs = reversals_of(net.seen, c.pan, amount)
    origs = find(net.seen, c.pan, amount, checks.FIN)
    if not origs and case.request != "reversal":
        out.append(checks.Violation("forwarded", "request", "the host's request at the "
                                    "network", "none"))
    if "reversal_sent" in case.checks and not revs:
        out.append(checks.Violation("reversal_sent", "0400/0420", "a reversal within "
                                    f"{suite.reversal_within_ms} ms", "none"))
    for s in origs + revs:
        if "mandatory_fields" in case.checks:
            out += checks.mandatory_fields(s.msg)
        if "field_formats" in case.checks:
            out += checks.field_formats(s.msg)
        if "mac" in case.checks:
            out += checks.mac_seen(s)
    if origs:
        for s in revs:
            if "reversal_de90" in case.checks:
                out += checks.reversal_de90(s.msg, origs[0].msg)
            if "reversal_amount" in case.checks:
                out += checks.reversal_amount(s.msg, origs[0].msg)
    if "stan_rrn_unique" in case.checks:
        out += _unique(net, origs + revs)
    return out


def _card_of(msg: Message) -> str:
    from payswitch.simulators.cards import BY_PAN

    return BY_PAN[msg.pan].name


def _unique(net: NetworkSide, mine: list[checks.Seen]) -> list:
    """STAN/RRN clashes that involve this case's messages, per network link."""
    ids = {id(s) for s in mine}
    out = []
    for link in {s.extra["link"] for s in mine}:
        on_link = [s for s in net.seen if s.extra["link"] == link]
        for v in checks.unique_ids([s.msg for s in on_link]):
            if any(id(s) in ids and s.msg.stan in v.got for s in on_link):
                out.append(v)
    return out


def _session_checks(net: NetworkSide, case: Case) -> list:
    out = []
    if "sign_on" in case.checks:
        first = net.seen[0].msg if net.seen else None
        if first is None or (first.mti, first.network_code) != ("0800", "001"):
            got = "nothing" if first is None else f"{first.mti} DE70={first.network_code}"
            out.append(checks.Violation("sign_on", "first message", "0800 DE70=001", got))
    echoed = any(s.msg.mti == "0800" and s.msg.network_code == "301" for s in net.seen)
    if "echo" in case.checks and not echoed:
        out.append(checks.Violation("echo", "0800 DE70=301", "an echo test while idle "
                                        f"{case.wait_ms} ms", "none"))
    for s in net.seen:
        if s.msg.mti in checks.NETWORK:
            if "mandatory_fields" in case.checks:
                out += checks.mandatory_fields(s.msg)
            if "mac" in case.checks:
                out += checks.mac_seen(s)
    return out


async def run_acquirer_suite(suite: Suite, net: NetworkSide, target: tuple[str, int],
                             hsm=None, case_names: list[str] | None = None,
                             ) -> SuiteResult:
    """Run the cases through the host at ``target`` while ``net`` serves (already
    started by the caller, so the host could dial and sign on first)."""
    driver = Driver(target, hsm, timeout_s=suite.host_timeout_ms / 1000 + 10)
    results, sent = [], {}
    for case in suite.cases:
        if case_names and case.name not in case_names:
            continue
        start = trio.current_time()
        violations = await run_case(net, driver, case, sent)
        msgs = []
        if case.name in sent:
            req, resp = sent[case.name]
            msgs.append(describe(req, "terminal->host"))
            msgs.append(describe(resp, "host->terminal", error="no answer"))
        end = trio.current_time()
        frames = sorted((f for link in net.listener.links for f in link.frames
                         if start <= f.at_s <= end), key=lambda f: f.at_s)
        msgs += [describe(f.msg, "host->network" if f.direction == "received"
                          else "network->host", (f.at_s - start) * 1000, f.error)
                 for f in frames]
        results.append(CaseResult(case.name, case.mandatory, violations, msgs,
                                  (trio.current_time() - start) * 1000, case.description))
    return SuiteResult(suite.name, suite.role, suite.network,
                       f"{target[0]}:{target[1]}", results)
