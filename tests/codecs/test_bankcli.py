"""`payswitch ach show|validate` and `payswitch iso20022 validate`: exit codes and output."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from iso20022_strategies import STORE, schema_dir

from payswitch.codecs import bankcli
from payswitch.codecs import iso20022 as x

DATA = Path(__file__).parent / "data"


def run(argv: list[str]) -> int:
    # The same register() the payswitch dispatcher calls, on a parser of our own.
    parser = argparse.ArgumentParser(prog="payswitch")
    bankcli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_ach_validate_ok(capsys):
    assert run(["ach", "validate", str(DATA / "nacha/payroll.ach")]) == 0
    assert "valid, 3 batches, 4 entries" in capsys.readouterr().out


def test_ach_validate_names_line_record_and_field(tmp_path, capsys):
    lines = (DATA / "nacha/payroll.ach").read_text().splitlines()
    lines[2] = lines[2][:11] + "4" + lines[2][12:]  # routing check digit 3 -> 4
    bad = tmp_path / "bad.ach"
    bad.write_text("\n".join(lines) + "\n")
    assert run(["ach", "validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "line 3, entry detail (6): routing check digit does not match (field routing)" in err


def test_ach_relaxation_flag(tmp_path, capsys):
    lines = (DATA / "nacha/payroll.ach").read_text().splitlines()
    lines[3] = lines[3][:79] + "123456780000002"  # a trace number not prefixed by the ODFI
    f = tmp_path / "custom.ach"
    f.write_text("\n".join(lines) + "\n")
    assert run(["ach", "validate", str(f)]) == 1
    assert run(["ach", "validate", "--relax", "custom-trace-numbers", str(f)]) == 0


def test_ach_show_returns_and_nocs_with_masked_accounts(capsys):
    assert run(["ach", "show", str(DATA / "nacha/returns.ach")]) == 0
    out = capsys.readouterr().out
    assert "return R01 (insufficient funds) of trace 091000010000003" in out
    assert "return R03" in out and "debits 25.99, credits 1240.50" in out
    assert "000123456789" not in out and "********6789" in out
    assert " 0072 " not in out and "**72" in out  # short accounts: never more than half
    assert run(["ach", "show", str(DATA / "nacha/noc.ach")]) == 0
    out = capsys.readouterr().out
    assert "change C01 (incorrect DFI account number)" in out and "8800112299" not in out


def test_ach_unreadable_file(tmp_path, capsys):
    assert run(["ach", "validate", str(tmp_path / "none.ach")]) == 2


def test_iso20022_validate(capsys):
    f = str(DATA / "iso20022/pacs.008.xml")
    assert run(["iso20022", "validate", "--schemas", str(schema_dir()), f]) == 0
    assert "valid pacs.008.001.08, id PSW20261128-0001" in capsys.readouterr().out


def test_iso20022_invalid_prints_path_and_rjct(tmp_path, capsys):
    bad = tmp_path / "bad.xml"
    bad.write_bytes((DATA / "iso20022/pacs.008.xml").read_bytes().replace(
        b"<NbOfTxs>2</NbOfTxs>", b"<NbOfTxs>5</NbOfTxs>"))
    assert run(["iso20022", "validate", "--schemas", str(schema_dir()), "--reject-reply",
                str(bad)]) == 1
    out, err = capsys.readouterr()
    assert "/Document/FIToFICstmrCdtTrf/GrpHdr/NbOfTxs: says 5 transactions" in err
    reply = x.parse(out.encode(), STORE, expect="pacs.002")
    assert reply.group_status == "RJCT" and reply.original_msg_id == "PSW20261128-0001"


def test_iso20022_schema_dir_from_env_and_config(tmp_path, monkeypatch, capsys):
    f = str(DATA / "iso20022/pacs.008.xml")
    monkeypatch.delenv(bankcli.SCHEMA_ENV, raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(["iso20022", "validate", "--schemas", str(empty), f]) == 2
    assert "no schema pacs.008.001.08.xsd" in capsys.readouterr().err
    monkeypatch.setenv(bankcli.SCHEMA_ENV, str(schema_dir()))
    assert run(["iso20022", "validate", f]) == 0
    monkeypatch.delenv(bankcli.SCHEMA_ENV)
    cfg = tmp_path / "payswitch.toml"
    cfg.write_text(f'[iso20022]\nschema_dir = "{schema_dir()}"\n')
    assert run(["iso20022", "validate", "--config", str(cfg), f]) == 0


@pytest.mark.parametrize("argv", [["ach", "--help"], ["iso20022", "validate", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        run(argv)
    assert e.value.code == 0
