"""The switch's side of the ledger: accounts, holds, voids, posts and payment events.

Control plane (``LedgerWire.start``, at switch start): accounts are created (idempotent,
deterministic ids), then the BatchWriter, its expiry job and, if configured and
``relay_thread`` (not under `payswitch serve`, which runs it in a process of its own),
the outbox relay run in the switch's nursery. Data plane: the pipeline calls ``authorize_onus``,
``hold_offus``, ``void``, ``complete`` and ``declined``; every id they use (transfers,
events, payments) is derived from the journal's duplicate key (``det_id``), so a retry,
a duplicate or a restart after a crash answers ``exists`` and nothing is applied twice.

Two things are injected, so that the HSM can take over without touching this module:
``mac`` (the event chain's MAC, ``Callable[[bytes], bytes]``) and ``pan_token``
(``Callable[[str], str]``, the key of a cardholder account). With an [hsm] section the
switch calls ``use_hsm``: the PAN token is the HSM's (``hsm.pan_tkn``) and the event
MAC is HMAC-SHA256 in the token with the EVK key ``hsm.event_mac``. Without one
(development, tests), both are HMAC-SHA256 with keys from the environment
(``ledger.event_mac_key_env``, ``ledger.pan_token_key_env``, hex).

Account model (ledger = ISO 4217 numeric, one per currency; codes below)::

    cardholder     per on-us card and billing currency, keyed by its PAN token;
                   debits_must_not_exceed_credits; funded on first use with the
                   [[onus]] opening_balance_minor from `funding`
    merchant_settlement  per currency: on-us purchases are held/posted to it
    network_receivable   per issuer link and currency: what the network owes for an
                         off-us approval
    merchant_payable     per currency: what is owed to the merchant for off-us sales
    fx_position          per currency: the two legs of a cross-currency payment
    funding              per currency: the source of on-us opening balances
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import hmac
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any, NamedTuple

import psycopg
import trio

import payswitch.ledger as L
from payswitch.codecs.iso8583.message import Message
from payswitch.hsm.errors import HsmError
from payswitch.switch.config import Config, ConfigError, OnusSection
from payswitch.switch.errors import (
    CompletionRefused,
    InsufficientFunds,
    LedgerDeclined,
    LedgerUnavailable,
    UnsupportedTransaction,
)
from payswitch.switch.logs import log

# account codes
CARDHOLDER, MERCHANT_SETTLEMENT, NETWORK_RECEIVABLE, MERCHANT_PAYABLE = 1, 2, 3, 4
FX_POSITION, FUNDING = 5, 6
# transfer codes
AUTH_ONUS, AUTH_OFFUS, AUTH_FX, OPENING = 1, 2, 3, 4
HOLD_PROCESSING = ("00", "01")  # purchase, cash: the ones that hold money
VOID_RETRY_S = 1.0
VOID_ATTEMPTS_MAX = 600
NO_HOLD_RESULT = "pending_transfer_not_found"

PanToken = Callable[[str], str]


def det_id(*parts: str | int) -> int:
    """A 128-bit id derived from ``parts`` (never 0): the same request gets the same id
    after a retry or a restart. Not time-ordered, unlike ledger.new_id()."""
    return _id_of(hashlib.sha256("|".join(["payswitch", *map(str, parts)]).encode()).digest())


def _id_of(digest: bytes) -> int:
    return int.from_bytes(digest[:16], "big") or 1


class AuthIds(NamedTuple):
    """The ids of one authorization's hold and events (``auth_ids``)."""

    payment: int
    hold: int
    received: int
    routed: int
    approved: int
    held: int
    declined: int


_EVENT_NAMES = tuple(n.encode() for n in AuthIds._fields[2:])


