"""The switch's one TOML configuration file, read into frozen dataclasses.

Every buffer, queue, frame length, retry count and wait is a named key here with a
bounded default; unknown keys are refused so that a typo does not silently fall back
to a default. Secrets never come from the file: the database DSN is read from the
environment variable named by ``database.dsn_env`` (``database.dsn`` is accepted for
a password-less local DSN, as in tests).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from typing import Any

import psycopg

from payswitch.codecs.framing import KINDS as FRAMINGS
from payswitch.codecs.iso8583 import DIALECTS
from payswitch.hsm.aio import CALL_MODES
from payswitch.routing.health import HealthConfig, health_config
from payswitch.routing.risk_rules import RiskConfig, RiskConfigError
from payswitch.routing.routes import RouteConfigError, RouteTable
from payswitch.routing.standin import StandInConfigError, StandInParams


class ConfigError(ValueError):
    """The configuration file is missing, malformed, or names things that do not exist."""


@dataclass(frozen=True, slots=True)
class SwitchSection:
    name: str = "payswitch"
    institution_id: str = "999999"  # DE32 the switch puts on requests it originates
    drain_timeout_ms: int = 5000
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0  # 0 = no metrics HTTP endpoint
    log_level: str = "INFO"
    duplicate_wait_ms: int = 15000  # how long a duplicate waits for its original
    # Without [hsm]: env variable holding the hex key (>= 16 bytes) of the duplicate
    # fingerprint's PAN hash; unset = a random key per process (see README).
    fingerprint_key_env: str = "PAYSWITCH_FINGERPRINT_KEY"
    journal_retry_max: int = 10_000  # answers kept in memory while the journal is down
    # --workers: how often a live process takes over the open requests of a dead one
    # (not only at start-up), and how old such a request must be (0 = never)
    recovery_interval_s: int = 30
    recovery_min_age_s: int = 60
    # The risk features' clock: "receive" (the switch's UTC receive time), or
    # "transmission_time" (the request's DE7: only to replay simulated days, as the
    # demo does -- the sender sets DE7)
    risk_clock: str = "receive"


@dataclass(frozen=True, slots=True)
class DatabaseSection:
    dsn_env: str = "PAYSWITCH_PG_DSN"
    dsn: str = ""
    pool_size: int = 8  # threads + connections for one-off calls; group commits: 1 more
    connect_timeout_s: int = 5
    statement_timeout_ms: int = 5000

    def resolve_dsn(self) -> str:
        dsn = os.environ.get(self.dsn_env) or self.dsn
        if not dsn:
            raise ConfigError(f"no database DSN: set ${self.dsn_env} (or database.dsn)")
        return dsn


@dataclass(frozen=True, slots=True)
class HsmSection:
    """The switch's HSM token (PKCS#11, SoftHSM2). ``token`` empty = no HSM: PIN blocks
    pass through untranslated and links cannot MAC (development only). The module and
    ``SOFTHSM2_CONF`` come from the environment, the user PIN from ``$pin_env``."""
    token: str = ""  # token label, e.g. "payswitch-switch"
    pin_env: str = "PAYSWITCH_HSM_PIN"  # name of the env variable holding the user PIN
    max_pending: int = 256  # HSM calls waiting at once; past it: DE39 96 at once
    # "inline": each call in the trio thread (a token in this process: SoftHSM2, tens
    # of µs, cheaper than a thread hop); "thread": in a worker thread, bounded by
    # max_pending (an HSM whose calls wait: the loop serves others meanwhile)
    calls: str = "inline"
    pan_dek: str = "dek.pan"  # DEK label: PAN encrypted at rest (AES-GCM)
    pan_tkn: str = "tkn.pan"  # TKN label: PAN token (HMAC-SHA256)
    event_mac: str = "evk.ledger"  # EVK label: the ledger's event chain MAC (HMAC-SHA256)
    # hsm.Policy: PIN verifications per card in a sliding window (past it DE39 75), cards
    # tracked at most, derived keys (EMV UDKs, AES DUKPT) kept in the token's LRU
    pin_verify_max: int = 10
    pin_verify_window_s: int = 600
    pin_verify_cards: int = 100_000
    derived_keys: int = 1024

    @property
    def enabled(self) -> bool:
        return bool(self.token)

    def resolve_pin(self) -> str:
        pin = os.environ.get(self.pin_env)
        if not pin:
            raise ConfigError(f"hsm: no user PIN: set ${self.pin_env}")
        return pin


PIN_MODES = ("tpk", "dukpt")
RISK_CLOCKS = ("receive", "transmission_time")


@dataclass(frozen=True, slots=True)
class ListenerSection:
    name: str
    kind: str = "terminal"  # terminal | acquirer
    host: str = "127.0.0.1"
    port: int = 0
    dialect: str = "iso87ascii"
    framing: str = "len2"
    max_frame_bytes: int = 4096
    # no whole frame for this long: closed (chunks of a frame do not count)
    idle_timeout_ms: int = 300_000
    frame_timeout_ms: int = 5000  # a frame must be complete this long after its 1st byte
    # first expiry closes the connection; every answer still queued on it fails at once
    write_timeout_ms: int = 5000
    max_connections: int = 256
    max_connections_per_source: int = 64  # per source address; see max_unproven_...
    # connections not yet proven by a request from a configured terminal; past this
    # (or past either cap above) the oldest unproven connection is closed for the new one
    max_unproven_connections: int = 64
    max_in_flight_per_connection: int = 32
    max_malformed_frames: int = 10  # more than this many within malformed_window_ms:
    malformed_window_ms: int = 10_000  # the connection is closed
    # after a malformed frame on an unproven connection, the next frame is read this much
    # later (0: at once): a junk sender is slowed to a trickle before it is closed
    malformed_delay_ms: int = 50
    log_sample_ms: int = 1000  # malformed / refused lines: at most one per this, counted
    allowed_sources: tuple[str, ...] = ()  # empty = any source address
    pin_key: str = ""  # default PIN key of its terminals: TPK label, or BDK for dukpt
    pin_mode: str = "tpk"  # tpk | dukpt (TDES DUKPT: KSN in DE53, 20 hex digits)


@dataclass(frozen=True, slots=True)
class TerminalSection:
    id: str  # DE41
    listener: str = ""  # empty = any terminal listener
    source: str = ""  # empty = any source address
    pin_key: str = ""  # empty = the listener's pin_key
    pin_mode: str = ""  # tpk | dukpt; empty = the listener's pin_mode
    mac_key: str = ""  # TAK label: every request must carry a valid DE64/DE128 MAC


@dataclass(frozen=True, slots=True)
class AcquirerSection:
    id: str
    listener: str
    source: str  # the host's source address; connections from elsewhere are refused
    institution_id: str = ""  # DE32 it must carry; empty = not checked


@dataclass(frozen=True, slots=True)
class LinkSection:
    name: str
    host: str
    port: int
    dialect: str = "iso87ascii"
    framing: str = "len2"
    max_frame_bytes: int = 4096
    connect_timeout_ms: int = 3000
    reconnect_min_ms: int = 100
    reconnect_max_ms: int = 5000
    signon_timeout_ms: int = 3000  # also bounds each echo test
    signoff_timeout_ms: int = 1000
    echo_interval_ms: int = 30_000
    request_timeout_ms: int = 5000
    write_timeout_ms: int = 5000  # first expiry drops the link (the run loop reconnects)
    frame_timeout_ms: int = 5000  # a frame must be complete this long after its 1st byte
    max_in_flight: int = 256
    late_memory: int = 1024  # timed-out keys remembered to recognise late responses
    zpk: str = ""  # ZPK label shared with this issuer: PIN blocks are translated to it
    zak: str = ""  # ZAK label shared with this issuer, for mac = true
    mac: bool = False  # every message on the link carries a MAC (DE64/DE128) under zak
    zmk: str = ""  # ZMK label: new ZPK/ZAK from the network (0800 key change) come under it
    key_grace_ms: int = 60_000  # after a key change the old ZPK/ZAK stays accepted this long


@dataclass(frozen=True, slots=True)
class RouteSection:
    prefix: str
    link: str


@dataclass(frozen=True, slots=True)
class SafSection:
    retry_interval_ms: int = 1000  # first retry; doubles per attempt up to retry_max_ms
    retry_max_ms: int = 30_000
    max_attempts: int = 50
    expiry_s: int = 86_400
    batch: int = 50
    send_timeout_ms: int = 5000


@dataclass(frozen=True, slots=True)
class LedgerSection:
    """[ledger]: the double-entry ledger the switch writes holds and events to (same
    database as the journal). Off by default: without it the switch only forwards."""
    enabled: bool = False
    currencies: tuple[str, ...] = ("USD",)  # ledgers (ISO 4217) accounts are made for
    max_batch: int = 2000  # transfers per ledger transaction (BatchWriter)
    max_wait_ms: int = 1  # the writer waits this long for a batch to fill
    queue_max: int = 20_000  # requests queued for the writer
    expiry_interval_s: int = 1  # how often expired holds are voided
    hold_timeout_s: int = 7 * 86_400  # an authorization hold expires after this
    write_timeout_ms: int = 5000  # a hold not committed by then: DE39 96 (+ 0420)
    relay: bool = False  # publish the outbox to MQTT
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    topic_prefix: str = ""  # prepended to payswitch/events/<type>
    relay_batch_max: int = 500  # outbox events per relay round
    relay_inflight_max: int = 100  # QoS 1 publishes awaiting the broker's PUBACK at once
    relay_publish_timeout_ms: int = 10_000  # broker silent this long: reconnect, resend
    event_mac_key_env: str = "PAYSWITCH_EVENT_MAC_KEY"  # hex HMAC key of the event chain
    pan_token_key_env: str = "PAYSWITCH_PAN_TOKEN_KEY"  # hex key of the PAN token


@dataclass(frozen=True, slots=True)
class OnusSection:
    """[[onus]]: a BIN range whose cardholder accounts live in this ledger: the switch is
    the issuer. Each card gets its account on first use, keyed by its PAN token, funded
    with opening_balance_minor from the ledger's funding account."""
    prefix: str
    currency: str = "USD"  # the cardholder billing currency (the account's ledger)
    opening_balance_minor: int = 100_000_00


