"""Issue 9, finding 7: per-terminal MAC keys (TAK). A terminal configured with
``mac_key`` must MAC every request (DE64, ISO 9797-1 alg. 3 with a TDES TAK), verified
in the switch's HSM; a missing or wrong MAC is refused with DE39 63 and counted, so a
spoofed DE41 behind the same address cannot reverse another terminal's approval.
The terminal side is computed twice, independently: with pyemv's ISO 9797-1 alg. 3,
and by the load generator's ``mac`` option (its own token)."""

from __future__ import annotations

import contextlib
import os

import pyemv
import pytest
from switchkit import (
    PAN,
    FakeIssuer,
    Terminal,
    approve,
    config_dict,
    purchase,
    running_switch,
    serving,
    trio_test,
)

from payswitch.codecs.iso8583 import get, macing
from payswitch.hsm import devkeys
from payswitch.hsm.errors import KeyExistsError
from payswitch.hsm.token import DEV_PIN
from payswitch.simulators.terminal import open_link

PIN_ENV = "PAYSWITCH_TEST_HSM_PIN"
TAK_LABEL = "tak.term0001"
# A TEST TAK in two components (devkeys style); never a production key.
TAK = devkeys.DevKey(TAK_LABEL, "TAK", ("0123456789ABCDEFFEDCBA9876543210",
                                         "1F2E3D4C5B6A79880F1E2D3C4B5A6978"), (None, None), None)
AES_TAK = devkeys.DevKey("tak.term0003", "TAK", ("8D2A1C0E4B6F7A3912C5D8E0F1A2B3C4",),
                         (None,), None, "AES")
DIALECT = get("iso87ascii")


def _import(hsm, key: devkeys.DevKey) -> None:
    """Under a key ceremony where the token's role needs one (the switch's)."""
    with contextlib.suppress(KeyExistsError):  # the session's token has it already
        devkeys.load_dev_keys(hsm, [key])


@pytest.fixture(scope="module")
def taks(hsm, terminal_hsm):
    devkeys.load_switch_keys(hsm)
    _import(hsm, TAK)
    _import(hsm, AES_TAK)
    _import(terminal_hsm, TAK)
    os.environ[PIN_ENV] = DEV_PIN
    return terminal_hsm


def mac_cfg(dsn: str, port: int) -> dict:
    cfg = config_dict(dsn, port)
    cfg["hsm"] = {"token": "switch-test", "pin_env": PIN_ENV}
    cfg["terminals"] = [{"id": "TERM0001", "listener": "pos", "mac_key": TAK_LABEL},
                        {"id": "TERM0002", "listener": "pos"},
                        {"id": "TERM0003", "listener": "pos", "mac_key": AES_TAK.label}]
    return cfg


def maced(msg, *, corrupt: bool = False) -> bytes:
    """The request as a TAK terminal sends it, MACed with pyemv (not our HSM code)."""
    body, hex_form = macing.unsigned(DIALECT, msg)
    k = TAK.clear
    mac = pyemv.mac.mac_iso9797_3(k[:8], k[8:], body, 1)
    if corrupt:
        mac = bytes([mac[0] ^ 1]) + mac[1:]
    return macing.signed(body, hex_form, mac)


@trio_test
async def test_terminal_mac_required_checked_and_counted(dsn, taks):
    issuer = FakeIssuer(approve)
    async with serving(issuer), running_switch(mac_cfg(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        orig = purchase("000001", 3_000)
        await term.send_raw(maced(orig))
        assert (await term.recv()).response_code == "00"
        # A spoofed DE41: another device behind the same address, no TAK, reverses it.
        spoof = orig.replace(mti="0400", stan="000002", original_data="0200" + orig.stan
                             + orig.transmission_time + "0" * 22)
        assert (await term.request(spoof)).response_code == "63"
        await term.send_raw(maced(spoof.replace(stan="000003"), corrupt=True))
        assert (await term.recv()).response_code == "63"
        assert (await term.request(purchase("000004"))).response_code == "63"  # no MAC
        # A terminal without a TAK is not asked for one.
        other = purchase("000005").replace(terminal_id="TERM0002")
        assert (await term.request(other)).response_code == "00"
        # The load generator's MAC option (terminal token): accepted.
        async with open_link("127.0.0.1", sw.ports["pos"],
                             mac=lambda body: taks.generate_mac(TAK_LABEL, body)) as link:
            result = await link.request(purchase("000006", 1_000))
        assert result.response and result.response.response_code == "00"
        failures = sw.metrics.registry.get_sample_value(
            "terminal_mac_failures_total", {"terminal": "TERM0001"})
        await term.aclose()
    assert failures == 3
    assert not issuer.traffic("04")  # nothing was reversed
    assert [m.pan for m in issuer.traffic("0200")] == [PAN] * 3


@trio_test
async def test_aes_tak_is_cmac(dsn, taks):
    """An AES TAK: AES-CMAC (8 bytes) over the same input, here computed with the
    cryptography package; a retail MAC under the TDES TAK is refused for it."""
    from cryptography.hazmat.primitives.ciphers.algorithms import AES
    from cryptography.hazmat.primitives.cmac import CMAC

    def cmac(body: bytes) -> bytes:
        c = CMAC(AES(AES_TAK.clear))
        c.update(body)
        return c.finalize()[:8]

    issuer = FakeIssuer(approve)
    async with serving(issuer), running_switch(mac_cfg(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        msg = purchase("000001").replace(terminal_id="TERM0003")
        body, hex_form = macing.unsigned(DIALECT, msg)
        await term.send_raw(macing.signed(body, hex_form, cmac(body)))
        assert (await term.recv()).response_code == "00"
        await term.send_raw(maced(purchase("000002").replace(terminal_id="TERM0003")))
        assert (await term.recv()).response_code == "63"
        await term.aclose()
