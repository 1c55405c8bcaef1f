"""The switch's [hsm] section sets the HSM policy (PIN verifications per card), and the
commands its token's role refuses show in /metrics as hsm_refused_total{command}."""

from __future__ import annotations

import dataclasses
import os
import socket
import urllib.request

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from switchkit import config_dict, running_switch, trio_test

from payswitch.hsm import CommandNotAllowedError, PinVerifyLimitError, devkeys
from payswitch.hsm.token import DEV_PIN
from payswitch.simulators.cards import card

PIN_ENV = "PAYSWITCH_TEST_HSM_PIN"
PVK = "pvk.policy-test"


@pytest.fixture(scope="module")
def tokens(hsm, issuer_hsm, terminal_hsm):
    devkeys.load_switch_keys(hsm)
    pvk = devkeys.TEST_KEYS[devkeys.pvk("visa")]  # for the test's own PIN checks
    devkeys.load_dev_keys(hsm, [dataclasses.replace(pvk, label=PVK)])
    devkeys.load_issuer_keys(issuer_hsm)
    devkeys.load_terminal_keys(terminal_hsm)
    os.environ[PIN_ENV] = DEV_PIN
    return hsm, issuer_hsm, terminal_hsm


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refused(port: int) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (loopback)
        text = resp.read().decode()
    return {s.labels["command"]: s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "hsm_refused_total"}


@trio_test
async def test_policy_from_config_and_refusals_exported(dsn, tokens):
    _, _, terminal_hsm = tokens
    ok = card("visa_approve")
    cfg = config_dict(dsn, free_port(), zpk=devkeys.zpk("visa"))
    cfg["hsm"] = {"token": "switch-test", "pin_env": PIN_ENV, "pin_verify_max": 3,
                  "pin_verify_window_s": 60}
    cfg["switch"]["metrics_port"] = free_port()
    async with running_switch(cfg, wait_signed_on=False) as sw:
        token = sw.hsm.hsm  # what a process holding the switch's token can call
        # the PIN block as the issuer's side sees it (under the shared ZPK)
        tpk_block = terminal_hsm.encrypt_pin(devkeys.TPK, ok.pin, ok.pan)
        block = token.translate_pin(tpk_block, ok.pan, devkeys.TPK, devkeys.zpk("visa"))
        for _ in range(3):
            token.verify_pin_pvv(block, ok.pan, devkeys.zpk("visa"), PVK, "0000")
        with pytest.raises(PinVerifyLimitError):  # the 4th within the window: config's 3
            token.verify_pin_pvv(block, ok.pan, devkeys.zpk("visa"), PVK, "0000")
        before = await trio.to_thread.run_sync(refused, sw.metrics_port)
        for _ in range(2):
            with pytest.raises(CommandNotAllowedError):
                token.encrypt_pin(devkeys.zpk("visa"), "1234", ok.pan)
        after = await trio.to_thread.run_sync(refused, sw.metrics_port)
    assert before.get("encrypt_pin", 0) + 2 == after["encrypt_pin"]