@dataclass(frozen=True, slots=True)
class StandInSection:
    """[routing.standin."<range prefix>"]: the issuer's stand-in limits
    (routing/standin.py), and whether a timeout (not only every route down) stands in."""
    params: StandInParams
    on_timeout: bool = False


@dataclass(frozen=True, slots=True)
class RoutingSection:
    """[routing]: several routes per BIN range with health, breakers and failover
    (routing/routes.py, routing/health.py), and stand-in per range."""
    table: RouteTable
    health: HealthConfig = field(default_factory=HealthConfig)
    standin: dict[str, StandInSection] = field(default_factory=dict)  # by range prefix


@dataclass(frozen=True, slots=True)
class Config:
    switch: SwitchSection = field(default_factory=SwitchSection)
    database: DatabaseSection = field(default_factory=DatabaseSection)
    hsm: HsmSection = field(default_factory=HsmSection)
    saf: SafSection = field(default_factory=SafSection)
    listeners: tuple[ListenerSection, ...] = ()
    terminals: tuple[TerminalSection, ...] = ()
    acquirers: tuple[AcquirerSection, ...] = ()
    links: tuple[LinkSection, ...] = ()
    routes: tuple[RouteSection, ...] = ()
    ledger: LedgerSection = field(default_factory=LedgerSection)
    onus: tuple[OnusSection, ...] = ()
    risk: RiskConfig | None = None  # [risk]: routing/risk_rules.py; None = no scoring
    routing: RoutingSection | None = None  # [routing]: None = [[routes]] only
    path: str = ""  # the file it was read from (risk rules reload from it); not a section

    def link(self, name: str) -> LinkSection:
        return next(x for x in self.links if x.name == name)


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    kwargs = {}
    for key, value in data.items():
        if key in ("allowed_sources", "currencies"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}.{key}: expected a list of strings")
            value = tuple(value)
        kwargs[key] = value
    try:
        obj = cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None
    for f in fields(cls):
        v = getattr(obj, f.name)
        default = f.default
        if isinstance(default, int) and not isinstance(default, bool) and (
            not isinstance(v, int) or v < 0
        ):
            raise ConfigError(f"{where}.{f.name}: expected a non-negative integer")
        if isinstance(default, str) and not isinstance(v, str):
            raise ConfigError(f"{where}.{f.name}: expected a string")
        if isinstance(default, bool) and not isinstance(v, bool):
            raise ConfigError(f"{where}.{f.name}: expected true or false")
    return obj


