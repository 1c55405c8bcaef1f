"""A business day after the switch's traffic: clearing files, the networks'
settlement and chargebacks, settlement in the ledger, reconciliation, payouts, and
``ledger verify`` -- with faults injected on purpose, so that the reconciliation has
something to find.

``run_day(dsn, mac, day, out_dir, details=...)`` does, per network:

1. close the cycle (``clearing_build.close_cycle``) and write our outgoing file, with
   the faults of ``Faults`` applied to what is sent: one presentment sent twice
   (``duplicate``), one with a PAN the network refuses (``reject``);
2. post the day's holds (``switch.ledgerwire.clear``);
3. the network reads the file (``simulators.chargebacks.settle_day``: interchange,
   scheme fees, and ``change_amount``: one ARN settled for more than presented) and
   answers with its settlement report (``NAME.settlement.json``) and first chargebacks
   (``NAME-cb.ctf|.ipm``: ``chargebacks`` of them);
4. the ledger posts the settlement (``ledger.settlement``) and records each chargeback
   against its original (``ledger.chargebacks``);
5. reconciliation (``ledger.recon``), its events and metrics (``recon.prom``);
6. merchant payouts (``ledger.payouts``);

and, before all that, ``unpresented_hold`` adds one off-us approval of the day whose
hold expires unpresented (as a lost presentment would leave it). Every file goes to
``out_dir``. The switch's id scheme (``ledgerwire.det_id``) names accounts and
transfers, so the settlement meets the holds' accounts, and a re-run is idempotent.
"""

from __future__ import annotations

import dataclasses
import json
import time as clock
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import psycopg

import payswitch.ledger as L
from payswitch.codecs.clearing import chargeback as cbk
from payswitch.codecs.clearing.model import ClearingFile
from payswitch.ledger import chargebacks, payouts, recon, settlement
from payswitch.ledger import clearing_build as cb
from payswitch.ledger.clearing_build import DetailsSource, Network
from payswitch.simulators.ach import AchOperator, OperatorConfig
from payswitch.simulators.chargebacks import first_chargebacks, report_dict, settle_day
from payswitch.switch.ledgerwire import AUTH_OFFUS, LedgerWire, alpha, clear, det_id

NETWORKS = (Network("visa", "base2", "400000"), Network("mastercard", "ipm-blocked", "510000"))
SCHEME_FEE_BP = 13
MARKUP_BP = 30
BAD_PAN = "4000000000000001"  # fails the Luhn check: the network refuses it


@dataclass(frozen=True)
class Faults:
    duplicate: bool = True  # the first presentment of the first network is sent twice
    reject: bool = True  # the second one carries a PAN the network refuses
    change_amount: int = 137  # the third is settled for this much more (0: none)
    chargebacks: int = 1  # first chargebacks on the first network's last sales
    unpresented_hold: int = 4_321  # an approval whose hold expires unpresented (0: none)
    chargeback_share: float = 0.0  # and this share of all presentments, at random
    payout_return: bool = False  # the ACH operator returns the demo merchant's payout


@dataclass
class Day:
    files: dict[str, str] = field(default_factory=dict)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    settlements: dict[str, Any] = field(default_factory=dict)
    chargebacks: dict[str, str] = field(default_factory=dict)
    recon: dict[str, Any] = field(default_factory=dict)
    payouts: dict[str, Any] = field(default_factory=dict)
    verify_ok: bool = False
    ledger_balanced: bool = False


def accounts(role: str, network: str, ccy: int) -> int:
    """The switch's account ids for a role (settlement, payouts)."""
    a = alpha(ccy)
    if role == "network_receivable":
        return LedgerWire.network_receivable(network, a)
    if role == "merchant_payable":
        return LedgerWire.merchant_payable(a)
    return det_id("account", role, a)


