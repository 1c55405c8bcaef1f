"""The suite format: TOML, one file per network and role, loaded and validated.

A suite has a ``[suite]`` table and ``[[case]]`` tables. Every key is checked: an
unknown key, template, check or card is refused with a ``SuiteError`` naming it and
the case it is in, so a typo never silently turns a check off. Example::

    [suite]
    name = "visa-issuer-host"
    role = "issuer-host"            # issuer-host | acquirer-host
    network = "visa"                # visa | mastercard | iso87ascii
    time_limit_ms = 5000            # the network's response time limit (per case too)

    [[case]]
    name = "purchase_chip_approved"
    request = "purchase"            # a request template (TEMPLATES)
    card = "visa_approve"           # a test card (simulators/cards.py)
    amount_minor = 2599
    entry = "chip"                  # chip | magstripe | keyed
    expect_codes = ["00"]           # DE39 values allowed for this case
    checks = ["de39_allowed", "de38_on_approval", "echoed_fields", "arpc"]
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from payswitch.simulators.cards import BY_NAME

ROLES = ("issuer-host", "acquirer-host")
NETWORKS = ("visa", "mastercard", "iso87ascii")
ENTRIES = ("chip", "magstripe", "keyed")

# What the network side sends (issuer-host) or the terminal side drives (acquirer-host).
TEMPLATES = {
    "issuer-host": ("purchase", "authorization", "cash", "balance_inquiry", "refund",
                    "reversal", "reversal_advice", "advice_0120", "completion_0220",
                    "repeat", "echo", "sign_on"),
    "acquirer-host": ("purchase", "cash", "balance_inquiry", "reversal", "wait"),
}
# Checks a case may name, per role (checks.py implements them).
CHECKS = {
    "issuer-host": ("response_mti", "de39_allowed", "de38_on_approval", "echoed_fields",
                    "time_limit", "duplicate_same", "arpc", "mac"),
    "acquirer-host": ("de39_allowed", "mandatory_fields", "field_formats",
                      "stan_rrn_unique", "reversal_de90", "reversal_amount",
                      "reversal_sent", "sign_on", "echo", "mac"),
}
DEFAULT_CHECKS = {
    "issuer-host": ("response_mti", "de39_allowed", "de38_on_approval", "echoed_fields",
                    "time_limit", "mac"),
    "acquirer-host": ("de39_allowed", "mandatory_fields", "field_formats",
                      "stan_rrn_unique", "mac"),
}
# acquirer-host: what the network answers the host's request for this case.
NETWORK_ANSWERS = ("issuer", "no_answer", "late")

SUITE_KEYS = {"name", "role", "network", "description", "time_limit_ms", "mac",
              "host_timeout_ms", "reversal_within_ms"}
CASE_KEYS = {"name", "description", "mandatory", "request", "card", "amount_minor",
             "entry", "pin", "expect_codes", "checks", "time_limit_ms", "send_twice",
             "original", "fields", "network_answer", "wait_ms", "mti"}


class SuiteError(ValueError):
    """A suite file that cannot be run as written (the message names the key)."""


@dataclass(frozen=True)
class Case:
    name: str
    request: str
    description: str = ""
    mandatory: bool = True
    card: str | None = None
    amount_minor: int = 0
    entry: str = "chip"
    pin: bool = False
    expect_codes: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()
    time_limit_ms: int = 5000
    send_twice: bool = False
    original: str | None = None  # reversal / advice / repeat: the case it refers to
    fields: dict[int, str] = field(default_factory=dict)  # DE number -> value overrides
    network_answer: str = "issuer"
    wait_ms: int = 0
    mti: str | None = None


@dataclass(frozen=True)
class Suite:
    name: str
    role: str
    network: str
    cases: tuple[Case, ...]
    description: str = ""
    time_limit_ms: int = 5000
    mac: bool = False  # the link carries DE64/DE128 under the network's ZAK
    host_timeout_ms: int = 2000  # acquirer-host: how long the host waits for the network
    reversal_within_ms: int = 10_000  # acquirer-host: a reversal after a timeout by then

    def case(self, name: str) -> Case:
        for c in self.cases:
            if c.name == name:
                return c
        raise KeyError(name)


def _want(value, kind, where: str):
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise SuiteError(f"{where}: expected {getattr(kind, '__name__', kind)}, "
                         f"got {type(value).__name__}")
    return value


def _unknown(table: dict, allowed: set[str], where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise SuiteError(f"{where}: unknown key {extra[0]!r}")


def _case(raw: dict, suite: dict, index: int) -> Case:
    role = suite["role"]
    where = f"case #{index + 1}"
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: not a table")
    name = _want(raw.get("name"), str, f"{where}: name")
    where = f"case {name!r}"
    _unknown(raw, CASE_KEYS, where)
    request = _want(raw.get("request"), str, f"{where}: request")
    if request not in TEMPLATES[role]:
        raise SuiteError(f"{where}: unknown request template {request!r} for {role}")
    card = raw.get("card")
    if card is not None and _want(card, str, f"{where}: card") not in BY_NAME:
        raise SuiteError(f"{where}: unknown card {card!r}")
    entry = _want(raw.get("entry", "chip"), str, f"{where}: entry")
    if entry not in ENTRIES:
        raise SuiteError(f"{where}: unknown entry {entry!r}")
    codes = tuple(_want(c, str, f"{where}: expect_codes")
                  for c in _want(raw.get("expect_codes", []), list, f"{where}: expect_codes"))
    checks = raw.get("checks", list(DEFAULT_CHECKS[role]))
    for c in _want(checks, list, f"{where}: checks"):
        if c not in CHECKS[role]:
            raise SuiteError(f"{where}: unknown check {c!r} for {role}")
    answer = _want(raw.get("network_answer", "issuer"), str, f"{where}: network_answer")
    if answer not in NETWORK_ANSWERS:
        raise SuiteError(f"{where}: unknown network_answer {answer!r}")
    fields = {}
    for k, v in _want(raw.get("fields", {}), dict, f"{where}: fields").items():
        if not (k.isdigit() and 2 <= int(k) <= 128):
            raise SuiteError(f"{where}: fields key {k!r} is not a DE number 2..128")
        fields[int(k)] = _want(v, str, f"{where}: fields.{k}")
    amount = _want(raw.get("amount_minor", 0), int, f"{where}: amount_minor")
    if not 0 <= amount < 10**12:
        raise SuiteError(f"{where}: amount_minor outside 0..999999999999")
    mti = raw.get("mti")
    if mti is not None and not (isinstance(mti, str) and len(mti) == 4 and mti.isdigit()):
        raise SuiteError(f"{where}: mti {mti!r} is not 4 digits")
    return Case(
        name=name, request=request,
        description=_want(raw.get("description", ""), str, f"{where}: description"),
        mandatory=_want(raw.get("mandatory", True), bool, f"{where}: mandatory"),
        card=card, amount_minor=amount, entry=entry,
        pin=_want(raw.get("pin", False), bool, f"{where}: pin"),
        expect_codes=codes, checks=tuple(checks),
        time_limit_ms=_want(raw.get("time_limit_ms", suite.get("time_limit_ms", 5000)), int,
                            f"{where}: time_limit_ms"),
        send_twice=_want(raw.get("send_twice", False), bool, f"{where}: send_twice"),
        original=raw.get("original"), fields=fields, network_answer=answer,
        wait_ms=_want(raw.get("wait_ms", 0), int, f"{where}: wait_ms"), mti=mti)


def parse_suite(text: str, source: str = "<suite>") -> Suite:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SuiteError(f"{source}: not TOML: {e}") from None
    _unknown(doc, {"suite", "case"}, source)
    head = doc.get("suite")
    if not isinstance(head, dict):
        raise SuiteError(f"{source}: no [suite] table")
    _unknown(head, SUITE_KEYS, f"{source} [suite]")
    for key in ("name", "role", "network"):
        _want(head.get(key), str, f"{source} [suite] {key}")
    if head["role"] not in ROLES:
        raise SuiteError(f"{source} [suite]: unknown role {head['role']!r}")
    if head["network"] not in NETWORKS:
        raise SuiteError(f"{source} [suite]: unknown network {head['network']!r}")
    raw_cases = _want(doc.get("case", []), list, f"{source}: case")
    cases = tuple(_case(raw, head, i) for i, raw in enumerate(raw_cases))
    names = [c.name for c in cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SuiteError(f"{source}: case name {dupes[0]!r} used twice")
    for c in cases:
        if c.original is not None and c.original not in names[:names.index(c.name)]:
            raise SuiteError(f"case {c.name!r}: original {c.original!r} is not an earlier case")
        if c.request in ("reversal", "reversal_advice", "repeat") and c.original is None \
                and head["role"] == "issuer-host":
            raise SuiteError(f"case {c.name!r}: a {c.request} needs original = <case>")
    opt = {k: head[k] for k in ("time_limit_ms", "mac", "host_timeout_ms",
                                "reversal_within_ms", "description") if k in head}
    for k in ("time_limit_ms", "host_timeout_ms", "reversal_within_ms"):
        if k in opt:
            _want(opt[k], int, f"{source} [suite] {k}")
    if "mac" in opt:
        _want(opt["mac"], bool, f"{source} [suite] mac")
    return Suite(name=head["name"], role=head["role"], network=head["network"],
                 cases=cases, **opt)


def load_suite(path: str | Path) -> Suite:
    p = Path(path)
    return parse_suite(p.read_text(), str(p))


def shipped() -> dict[str, Suite]:
    """The suites shipped with the project (package data), by name."""
    out = {}
    for entry in resources.files("payswitch.simulators.certsuite").joinpath("suites").iterdir():
        if entry.name.endswith(".toml"):
            s = parse_suite(entry.read_text(), entry.name)
            out[s.name] = s
    return out


def find_suite(name_or_path: str | None, role: str, network: str) -> Suite:
    """A shipped suite by name, a suite file by path, or the default for role+network."""
    if name_or_path and (name_or_path.endswith(".toml") or "/" in name_or_path):
        suite = load_suite(name_or_path)
    else:
        suites = shipped()
        name = name_or_path or f"{network}-{role}"
        if name not in suites:
            raise SuiteError(f"no shipped suite {name!r} (have: {', '.join(sorted(suites))})")
        suite = suites[name]
    if (suite.role, suite.network) != (role, network):
        raise SuiteError(f"suite {suite.name!r} is for {suite.role} on {suite.network}, "
                         f"not {role} on {network}")
    return suite