def parse(data: dict[str, Any]) -> Config:
    top = {f.name for f in fields(Config)} - {"path"}
    unknown = sorted(set(data) - top)
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(unknown)}")

    def many(key: str, cls: type) -> tuple:
        items = data.get(key, [])
        if not isinstance(items, list):
            raise ConfigError(f"{key}: expected an array of tables ([[{key}]])")
        return tuple(_build(cls, item, f"{key}[{i}]") for i, item in enumerate(items))

    cfg = Config(
        switch=_build(SwitchSection, data.get("switch", {}), "switch"),
        database=_build(DatabaseSection, data.get("database", {}), "database"),
        hsm=_build(HsmSection, data.get("hsm", {}), "hsm"),
        saf=_build(SafSection, data.get("saf", {}), "saf"),
        listeners=many("listeners", ListenerSection),
        terminals=many("terminals", TerminalSection),
        acquirers=many("acquirers", AcquirerSection),
        links=many("links", LinkSection),
        routes=many("routes", RouteSection),
        ledger=_build(LedgerSection, data.get("ledger", {}), "ledger"),
        onus=many("onus", OnusSection),
        risk=parse_risk(data["risk"]) if "risk" in data else None,
    )
    if "routing" in data:
        cfg = replace(cfg, routing=parse_routing(data["routing"],
                                                 {x.name for x in cfg.links}))
    _check(cfg)
    return cfg