def _unpresented_hold(dsn: str, mac: L.MacFunction, link: str, amount: int) -> None:
    """An off-us approval written as ``hold_offus`` writes it, its hold expiring in a
    second; then the expiry job's pass a little later releases it."""
    key = f"clearingday-unpresented-{link}-{amount}"
    pid, hold = det_id("payment", key), det_id("hold", key)
    ok, ko = L.authorization_events(
        payment_id=pid, hold_id=hold, approved_event_id=det_id("ev", key, "approved"),
        held_event_id=det_id("ev", key, "held"), declined_event_id=det_id("ev", key, "dec"),
        amount_minor=amount, currency="USD", approved={"auth_code": "UNPRES", "link": link})
    t = L.Transfer(hold, accounts("network_receivable", link, 840),
                   accounts("merchant_payable", "", 840), amount, 840, AUTH_OFFUS,
                   L.TransferFlags.PENDING, 0, 1)
    with L.Ledger(dsn, mac=mac) as led:
        led.create_accounts([L.Account(t.debit_account_id, 840, 3),
                             L.Account(t.credit_account_id, 840, 4)])
        led.submit([L.Request((t,), tuple(ok), tuple(ko))])
    later = clock.time_ns() + 5 * 10**9
    with L.Ledger(dsn, mac=mac, clock_ns=lambda: later) as led:
        led.expire_pending()


def _faulty(f: ClearingFile, faults: Faults) -> ClearingFile:
    ps = list(f.presentments)
    if faults.reject and len(ps) > 1:
        ps[1] = dataclasses.replace(ps[1], pan=BAD_PAN)
    if faults.duplicate and ps:
        ps.append(ps[0])
    return dataclasses.replace(f, presentments=tuple(ps))


def _send(conn: psycopg.Connection, net: Network, day: date, out: Path,
          details: DetailsSource, faults: Faults | None) -> tuple[ClearingFile, bytes]:
    cb.close_cycle(conn, net, day, cb.cutoff_ns(day))
    rows = cb.presented(conn, net.link, day)
    f = cb.to_file(net, day, rows, details(rows) if rows else {})
    if faults is not None:
        f = _faulty(f, faults)
    data = cb.encode(net, f)
    cb.write_atomic(out / cb.file_name(net, day), data)
    return f, data


def run_day(dsn: str, mac: L.MacFunction, day: date, out: Path, *,
            details: DetailsSource, networks: tuple[Network, ...] = NETWORKS,
            faults: Faults | None = None, seed: int = 1) -> Day:
    out.mkdir(parents=True, exist_ok=True)
    result = Day()
    if faults and faults.unpresented_hold:
        _unpresented_hold(dsn, mac, networks[0].link, faults.unpresented_hold)
    sent: dict[str, list[ClearingFile]] = {}
    with psycopg.connect(dsn, autocommit=True) as conn, L.Ledger(dsn, mac=mac) as led:
        chargebacks.migrate(conn)
        datas = {}
        for i, net in enumerate(networks):
            f, data = _send(conn, net, day, out, details, faults if i == 0 else None)
            sent[net.link], datas[net.link] = [f], data
            result.files[net.link] = cb.file_name(net, day)
        clear(dsn, mac, cb.cutoff_ns(day))
        for i, net in enumerate(networks):
            result.reports[net.link] = _network(conn, led, net, day, out, datas[net.link],
                                                sent[net.link][0],
                                                faults if i == 0 else None, seed, result)
        rec = recon.reconcile(conn, day, sent, result.reports, now_ns=clock.time_ns())
        recon.record_events(led, rec)
        (out / "recon.json").write_text(json.dumps(rec.to_dict(), indent=1))
        (out / "recon.prom").write_text(recon.metrics_text(rec))
        result.recon = rec.to_dict()
        result.payouts = _payouts(conn, led, day, out, sent, result.reports,
                                  {MERCHANTS["DEMOMERCHANT001"].account: "R03"}
                                  if faults and faults.payout_return else {})
    with psycopg.connect(dsn) as conn:
        rep = L.verify(conn, mac)
        result.verify_ok, result.ledger_balanced = rep.ok, rep.ledger_balanced
    return result


