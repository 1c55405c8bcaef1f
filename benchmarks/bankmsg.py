"""Bank messages benchmark: ISO 20022 pacs.008 and NACHA files, each against a baseline.

    python -m benchmarks.run bankmsg --json

ISO 20022: one pacs.008.001.08 with ``PACS008_TXS`` transactions. Timed: ``build``
(model -> XML, validated against the XSD by lxml), ``parse`` (safe parse, XSD
validation, coherence checks, model) and, as the baseline on the same bytes,
xmlschema's bare ``is_valid`` (the pure-Python validator) and lxml's bare
parse + validate. Figures are messages per second.

NACHA: one PPD file of ``NACHA_ENTRIES`` entries (every tenth with an addenda 05).
Timed: ``write`` (records computed and the text read back as a check), ``write``
without the check, and ``read``; the baseline is achkit (an independent NACHA
library) rendering and parsing the same entries. Figures are records per second.

The schema directory is the CLI's (``PAYSWITCH_ISO20022_SCHEMAS``, else .cache/iso20022).
Each figure is the median of ``RUNS`` interleaved rounds.
"""

from __future__ import annotations

import datetime as dt
import json as jsonlib
import platform
import statistics
import time
from collections.abc import Callable
from importlib.metadata import version

import achkit
import xmlschema
from lxml import etree

from payswitch.codecs import iso20022 as x
from payswitch.codecs import nacha
from payswitch.codecs.bankcli import schema_dir

RUNS = 9
PACS008_TXS = 10
NACHA_ENTRIES = 1000
ODFI = "09100001"


def pacs008() -> x.Pacs008:
    t = dt.datetime(2026, 11, 28, 9, 30, tzinfo=dt.UTC)
    txs = tuple(x.CreditTransfer(
        end_to_end_id=f"E2E-{i}", tx_id=f"TX-{i}", amount_minor=10_000 + i, currency="EUR",
        debtor_name="Muster GmbH", debtor_account=x.Account("DE89370400440532013000"),
        debtor_agent="COBADEFFXXX", creditor_agent="BNPAFRPP", creditor_name="Dupont SARL",
        creditor_account=x.Account("FR1420041010050500013M02606"),
        remittance=f"Invoice {i}") for i in range(PACS008_TXS))
    return x.Pacs008("BENCH-1", t, t.date(), "PSWTDEFFXXX", "BNPAFRPP", txs)


def nacha_file() -> nacha.NachaFile:
    entries = tuple(nacha.Entry(
        transaction_code=22, routing="011401533", account=f"{i:010d}", amount=100 + i,
        individual_id=f"EMP{i:05d}", individual_name=f"EMPLOYEE {i}",
        trace_number=ODFI + f"{i + 1:07d}",
        addenda=(nacha.PaymentAddenda(f"PAYROLL {i}"),) if i % 10 == 0 else ())
        for i in range(NACHA_ENTRIES))
    batch = nacha.Batch(220, "ACME CORP", "1234567890", "PPD", "PAYROLL",
                        dt.date(2026, 11, 30), ODFI, 1, entries)
    return nacha.NachaFile("091000019", "1234567890", dt.date(2026, 11, 28),
                           creation_time="0930", batches=(batch,))


def achkit_file(f: nacha.NachaFile) -> achkit.AchFile:
    af = achkit.AchFile.create(origin_dfi="091000019", company_id="1234567890",
                               creation_date=dt.datetime(2026, 11, 28, 9, 30))
    b = af.batch(sec="PPD", description="PAYROLL", effective_date="2026-11-30")
    for e in f.batches[0].entries:
        b.credit(name=e.individual_name, routing=e.routing, account=e.account,
                 amount_cents=e.amount, id_number=e.individual_id,
                 addenda=e.addenda[0].payment_info if e.addenda else None)
    return af


def _rate(fn: Callable[[], object], loops: int) -> float:
    start = time.perf_counter()
    for _ in range(loops):
        fn()
    return loops / (time.perf_counter() - start)


def _time_all(targets: dict[str, tuple[Callable[[], object], int]]) -> dict[str, float]:
    samples: dict[str, list[float]] = {k: [] for k in targets}
    for _ in range(RUNS):
        for key, (fn, loops) in targets.items():
            samples[key].append(_rate(fn, loops))
    return {k: statistics.median(v) for k, v in samples.items()}


def measure() -> dict:
    store = x.SchemaStore(schema_dir(None, None))
    msg = pacs008()
    doc = x.build(msg, store)
    assert x.parse(doc, store) == msg
    xs = xmlschema.XMLSchema(str(store.path(x.VERSIONS["pacs.008"])))
    assert xs.is_valid(doc)
    lxml_schema = store.schema(x.VERSIONS["pacs.008"])

    f = nacha_file()
    text = nacha.write(f)
    records = len(text.splitlines())
    af = achkit_file(f)
    theirs = af.render()
    assert nacha.read(theirs).batches[0].entries == f.batches[0].entries
    assert achkit.parse(text)["batches"][0]["entries"][5]["account"] == f.entries()[5].account

    rates = _time_all({
        "pacs008_build": (lambda: x.build(msg, store), 200),
        "pacs008_parse": (lambda: x.parse(doc, store), 200),
        "xmlschema_is_valid": (lambda: xs.is_valid(doc), 20),
        "lxml_parse_validate": (lambda: lxml_schema.validate(etree.fromstring(doc)), 200),
        "nacha_write": (lambda: nacha.write(f), 3),
        "nacha_write_unchecked": (lambda: nacha.write(f, check=False), 3),
        "nacha_read": (lambda: nacha.read(text), 3),
        "achkit_render": (af.render, 3),
        "achkit_parse": (lambda: achkit.parse(theirs), 3),
    })
    per_msg = {k: round(v) for k, v in rates.items() if not k.startswith(("nacha", "achkit"))}
    bare = per_msg["xmlschema_is_valid"]
    per_rec = {k: round(v * records) for k, v in rates.items()
               if k.startswith(("nacha", "achkit"))}
    return {
        "iso20022": {
            "message": f"pacs.008.001.08, {PACS008_TXS} transactions, {len(doc)} bytes",
            "messages_per_s": per_msg,
            "build_vs_xmlschema": round(per_msg["pacs008_build"] / bare, 1),
            "parse_vs_xmlschema": round(per_msg["pacs008_parse"] / bare, 1),
        },
        "nacha": {
            "file": f"PPD, {NACHA_ENTRIES} entries, {records} records",
            "records_per_s": per_rec,
            "write_vs_achkit": round(per_rec["nacha_write"] / per_rec["achkit_render"], 2),
            "read_vs_achkit": round(per_rec["nacha_read"] / per_rec["achkit_parse"], 2),
        },
        "env": {"python": platform.python_version(), "lxml": version("lxml"),
                "xmlschema": version("xmlschema"), "achkit": version("achkit"),
                "machine": platform.machine()},
    }


def main(json: bool = False) -> int:
    r = measure()
    if json:
        print(jsonlib.dumps(r, indent=2))
        return 0
    i, n = r["iso20022"], r["nacha"]
    print(f"ISO 20022 {i['message']}: messages/s")
    for k, v in i["messages_per_s"].items():
        print(f"  {k:24} {v:>10,}")
    print(f"  build {i['build_vs_xmlschema']}x, parse {i['parse_vs_xmlschema']}x "
          "xmlschema's bare validation")
    print(f"NACHA {n['file']}: records/s")
    for k, v in n["records_per_s"].items():
        print(f"  {k:24} {v:>10,}")
    print(f"  write {n['write_vs_achkit']}x, read {n['read_vs_achkit']}x achkit")
    return 0
