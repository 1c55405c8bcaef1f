"""AES DUKPT (X9.24-3, AES-128): the published initial key, then the whole chain in the
token against a host computation of the same derivation with `cryptography`."""

from __future__ import annotations

import uuid
import warnings

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st
from pkcs11 import Mechanism

from payswitch.hsm import HsmInputError, PinBlockError, dukpt

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import psec

BDK = bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1")
IKID = bytes.fromhex("1234567890123456")


def _aes(key: bytes, block: bytes) -> bytes:
    e = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305
    return e.update(block) + e.finalize()


def _dd(usage: int, tail: bytes) -> bytes:
    return bytes.fromhex("0101") + usage.to_bytes(2, "big") + bytes.fromhex("00020080") + tail


def ref_pin_key(bdk: bytes, ksn: bytes) -> bytes:
    """X9.24-3 host algorithm, written out from the standard for this test."""
    ikid, counter = ksn[:8], int.from_bytes(ksn[8:], "big")
    key = _aes(bdk, _dd(0x8001, ikid))
    working = 0
    for bit in range(31, -1, -1):
        if counter >> bit & 1:
            working |= 1 << bit
            key = _aes(key, _dd(0x8000, ikid[4:] + working.to_bytes(4, "big")))
    return _aes(key, _dd(0x1000, ikid[4:] + counter.to_bytes(4, "big")))


@pytest.fixture(scope="module")
def aes_bdk(hsm_scratch):
    label = f"bdk-aes-{uuid.uuid4().hex[:8]}"
    hsm_scratch.import_key_components(label, "BDK", [BDK], alg="AES")
    yield label
    hsm_scratch.delete_key(label)


def test_initial_key_published(hsm_scratch, aes_bdk):
    # X9.24-3-2017 test vectors: BDK FEDCBA9876543210F1F1F1F1F1F1F1F1, initial key ID
    # 1234567890123456 -> initial key 1273671EA26AC29AFA4D1084127652A1.
    assert _aes(BDK, _dd(0x8001, IKID)).hex().upper() == "1273671EA26AC29AFA4D1084127652A1"
    k = hsm_scratch._key(aes_bdk)
    ik = hsm_scratch._derive_aes(k.main, dukpt.aes_initial_key_data(IKID + bytes(3) + b"\x01"),
                                 final=True)
    try:
        expected = _aes(bytes.fromhex("1273671EA26AC29AFA4D1084127652A1"), bytes(16))
        assert ik.encrypt(bytes(16), mechanism=Mechanism.AES_ECB) == expected
    finally:
        ik.destroy()


@settings(max_examples=15, deadline=None)
@given(counter=st.integers(1, 0xFFFFFFFF).filter(lambda c: bin(c).count("1") <= 16),
       pin=st.text("0123456789", min_size=4, max_size=12),
       pan=st.text("0123456789", min_size=13, max_size=19))
def test_aes_dukpt_matches_host_reference(hsm_scratch, aes_bdk, counter, pin, pan):
    ksn = IKID + counter.to_bytes(4, "big")
    block = hsm_scratch.dukpt_encrypt_pin(aes_bdk, ksn, pin, pan)
    key = ref_pin_key(BDK, ksn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert psec.pinblock.decipher_pinblock_iso_4(key, block, pan) == pin
        ref_block = psec.pinblock.encipher_pinblock_iso_4(key, pin, pan)
    zpk = f"zpk-{uuid.uuid4().hex[:8]}"
    hsm_scratch.import_key_components(zpk, "ZPK", [bytes(range(16))])
    try:
        out = hsm_scratch.translate_pin_dukpt(ref_block, ksn, pan, aes_bdk, zpk)
        assert out == hsm_scratch.encrypt_pin(zpk, pin, pan)  # format 0 is deterministic
    finally:
        hsm_scratch.delete_key(zpk)


def test_aes_dukpt_misuse(hsm_scratch, aes_bdk):
    ksn = IKID + b"\x00\x00\x00\x05"
    block = hsm_scratch.dukpt_encrypt_pin(aes_bdk, ksn, "1234", "4111111111111111")
    zpk = f"zpk-{uuid.uuid4().hex[:8]}"
    hsm_scratch.import_key_components(zpk, "ZPK", [bytes(range(16))])
    try:
        with pytest.raises(PinBlockError):
            hsm_scratch.translate_pin_dukpt(block[:8], ksn, "4111111111111111", aes_bdk, zpk)
        with pytest.raises(HsmInputError):  # a TDES-length KSN
            hsm_scratch.translate_pin_dukpt(block, ksn[:10], "4111111111111111", aes_bdk, zpk)
        with pytest.raises(HsmInputError):
            hsm_scratch.translate_pin_dukpt(block, ksn, "4111111111111111", aes_bdk, zpk, 0)
        with pytest.raises(PinBlockError):  # another KSN: another key, garbage block
            hsm_scratch.translate_pin_dukpt(block, IKID + b"\x00\x00\x00\x06",
                                            "4111111111111111", aes_bdk, zpk)
        with pytest.raises(HsmInputError):
            hsm_scratch.import_key_components(f"b-{uuid.uuid4().hex[:6]}", "BDK", [bytes(32)],
                                              alg="AES")
    finally:
        hsm_scratch.delete_key(zpk)