def _network(conn: psycopg.Connection, led: L.Ledger, net: Network, day: date, out: Path,
             data: bytes, sent: ClearingFile, faults: Faults | None, seed: int,
             result: Day) -> dict[str, Any]:
    blocked = net.fmt == "ipm-blocked"
    changes = {}
    if faults and faults.change_amount and len(sent.presentments) > 2:
        p = sent.presentments[2]
        changes[p.arn] = p.amount_minor + faults.change_amount
    report = report_dict(settle_day(data, net.link, blocked=blocked,
                                    scheme_fee_bp=SCHEME_FEE_BP, amount_changes=changes))
    (out / f"{net.link}-{day:%Y%m%d}.settlement.json").write_text(json.dumps(report, indent=1))
    result.settlements[net.link] = settlement.settle(
        led, report, network=net.link, day=day, accounts=accounts, ids=det_id,
        markup_bp=MARKUP_BP)
    # the last sales, past the ones the other faults touch (first three)
    touched = {p.arn for p in sent.presentments[:3]}
    sales = [p.arn for p in sent.presentments if p.kind == "sale" and p.arn not in touched]
    picks = sales[-faults.chargebacks:] if faults and faults.chargebacks else []
    cbs = first_chargebacks(data, net.link, blocked=blocked, arns=picks, seed=seed,
                            share=faults.chargeback_share if faults else 0.0)
    name = f"{net.link}-{day:%Y%m%d}-cb{cb.FORMATS[net.fmt]}"
    cb.write_atomic(out / name, cbs)
    for c in cbk.read(cbs, net.link, blocked=blocked).chargebacks:
        state = chargebacks.record(conn, led, chargebacks.Incoming(
            net.link, c.arn, c.original.amount_minor, int(c.original.currency),
            c.reason_code), accounts=accounts, ids=det_id)
        result.chargebacks[c.arn] = state
    return report


# Who is paid how: the demo terminals' merchant by ACH, anyone else by ISO 20022.
MERCHANTS = {
    "DEMOMERCHANT001": payouts.Merchant("DEMOMERCHANT001", "PAYSWITCH DEMO STORE", "ach",
                                        routing="091000019", account="000123456789"),
}
DEFAULT_MERCHANT = payouts.Merchant("", "MERCHANT", "iso20022",
                                    account="GB29NWBK60161331926819", agent_bic="NWBKGB2L")


def merchant_config(mid: str) -> payouts.Merchant:
    return MERCHANTS.get(mid) or dataclasses.replace(DEFAULT_MERCHANT, merchant_id=mid,
                                                     name=mid or "MERCHANT")


def payout_items(sent: dict[str, list[ClearingFile]],
                 reports: dict[str, dict[str, Any]]) -> list[payouts.Item]:
    """The networks' accepted items, each with the merchant our record named and its
    fee (interchange + the network's scheme fee + our markup)."""
    out = []
    for link, rep in reports.items():
        ours = {p.arn: p for f in sent.get(link, []) for p in f.presentments}
        for a in rep.get("accepted", ()):
            p = ours.get(a["arn"])
            if p is None:
                continue
            item = settlement.Item(a["arn"], a["kind"], a["amount_minor"], int(a["currency"]),
                                   a["interchange_minor"])
            scheme = settlement.markup(a["amount_minor"], SCHEME_FEE_BP)
            fee = abs(settlement.merchant_fee(item, MARKUP_BP, scheme))
            out.append(payouts.Item(p.merchant_id.strip() or "UNKNOWN", a["arn"], a["kind"],
                                    a["amount_minor"], int(a["currency"]), fee))
    return out


def _schemas() -> Any:
    """The ISO 20022 XSDs when ``$PAYSWITCH_ISO20022_SCHEMAS`` names them: payout
    messages are then validated before they are written."""
    import os

    from payswitch.codecs.iso20022 import SchemaStore
    where = os.environ.get("PAYSWITCH_ISO20022_SCHEMAS")
    return SchemaStore(Path(where)) if where and Path(where).is_dir() else None


def _payouts(conn: psycopg.Connection, led: L.Ledger, day: date, out: Path,
             sent: dict[str, list[ClearingFile]], reports: dict[str, dict[str, Any]],
             returns: dict[str, str]) -> dict[str, Any]:
    items = payout_items(sent, reports)
    merchants = {i.merchant_id: merchant_config(i.merchant_id) for i in items}
    store = _schemas()
    rep = payouts.pay_day(conn, led, day, items, merchants, accounts=accounts, ids=det_id,
                          schemas=store, validate=store is not None)
    if rep["ach"]:
        (out / f"payouts-{day:%Y%m%d}.ach").write_text(rep["ach"])
        operator = AchOperator(OperatorConfig(outcomes=returns))
        answer = operator.submit(rep["ach"], datetime.combine(day, time(12), tzinfo=UTC))
        rep["ach_accepted"] = answer.ack.accepted
        if answer.returns is not None:
            rep["returned"] = payouts.apply_returns(conn, led, answer.returns,
                                                    accounts=accounts, ids=det_id)
    for name in ("pain001", "pacs008"):
        if rep[name]:
            (out / f"payouts-{day:%Y%m%d}.{name}.xml").write_bytes(rep[name])
    return {"merchants": rep["merchants"], "returned": rep.get("returned", []),
            "ach": bool(rep["ach"]), "iso20022": bool(rep["pain001"])}