def auth_ids(dup_key: str) -> AuthIds:
    """``det_id("payment", key)``, ``det_id("hold", key)`` and ``det_id("ev", key,
    name)`` of each event, in one pass: the five event ids' SHA-256 inputs share their
    prefix, hashed once and copied (half the cost of seven det_id calls, which were a
    tenth of the ledger's share of the trio thread)."""
    key = dup_key.encode()
    sha256 = hashlib.sha256
    prefix = sha256(b"payswitch|ev|" + key + b"|")
    events = []
    for name in _EVENT_NAMES:
        h = prefix.copy()
        h.update(name)
        events.append(_id_of(h.digest()))
    return AuthIds(_id_of(sha256(b"payswitch|payment|" + key).digest()),
                   _id_of(sha256(b"payswitch|hold|" + key).digest()), *events)


# The switch's own accounts: a few per link and currency, asked for on every hold.
_account_id = functools.lru_cache(maxsize=1024)(det_id)


def key_from_env(var: str) -> bytes:
    value = os.environ.get(var, "")
    try:
        key = bytes.fromhex(value)
    except ValueError:
        raise ConfigError(f"${var} is not hex") from None
    if len(key) < 16:
        raise ConfigError(f"${var}: need a hex key of at least 16 bytes")
    return key


def keyed_pan_token(key: bytes) -> PanToken:
    """PAN -> token: HMAC-SHA256(key, PAN), 20 bytes, base32 lowercase (digits 2-7 only,
    so a token can never look like a PAN). Stand-in for hsm.pan_token without [hsm]."""
    def token(pan: str) -> str:
        d = hmac.new(key, pan.encode(), hashlib.sha256).digest()[:20]
        return "pt_" + base64.b32encode(d).decode().lower()
    return token


def hsm_mac_provider() -> L.MacFunction:
    """For ``payswitch ledger verify --mac-provider
    payswitch.switch.ledgerwire:hsm_mac_provider``: the switch's HSM event MAC. Token from
    $SOFTHSM2_CONF, $PAYSWITCH_HSM_TOKEN (label), $PAYSWITCH_HSM_PIN; key label
    $PAYSWITCH_EVENT_MAC_LABEL (default evk.ledger)."""
    from payswitch.hsm import Hsm, TokenConfig
    from payswitch.hsm.token import ENV_CONF, module_path

    conf, label = os.environ.get(ENV_CONF), os.environ.get("PAYSWITCH_HSM_TOKEN")
    if not conf or not label:
        raise ConfigError(f"need ${ENV_CONF} and $PAYSWITCH_HSM_TOKEN")
    hsm = Hsm(TokenConfig(module=module_path(), conf=conf, label=label,
                          pin=os.environ.get("PAYSWITCH_HSM_PIN", "")))
    key = os.environ.get("PAYSWITCH_EVENT_MAC_LABEL", "evk.ledger")
    return lambda data: hsm.event_mac(key, data)


def mac_provider() -> L.MacFunction:
    """For ``payswitch ledger verify --mac-provider payswitch.switch.ledgerwire:mac_provider``:
    the MAC the switch uses (today HMAC-SHA256 keyed from $PAYSWITCH_EVENT_MAC_KEY)."""
    return L.hmac_sha256(key_from_env(os.environ.get("PAYSWITCH_EVENT_MAC_KEY_ENV",
                                                     "PAYSWITCH_EVENT_MAC_KEY")))


def mask(pan: str | None) -> str | None:
    if not pan:
        return None
    return pan[:6] + "*" * max(len(pan) - 10, 0) + pan[-4:]


def ledger_no(ccy: str) -> int:
    return L.currency(ccy).numeric


def alpha(code: str | int) -> str:
    return L.currency(code).alpha


def _hold_events(ids: AuthIds, req: Message, amount: int, link: str,
                 auth_code: str | None, stand_in: bool, ccy: str) -> tuple[L.Event, ...]:
    """``hold_offus``'s events: received, routed (``_common_events``), approved and held
    (``authorization_events``'s on success). A refused hold's are ``_refused_events``."""
    ok, _ = L.authorization_events(
        payment_id=ids.payment, hold_id=ids.hold, approved_event_id=ids.approved,
        held_event_id=ids.held, declined_event_id=ids.declined,
        amount_minor=amount, currency=ccy,
        approved={"auth_code": auth_code, "link": link,
                  **({"stand_in": True} if stand_in else {})})
    return (*LedgerWire._common_events(ids, req, link), *ok)