def parse_risk(data: Any) -> RiskConfig:
    """``[risk]`` through routing's own validation; its error names the key."""
    if not isinstance(data, dict):
        raise ConfigError("risk: expected a table")
    try:
        return RiskConfig.from_dict(data)
    except RiskConfigError as e:
        raise ConfigError(str(e)) from None


def parse_routing(data: Any, links: set[str]) -> RoutingSection:
    """``[routing]``: ranges (a route naming a missing link is refused), health and
    stand-in, each through routing's own validation; the error names the key."""
    if not isinstance(data, dict):
        raise ConfigError("routing: expected a table")
    unknown = sorted(set(data) - {"ranges", "health", "standin"})
    if unknown:
        raise ConfigError(f"routing.{unknown[0]}: unknown key")
    try:
        table = RouteTable(data.get("ranges", []), links)
        health = health_config(data.get("health", {}), "routing.health")
        standin = {}
        for prefix, d in data.get("standin", {}).items():
            key = f"routing.standin.{prefix}"
            rng = table.eligible(prefix)
            if rng is None or rng.prefix != prefix or not isinstance(d, dict):
                raise ConfigError(f"{key}: no [[routing.ranges]] with that prefix")
            on_timeout = d.get("on_timeout", False)
            if not isinstance(on_timeout, bool):
                raise ConfigError(f"{key}.on_timeout: true or false")
            params = StandInParams.from_dict(
                {k: v for k, v in d.items() if k != "on_timeout"}, key)
            standin[prefix] = StandInSection(params, on_timeout)
    except (RouteConfigError, StandInConfigError, ValueError) as e:
        raise ConfigError(str(e)) from None
    return RoutingSection(table, health, standin)


