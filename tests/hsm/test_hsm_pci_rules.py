"""Issue 13 findings, one test each: command authorization by role (PIN oracle), PIN
verify rate limit, format downgrade, decimalisation tables in the key store, PVV /
offset from encrypted PIN blocks, MAC length per key, ISO format 4 with short PANs.
References are psec (and the ISO 9564 rule it implements), never our own code."""

from __future__ import annotations

import dataclasses
import uuid
import warnings

import pytest

from payswitch.hsm import (
    CommandNotAllowedError,
    Hsm,
    HsmConfigError,
    HsmError,
    HsmInputError,
    MacLengthError,
    PinBlockError,
    PinVerifyLimitError,
    Policy,
    devkeys,
)
from payswitch.hsm.token import DEV_SO_PIN

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import psec

PAN, PIN = "4761739001010010", "1234"
K1 = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
K2 = bytes.fromhex("89ABCDEF0123456776543210FEDCBA98")


def _label(p: str) -> str:
    return f"{p}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def keys(hsm, issuer_hsm, terminal_hsm):
    devkeys.load_switch_keys(hsm)
    devkeys.load_issuer_keys(issuer_hsm)
    devkeys.load_terminal_keys(terminal_hsm)
    return hsm


# --- b. command authorization -------------------------------------------------------

def test_switch_role_refuses_terminal_card_and_clear_commands(keys, hsm):
    before = sum(hsm.refused.values())
    refused = [
        lambda: hsm.encrypt_pin(devkeys.TPK, PIN, PAN),
        lambda: hsm.encrypt_pin(devkeys.zpk("visa"), PIN, PAN),
        lambda: hsm.dukpt_encrypt_pin(devkeys.BDK, bytes.fromhex("FFFF9876543210E00001"),
                                      PIN, PAN),
        lambda: hsm.generate_pvv_clear("pvk.any", PAN, PIN),
        lambda: hsm.generate_ibm3624_offset_clear("pvk.any", PIN, PAN[:12]),
        lambda: hsm.import_key_components(_label("zpk"), "ZPK", [K1]),
        lambda: hsm.generate_arqc("mkac.any", PAN, "00", b"\x00\x01", b"data"),
        lambda: hsm.generate_cvv("cvk.any", PAN, "2812", "201"),
        lambda: hsm.generate_cvv2("cvk.any", PAN, "2812"),
    ]
    for call in refused:
        with pytest.raises(CommandNotAllowedError) as e:
            call()
        assert isinstance(e.value, HsmError)
        assert PAN not in str(e.value) and PIN not in str(e.value)
    assert sum(hsm.refused.values()) - before == len(refused)
    assert hsm.refused["encrypt_pin"] >= 2
    # What the switch is for still works.
    assert hsm.has_key(devkeys.zpk("visa"))


def test_role_is_bound_to_the_token(keys, hsm_token):
    with pytest.raises(HsmConfigError, match="set up for role 'switch'"):
        Hsm(dataclasses.replace(hsm_token, role="personalisation"))
    with pytest.raises(HsmConfigError, match="unknown HSM role"):
        Hsm(dataclasses.replace(hsm_token, role="root"))


def test_key_ceremony_needs_the_so_pin(keys, hsm):
    label = _label("zpk")
    with pytest.raises(CommandNotAllowedError), hsm.ceremony("0000"):
        pass
    with hsm.ceremony(DEV_SO_PIN):
        hsm.import_key_components(label, "ZPK", [K1])
    with pytest.raises(CommandNotAllowedError):  # the ceremony ended with the block
        hsm.import_key_components(_label("zpk"), "ZPK", [K1])
    hsm.delete_key(label)