def _refused_events(ids: AuthIds, events: tuple[L.Event, ...]) -> tuple[L.Event, ...]:
    """A refused hold's events: its received and routed, then declined 96 (ledger)."""
    return (*events[:2], LedgerWire._declined(ids, "96", reason="ledger"))


def _text_events(ids: AuthIds, texts: tuple[str, ...]) -> tuple[L.Event, ...]:
    """``_hold_events`` with ``_hold_texts``'s texts as their payloads (no dicts)."""
    pid, hold, event = ids.payment, ids.hold, L.Event
    return (event(ids.received, "received", texts[0], pid),
            event(ids.routed, "routed", texts[1], pid),
            event(ids.approved, "approved", texts[2], pid, hold),
            event(ids.held, "held", texts[3], pid, hold))


def _hold_texts(req: Message, masked: str | None, link: str, auth_code: str | None,
                stand_in: bool, ccy: str) -> tuple[str, ...] | None:
    """The canonical payloads of ``hold_offus``'s four events (received, routed,
    approved, held), from templates: byte for byte what
    ``canonical_payload`` makes of their dicts, keys in sorted order, when every string
    value is printable ASCII without a quote or a backslash (then its JSON is itself in
    quotes) and the amount an int; None otherwise (the writer encodes the dicts)."""
    strs = (req.mti, req.stan, req.terminal_id, masked, req.currency,
            req.processing_code, link, auth_code, ccy)
    amount = req.amount_minor
    if None in strs or type(amount) is not int:
        return None
    joined = "".join(strs)  # type: ignore[arg-type]  # no None: checked above
    if not (joined.isascii() and joined.isprintable()) or '"' in joined or "\\" in joined:
        return None
    return (f'{{"amount_minor":{amount},"currency":"{req.currency}","mti":"{req.mti}",'
            f'"pan_masked":"{masked}","processing_code":"{req.processing_code}",'
            f'"stan":"{req.stan}","terminal_id":"{req.terminal_id}"}}',
            f'{{"route":"{link}"}}',
            f'{{"auth_code":"{auth_code}","link":"{link}","response_code":"00"'
            + (',"stand_in":true}' if stand_in else "}"),
            f'{{"amount_minor":{amount},"currency":"{ccy}"}}')