def _unique(names: list[str], what: str) -> None:
    seen = set()
    for n in names:
        if n in seen:
            raise ConfigError(f"{what} {n!r} defined twice")
        seen.add(n)


def _check_dsn_has_no_secret(dsn: str) -> None:
    """Secrets come from the environment, never the file (DESIGN.md)."""
    if not dsn:
        return
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        raise ConfigError("database.dsn: not a valid connection string") from None
    if params.get("password"):
        raise ConfigError("database.dsn: a password does not belong in the config file; "
                          "put the DSN in the environment variable named by dsn_env")


def _check(cfg: Config) -> None:
    _check_dsn_has_no_secret(cfg.database.dsn)
    if cfg.hsm.calls not in CALL_MODES:
        raise ConfigError(f"hsm.calls: one of {', '.join(CALL_MODES)}")
    if cfg.switch.risk_clock not in RISK_CLOCKS:
        raise ConfigError(f"switch.risk_clock: one of {', '.join(RISK_CLOCKS)}")
    _unique([x.name for x in cfg.listeners], "listener")
    _unique([x.name for x in cfg.links], "link")
    _unique([x.id for x in cfg.terminals], "terminal")
    _unique([x.id for x in cfg.acquirers], "acquirer")
    listeners = {x.name: x for x in cfg.listeners}
    ends: tuple[ListenerSection | LinkSection, ...] = (*cfg.listeners, *cfg.links)
    for x in ends:
        if x.dialect not in DIALECTS:
            raise ConfigError(f"{x.name}: unknown dialect {x.dialect!r}")
        if x.framing not in FRAMINGS:
            raise ConfigError(f"{x.name}: unknown framing {x.framing!r}")
        if not 64 <= x.max_frame_bytes <= 9999:
            raise ConfigError(f"{x.name}: max_frame_bytes must be 64..9999")
    for x in cfg.listeners:
        if x.kind not in ("terminal", "acquirer"):
            raise ConfigError(f"listener {x.name}: kind must be terminal or acquirer")
        _check_listener_bounds(x)
    for x in cfg.links:
        if x.frame_timeout_ms == 0 or x.write_timeout_ms == 0:
            raise ConfigError(f"link {x.name}: frame_timeout_ms and write_timeout_ms "
                              "must be > 0")
    pin_owners: tuple[ListenerSection | TerminalSection, ...] = (*cfg.listeners,
                                                                  *cfg.terminals)
    for owner in pin_owners:
        if owner.pin_mode and owner.pin_mode not in PIN_MODES:
            raise ConfigError(f"{_name(owner)}: pin_mode must be one of {', '.join(PIN_MODES)}")
    for x in cfg.links:
        if x.mac and not x.zak:
            raise ConfigError(f"link {x.name}: mac = true needs a zak label")
        if (x.mac or x.zpk) and not cfg.hsm.enabled:
            raise ConfigError(f"link {x.name}: zpk / mac need an [hsm] token")
    for t in cfg.terminals:
        if len(t.id) > 8:
            raise ConfigError(f"terminal {t.id!r}: DE41 is at most 8 characters")
        if t.listener and listeners.get(t.listener) is None:
            raise ConfigError(f"terminal {t.id}: no listener {t.listener!r}")
        if t.mac_key and not cfg.hsm.enabled:
            raise ConfigError(f"terminal {t.id}: mac_key needs an [hsm] token")
    for a in cfg.acquirers:
        if a.listener not in listeners or listeners[a.listener].kind != "acquirer":
            raise ConfigError(f"acquirer {a.id}: {a.listener!r} is not an acquirer listener")
    links = {x.name for x in cfg.links}
    for r in cfg.routes:
        if r.link not in links:
            raise ConfigError(f"route {r.prefix}: no link {r.link!r}")
    for x in cfg.links:
        if x.reconnect_min_ms == 0 or x.reconnect_max_ms < x.reconnect_min_ms:
            raise ConfigError(f"link {x.name}: need 0 < reconnect_min_ms <= reconnect_max_ms")
        if x.max_in_flight == 0 or x.request_timeout_ms == 0:
            raise ConfigError(f"link {x.name}: max_in_flight and request_timeout_ms must be > 0")
    _check_ledger(cfg)
    h = cfg.hsm
    if min(h.pin_verify_max, h.pin_verify_window_s, h.pin_verify_cards, h.derived_keys) < 1:
        raise ConfigError("hsm: pin_verify_max, pin_verify_window_s, pin_verify_cards and "
                          "derived_keys must be > 0")
    if any(x.key_grace_ms < 0 for x in cfg.links):
        raise ConfigError("links: key_grace_ms must be >= 0")
    for prefix, sec in (cfg.routing.standin.items() if cfg.routing else ()):
        if sec.params.card_checks and not cfg.hsm.enabled:
            raise ConfigError(f"routing.standin.{prefix}.card_checks: needs an [hsm] token "
                              "holding the issuer's keys")


