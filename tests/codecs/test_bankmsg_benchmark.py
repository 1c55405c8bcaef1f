"""`python -m benchmarks.run bankmsg --json` runs and reports both figures with baselines."""

from __future__ import annotations

import json

from iso20022_strategies import schema_dir

from benchmarks import bankmsg
from payswitch.codecs import bankcli


def test_bankmsg_benchmark_json(monkeypatch, capsys):
    monkeypatch.setenv(bankcli.SCHEMA_ENV, str(schema_dir()))
    monkeypatch.setattr(bankmsg, "RUNS", 1)
    monkeypatch.setattr(bankmsg, "PACS008_TXS", 2)
    monkeypatch.setattr(bankmsg, "NACHA_ENTRIES", 25)
    assert bankmsg.main(json=True) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["iso20022"]["messages_per_s"]) == {
        "pacs008_build", "pacs008_parse", "xmlschema_is_valid", "lxml_parse_validate"}
    assert r["iso20022"]["build_vs_xmlschema"] > 0
    assert {"nacha_write", "nacha_read", "achkit_render", "achkit_parse"} <= \
        set(r["nacha"]["records_per_s"])
    assert r["nacha"]["file"] == "PPD, 25 entries, 40 records"  # 25 + 3 addenda + 4, padded
