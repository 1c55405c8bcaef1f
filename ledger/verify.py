"""`ledger verify`: is every unit of money where the ledger says it is, and is the event
history the one that was written?

Checks (each bounded to ``max_items`` reported items, the counts are always exact):
1. per ledger, total debits = total credits, pending and posted apart;
2. each account's four balances = the sums of its transfers;
3. no account breaks its limit flag;
4. the event chain: seq 1..n without gaps, each prev_mac = the previous mac, each mac
   recomputed (a link's SHA-256, a seal's MAC with the injected MAC function), the
   newest event sealed, the head row = the last event;
5. every ``approved`` event names a pending transfer (its hold), and every pending
   transfer has a ``held`` event in a payment that has an ``approved`` event;
6. holds an application says must be released are: when a relation named
   ``ledger_expected_voids`` (columns ``transfer_id uuid``, ``reason text``) exists,
   every pending transfer it names is voided (or expired), never still pending or
   posted. The ledger does not know why; the switch provides it as a view (a reversed
   original, a request answered 96 or recovered after a crash: see switch/schema.sql).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field

import psycopg

from . import events as ev

MAX_ITEMS = 50


@dataclass
class ChainReport:
    events: int = 0
    mac_checked: bool = False
    intact: bool = True
    problems: list[str] = field(default_factory=list)


@dataclass
class Report:
    ledgers: list[dict] = field(default_factory=list)
    unbalanced_ledgers: list[int] = field(default_factory=list)
    account_mismatches: list[dict] = field(default_factory=list)
    account_mismatch_count: int = 0
    limit_breaches: list[dict] = field(default_factory=list)
    limit_breach_count: int = 0
    orphan_transfers: list[str] = field(default_factory=list)
    orphan_transfer_count: int = 0
    chain: ChainReport = field(default_factory=ChainReport)
    approvals_without_hold: list[str] = field(default_factory=list)
    approvals_without_hold_count: int = 0
    holds_without_approval: list[str] = field(default_factory=list)
    holds_without_approval_count: int = 0
    events_without_outbox_count: int = 0  # would never be published
    expected_voids_checked: bool = False  # a ledger_expected_voids relation was found
    expected_voids: int = 0  # holds it names that exist
    unvoided: list[str] = field(default_factory=list)
    unvoided_count: int = 0

    @property
    def ledger_balanced(self) -> bool:
        return not (self.unbalanced_ledgers or self.account_mismatch_count
                    or self.limit_breach_count or self.orphan_transfer_count)

    @property
    def ok(self) -> bool:
        return (self.ledger_balanced and self.chain.intact and self.chain.mac_checked
                and not self.approvals_without_hold_count
                and not self.holds_without_approval_count
                and not self.events_without_outbox_count and not self.unvoided_count)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ledger_balanced"] = self.ledger_balanced
        d["event_chain_intact"] = self.chain.intact
        d["ok"] = self.ok
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_text(self) -> str:
        out = []
        for lg in self.ledgers:
            mark = "ok " if lg["balanced"] else "BAD"
            out.append(f"[{mark}] ledger {lg['ledger']}: debits posted {lg['debits_posted']} "
                       f"/ credits posted {lg['credits_posted']}, debits pending "
                       f"{lg['debits_pending']} / credits pending {lg['credits_pending']} "
                       f"({lg['accounts']} accounts)")
        if not self.ledgers:
            out.append("[ok ] no accounts yet")
        out.append(_line(not self.account_mismatch_count,
                         f"account balances = sums of transfers "
                         f"({self.account_mismatch_count} mismatches)"))
        out.extend(f"      account {m['id']}: stored {m['stored']} vs transfers {m['summed']}"
                   for m in self.account_mismatches)
        out.append(_line(not self.limit_breach_count,
                         f"account limits ({self.limit_breach_count} broken)"))
        out.extend(f"      account {b['id']}: {b['limit']}" for b in self.limit_breaches)
        out.append(_line(not self.orphan_transfer_count,
                         f"transfers name existing accounts / pending transfers "
                         f"({self.orphan_transfer_count} orphans)"))
        out.extend(f"      transfer {t}" for t in self.orphan_transfers)
        c = self.chain
        if not c.mac_checked:
            out.append(f"[???] event chain: {c.events} events, links checked but MACs NOT "
                       "checked (no MAC key given)")
        else:
            out.append(_line(c.intact, f"event chain: {c.events} events, MACs checked"))
        if c.problems and not c.intact:
            out.extend(f"      {p}" for p in c.problems)
        out.append(_line(not self.approvals_without_hold_count,
                         f"approvals with their hold ({self.approvals_without_hold_count} "
                         "without)"))
        out.extend(f"      {x}" for x in self.approvals_without_hold)
        out.append(_line(not self.holds_without_approval_count,
                         f"holds with their approval ({self.holds_without_approval_count} "
                         "without)"))
        out.extend(f"      {x}" for x in self.holds_without_approval)
        out.append(_line(not self.events_without_outbox_count,
                         f"every event in the outbox ({self.events_without_outbox_count} "
                         "missing)"))
        if self.expected_voids_checked:
            out.append(_line(not self.unvoided_count,
                             f"holds that must be released are voided ({self.expected_voids} "
                             f"named, {self.unvoided_count} still pending or posted)"))
            out.extend(f"      {x}" for x in self.unvoided)
        out.append("ledger verify: " + ("CLEAN" if self.ok else "DISCREPANCIES FOUND"
                                        if c.mac_checked or not c.intact else "INCOMPLETE"))
        return "\n".join(out)


def _line(ok: bool, text: str) -> str:
    return ("[ok ] " if ok else "[BAD] ") + text


def verify(conn: psycopg.Connection, mac: ev.MacFunction | None,
           max_items: int = MAX_ITEMS) -> Report:
    """Runs every check in one REPEATABLE READ snapshot (consistent while writers run)."""
    r = Report()
    with conn.transaction():
        conn.execute("set transaction isolation level repeatable read, read only")
        _balances(conn, r, max_items)
        _chain(conn, r, mac, max_items)
        _approvals(conn, r, max_items)
        _expected_voids(conn, r, max_items)
    return r


def _expected_voids(conn: psycopg.Connection, r: Report, max_items: int) -> None:
    row = conn.execute("select to_regclass('ledger_expected_voids')").fetchone()
    if row is None or row[0] is None:
        return
    r.expected_voids_checked = True
    rows = conn.execute("""
        select v.transfer_id, p.state, string_agg(distinct v.reason, ',')
          from ledger_expected_voids v join pending_transfers p on p.id = v.transfer_id
         group by v.transfer_id, p.state order by v.transfer_id""").fetchall()
    r.expected_voids = len(rows)
    bad = [(t, state, why) for t, state, why in rows if state not in ("voided", "expired")]
    r.unvoided_count = len(bad)
    r.unvoided = [f"hold {t} is {state}, but must be released ({why})"
                  for t, state, why in bad[:max_items]]


def _balances(conn: psycopg.Connection, r: Report, max_items: int) -> None:
    for row in conn.execute(
            "select ledger, count(*), coalesce(sum(debits_pending), 0), "
            "coalesce(sum(credits_pending), 0), coalesce(sum(debits_posted), 0), "
            "coalesce(sum(credits_posted), 0) from accounts group by ledger order by ledger"):
        lg, n, dp, cp, dpo, cpo = (int(x) for x in row)
        balanced = dp == cp and dpo == cpo
        r.ledgers.append(dict(ledger=lg, accounts=n, debits_pending=dp, credits_pending=cp,
                              debits_posted=dpo, credits_posted=cpo, balanced=balanced))
        if not balanced:
            r.unbalanced_ledgers.append(lg)
    rows = conn.execute("""
        with legs as (
            select t.debit_account_id as acct, t.amount, t.flags, p.state, true as debit
              from transfers t left join pending_transfers p on p.id = t.id
            union all
            select t.credit_account_id, t.amount, t.flags, p.state, false
              from transfers t left join pending_transfers p on p.id = t.id
        ), sums as (
            select acct,
              coalesce(sum(amount) filter (where debit and flags & 2 <> 0
                                            and state = 'pending'), 0) as dp,
              coalesce(sum(amount) filter (where debit and flags & 10 = 0), 0) as dpo,
              coalesce(sum(amount) filter (where not debit and flags & 2 <> 0
                                            and state = 'pending'), 0) as cp,
              coalesce(sum(amount) filter (where not debit and flags & 10 = 0), 0) as cpo
            from legs group by acct
        )
        select a.id, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted,
               coalesce(s.dp, 0), coalesce(s.dpo, 0), coalesce(s.cp, 0), coalesce(s.cpo, 0)
          from accounts a left join sums s on s.acct = a.id
         where (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)
               is distinct from (coalesce(s.dp, 0), coalesce(s.dpo, 0), coalesce(s.cp, 0),
                                 coalesce(s.cpo, 0))
         order by a.id""").fetchall()
    r.account_mismatch_count = len(rows)
    for row in rows[:max_items]:
        r.account_mismatches.append(dict(
            id=str(row[0]), stored=[int(x) for x in row[1:5]],
            summed=[int(x) for x in row[5:9]]))
    rows = conn.execute("""
        select id, case when flags & 1 <> 0 then 'debits_must_not_exceed_credits'
                        else 'credits_must_not_exceed_debits' end
          from accounts
         where (flags & 1 <> 0 and debits_pending + debits_posted > credits_posted)
            or (flags & 2 <> 0 and credits_pending + credits_posted > debits_posted)
         order by id""").fetchall()
    r.limit_breach_count = len(rows)
    r.limit_breaches = [dict(id=str(i), limit=lim) for i, lim in rows[:max_items]]
    # transfers has no foreign keys (hot path); this is where a dangling reference shows
    rows = conn.execute("""
        select t.id from transfers t
         where not exists (select 1 from accounts a where a.id = t.debit_account_id)
            or not exists (select 1 from accounts a where a.id = t.credit_account_id)
            or (t.pending_id is not null and not exists (
                    select 1 from transfers p where p.id = t.pending_id and p.flags & 2 <> 0))
            or (t.flags & 2 <> 0 and not exists (
                    select 1 from pending_transfers s where s.id = t.id))
         order by t.id""").fetchall()
    r.orphan_transfer_count = len(rows)
    r.orphan_transfers = [str(t) for (t,) in rows[:max_items]]


def _chain(conn: psycopg.Connection, r: Report, mac: ev.MacFunction | None, max_items: int) -> None:
    check = ChainCheck(r.chain, mac, max_items)
    with conn.cursor(name="ledger_verify_events") as cur:
        cur.itersize = 2000
        cur.execute("select seq, id, type, payment_id, transfer_id, occurred_at, payload, "
                    "prev_mac, mac from events order by seq")
        for seq, eid, etype, pid, tid, at, payload, pmac, emac in cur:
            check.event(ev.StoredEvent(seq, eid.int, etype, pid.int if pid else None,
                                       tid.int if tid else None, ev.us_from_datetime(at),
                                       payload, bytes(pmac), bytes(emac)))
    head = conn.execute("select seq, mac from event_chain_head").fetchone()
    check.end(None if head is None else (head[0], bytes(head[1])))


class ChainCheck:
    """The event chain's checks, fed the events in seq order, then the head row: seq
    1..n without gaps, each prev_mac the previous event's mac, each event a link or a
    seal (``events.check_event``), the newest one a seal, the head = the newest."""

    def __init__(self, report: ChainReport, mac: ev.MacFunction | None,
                 max_items: int = MAX_ITEMS) -> None:
        self.c, self.mac, self.max_items = report, mac, max_items
        report.mac_checked = mac is not None
        self.prev_seq, self.prev_mac = 0, ev.GENESIS_MAC
        self.sealed = True  # the newest event so far is sealed (none yet: nothing to seal)

    def bad(self, msg: str) -> None:
        self.c.intact = False
        if len(self.c.problems) < self.max_items:
            self.c.problems.append(msg)

    def event(self, e: ev.StoredEvent) -> None:
        self.c.events += 1
        seq = e.seq
        if seq != self.prev_seq + 1:
            self.bad(f"events {self.prev_seq + 1}..{seq - 1} missing (gap before seq {seq})")
        if e.prev_mac != self.prev_mac:
            self.bad(f"event {seq}: prev_mac does not match event {self.prev_seq}'s mac "
                     "(removed or reordered events)")
        if self.mac is not None:
            kind = ev.check_event(e, self.mac)
            if kind == ev.BAD:
                self.bad(f"event {seq} ({e.type}, id {uuid.UUID(int=e.id)}): MAC does not "
                         "match its content (edited)")
            self.sealed = kind == ev.SEAL
        self.prev_seq, self.prev_mac = seq, e.mac

    def end(self, head: tuple[int, bytes] | None) -> None:
        if self.mac is not None and not self.sealed:
            self.bad(f"the newest event, seq {self.prev_seq}, is not sealed by a MAC "
                     "(events removed from the end, or links rewritten)")
        if head is None:
            self.bad("event chain head row missing")
        elif head[0] != self.prev_seq or head[1] != self.prev_mac:
            self.bad(f"chain head says seq {head[0]} but the last event is seq "
                     f"{self.prev_seq} (events removed from the end, or head edited)")


def _approvals(conn: psycopg.Connection, r: Report, max_items: int) -> None:
    rows = conn.execute("""
        select e.seq, e.payment_id, e.transfer_id from events e
          left join transfers t on t.id = e.transfer_id and t.flags & 2 <> 0
         where e.type = 'approved' and t.id is null order by e.seq""").fetchall()
    r.approvals_without_hold_count = len(rows)
    r.approvals_without_hold = [
        f"approved event seq {s} (payment {p}) names hold {t}, which is not a pending transfer"
        for s, p, t in rows[:max_items]]
    rows = conn.execute("""
        select t.id from transfers t
         where t.flags & 2 <> 0 and not exists (
             select 1 from events h where h.type = 'held' and h.transfer_id = t.id
                and exists (select 1 from events a where a.type = 'approved'
                                                     and a.payment_id = h.payment_id))
         order by t.id""").fetchall()
    r.holds_without_approval_count = len(rows)
    r.events_without_outbox_count = conn.execute(
        "select count(*) from events e where not exists "
        "(select 1 from outbox o where o.event_seq = e.seq)").fetchone()[0]  # type: ignore[index]
    r.holds_without_approval = [
        f"hold {t} has no held event in an approved payment" for (t,) in rows[:max_items]]