class LedgerWire:
    def __init__(self, cfg: Config, dsn: str, *, mac: L.MacFunction | None = None,
                 pan_token: PanToken | None = None, relay_thread: bool = True) -> None:
        led = cfg.ledger
        self.cfg = cfg
        self.dsn = dsn
        self._mac_injected = mac is not None
        self.mac = mac  # None: the HSM's (use_hsm) or keyed from the environment
        self.pan_token = pan_token  # None: the HSM's (use_hsm_pan_token) or keyed from env
        self._hsm_token: Callable[[str], Awaitable[str]] | None = None
        self.writer = L.BatchWriter(dsn, mac=self.mac, config=L.WriterConfig(
            max_batch=led.max_batch, max_wait_ms=float(led.max_wait_ms),
            queue_max=led.queue_max, expiry_interval_s=float(led.expiry_interval_s)))
        # the relay in a thread of this process: only when asked (tests, embedding);
        # `payswitch serve` runs it in a process of its own (switch/relayproc.py)
        self.relay = (L.OutboxRelay(dsn, L.RelayConfig(
            host=led.mqtt_host, port=led.mqtt_port, topic_prefix=led.topic_prefix,
            batch_max=led.relay_batch_max, inflight_max=led.relay_inflight_max,
            publish_timeout_s=led.relay_publish_timeout_ms / 1000))
            if led.relay and relay_thread else None)
        self.currencies = tuple(dict.fromkeys(
            [alpha(c) for c in led.currencies] + [alpha(o.currency) for o in cfg.onus]))
        self._onus = sorted(cfg.onus, key=lambda o: -len(o.prefix))
        self._onus_prefixes = tuple(o.prefix for o in self._onus)  # one C test first
        # an off-us hold's (currency, network receivable, merchant payable, ledger) by
        # (link, DE49): derived from names, the same every time
        self._offus_accounts: dict[tuple[str, str | None], tuple[str, int, int, int]] = {}
        self._control: L.Ledger | None = None
        self._control_lock = trio.Lock()
        self._provisioned: set[int] = set()
        self._voids_send, self._voids_recv = trio.open_memory_channel[tuple[str, int]](
            led.queue_max)

    # -- account ids ----------------------------------------------------------------------
    @staticmethod
    def merchant_settlement(ccy: str) -> int:
        return _account_id("account", "merchant_settlement", ccy)

    @staticmethod
    def network_receivable(link: str, ccy: str) -> int:
        return _account_id("account", "network_receivable", link, ccy)

    @staticmethod
    def merchant_payable(ccy: str) -> int:
        return _account_id("account", "merchant_payable", ccy)

    @staticmethod
    def fx_position(ccy: str) -> int:
        return _account_id("account", "fx_position", ccy)

    @staticmethod
    def funding(ccy: str) -> int:
        return _account_id("account", "funding", ccy)

    @staticmethod
    def cardholder(token: str, ccy: str) -> int:
        return det_id("account", "cardholder", token, ccy)

    def startup_accounts(self) -> list[L.Account]:
        out = []
        for ccy in self.currencies:
            n = ledger_no(ccy)
            out += [L.new_account(self.merchant_settlement(ccy), n, MERCHANT_SETTLEMENT),
                    L.new_account(self.merchant_payable(ccy), n, MERCHANT_PAYABLE),
                    L.new_account(self.fx_position(ccy), n, FX_POSITION),
                    L.new_account(self.funding(ccy), n, FUNDING)]
            out += [L.new_account(self.network_receivable(link.name, ccy), n,
                                  NETWORK_RECEIVABLE) for link in self.cfg.links]
        return out

    # -- control plane --------------------------------------------------------------------
    def use_hsm(self, async_hsm: Any, sync_hsm: Any, section: Any) -> None:
        """The HSM's PAN token (``section.pan_tkn``) keys cardholder accounts, and its EVK
        key (``section.event_mac``) MACs the event chain, instead of the
        environment-keyed stand-ins (unless callables were injected). The MAC is the sync
        call, inline in the writer task on the trio thread like the switch's other
        inline HSM calls (the library lock serialises it with them), once per batch."""
        if self.pan_token is None:
            label = section.pan_tkn
            self._hsm_token = lambda pan: async_hsm.pan_token(label, pan)
        if not self._mac_injected:
            mac_label = section.event_mac
            self.mac = lambda data: sync_hsm.event_mac(mac_label, data)
            self.writer.mac = self.mac

    async def _token(self, pan: str) -> str:
        if self._hsm_token is not None:
            try:
                return await self._hsm_token(pan)
            except HsmError as e:
                raise LedgerUnavailable(f"PAN token: {type(e).__name__}") from e
        if self.pan_token is None:  # start() refuses to run without one of the two
            raise LedgerUnavailable("no PAN token function")
        return self.pan_token(pan)

    async def start(self, nursery: trio.Nursery) -> None:
        """Accounts (idempotent), then the writer, expiry job, void retries and relay."""
        if self.pan_token is None and self._hsm_token is None:
            self.pan_token = keyed_pan_token(key_from_env(self.cfg.ledger.pan_token_key_env))
        if self.mac is None:
            self.mac = L.hmac_sha256(key_from_env(self.cfg.ledger.event_mac_key_env))
            self.writer.mac = self.mac
        def setup() -> L.Ledger:
            led = L.Ledger(self.dsn, migrate=True)
            results = led.create_accounts(self.startup_accounts())
            bad = [r for r in results if r not in ("created", "exists")]
            if bad:
                led.close()
                raise ConfigError(f"ledger accounts refused: {sorted(set(bad))}")
            return led
        try:
            self._control = await trio.to_thread.run_sync(setup)
        except L.LedgerError as e:
            raise LedgerUnavailable(f"ledger not reachable at start: {e}") from e
        await nursery.start(self.writer.run)
        await nursery.start(self.writer.run_expiry)
        nursery.start_soon(self._void_loop)
        if self.relay is not None:
            await nursery.start(self.relay.run_trio)
        log("ledger_ready", currencies=list(self.currencies), onus=len(self._onus),
            relay=self.relay is not None)

    def close(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None

    async def _control_call(self, fn: Callable[[L.Ledger], Any]) -> Any:
        """``fn(ledger)`` on the control connection (reconnected when needed). Every
        database failure, whether the ledger wrapped it (LedgerError) or not (a raw
        psycopg error such as AdminShutdown from a read), becomes LedgerUnavailable: the
        callers handle that one type (issue 9: a raw error used to stop the switch)."""
        async with self._control_lock:
            try:
                if self._control is None:
                    self._control = await trio.to_thread.run_sync(
                        lambda: L.Ledger(self.dsn, statement_timeout_ms=self._timeout_ms()))
                return await trio.to_thread.run_sync(fn, self._control)
            except (L.LedgerError, psycopg.Error) as e:
                ctl, self._control = self._control, None
                if ctl is not None:
                    with contextlib.suppress(psycopg.Error):
                        ctl.close()
                raise LedgerUnavailable(f"ledger control call: {type(e).__name__}") from e

    def _timeout_ms(self) -> int:
        return max(1000, self.cfg.database.statement_timeout_ms)

    async def _provision(self, token: str, onus: OnusSection) -> int:
        """The card's account, created with its opening balance on first use."""
        ccy = alpha(onus.currency)
        acct = self.cardholder(token, ccy)
        if acct in self._provisioned:
            return acct
        n = ledger_no(ccy)

        def run(led: L.Ledger) -> None:
            r = led.create_accounts([L.new_account(acct, n, CARDHOLDER,
                                                   debits_must_not_exceed_credits=True)])
            if r[0] not in ("created", "exists"):
                raise L.LedgerError(f"cardholder account: {r[0]}")
            if onus.opening_balance_minor > 0:
                t = L.Transfer(det_id("opening", acct), self.funding(ccy), acct,
                               onus.opening_balance_minor, n, OPENING)
                (res,) = led.create_transfers([t])
                if res not in ("created", "exists"):
                    raise L.LedgerError(f"opening balance: {res}")
        await self._control_call(run)
        self._provisioned.add(acct)
        return acct

    def onus_range(self, pan: str | None) -> OnusSection | None:
        if not pan or not pan.startswith(self._onus_prefixes):  # off-us: most cards
            return None
        return next((o for o in self._onus if pan.startswith(o.prefix)), None)

    # -- data plane -----------------------------------------------------------------------
    async def _submit(self, transfers: Sequence[L.Transfer], ok: Sequence[L.Event] = (),
                      ko: Sequence[L.Event] = ()) -> L.Outcome:
        """One writer request within ledger.write_timeout_ms, or LedgerUnavailable
        (outcome unknown: the caller undoes it with the same deterministic ids)."""
        try:  # submit itself: create_transfers would be one more coroutine per wait
            return await self.writer.submit(
                L.Request(tuple(transfers), tuple(ok), tuple(ko)),
                self.cfg.ledger.write_timeout_ms / 1000)
        except L.LedgerError as e:  # "ledger write timed out" among them
            raise LedgerUnavailable(str(e)) from e

    @staticmethod
    def payment_id(dup_key: str) -> int:
        return det_id("payment", dup_key)

    @staticmethod
    def _common_events(ids: AuthIds, req: Message, route: str) -> list[L.Event]:
        pid = ids.payment
        return [
            L.Event(ids.received, "received", {
                "mti": req.mti, "stan": req.stan, "terminal_id": req.terminal_id,
                "pan_masked": mask(req.pan), "amount_minor": req.amount_minor,
                "currency": req.currency, "processing_code": req.processing_code},
                payment_id=pid),
            L.Event(ids.routed, "routed", {"route": route},
                    payment_id=pid),
        ]

    @staticmethod
    def _declined(ids: AuthIds, code: str, **extra: Any) -> L.Event:
        return L.Event(ids.declined, "declined", {"response_code": code, **extra},
                       payment_id=ids.payment)

    async def declined(self, dup_key: str, req: Message, route: str, code: str,
                       reasons: list[str] | None = None) -> None:
        """A declined authorization's events (no transfer); a risk decline's reasons."""
        extra = {"reasons": reasons} if reasons else {}
        ids = auth_ids(dup_key)
        await self._submit((), [*self._common_events(ids, req, route),
                                self._declined(ids, code, **extra)])

    @staticmethod
    def holds_money(req: Message) -> bool:
        return ((req.processing_code or "")[:2] in HOLD_PROCESSING
                and (req.amount_minor or 0) > 0)

    async def authorize_onus(self, dup_key: str, req: Message, onus: OnusSection) -> str:
        """The switch as issuer: returns the auth code (approved, hold written), or raises
        InsufficientFunds (51) / LedgerDeclined / LedgerUnavailable."""
        code = (req.processing_code or "")[:2]
        auth_code = f"{det_id('auth', dup_key) % 1_000_000:06d}"
        if code == "31":  # balance inquiry: nothing held
            return auth_code
        if code not in HOLD_PROCESSING:
            raise UnsupportedTransaction("on-us: only purchase, cash and balance inquiry")
        if not req.amount_minor:
            raise UnsupportedTransaction("on-us: zero amount")
        txn_ccy = alpha(req.currency or "840")
        bill_ccy = alpha(onus.currency)
        if txn_ccy not in self.currencies:
            raise UnsupportedTransaction(f"on-us: currency {txn_ccy} has no ledger")
        token = await self._token(req.pan or "")
        acct = await self._provision(token, onus)
        ids = auth_ids(dup_key)
        pid, hold_id = ids.payment, ids.hold
        common = self._common_events(ids, req, "onus")
        timeout_s = self.cfg.ledger.hold_timeout_s
        extra: dict[str, Any] = {"auth_code": auth_code}
        if bill_ccy == txn_ccy:
            amount, held_currency = req.amount_minor, txn_ccy
            transfers: tuple[L.Transfer, ...] = (L.Transfer(
                hold_id, acct, self.merchant_settlement(txn_ccy), amount, ledger_no(txn_ccy),
                AUTH_ONUS, L.TransferFlags.PENDING, 0, timeout_s),)
            second: list[L.Event] = []
        else:
            billing = self.billing_amount(req, txn_ccy, bill_ccy)
            extra |= {"billing_amount_minor": billing, "billing_currency": bill_ccy}
            leg2 = det_id("hold2", dup_key)
            transfers = L.fx_legs(
                first_id=hold_id, second_id=leg2, payer_account_id=acct,
                payer_fx_position_id=self.fx_position(bill_ccy),
                payee_fx_position_id=self.fx_position(txn_ccy),
                payee_account_id=self.merchant_settlement(txn_ccy),
                payer_amount_minor=billing, payer_ledger=ledger_no(bill_ccy),
                payee_amount_minor=req.amount_minor, payee_ledger=ledger_no(txn_ccy),
                code=AUTH_FX, pending=True, timeout_s=timeout_s)
            amount, held_currency = billing, bill_ccy
            second = [L.Event(det_id("ev", dup_key, "held2"), "held",
                              {"amount_minor": req.amount_minor, "currency": txn_ccy,
                               "leg": 2}, payment_id=pid, transfer_id=leg2)]
        ok, _ = L.authorization_events(
            payment_id=pid, hold_id=hold_id, approved_event_id=ids.approved,
            held_event_id=ids.held, declined_event_id=ids.declined,
            amount_minor=amount, currency=held_currency, approved=extra)
        results = await self._submit(transfers, [*common, *ok, *second], ())
        first = results.results[0]
        if results.ok:
            return auth_code
        failed = next((r for r in results.results if r != "linked_event_failed"), first)
        de39 = "51" if failed == "exceeds_credits" else "05"
        await self._submit((), [*common, self._declined(ids, de39, result=str(failed))])
        if de39 == "51":
            raise InsufficientFunds("on-us: exceeds the cardholder's available balance")
        raise LedgerDeclined(f"on-us hold refused: {failed}")

    @staticmethod
    def billing_amount(req: Message, txn_ccy: str, bill_ccy: str) -> int:
        """DE6 from DE4 x DE10 (HALF_EVEN at the billing currency's exponent); a DE6 that
        disagrees with it is refused. DE51, when present, must be the account's currency."""
        if req.billing_currency and alpha(req.billing_currency) != bill_ccy:
            raise UnsupportedTransaction("DE51 is not the cardholder's billing currency")
        if req.conversion_rate is None:
            raise UnsupportedTransaction("cross-currency on-us without DE10")
        if req.amount_minor is None:
            raise UnsupportedTransaction("no amount (DE4)")
        billing = L.convert(req.amount_minor, txn_ccy, bill_ccy, Decimal(req.conversion_rate))
        if req.billing_amount_minor is not None and req.billing_amount_minor != billing:
            raise UnsupportedTransaction("DE6 does not match DE4 x DE10")
        return billing

    async def hold_offus(self, dup_key: str, req: Message, link: str, auth_code: str | None,
                         stand_in: bool = False) -> None:
        """An issuer's approval (or the switch's, standing in for it: marked on the
        ``approved`` event): network receivable -> merchant payable, pending."""
        accts = self._offus_accounts.get((link, req.currency))
        if accts is None:
            ccy = alpha(req.currency or "840")
            if ccy not in self.currencies:
                raise LedgerUnavailable(f"no ledger for currency {ccy}")
            accts = (ccy, self.network_receivable(link, ccy), self.merchant_payable(ccy),
                     ledger_no(ccy))
            if len(self._offus_accounts) < 1024:  # links x currencies in the config
                self._offus_accounts[link, req.currency] = accts
        ccy, receivable, payable, ledger = accts
        if req.amount_minor is None:  # holds_money() said yes: DE4 is there
            raise UnsupportedTransaction("no amount (DE4)")
        ids = auth_ids(dup_key)
        texts = _hold_texts(req, mask(req.pan), link, auth_code, stand_in, ccy)
        events = (_hold_events(ids, req, req.amount_minor, link, auth_code, stand_in, ccy)
                  if texts is None else _text_events(ids, texts))
        t = L.Transfer(ids.hold, receivable, payable, req.amount_minor, ledger, AUTH_OFFUS,
                       L.TransferFlags.PENDING, 0, self.cfg.ledger.hold_timeout_s)
        # no failure events in the request: built and checked for every hold, they were
        # needed only by a refusal (which rarely happens off-us: these accounts have no
        # limits), and a refusal writes them in a request of its own
        out = await self._submit((t,), events)
        if not out.ok:
            await self._submit((), _refused_events(ids, events))
            raise LedgerUnavailable(f"off-us hold refused: {out.results[0]}")

    async def _legs(self, orig_dup_key: str) -> list[L.StoredTransfer]:
        ids = [det_id("hold", orig_dup_key), det_id("hold2", orig_dup_key)]
        found = await self._control_call(lambda led: led.lookup_transfers(ids))
        by_id = {t.id: t for t in found}
        return [by_id[i] for i in ids if i in by_id]

    async def void(self, orig_dup_key: str, reason: str) -> str:
        """Voids the original's hold (and the second leg of an FX pair). Returns the
        first leg's result: created, exists (voided before), no_hold, or why not.

        The hold ids are derived from the key, so there is no lookup: each leg's void
        goes through the writer, which is FIFO, so a void queued after a hold whose
        write outcome was unknown is applied after that write (a lookup on another
        connection could see no hold yet and leave one pending that commits later)."""
        pid = self.payment_id(orig_dup_key)
        results = []
        for leg in (det_id("hold", orig_dup_key), det_id("hold2", orig_dup_key)):
            t = L.Transfer(det_id("void", leg), flags=L.TransferFlags.VOID_PENDING_TRANSFER,
                           pending_id=leg)
            event = L.Event(det_id("ev", "reversed", leg), "reversed", {"reason": reason},
                            payment_id=pid, transfer_id=leg)
            out = await self._submit([t], [event])
            results.append(str(out.results[0]))
            if results[0] == NO_HOLD_RESULT:
                break  # no first leg: there is no second one either
        return "no_hold" if results[0] == NO_HOLD_RESULT else results[0]

    def void_later(self, orig_dup_key: str) -> None:
        """Queue a void that must happen (an unknown ledger outcome answered 96, a
        request recovered after a crash, a reversal whose void failed); retried until
        done."""
        try:
            self._voids_send.send_nowait((orig_dup_key, 0))
        except trio.WouldBlock:
            log("ledger_void_dropped", logging.ERROR, note="queue full; hold expires instead")

    async def _void_loop(self) -> None:
        async for key, attempts in self._voids_recv:
            try:
                result = await self.void(key, "unknown_outcome")
                log("ledger_void_done", result=result)
                continue
            except LedgerUnavailable as e:
                error = str(e)
            except Exception as e:  # a bug must not stop the switch: logged, retried
                log("ledger_void_bug", logging.ERROR, exc_info=True)
                error = type(e).__name__
            if attempts + 1 >= VOID_ATTEMPTS_MAX:
                log("ledger_void_gave_up", logging.ERROR, error=error,
                    note="the hold expires after ledger.hold_timeout_s")
                continue
            if attempts == 0:
                log("ledger_void_retrying", logging.WARNING, error=error)
            await trio.sleep(VOID_RETRY_S)
            try:
                self._voids_send.send_nowait((key, attempts + 1))
            except trio.WouldBlock:
                log("ledger_void_dropped", logging.ERROR, note="queue full; hold expires")

    async def complete(self, orig_dup_key: str, amount_minor: int) -> str:
        """Completion advice / capture: posts the hold, partly if ``amount_minor`` is
        smaller (the rest is released). For an FX pair the billing leg is posted in
        proportion, HALF_EVEN at its currency's exponent."""
        legs = await self._legs(orig_dup_key)
        if not legs:
            raise CompletionRefused("no hold for this completion")
        main = legs[-1]  # the merchant-side leg (in the transaction currency)
        if amount_minor > main.amount:
            raise CompletionRefused("completion exceeds the authorized amount")
        amounts = [amount_minor]
        if len(legs) == 2:
            part = Fraction(legs[0].amount * amount_minor, main.amount)
            amounts = [_half_even(part), amount_minor]
        pid = self.payment_id(orig_dup_key)
        transfers = [L.Transfer(det_id("post", t.id), amount=a,
                                flags=L.TransferFlags.POST_PENDING_TRANSFER
                                | (L.TransferFlags.LINKED if i < len(legs) - 1 else 0),
                                pending_id=t.id)
                     for i, (t, a) in enumerate(zip(legs, amounts, strict=True))]
        events = [L.Event(det_id("ev", "posted", t.id), "posted", {"amount_minor": a},
                          payment_id=pid, transfer_id=t.id)
                  for t, a in zip(legs, amounts, strict=True)]
        out = await self._submit(transfers, events)
        if not out.ok:
            raise CompletionRefused(f"post refused: {out.results[0]}")
        return str(out.results[0])


def _half_even(x: Fraction) -> int:
    return round(x)  # Python rounds a Fraction half to even


# -- clearing ------------------------------------------------------------------------------
def clear(dsn: str, mac: L.MacFunction, cutoff_ns: int | None = None,
          batch: int = 500) -> int:
    """Clearing: posts in full every hold still pending that was created up to
    ``cutoff_ns`` (default: now), an FX pair as a linked pair, each with a ``posted``
    event. Idempotent (post ids derive from the hold ids, as ``complete``'s do). The
    query is the ledger's (``ledger.post_pending_holds``). Returns holds posted."""
    with L.Ledger(dsn, mac=mac) as led:
        return L.post_pending_holds(led, post_id=lambda h: det_id("post", h),
                                    event_id=lambda h: det_id("ev", "posted", h),
                                    cutoff_ns=cutoff_ns, batch=batch)
