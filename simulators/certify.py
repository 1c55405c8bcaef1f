"""`payswitch certify`: a named scenario set against any host speaking iso87ascii.

Each scenario opens its own terminal link, so one failure (a dropped link, a hung
request) cannot spoil the next. A scenario returns (passed, detail); the detail says
what was expected and what came back, never a PAN in clear.

The cards come from ``cards.py``: the host under test must route Visa (4...) and
Mastercard (51-55, 2221-2720) test cards to issuers that follow that table, and
must answer 15 for the ``unrouted`` BIN.

With ``Context.hsm`` (the terminal token: ``payswitch certify --hsm-token``) the
terminal builds real PIN blocks, CVVs and ARQCs; ``decline_55_wrong_pin`` then checks
a real wrong PIN verified by the issuer (without it, the issuer's fixed answer).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import iso8583
import trio

from payswitch.codecs.iso8583 import Message
from payswitch.simulators.cards import card
from payswitch.simulators.terminal import (
    DIALECT,
    CardCrypto,
    Terminal,
    TransportError,
    open_link,
)


@dataclass
class Context:
    host: str
    port: int
    framing: str = "len2"
    terminal_id: str = "DEMO0001"
    timeout_s: float = 15.0  # per request; the no-answer scenario needs the host's timeout
    hsm: Any = None  # Hsm on the terminal token: real PIN blocks, CVVs, ARQCs

    def terminal(self) -> Terminal:
        crypto = CardCrypto(self.hsm) if self.hsm is not None else None
        return Terminal(self.terminal_id, crypto=crypto)

    def link(self):
        return open_link(self.host, self.port, framing=self.framing)


Outcome = tuple[bool, str]
SCENARIOS: dict[str, Callable[[Context], Awaitable[Outcome]]] = {}


def scenario(name: str):
    def wrap(fn):
        SCENARIOS[name] = fn
        return fn
    return wrap


def _code(resp: Message | None) -> str:
    return "no response" if resp is None else f"{resp.mti} DE39={resp.response_code}"


async def _expect(ctx: Context, card_name: str, expected: set[str], *,
                  atm: bool = False) -> Outcome:
    t = ctx.terminal()
    c = card(card_name)
    msg = t.withdrawal(c, 4000) if atm else t.purchase(c, 2599)
    async with ctx.link() as link:
        r = await link.request(msg, ctx.timeout_s)
    resp = r.response
    ok = (resp is not None and resp.mti == "0210" and resp.response_code in expected
          and resp.stan == msg.stan)
    if ok and "00" in expected and not resp.auth_code:
        return False, "approved without an authorization code (DE38)"
    want = "/".join(sorted(expected))
    return ok, f"expected 0210 DE39={want}, got {_code(resp)} in {r.latency_s * 1000:.0f} ms" + (
        f" ({r.error})" if r.error else "")


@scenario("approval_visa")
async def approval_visa(ctx: Context) -> Outcome:
    return await _expect(ctx, "visa_approve", {"00"})


@scenario("approval_mastercard")
async def approval_mastercard(ctx: Context) -> Outcome:
    return await _expect(ctx, "mastercard_approve", {"00"})


@scenario("approval_atm_withdrawal")
async def approval_atm(ctx: Context) -> Outcome:
    return await _expect(ctx, "visa_approve_2", {"00"}, atm=True)


@scenario("decline_05_do_not_honour")
async def decline_05(ctx: Context) -> Outcome:
    return await _expect(ctx, "visa_decline", {"05"})


@scenario("decline_51_insufficient_funds")
async def decline_51(ctx: Context) -> Outcome:
    return await _expect(ctx, "mastercard_insufficient_funds", {"51"})


@scenario("decline_54_expired_card")
async def decline_54(ctx: Context) -> Outcome:
    return await _expect(ctx, "visa_expired", {"54"})


@scenario("decline_55_wrong_pin")
async def decline_55(ctx: Context) -> Outcome:
    """ATM withdrawal with a PIN the card's issuer does not accept."""
    return await _expect(ctx, "visa_wrong_pin", {"55"}, atm=True)


@scenario("decline_14_invalid_card")
async def decline_14(ctx: Context) -> Outcome:
    return await _expect(ctx, "mastercard_invalid_card", {"14"})


@scenario("unknown_bin_15")
async def unknown_bin(ctx: Context) -> Outcome:
    return await _expect(ctx, "unrouted", {"15"})


@scenario("timeout_91")
async def timeout_91(ctx: Context) -> Outcome:
    """The issuer never answers: the host must answer 91 (it then reverses upstream,
    which a terminal cannot see)."""
    return await _expect(ctx, "visa_no_answer", {"91", "68"})