def test_pin_verify_rate_limited_per_card_in_switch_role(keys, hsm_token, issuer_hsm):
    now = [1000.0]
    pvk = _label("pvk")
    with Hsm(hsm_token, policy=Policy(pin_verify_max=3, pin_verify_window_s=60,
                                      clock=lambda: now[0])) as sw:
        with sw.ceremony(DEV_SO_PIN):
            sw.import_key_components(pvk, "PVK", [K1])
        try:
            issuer_hsm.import_key_components(pvk, "PVK", [K1])
            pvv = issuer_hsm.generate_pvv_clear(pvk, PAN, PIN)
            block = issuer_hsm.encrypt_pin(devkeys.zpk("visa"), PIN, PAN)
            for _ in range(3):
                assert sw.verify_pin_pvv(block, PAN, devkeys.zpk("visa"), pvk, pvv)
            with pytest.raises(PinVerifyLimitError):
                sw.verify_pin_pvv(block, PAN, devkeys.zpk("visa"), pvk, pvv)
            other = "4761739001010028"
            other_block = issuer_hsm.encrypt_pin(devkeys.zpk("visa"), PIN, other)
            sw.verify_pin_pvv(other_block, other, devkeys.zpk("visa"), pvk, "0000")
            now[0] += 61  # the window has passed
            assert sw.verify_pin_pvv(block, PAN, devkeys.zpk("visa"), pvk, pvv)
        finally:
            sw.delete_key(pvk)
            issuer_hsm.delete_key(pvk)


# --- c. no translation to ISO 1 / 2 from a PAN-bound format ---------------------------

def test_translate_refuses_format_downgrade(keys, hsm, terminal_hsm):
    zpk = devkeys.zpk("visa")
    for src in (0, 3):
        block = terminal_hsm.encrypt_pin(devkeys.TPK, PIN, PAN, src)
        with pytest.raises(PinBlockError, match="format"):
            hsm.translate_pin(block, PAN, devkeys.TPK, zpk, src, 1)
        with pytest.raises(PinBlockError, match="format"):
            hsm.translate_pin(block, PAN, devkeys.TPK, zpk, src, 2)
    ksn = bytes.fromhex("FFFF9876543210E00003")
    block = terminal_hsm.dukpt_encrypt_pin(devkeys.BDK, ksn, PIN, PAN)
    with pytest.raises(PinBlockError, match="format"):
        hsm.translate_pin_dukpt(block, ksn, PAN, devkeys.BDK, zpk, 0, 1)
    # Format 1 -> 0 adds the PAN binding: allowed.
    one = terminal_hsm.encrypt_pin(devkeys.TPK, PIN, None, 1)
    assert len(hsm.translate_pin(one, PAN, devkeys.TPK, zpk, 1, 0)) == 8


def test_translate_refuses_format_4_to_1(hsm_scratch):
    aes_tpk, zpk = _label("tpk"), _label("zpk")
    hsm_scratch.import_key_components(aes_tpk, "TPK", [K1], alg="AES")
    hsm_scratch.import_key_components(zpk, "ZPK", [K2])
    try:
        block = hsm_scratch.encrypt_pin(aes_tpk, PIN, PAN, 4)
        with pytest.raises(PinBlockError, match="format"):
            hsm_scratch.translate_pin(block, PAN, aes_tpk, zpk, 4, 1)
    finally:
        hsm_scratch.delete_key(aes_tpk)
        hsm_scratch.delete_key(zpk)


# --- d. decimalisation table per key ----------------------------------------------------

def test_decimalisation_table_is_the_keys_not_the_callers(hsm_scratch):
    table = "8351296470461538"
    pvk, zpk = _label("pvk"), _label("zpk")
    hsm_scratch.import_key_components(pvk, "PVK", [K1], dec_table=table)
    hsm_scratch.import_key_components(zpk, "ZPK", [K2])
    try:
        vd = PAN[:12]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = psec.pin.generate_ibm3624_offset(K1, table, PIN, vd, 0, len(vd), "F")
        block = hsm_scratch.encrypt_pin(zpk, PIN, PAN)
        assert hsm_scratch.generate_ibm3624_offset(pvk, block, PAN, zpk, vd) == ref
        assert hsm_scratch.verify_pin_ibm3624(block, PAN, zpk, pvk, ref, vd)
        assert hsm_scratch.key_info(pvk).dec_table == table
        # The attack: the caller's own table. No such argument any more.
        with pytest.raises(TypeError):
            hsm_scratch.verify_pin_ibm3624(block, PAN, zpk, pvk, ref, vd,
                                           dec_table="0000000000000000")
    finally:
        hsm_scratch.delete_key(pvk)
        hsm_scratch.delete_key(zpk)