def _check_listener_bounds(x: ListenerSection) -> None:
    """Every wait and cap of a listener is bounded: none of them may be 0 (= off)."""
    for key in ("idle_timeout_ms", "frame_timeout_ms", "write_timeout_ms",
                "max_connections", "max_connections_per_source",
                "max_unproven_connections", "max_in_flight_per_connection",
                "max_malformed_frames", "malformed_window_ms"):
        if getattr(x, key) == 0:
            raise ConfigError(f"listener {x.name}: {key} must be > 0")
    if not 0 <= x.malformed_delay_ms <= 10_000:
        raise ConfigError(f"listener {x.name}: malformed_delay_ms must be 0-10000")
    if x.max_unproven_connections > x.max_connections:
        raise ConfigError(f"listener {x.name}: max_unproven_connections must be "
                          "<= max_connections")


def _check_ledger(cfg: Config) -> None:
    from payswitch.ledger import LedgerError, currency

    led = cfg.ledger
    for code in (*led.currencies, *(o.currency for o in cfg.onus)):
        try:
            currency(code)
        except LedgerError:
            raise ConfigError(f"ledger: unknown currency {code!r}") from None
    if not led.currencies:
        raise ConfigError("ledger.currencies: at least one currency")
    if led.max_batch == 0 or led.queue_max == 0 or led.hold_timeout_s == 0:
        raise ConfigError("ledger: max_batch, queue_max and hold_timeout_s must be > 0")
    if min(led.relay_batch_max, led.relay_inflight_max, led.relay_publish_timeout_ms) <= 0:
        raise ConfigError("ledger: relay_batch_max, relay_inflight_max and"
                          " relay_publish_timeout_ms must be > 0")
    if not 0 < led.mqtt_port < 65536:
        raise ConfigError(f"ledger.mqtt_port: {led.mqtt_port} is not a TCP port")
    if led.hold_timeout_s > 31 * 86_400:
        raise ConfigError("ledger.hold_timeout_s: at most 31 days")
    if cfg.onus and not led.enabled:
        raise ConfigError("[[onus]] needs [ledger] enabled = true")
    _unique([o.prefix for o in cfg.onus], "onus prefix")
    for o in cfg.onus:
        if not o.prefix.isdigit() or not 1 <= len(o.prefix) <= 19:
            raise ConfigError(f"onus {o.prefix!r}: prefix must be 1-19 digits")


def _name(x: ListenerSection | TerminalSection) -> str:
    return f"terminal {x.id}" if isinstance(x, TerminalSection) else f"listener {x.name}"


def pin_key_of(cfg: Config, terminal: TerminalSection | None, listener: str,
               ) -> tuple[str, str]:
    """(PIN key label, mode) for a terminal: its own keys, else its listener's."""
    lst = next((x for x in cfg.listeners if x.name == listener), None)
    key = (terminal.pin_key if terminal else "") or (lst.pin_key if lst else "")
    mode = (terminal.pin_mode if terminal else "") or (lst.pin_mode if lst else "tpk")
    return key, mode


def load(path: str) -> Config:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    return replace(parse(data), path=path)