@scenario("duplicate_replayed")
async def duplicate(ctx: Context) -> Outcome:
    """The same request twice (terminal, STAN, DE7, amount): the same answer twice."""
    t = ctx.terminal()
    msg = t.purchase(card("visa_approve"), 1111)
    async with ctx.link() as link:
        first = await link.request(msg, ctx.timeout_s)
        second = await link.request(msg, ctx.timeout_s)
    a, b = first.response, second.response
    if a is None or b is None:
        return False, f"first {_code(a)}, second {_code(b)}"
    same = (a.response_code, a.auth_code, a.rrn) == (b.response_code, b.auth_code, b.rrn)
    ok = same and a.response_code == "00"
    return ok, (f"first DE39={a.response_code} DE38={a.auth_code}, "
                f"second DE39={b.response_code} DE38={b.auth_code}")


@scenario("repeat_0101")
async def repeat(ctx: Context) -> Outcome:
    """An authorization (0100), then its repeat (0101): the original answer, as 0110."""
    t = ctx.terminal()
    msg = t.purchase(card("mastercard_approve_2"), 2222, mti="0100")
    async with ctx.link() as link:
        first = await link.request(msg, ctx.timeout_s)
        second = await link.request(msg.replace(mti="0101"), ctx.timeout_s)
    a, b = first.response, second.response
    if a is None or b is None:
        return False, f"first {_code(a)}, repeat {_code(b)}"
    ok = (a.mti == b.mti == "0110" and a.response_code == "00"
          and (a.response_code, a.auth_code) == (b.response_code, b.auth_code))
    return ok, (f"first {a.mti} DE39={a.response_code} DE38={a.auth_code}, "
                f"repeat {b.mti} DE39={b.response_code} DE38={b.auth_code}")


@scenario("echo_0800_301")
async def echo(ctx: Context) -> Outcome:
    t = ctx.terminal()
    msg = t.echo()
    async with ctx.link() as link:
        r = await link.request(msg, ctx.timeout_s)
    resp = r.response
    ok = resp is not None and resp.mti == "0810" and resp.response_code == "00"
    return ok, f"expected 0810 DE39=00, got {_code(resp)}"


def malformed_0200(t: Terminal) -> tuple[bytes, str]:
    """A 0200 whose MTI and STAN read fine but whose DE4 holds letters."""
    msg = t.purchase(card("visa_approve"), 1000, chip=False)
    fields, _ = iso8583.decode(DIALECT.encode(msg), DIALECT.spec)
    fields = {k: v for k, v in fields.items() if k not in ("p", "1")}
    fields["4"] = "00000000ABCD"
    payload, _ = iso8583.encode(fields, DIALECT.spec)
    return bytes(payload), msg.stan


@scenario("malformed_30_link_up")
async def malformed(ctx: Context) -> Outcome:
    t = ctx.terminal()
    payload, stan = malformed_0200(t)
    async with ctx.link() as link:
        bad = await link.request_raw(payload, stan, ctx.timeout_s)
        good_msg = t.purchase(card("visa_approve"), 1500)
        good = await link.request(good_msg, ctx.timeout_s)
    a, b = bad.response, good.response
    ok = (a is not None and a.response_code == "30" and b is not None
          and b.response_code == "00")
    return ok, f"malformed -> {_code(a)}; then on the same link -> {_code(b)}"


@scenario("link_drop_reconnect")
async def link_drop(ctx: Context) -> Outcome:
    """The terminal drops its link with a request in flight, reconnects, carries on."""
    t = ctx.terminal()
    async with ctx.link() as link:
        await link.send_raw(DIALECT.encode(t.purchase(card("visa_approve"), 3000)))
    await trio.sleep(0.2)
    async with ctx.link() as link:
        r = await link.request(t.purchase(card("mastercard_approve"), 3100), ctx.timeout_s)
    return (r.response is not None and r.response.response_code == "00",
            f"after reconnect -> {_code(r.response)}")


async def run_scenarios(ctx: Context, names: list[str] | None = None) -> list[dict]:
    results = []
    for name in names or list(SCENARIOS):
        start = time.monotonic()
        try:
            with trio.fail_after(ctx.timeout_s * 3 + 5):
                ok, detail = await SCENARIOS[name](ctx)
        except TransportError as e:
            ok, detail = False, f"transport: {e}"
        except trio.TooSlowError:
            ok, detail = False, "scenario took too long"
        results.append({"scenario": name, "passed": bool(ok), "detail": detail,
                        "ms": round((time.monotonic() - start) * 1000, 1)})
    return results


def format_results(results: list[dict]) -> str:
    lines = [f"{'PASS' if r['passed'] else 'FAIL'}  {r['scenario']:<32} {r['detail']}"
             for r in results]
    n = sum(r["passed"] for r in results)
    lines.append(f"{n}/{len(results)} scenarios passed")
    return "\n".join(lines)
