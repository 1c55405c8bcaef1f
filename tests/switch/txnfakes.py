"""Fakes behind the Protocols of switch/services.py, for running the transaction manager
and its participants in-process under trio's MockClock: a journal in dicts, a ledger that
records its calls, links answered by a function, an HSM that tags what it translated.

They keep the contracts of the real ones that the participants rely on (documented on
journal.Store, ledgerwire.LedgerWire, links.IssuerLink, hsm.AsyncHsm), nothing more."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from payswitch.codecs.iso8583.message import Message
from payswitch.hsm.errors import PinBlockError
from payswitch.routing.bins import BinTable
from payswitch.switch.config import OnusSection, parse
from payswitch.switch.errors import (
    InsufficientFunds,
    IssuerTimeout,
    LedgerUnavailable,
    LinkBusy,
    LinkUnavailable,
    StoreError,
)
from payswitch.switch.journal import Claim, Original, SafItem, safe_fields
from payswitch.switch.messages import duplicate_key
from payswitch.switch.metrics import Metrics
from payswitch.switch.services import Origin, Services
from payswitch.switch.txn import TransactionManager

PAN = "4761739001010010"  # routed to "visa"
MC_PAN = "5413330089010012"  # routed to "mc"
ONUS_PAN = "6011000000000004"  # the switch is the issuer
TERMINAL = "TERM0001"
ORIGIN = Origin("terminal", "pos", "127.0.0.1")


def config(**switch: Any) -> Any:
    return parse({
        "switch": {"duplicate_wait_ms": 5000, **switch},
        "hsm": {"token": "fake"},  # the FakeHsm is passed in; None = no HSM
        "listeners": [{"name": "pos", "kind": "terminal", "pin_key": "tpk.pos"}],
        "terminals": [{"id": TERMINAL, "listener": "pos"},
                      {"id": "TERMMAC1", "listener": "pos", "mac_key": "tak.term"}],
        "links": [{"name": "visa", "host": "127.0.0.1", "port": 1, "zpk": "zpk.visa",
                   "request_timeout_ms": 2000},
                  {"name": "mc", "host": "127.0.0.1", "port": 1, "zpk": "zpk.mc",
                   "request_timeout_ms": 2000}],
        "routes": [{"prefix": "4", "link": "visa"}, {"prefix": "5", "link": "mc"}],
    })


@dataclass
class _Payment:
    source: str
    request: Message
    fingerprint: str | None
    response: dict[str, Any] | None = None
    issuer_request: dict[str, Any] | None = None
    link: str | None = None
    pan: tuple[str, bytes] | None = None


class FakeStore:
    """The journal: claims, answers, SAF rows, one reversal per original."""

    def __init__(self) -> None:
        self.payments: dict[str, _Payment] = {}
        self.events: list[tuple[str, str | None]] = []  # (event, dup_key), in order
        self.rows: list[tuple[str, Any, str | None]] = []  # answers' events with payloads
        self.saf: list[tuple[str | None, SafItem]] = []  # (dup_key, item)
        self.reversals: dict[str, str] = {}  # original dup_key -> reversal dup_key
        self.fail_complete = 0  # the next N complete() calls raise StoreError
        self.lose_ack = 0  # the next N complete() calls commit, then raise StoreError

    async def claim(self, dup_key: str, source: str, request: Message,
                    fingerprint: str | None = None) -> Claim:
        await trio.lowlevel.checkpoint()
        p = self.payments.get(dup_key)
        if p is None:
            self.payments[dup_key] = _Payment(source, request, fingerprint)
            self.events.append(("request", dup_key))
            return Claim(owner=True)
        if p.fingerprint != fingerprint:
            self.events.append(("duplicate_mismatch", dup_key))
            return Claim(owner=False, same=False)
        self.events.append(("duplicate", dup_key))
        return Claim(owner=False, response=p.response)

    async def outcome(self, dup_key: str) -> dict[str, Any] | None:
        await trio.lowlevel.checkpoint()
        return self.payments[dup_key].response

    def _claim_reversal(self, original: str, reversal: str | None) -> bool:
        return self.reversals.setdefault(original, reversal) == reversal

    async def append(self, event: str, msg: Any, *, source: str | None = None,
                     link: str | None = None, dup_key: str | None = None,
                     pan: tuple[str, bytes] | None = None,
                     reversal_of: str | None = None) -> bool:
        await trio.lowlevel.checkpoint()
        if reversal_of is not None and not self._claim_reversal(reversal_of, dup_key):
            return False
        self.events.append((event, dup_key))
        if event == "issuer_request":
            p = self.payments[dup_key]
            p.issuer_request, p.link, p.pan = safe_fields(msg), link, pan
        return True

    async def complete(self, dup_key: str, source: str, response: Message,
                       events: Any = (), saf: Any = (), saf_expiry_s: int = 86_400,
                       reversal_of: str | None = None) -> bool:
        await trio.lowlevel.checkpoint()
        if self.fail_complete:
            self.fail_complete -= 1
            raise StoreError("database error OperationalError (sqlstate 08006)")
        p = self.payments[dup_key]
        if p.response is not None:
            return False
        p.response = safe_fields(response)
        queue = saf
        if saf and reversal_of is not None and not self._claim_reversal(reversal_of, dup_key):
            queue = ()
        self.events.extend((event, dup_key) for event, _, _ in events)
        self.rows.extend((event, msg, dup_key) for event, msg, _ in events)
        self.saf.extend((dup_key, item) for item in queue)
        self.events.append(("response", dup_key))
        if self.lose_ack:
            self.lose_ack -= 1
            raise StoreError("database error OperationalError (sqlstate 08006)")
        return True

    async def correct(self, dup_key: str, told: Message, saf: Any = (),
                      saf_expiry_s: int = 86_400) -> bool:
        await trio.lowlevel.checkpoint()
        p = self.payments[dup_key]
        if p.response is not None and p.response.get("response_code") == told.response_code:
            return False
        p.response = safe_fields(told)
        self.events.append(("response_corrected", dup_key))
        self.saf.extend((dup_key, item) for item in saf)
        return True

    async def find_original(self, source: str, stan: str, transmission_time: str,
                            mtis: tuple[str, ...]) -> Original | None:
        await trio.lowlevel.checkpoint()
        for key, p in self.payments.items():
            r = p.request
            if (p.source == source and r.stan == stan and r.transmission_time
                    == transmission_time and r.mti in mtis):
                return Original(link=p.link, dup_key=key, issuer_request=p.issuer_request,
                                response=p.response, pan_token=p.pan and p.pan[0],
                                pan_enc=p.pan and p.pan[1], request=safe_fields(r))
        return None

    def answer(self, dup_key: str) -> str | None:
        p = self.payments.get(dup_key)
        return (p.response or {}).get("response_code") if p else None

    def saf_mtis(self) -> list[tuple[str, str]]:
        return [(item.mti, item.message.get("original_data", "")) for _, item in self.saf]


@dataclass
class FakeLedger:
    """Holds by dup_key; ``fail_hold`` / ``funds`` script the outcomes."""
    funds_minor: int = 10_000
    fail_hold: bool = False  # hold_offus / authorize_onus: LedgerUnavailable
    holds: dict[str, int] = field(default_factory=dict)
    voided: list[str] = field(default_factory=list)
    voids_later: list[str] = field(default_factory=list)
    declines: list[str] = field(default_factory=list)
    decline_reasons: dict[str, list[str]] = field(default_factory=dict)
    stand_in: list[str] = field(default_factory=list)  # holds marked stand-in
    posted: list[tuple[str, int]] = field(default_factory=list)

    def onus_range(self, pan: str | None) -> OnusSection | None:
        return OnusSection(prefix="6011") if pan and pan.startswith("6011") else None

    def holds_money(self, req: Message) -> bool:
        return (req.processing_code or "")[:2] in ("00", "01") and (req.amount_minor or 0) > 0

    async def _hold(self, dup_key: str, req: Message) -> None:
        await trio.lowlevel.checkpoint()
        if self.fail_hold:
            raise LedgerUnavailable("ledger write timed out")
        self.holds[dup_key] = req.amount_minor or 0

    async def authorize_onus(self, dup_key: str, req: Message, onus: OnusSection) -> str:
        if (req.amount_minor or 0) > self.funds_minor:
            raise InsufficientFunds("exceeds_credits")
        await self._hold(dup_key, req)
        return "123456"

    async def hold_offus(self, dup_key: str, req: Message, link: str,
                         auth_code: str | None, stand_in: bool = False) -> None:
        await self._hold(dup_key, req)
        if stand_in:
            self.stand_in.append(dup_key)

    async def declined(self, dup_key: str, req: Message, route: str, code: str,
                       reasons: list[str] | None = None) -> None:
        self.declines.append(dup_key)
        self.decline_reasons[dup_key] = reasons or []

    async def void(self, orig_dup_key: str, reason: str) -> str:
        await trio.lowlevel.checkpoint()
        self.voided.append(orig_dup_key)
        return "ok"

    def void_later(self, orig_dup_key: str) -> None:
        self.voids_later.append(orig_dup_key)

    async def complete(self, orig_dup_key: str, amount_minor: int) -> str:
        self.posted.append((orig_dup_key, amount_minor))
        return "ok"


def approve(msg: Message) -> Message:
    return Message(mti=msg.response_mti, stan=msg.stan, rrn=msg.rrn, auth_code="A1B2C3",
                   response_code="00", amount_minor=msg.amount_minor)


class FakeLink:
    """``answer(msg)`` gives the issuer's response, None for silence (IssuerTimeout after
    request_timeout_ms, in whatever clock the test runs), or raises LinkBusy."""

    def __init__(self, name: str, timeout_ms: int,
                 answer: Callable[[Message], Message | None] = approve) -> None:
        self.name, self.timeout_ms, self.answer = name, timeout_ms, answer
        self.state = "signed_on"
        self.sent: list[Message] = []
        self._stan = 0

    def next_stan(self) -> str:
        self._stan += 1
        return f"{self._stan:06d}"

    async def echo(self) -> bool:
        """A breaker's probe: answered when the link is up and ``answer`` answers."""
        await trio.lowlevel.checkpoint()
        self.echoes = getattr(self, "echoes", 0) + 1
        return self.state == "signed_on" and self.answer(Message(mti="0800")) is not None

    async def request(self, msg: Message, timeout_ms: int | None = None) -> Message:
        if self.state != "signed_on":
            raise LinkUnavailable(f"link {self.name} is {self.state}")
        resp = self.answer(msg)  # may raise LinkBusy: nothing sent
        self.sent.append(msg)
        with trio.move_on_after((timeout_ms or self.timeout_ms) / 1000):
            if resp is None:
                await trio.sleep_forever()
            await trio.sleep(0.010)  # the issuer's 10 ms
            return resp
        raise IssuerTimeout(f"timeout on link {self.name}")