def test_weak_decimalisation_table_refused_at_import(hsm_scratch):
    with pytest.raises(HsmInputError, match="decimalisation"):
        hsm_scratch.import_key_components(_label("pvk"), "PVK", [K1],
                                          dec_table="0000000000000000")


# --- e. PVV / offset generation from an encrypted PIN block ---------------------------

def test_pvv_generated_from_an_encrypted_block(keys, issuer_hsm, hsm):
    zpk, pvk = devkeys.zpk("visa"), devkeys.pvk("visa")
    block = issuer_hsm.encrypt_pin(zpk, PIN, PAN)
    k = devkeys.TEST_KEYS[pvk].clear
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = psec.pin.generate_visa_pvv(k, "1", PIN, PAN)
    assert issuer_hsm.generate_pvv(pvk, PAN, block, zpk) == ref
    # The clear-PIN form exists only for personalisation; never on the switch.
    with pytest.raises(CommandNotAllowedError):
        hsm.generate_pvv_clear(pvk, PAN, PIN)
    with pytest.raises(CommandNotAllowedError):  # nor the block form: issuing, not switching
        hsm.generate_pvv(pvk, PAN, block, zpk)


# --- f. MAC length fixed per key -----------------------------------------------------

def test_verify_mac_refuses_other_lengths(keys, hsm, issuer_hsm):
    zak = devkeys.zak("visa")
    data = b"0200 a message"
    mac = hsm.generate_mac(zak, data)
    assert len(mac) == 8 and issuer_hsm.verify_mac(zak, data, mac)
    before = issuer_hsm.refused["verify_mac:length"]
    for cut in (4, 5, 6, 7):  # a correct but truncated MAC: refused
        assert issuer_hsm.verify_mac(zak, data, mac[:cut]) is False
    assert issuer_hsm.refused["verify_mac:length"] - before == 4
    with pytest.raises(MacLengthError):
        hsm.generate_mac(zak, data, length=4)


def test_mac_length_configured_per_key(hsm_scratch):
    zak = _label("zak")
    hsm_scratch.import_key_components(zak, "ZAK", [K1], mac_length=4)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = psec.mac.generate_retail_mac(K1[:8], K1[8:], b"data", 1)[:4]
        assert hsm_scratch.generate_mac(zak, b"data") == ref
        assert hsm_scratch.verify_mac(zak, b"data", ref)
        assert hsm_scratch.key_info(zak).mac_length == 4
        assert hsm_scratch.verify_mac(zak, b"data", ref + b"\x00" * 4) is False
    finally:
        hsm_scratch.delete_key(zak)


# --- g. ISO format 4 with PANs shorter than 12 digits -------------------------------

@pytest.mark.parametrize("pan", ["1", "123456", "12345678901", "123456789012"])
def test_format4_short_pan(hsm_scratch, pan):
    label = _label("zpk")
    key = bytes(range(16))
    hsm_scratch.import_key_components(label, "ZPK", [key], alg="AES")
    try:
        block = hsm_scratch.encrypt_pin(label, PIN, pan, 4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert psec.pinblock.decipher_pinblock_iso_4(key, block, pan) == PIN
            ref = psec.pinblock.encipher_pinblock_iso_4(key, "98765", pan)
        zpk2 = _label("zpk")
        hsm_scratch.import_key_components(zpk2, "ZPK", [key[::-1]], alg="AES")
        try:
            out = hsm_scratch.translate_pin(ref, pan, label, zpk2, 4, 4)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert psec.pinblock.decipher_pinblock_iso_4(key[::-1], out, pan) == "98765"
        finally:
            hsm_scratch.delete_key(zpk2)
    finally:
        hsm_scratch.delete_key(label)
