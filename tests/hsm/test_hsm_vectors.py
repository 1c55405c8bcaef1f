"""Published vectors as fixed tests, each against the real SoftHSM token."""

from __future__ import annotations

import uuid

import pytest

from payswitch.codecs import pinblock as pb
from payswitch.hsm import dukpt

BDK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
KSN0 = "FFFF9876543210E0000"


def label(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_dukpt_ipek_published(hsm_scratch):
    # ANSI X9.24-1:2009 appendix A: IPEK computed in the token (BDK and its variant).
    bdk = label("bdk")
    hsm_scratch.import_key_components(bdk, "BDK", [BDK], ["08D7B4"])
    k = hsm_scratch._key(bdk)
    ksn = bytes.fromhex("FFFF9876543210E00000")
    from pkcs11 import Mechanism

    data = dukpt.ipek_input(ksn)
    ipek = k.main.encrypt(data, mechanism=Mechanism.DES3_ECB) + k.companion.encrypt(
        data, mechanism=Mechanism.DES3_ECB
    )
    assert ipek.hex().upper() == "6AC292FAA1315B4D858AB3A3D7D5933A"


# X9.24-1:2009 appendix A.4: PIN 1234, PAN 4012345678909, format 0 block under each
# transaction's PIN key.
DUKPT_PIN_BLOCKS = {
    1: "1B9C1845EB993A7A",
    2: "10A01C8D02C69107",
    3: "18DC07B94797B466",
    4: "0BC79509D5645DF7",
    5: "5BC0AF22AD87B327",
}


def test_dukpt_pin_key_first_transaction():
    ipek = bytes.fromhex("6AC292FAA1315B4D858AB3A3D7D5933A")
    key = dukpt.future_key(ipek, bytes.fromhex("FFFF9876543210E00001"))
    assert key.hex().upper() == "042666B49184CFA368DE9628D0397BC9"
    pin_key = dukpt.pin_key(ipek, bytes.fromhex("FFFF9876543210E00001"))
    assert pin_key.hex().upper() == "042666B49184CF5C68DE9628D0397B36"


@pytest.mark.parametrize("host_des", ["libcrypto", "cryptography"])
def test_dukpt_host_des_gives_published_blocks(monkeypatch, host_des):
    # Both host DES paths (libcrypto's DES_*, and cryptography when libcrypto is
    # missing) give the published blocks, both ways.
    if host_des == "libcrypto":
        assert dukpt._libcrypto is not None  # else this would test the fallback twice
    else:
        monkeypatch.setattr(dukpt, "_libcrypto", None)
    ipek = bytes.fromhex("6AC292FAA1315B4D858AB3A3D7D5933A")
    clear = pb.encode("1234", "4012345678909", 0)
    for counter, expected in DUKPT_PIN_BLOCKS.items():
        ksn = bytes.fromhex(f"FFFF9876543210E{counter:05X}")
        block = dukpt.crypt_pin_block(ipek, ksn, clear, decrypt=False)
        assert block.hex().upper() == expected
        assert dukpt.crypt_pin_block(ipek, ksn, block, decrypt=True) == clear


@pytest.mark.parametrize("counter,expected", sorted(DUKPT_PIN_BLOCKS.items()))
def test_dukpt_pin_blocks_published(hsm_scratch, counter, expected):
    bdk = label("bdk")
    zpk = label("zpk")
    hsm_scratch.import_key_components(bdk, "BDK", [BDK])
    hsm_scratch.import_key_components(zpk, "ZPK", [BDK])
    ksn = bytes.fromhex(f"FFFF9876543210E{counter:05X}")
    block = hsm_scratch.dukpt_encrypt_pin(bdk, ksn, "1234", "4012345678909")
    assert block.hex().upper() == expected
    # And the switch path: the published block translated to a ZPK decodes to 1234.
    out = hsm_scratch.translate_pin_dukpt(bytes.fromhex(expected), ksn, "4012345678909", bdk,
                                          zpk)
    assert out == hsm_scratch.encrypt_pin(zpk, "1234", "4012345678909")


def test_visa_cvv_published(hsm_scratch):
    # Visa CVV example: CVK A 0123456789ABCDEF, CVK B FEDCBA9876543210,
    # PAN 4123456789012345, expiry 8701, service code 101 -> CVV 561.
    cvk = label("cvk")
    hsm_scratch.import_key_components(cvk, "CVK", [BDK])
    assert hsm_scratch.generate_cvv(cvk, "4123456789012345", "8701", "101") == "561"
    assert hsm_scratch.verify_cvv(cvk, "4123456789012345", "8701", "101", "561")
    assert not hsm_scratch.verify_cvv(cvk, "4123456789012345", "8701", "101", "562")


# ISO 9564-1 / common worked examples of clear PIN blocks.
def test_iso9564_format0_example():
    # PIN 1234, PAN 4111111111111111: PIN field 041234FFFFFFFFFF xor 0000111111111111.
    assert pb.encode("1234", "4111111111111111", 0).hex().upper() == "041225EEEEEEEEEE"
    assert pb.decode(bytes.fromhex("041225EEEEEEEEEE"), "4111111111111111", 0) == "1234"
    # The classic worked example: PIN 1234, PAN 43219876543210987 ->
    # 041234FFFFFFFFFF xor 0000987654321098 = 0412AC89ABCDEF67.
    assert pb.encode("1234", "43219876543210987", 0).hex().upper() == "0412AC89ABCDEF67"
    assert pb.decode(bytes.fromhex("0412AC89ABCDEF67"), "43219876543210987", 0) == "1234"


def test_iso9564_format1_and_3_layout():
    fill = bytes(range(10))
    b1 = pb.encode("1234", None, 1, fill)
    assert b1.hex().upper() == "141234" + "0123456789"
    b3 = pb.encode("1234", "4111111111111111", 3, fill)
    field = pb.xor(b3, pb.pan_field("4111111111111111")).hex().upper()
    assert field.startswith("341234") and set(field[6:]) <= set("ABCDEF")
    assert pb.decode(b3, "4111111111111111", 3) == "1234"


def test_kcv_of_published_key(hsm_scratch):
    # KCV of 0123456789ABCDEFFEDCBA9876543210 is 08D7B4 (encrypt zeros, first 3 bytes).
    zpk = label("zpk")
    assert hsm_scratch.import_key_components(zpk, "ZPK", [BDK]) == "08D7B4"
    assert hsm_scratch.key_info(zpk).kcv == "08D7B4"