class FakeHsm:
    """Translation tags the block with its keys; the PAN at rest is reversible."""

    def __init__(self, bad_pin_block: bool = False, mac_ok: bool = True) -> None:
        self.bad_pin_block, self.mac_ok = bad_pin_block, mac_ok
        self.translations: list[tuple[str, str]] = []  # (source key, destination key)

    async def verify_mac(self, key: str, data: bytes, mac: bytes | None) -> bool:
        await trio.lowlevel.checkpoint()
        return self.mac_ok and mac is not None

    async def translate_pin(self, block: bytes, pan: str | None, src: str, dst: str) -> bytes:
        await trio.lowlevel.checkpoint()
        if self.bad_pin_block:
            raise PinBlockError("PIN block not valid under the source key")
        self.translations.append((src, dst))
        return b"X" * 8

    async def translate_pin_dukpt(self, block: bytes, ksn: bytes, pan: str | None,
                                  bdk: str, dst: str) -> bytes:
        return await self.translate_pin(block, pan, bdk, dst)

    async def pan_token(self, key: str, pan: str) -> str:
        return "tok" + pan[-4:]

    async def encrypt_pan(self, key: str, pan: str, aad: bytes = b"") -> bytes:
        return pan.encode() + b"|" + aad

    async def decrypt_pan(self, key: str, blob: bytes, aad: bytes = b"") -> str:
        pan, _, stored = blob.partition(b"|")
        assert stored == aad
        return pan.decode()


