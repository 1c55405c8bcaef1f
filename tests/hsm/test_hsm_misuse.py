"""Misuse is a typed error (or a False verification), never a wrong answer."""

from __future__ import annotations

import uuid
import warnings

import pytest

from payswitch.hsm import (
    HsmInputError,
    KcvMismatchError,
    KeyExistsError,
    KeyNotFoundError,
    KeyUsageError,
    PinBlockError,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import psec

K1 = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
K2 = bytes.fromhex("89ABCDEF0123456776543210FEDCBA98")
PAN = "4111111111111111"


def lab(p: str) -> str:
    return f"{p}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def keys(hsm_scratch):
    made = {}
    for t in ("ZPK", "TPK", "PVK", "CVK", "ZAK", "MK-AC", "BDK", "ZMK"):
        made[t] = lab(t.lower())
        hsm_scratch.import_key_components(made[t], t, [K1 if t != "ZMK" else K2])
    yield made
    for label in made.values():
        hsm_scratch.delete_key(label)


def test_pvk_cannot_encrypt_pin_blocks(hsm_scratch, keys):
    with pytest.raises(KeyUsageError):
        hsm_scratch.encrypt_pin(keys["PVK"], "1234", PAN)
    block = hsm_scratch.encrypt_pin(keys["TPK"], "1234", PAN)
    with pytest.raises(KeyUsageError):
        hsm_scratch.translate_pin(block, PAN, keys["PVK"], keys["ZPK"])
    with pytest.raises(KeyUsageError):
        hsm_scratch.translate_pin(block, PAN, keys["TPK"], keys["PVK"])


def test_translate_only_to_a_zpk(hsm_scratch, keys):
    block = hsm_scratch.encrypt_pin(keys["ZPK"], "1234", PAN)
    with pytest.raises(KeyUsageError):
        hsm_scratch.translate_pin(block, PAN, keys["ZPK"], keys["TPK"])


def test_zpk_cannot_compute_cvv_or_mac(hsm_scratch, keys):
    with pytest.raises(KeyUsageError):
        hsm_scratch.generate_cvv(keys["ZPK"], PAN, "2512", "101")
    with pytest.raises(KeyUsageError):
        hsm_scratch.generate_mac(keys["ZPK"], b"data")
    with pytest.raises(KeyUsageError):
        hsm_scratch.generate_mac(keys["CVK"], b"data")
    with pytest.raises(KeyUsageError):
        hsm_scratch.verify_arqc(keys["ZAK"], PAN, "00", b"\x00\x01", b"x", bytes(8))
    with pytest.raises(KeyUsageError):
        hsm_scratch.dukpt_encrypt_pin(keys["ZPK"], bytes(10), "1234", PAN)
    with pytest.raises(KeyUsageError):
        hsm_scratch.pan_token(keys["ZPK"], PAN)


def test_token_attributes_forbid_raw_use(hsm_scratch, keys):
    # Belt and braces: besides the API's check, the PKCS#11 objects themselves are
    # sensitive, non-extractable, and a PVK cannot decrypt.
    from pkcs11 import Attribute

    for label in keys.values():
        obj = hsm_scratch._key(label).main
        assert obj[Attribute.SENSITIVE] and not obj[Attribute.EXTRACTABLE]
    assert not hsm_scratch._key(keys["PVK"]).main[Attribute.DECRYPT]
    assert not hsm_scratch._key(keys["MK-AC"]).main[Attribute.ENCRYPT]


def test_wrong_kcv_on_component_import(hsm_scratch):
    with pytest.raises(KcvMismatchError):
        hsm_scratch.import_key_components(lab("zpk"), "ZPK", [K1, K2], ["08D7B4", "000000"])
    good_kcv2 = _ref_kcv(K2)
    label = lab("zpk")
    kcv = hsm_scratch.import_key_components(label, "ZPK", [K1, K2], ["08D7B4", good_kcv2])
    xor = bytes(a ^ b for a, b in zip(K1, K2, strict=True))
    assert kcv == _ref_kcv(xor)
    with pytest.raises(KeyExistsError):
        hsm_scratch.import_key_components(label, "ZPK", [K1])
    with pytest.raises(KcvMismatchError):
        hsm_scratch.import_key_components(lab("zpk"), "ZPK", [K1], kcv="123456")


def _ref_kcv(k: bytes) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return psec.des.generate_kcv(k, 3).hex().upper()


def test_wrong_kcv_on_cryptogram_import(hsm_scratch, keys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crypt = psec.des.encrypt_tdes_ecb(K2, K1)  # K1 under the ZMK (K2)
    with pytest.raises(KcvMismatchError):
        hsm_scratch.import_key_cryptogram(lab("zpk"), "ZPK", keys["ZMK"], crypt, "08D7B5")
    tampered = bytes([crypt[0] ^ 1]) + crypt[1:]
    with pytest.raises(KcvMismatchError):
        hsm_scratch.import_key_cryptogram(lab("zpk"), "ZPK", keys["ZMK"], tampered, "08D7B4")
    label = lab("zpk")
    assert hsm_scratch.import_key_cryptogram(label, "ZPK", keys["ZMK"], crypt, "08D7B4") == (
        "08D7B4"
    )
    with pytest.raises(KeyUsageError):  # a ZPK is not a key-encrypting key
        hsm_scratch.import_key_cryptogram(lab("zpk"), "ZPK", keys["ZPK"], crypt, "08D7B4")


def test_generate_and_export_roundtrip(hsm_scratch, keys, issuer_hsm):
    # Generated here, exported under the ZMK, imported by the peer with the same ZMK.
    label = lab("zpk")
    kcv, crypt = hsm_scratch.generate_key(label, "ZPK", export_under=keys["ZMK"])
    zmk_peer = lab("zmk")
    issuer_hsm.import_key_components(zmk_peer, "ZMK", [K2])
    peer_label = lab("zpk")
    assert issuer_hsm.import_key_cryptogram(peer_label, "ZPK", zmk_peer, crypt, kcv) == kcv
    block = hsm_scratch.encrypt_pin(label, "4321", PAN)
    pvk = lab("pvk")
    issuer_hsm.import_key_components(pvk, "PVK", [K1])
    pvv = issuer_hsm.generate_pvv_clear(pvk, PAN, "4321")
    assert issuer_hsm.verify_pin_pvv(block, PAN, peer_label, pvk, pvv)
    for x in (zmk_peer, peer_label, pvk):
        issuer_hsm.delete_key(x)


def test_tampered_mac_is_rejected(hsm_scratch, keys):
    msg = b"0200" + bytes(range(60))
    mac = hsm_scratch.generate_mac(keys["ZAK"], msg)
    assert hsm_scratch.verify_mac(keys["ZAK"], msg, mac)
    assert not hsm_scratch.verify_mac(keys["ZAK"], msg[:-1] + b"\x00", mac)
    assert not hsm_scratch.verify_mac(keys["ZAK"], msg, bytes([mac[0] ^ 0x80]) + mac[1:])
    assert not hsm_scratch.verify_mac(keys["ZAK"], msg, mac[:3])
    assert not hsm_scratch.verify_mac(keys["ZAK"], msg, b"")


def test_truncated_or_bad_pin_block(hsm_scratch, keys):
    block = hsm_scratch.encrypt_pin(keys["TPK"], "1234", PAN)
    with pytest.raises(PinBlockError):
        hsm_scratch.translate_pin(block[:7], PAN, keys["TPK"], keys["ZPK"])
    with pytest.raises(PinBlockError):
        hsm_scratch.translate_pin(block + b"\x00", PAN, keys["TPK"], keys["ZPK"])
    # Garbage decrypts to a block that does not decode: an error, not a PIN.
    with pytest.raises(PinBlockError):
        hsm_scratch.translate_pin(bytes(8), PAN, keys["TPK"], keys["ZPK"])
    # Wrong format claimed for the block.
    with pytest.raises(PinBlockError):
        hsm_scratch.translate_pin(block, PAN, keys["TPK"], keys["ZPK"], 3, 0)
    with pytest.raises(PinBlockError):
        hsm_scratch.translate_pin_dukpt(block[:4], bytes(9) + b"\x01", PAN, keys["BDK"],
                                        keys["ZPK"])


def test_errors_never_carry_secrets(hsm_scratch, keys):
    block = hsm_scratch.encrypt_pin(keys["TPK"], "9876", PAN)
    try:
        hsm_scratch.translate_pin(block, "5500000000000004", keys["TPK"], keys["ZPK"])
    except PinBlockError as e:
        text = str(e)
        assert "9876" not in text and PAN not in text and block.hex() not in text.lower()
    else:  # the wrong PAN must not decode as a valid block either (fill is not F)
        pytest.fail("wrong PAN decoded")


def test_unknown_key_and_bad_input(hsm_scratch, keys):
    with pytest.raises(KeyNotFoundError):
        hsm_scratch.generate_cvv("no-such-key", PAN, "2512", "101")
    with pytest.raises(HsmInputError):
        hsm_scratch.generate_cvv(keys["CVK"], "41111111x1111111", "2512", "101")
    with pytest.raises(HsmInputError):
        hsm_scratch.import_key_components("bad label!", "ZPK", [K1])
    with pytest.raises(HsmInputError):
        hsm_scratch.import_key_components(lab("x"), "NOPE", [K1])
    with pytest.raises(HsmInputError):
        hsm_scratch.import_key_components(lab("x"), "ZPK", [K1[:8]])


def test_pan_token_and_encryption(hsm_scratch):
    import hashlib
    import hmac

    tkn, dek = lab("tkn"), lab("dek")
    secret = bytes(range(32))
    hsm_scratch.import_key_components(tkn, "TKN", [secret])
    hsm_scratch.import_key_components(dek, "DEK", [secret])
    token = hsm_scratch.pan_token(tkn, PAN)
    assert token == hmac.new(secret, PAN.encode(), hashlib.sha256).hexdigest()
    assert hsm_scratch.pan_token(tkn, PAN) == token
    blob = hsm_scratch.encrypt_pan(dek, PAN, aad=b"acct-1")
    assert PAN.encode() not in blob
    assert hsm_scratch.decrypt_pan(dek, blob, aad=b"acct-1") == PAN
    with pytest.raises(HsmInputError):
        hsm_scratch.decrypt_pan(dek, blob, aad=b"acct-2")
    with pytest.raises(HsmInputError):
        hsm_scratch.decrypt_pan(dek, blob[:-1] + bytes([blob[-1] ^ 1]), aad=b"acct-1")
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    assert AESGCM(secret).decrypt(blob[:12], blob[12:], b"acct-1") == PAN.encode()
    with pytest.raises(KeyUsageError):
        hsm_scratch.encrypt_pan(tkn, PAN)


def test_format_must_fit_the_key(hsm_scratch, keys):
    block = hsm_scratch.encrypt_pin(keys["TPK"], "1234", PAN)
    with pytest.raises(HsmInputError):  # format 4 needs an AES key
        hsm_scratch.translate_pin(block, PAN, keys["TPK"], keys["ZPK"], 0, 4)
    aes = lab("zpk")
    hsm_scratch.import_key_components(aes, "ZPK", [bytes(range(32))], alg="AES")
    with pytest.raises(HsmInputError):  # an AES key does not take format 0
        hsm_scratch.translate_pin(block, PAN, keys["TPK"], aes, 0, 0)
    b4 = hsm_scratch.translate_pin(block, PAN, keys["TPK"], aes, 0, 4)
    with pytest.raises(PinBlockError):  # truncated format 4 block
        hsm_scratch.translate_pin(b4[:8], PAN, aes, keys["ZPK"], 4, 0)
    with pytest.raises(PinBlockError):  # same block, another PAN: does not decode
        hsm_scratch.translate_pin(b4, "5500000000000004", aes, keys["ZPK"], 4, 0)
    with pytest.raises(HsmInputError):  # a PVK is TDES only
        hsm_scratch.import_key_components(lab("pvk"), "PVK", [bytes(32)], alg="AES")
