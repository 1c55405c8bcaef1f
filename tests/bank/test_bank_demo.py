"""The demo's bank-payments phase on its own: every part reported, ledger verify clean."""

from __future__ import annotations

import psycopg
from bankkit import MAC

from payswitch.lab import bank_demo
from payswitch.ledger import verify


def test_bank_phase_reports_every_part_and_the_ledger_verifies(pg_dsn):
    r = bank_demo.run(pg_dsn, MAC)
    assert r["ok"], r
    i = r["instant"]
    assert i["states"] == {"settled": 4, "reversed": 1} and i["pacs028_sent"] >= 1
    assert (i["inbound_credit"], i["recall_answer"]) == ("ACSC", "Pacs004")
    assert r["ach"]["returns"] == {"R03": 1} and r["ach"]["nocs"] == {"C01": 1}
    assert r["ach"]["payee_after_noc"] == "40000039"
    assert r["camt053"]["equals_ledger"] and r["camt053"]["entries"] > 0
    assert r["camt053"]["camt054_for_inbound_credit"]
    with psycopg.connect(pg_dsn) as c:
        rep = verify(c, MAC)
    assert rep.ok, rep.to_text()
    assert "bank payments" in "\n".join(bank_demo.format_lines(r))