def summary(day: Day) -> dict[str, Any]:
    """What the demo report shows."""
    return {"files": day.files,
            "settlement_net_minor": {n: r.get("net_minor", {}) for n, r in day.reports.items()},
            "rejected": {n: len(r.get("rejected", ())) for n, r in day.reports.items()},
            "chargebacks": day.chargebacks,
            "recon": {"ok": day.recon.get("ok"), "counts": day.recon.get("counts"),
                      "totals": day.recon.get("totals")},
            "payouts": day.payouts, "ledger_verify_ok": day.verify_ok,
            "ledger_balanced": day.ledger_balanced}


def demo_day(dsn: str, mac: L.MacFunction, switch_hsm: Any, work_dir: str) -> dict[str, Any]:
    """`payswitch demo`'s end of day: today's traffic through ``run_day`` with the
    default faults, the PANs decrypted by the switch's HSM; files in ``work_dir``."""
    from payswitch.hsm import devkeys
    from payswitch.switch.clearing_details import hsm_decrypt, journal_details

    day = datetime.now(UTC).date()
    out = Path(work_dir) / "clearing"
    try:
        result = run_day(dsn, mac, day, out, faults=Faults(),
                         details=journal_details(dsn, hsm_decrypt(switch_hsm, devkeys.DEK)))
    except (L.LedgerError, psycopg.Error, OSError, ValueError) as e:
        return {"error": str(e)}
    return {"dir": str(out), **summary(result)}


def format_lines(report: dict[str, Any]) -> list[str]:
    """The demo report's lines for ``demo_day``'s result."""
    if "error" in report:
        return [f"  clearing day: FAILED: {report['error']}"]
    rec = report["recon"]
    paid = {m: r.get("paid", 0) for m, r in report["payouts"].get("merchants", {}).items()}
    return [f"  clearing files: {', '.join(report['files'].values())} (in {report['dir']})",
            f"  networks' settlement (net, minor units): {report['settlement_net_minor']}, "
            f"rejected records {report['rejected']}, chargebacks {report['chargebacks']}",
            f"  reconciliation (faults injected on purpose): {rec['counts']}, "
            f"totals {rec['totals']}",
            f"  payouts: {paid}, returned {len(report['payouts'].get('returned', []))}",
            f"  ledger verify after the clearing day: "
            f"{'clean' if report['ledger_verify_ok'] else 'FAILED'}, "
            f"balanced {report['ledger_balanced']}"]


def represent(dsn: str, mac: L.MacFunction, day: date, out: Path, net: Network,
              arns: set[str], evidence: str = "") -> str:
    """The representment path: answers the day's chargebacks with these ARNs -- the
    ledger moves the money back (``chargebacks.represent``) and a second-presentment
    file (Visa usage code 2 / IPM 1240/205) goes to the network. Returns its name."""
    blocked = net.fmt == "ipm-blocked"
    ext = cb.FORMATS[net.fmt]
    incoming = cbk.read((out / f"{net.link}-{day:%Y%m%d}-cb{ext}").read_bytes(), net.link,
                        blocked=blocked)
    picked = tuple(c for c in incoming.chargebacks if c.arn in arns)
    with psycopg.connect(dsn, autocommit=True) as conn, L.Ledger(dsn, mac=mac) as led:
        for c in picked:
            chargebacks.represent(conn, led, c.arn, accounts=accounts, ids=det_id,
                                  evidence=evidence)
    name = f"{net.link}-{day:%Y%m%d}-rp{ext}"
    second = cbk.ChargebackFile(net.acquirer_bin, day, 1, chargebacks=picked)
    cb.write_atomic(out / name, cbk.write_representments(second, net.link, blocked=blocked))
    return name
