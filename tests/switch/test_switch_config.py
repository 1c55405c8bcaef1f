"""Config parsing and the BIN table: pure, no sockets."""

from __future__ import annotations

import pathlib
import tomllib

import pytest

from payswitch.codecs.iso8583 import Message
from payswitch.routing.bins import BinTable, NoPan, UnknownBin
from payswitch.switch import config
from payswitch.switch.errors import response_code_for

EXAMPLE = pathlib.Path(config.__file__).with_name("example.toml")


def test_example_config_parses_with_every_section():
    cfg = config.load(str(EXAMPLE))
    assert [x.name for x in cfg.links] == ["visa", "mastercard"]
    assert cfg.link("visa").framing == "vap" and cfg.link("mastercard").request_timeout_ms
    assert cfg.listeners[1].kind == "acquirer" and cfg.acquirers[0].institution_id == "123456"
    assert cfg.ledger.enabled and cfg.ledger.currencies == ("USD", "EUR")
    assert cfg.onus[0].prefix == "999001" and cfg.onus[0].opening_balance_minor == 10_000_000


@pytest.mark.parametrize(("data", "needle"), [
    ({"switch": {"drain_timeout": 5}}, "unknown key"),
    ({"links": [{"name": "x", "host": "h", "port": 1, "dialect": "nope"}]}, "dialect"),
    ({"routes": [{"prefix": "4", "link": "missing"}]}, "no link"),
    ({"listeners": [{"name": "a"}, {"name": "a"}]}, "twice"),
    ({"switch": {"drain_timeout_ms": -1}}, "non-negative"),
    ({"listeners": [{"name": "a", "max_frame_bytes": 10**6}]}, "max_frame_bytes"),
    ({"listeners": [{"name": "a", "frame_timeout_ms": 0}]}, "frame_timeout_ms must be > 0"),
    ({"listeners": [{"name": "a", "max_connections": 10}]}, "max_unproven_connections"),
    ({"listeners": [{"name": "a", "max_malformed_frames": 0}]}, "max_malformed_frames"),
    ({"listeners": [{"name": "a", "dialect": "iso87binary"}]}, "dialect"),
    ({"links": [{"name": "x", "host": "h", "port": 1, "frame_timeout_ms": 0}]},
     "frame_timeout_ms"),
    ({"bogus": {}}, "unknown section"),
    ({"ledger": {"enabled": "yes"}}, "true or false"),
    ({"ledger": {"currencies": ["XXX"]}}, "unknown currency"),
    ({"ledger": {"hold_timeout_s": 40 * 86400}}, "31 days"),
    ({"onus": [{"prefix": "999"}]}, "needs \\[ledger\\] enabled"),
    ({"ledger": {"enabled": True}, "onus": [{"prefix": "99x"}]}, "digits"),
    ({"ledger": {"enabled": True, "relay_on": True}}, "unknown key"),
    ({"ledger": {"relay_inflight_max": 0}}, "relay_inflight_max"),
    ({"ledger": {"mqtt_port": 70000}}, "not a TCP port"),
    ({"database": {"dsn": "host=db user=app password=hunter2"}}, "password does not belong"),
    ({"database": {"dsn": "postgresql://app:hunter2@db/payswitch"}}, "password does not belong"),
])
def test_config_refuses_mistakes(data, needle):
    with pytest.raises(config.ConfigError, match=needle):
        config.parse(data)


def test_dsn_from_environment_wins(monkeypatch):
    cfg = config.parse({"database": {"dsn_env": "PS_TEST_DSN", "dsn": "dbname=file"}})
    monkeypatch.setenv("PS_TEST_DSN", "dbname=env")
    assert cfg.database.resolve_dsn() == "dbname=env"
    monkeypatch.delenv("PS_TEST_DSN")
    assert cfg.database.resolve_dsn() == "dbname=file"


def test_bin_table_longest_prefix_wins_and_unknown_is_15():
    table = BinTable([("4", "visa"), ("476173", "visa-direct"), ("5", "mc")])
    assert table.lookup("4761739001010010").link == "visa-direct"
    assert table.lookup("4111111111111111").link == "visa"
    assert table.route(Message(mti="0200", track2="5413330000000001=2512")).link == "mc"
    with pytest.raises(UnknownBin) as e:
        table.lookup("6011000000000004")
    assert response_code_for(e.value) == "15"
    with pytest.raises(NoPan):
        table.route(Message(mti="0200"))
    with pytest.raises(ValueError, match="two links"):
        BinTable([("4", "a"), ("4", "b")])


def test_demo_config_with_ledger_parses():
    from payswitch.lab.demo import ONUS_PREFIX, demo_config

    cfg = config.parse(tomllib.loads(demo_config(1, 2, ledger=True, pos_port=3,
                                                 ledger_relay=("127.0.0.1", 1883, "p/"))))
    assert cfg.ledger.enabled and cfg.ledger.relay and cfg.ledger.topic_prefix == "p/"
    assert cfg.onus[0].prefix == ONUS_PREFIX and cfg.listeners[0].port == 3