class Bench:
    """A transaction manager over fakes. ``busy`` makes a link refuse (LinkBusy)."""

    def __init__(self, *, hsm: FakeHsm | None = None, ledger: FakeLedger | None = None,
                 answer: Callable[[Message], Message | None] = approve,
                 paths: Any = None, **switch: Any) -> None:
        self.cfg = config(**switch)
        self.store = FakeStore()
        self.ledger = ledger
        self.links = {x.name: FakeLink(x.name, x.request_timeout_ms, answer)
                      for x in self.cfg.links}
        self.svc = Services(cfg=self.cfg, store=self.store,
                            router=BinTable((r.prefix, r.link) for r in self.cfg.routes),
                            links=self.links, metrics=Metrics(), ledger=ledger, hsm=hsm,
                            fingerprint_key=b"k" * 32)
        self.txn = (TransactionManager(self.svc) if paths is None
                    else TransactionManager(self.svc, paths))

    async def send(self, req: Message, origin: Origin = ORIGIN) -> Message:
        return await self.txn.handle(req, origin, None)


def busy(msg: Message) -> Message | None:
    raise LinkBusy("link visa: 256 in flight")


def request(mti: str = "0200", *, stan: str = "000001", pan: str = PAN, amount: int = 1250,
            processing: str = "000000", terminal: str = TERMINAL, **kw: Any) -> Message:
    return Message(mti=mti, pan=pan, processing_code=processing, amount_minor=amount,
                   transmission_time="1128091500", stan=stan, local_time="091500",
                   local_date="1128", terminal_id=terminal, merchant_id="MERCHANT0000001",
                   currency="840", **kw)


def key(req: Message, source: str = f"T:{TERMINAL}") -> str:
    return duplicate_key(source, req)
