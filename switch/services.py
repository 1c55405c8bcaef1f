"""What a participant sees: the request's ``Context`` and a narrow ``Services`` object.

Participants never see the ``Switch``. Each service is typed by a Protocol, so that the
transaction manager and the participants run in-process against fakes (tests/switch/
fakes.py) as well as against the real journal (PostgreSQL), ledger, HSM and links.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from payswitch.codecs.iso8583.message import Message
from payswitch.routing.bins import RouteDecision, Router
from payswitch.switch.config import Config, OnusSection, TerminalSection, pin_key_of
from payswitch.switch.journal import Claim, Original, SafItem
from payswitch.switch.metrics import Metrics


@dataclass(frozen=True, slots=True)
class Origin:
    kind: str  # terminal | acquirer
    listener: str
    peer: str  # source address
    acquirer: Any = None  # AcquirerSection for acquirer links


@dataclass(slots=True)
class Context:
    """One request on its way through the participants. Each field is filled by the
    participant that decides it, and read by the later ones and by their aborts."""

    request: Message
    origin: Origin
    payload: bytes | None = None  # the request's bytes as received (terminal MAC)
    source: str = ""  # "T:<DE41>" or "A:<acquirer id>": whose STANs these are
    dup_key: str | None = None
    owner: bool = False  # this task owns the request's journal entry
    route: RouteDecision | None = None
    ranked: list[Any] | None = None  # [routing] range: its routes, best first (RankRoutes)
    onus: OnusSection | None = None  # the [[onus]] section when the switch is the issuer
    original: Original | None = None
    original_pan: str | None = None  # a reversal's: its original's PAN (match_original)
    pin_block: bytes | None = None  # DE52 under the issuer link's ZPK (translate_pin)
    pan_prot: tuple[str, bytes] | None = None  # (PAN token, AES-GCM PAN) for storage
    outbound: Message | None = None  # what went (or was journalled to go) to the issuer
    sent: bool = False  # outbound may have reached the issuer (its outcome is ours)
    issuer_response: Message | None = None
    hold: str | None = None  # "held" | "unknown": a ledger hold this request may own
    stand_in: str | None = None  # the switch approved for the issuer (participants/standin)
    response: Message | None = None
    done: bool = False  # answered early (a duplicate replayed): later participants skip
    reversal_of: str | None = None  # dup_key of the original this reversal reverses
    error: str | None = None  # the typed error that decided the answer, for the log
    events: list[tuple[str, Any, str | None]] = field(default_factory=list)
    saf: list[SafItem] = field(default_factory=list)


# -- the services, as Protocols (the real ones: journal.Store, ledgerwire.LedgerWire,
#    links.IssuerLink, hsm.AsyncHsm, routing.bins.BinTable) ------------------------------
class Journal(Protocol):
    async def claim(self, dup_key: str, source: str, request: Message,
                    fingerprint: str | None = None) -> Claim: ...
    async def outcome(self, dup_key: str) -> dict[str, Any] | None: ...
    async def append(self, event: str, msg: Message | dict | None, *, source: str | None = None,
                     link: str | None = None, dup_key: str | None = None,
                     pan: tuple[str, bytes] | None = None,
                     reversal_of: str | None = None) -> bool: ...
    async def complete(self, dup_key: str, source: str, response: Message,
                       events: Any = (), saf: Any = (), saf_expiry_s: int = 86_400,
                       reversal_of: str | None = None) -> bool: ...
    async def correct(self, dup_key: str, told: Message, saf: Any = (),
                      saf_expiry_s: int = 86_400) -> bool: ...
    async def find_original(self, source: str, stan: str, transmission_time: str,
                            mtis: tuple[str, ...]) -> Original | None: ...


class Ledger(Protocol):
    def onus_range(self, pan: str | None) -> OnusSection | None: ...
    def holds_money(self, req: Message) -> bool: ...
    async def authorize_onus(self, dup_key: str, req: Message, onus: OnusSection) -> str: ...
    async def hold_offus(self, dup_key: str, req: Message, link: str,
                         auth_code: str | None, stand_in: bool = False) -> Any: ...
    async def declined(self, dup_key: str, req: Message, route: str, code: str,
                       reasons: list[str] | None = None) -> None: ...
    async def void(self, orig_dup_key: str, reason: str) -> str: ...
    def void_later(self, orig_dup_key: str) -> None: ...
    async def complete(self, orig_dup_key: str, amount_minor: int) -> str: ...


class Link(Protocol):
    name: str

    @property
    def state(self) -> str: ...

    def next_stan(self) -> str: ...
    async def request(self, msg: Message, timeout_ms: int | None = None) -> Message: ...


class Hsm(Protocol):
    """The calls the participants make (hsm.AsyncHsm forwards them to hsm.Hsm)."""

    async def verify_mac(self, key: str, data: bytes, mac: bytes) -> bool: ...
    async def generate_mac(self, key: str, data: bytes) -> bytes: ...
    async def translate_pin(self, block: bytes, pan: str | None, src: str,
                            dst: str) -> bytes: ...
    async def translate_pin_dukpt(self, block: bytes, ksn: bytes, pan: str | None,
                                  bdk: str, dst: str) -> bytes: ...
    async def pan_token(self, key: str, pan: str) -> str: ...
    async def encrypt_pan(self, key: str, pan: str, aad: bytes = b"") -> bytes: ...
    async def decrypt_pan(self, key: str, blob: bytes, aad: bytes = b"") -> str: ...
    # stand-in card checks with the issuer's keys (participants/cardchecks.py)
    async def verify_pin_pvv(self, pin_block: bytes, pan: str, zpk: str, pvk: str, pvv: str,
                             pvki: int = 1) -> bool: ...
    async def verify_cvv(self, cvk: str, pan: str, expiry: str, service_code: str,
                         cvv: str) -> bool: ...
    async def verify_arqc(self, mk_ac: str, pan: str, psn: str, atc: bytes, data: bytes,
                          arqc: bytes, *, arc: bytes, cvn: int,
                          un: bytes | None) -> tuple[bool, bytes | None]: ...


@dataclass(slots=True)
class Services:
    """Everything a participant may use, and nothing else."""

    cfg: Config
    store: Journal
    router: Router
    links: Mapping[str, Link]
    metrics: Metrics
    ledger: Ledger | None = None
    hsm: Hsm | None = None  # set by Switch.run once the token is open
    fingerprint_key: bytes = b""  # PAN HMAC key of duplicate fingerprints without an HSM
    # dup_key of each request being answered here -> the event set when its answer is
    # recorded, made by the first duplicate that waits for it (None until then: one
    # Event per request would be made and set for nothing)
    in_flight_keys: dict[str, trio.Event | None] = field(default_factory=dict)
    wake_saf: Callable[[], None] = lambda: None  # new SAF rows were queued
    rrn_range: tuple[int, int] = (0, 999_999)  # --workers: a disjoint slice per worker
    risk: Any = None  # switch.risk.RiskEngine when [risk] is configured
    guards: dict[str, Any] = field(default_factory=dict)  # link -> guards.LinkGuard
    terminals: dict[str, TerminalSection] = field(init=False)
    _rrn_seq: int = field(init=False)

    def __post_init__(self) -> None:
        self.terminals = {t.id: t for t in self.cfg.terminals}
        self._rrn_seq = random.randrange(1_000_000)

    def new_rrn(self) -> str:
        """DE37: YDDDhh + 6-digit sequence (ISO 8583 convention)."""
        lo, hi = self.rrn_range
        self._rrn_seq = lo + (self._rrn_seq + 1 - lo) % (hi - lo + 1)
        return time.strftime("%y%j%H", time.gmtime())[1:] + f"{self._rrn_seq:06d}"

    def pin_key_of(self, ctx: Context) -> tuple[str, str]:
        """(PIN key label, tpk | dukpt) of the terminal a request came from."""
        term = (self.terminals.get(ctx.request.terminal_id or "")
                if ctx.origin.kind == "terminal" else None)
        return pin_key_of(self.cfg, term, ctx.origin.listener)
