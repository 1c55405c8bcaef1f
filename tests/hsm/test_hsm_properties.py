"""Property tests: the HSM (real SoftHSM token) against independent implementations.

psec and pyemv compute in clear in the test process; the HSM computes with the same
key values imported into the token. Random keys, PANs and PINs: result == reference.
"""

from __future__ import annotations

import uuid
import warnings

from hypothesis import given, settings
from hypothesis import strategies as st

from payswitch.codecs import pinblock as pb
from payswitch.hsm.errors import PinBlockError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import psec
    from pyemv import ac as emv_ac
    from pyemv import kd as emv_kd

EXAMPLES = settings(max_examples=40, deadline=None)

keys16 = st.binary(min_size=16, max_size=16)
pans = st.integers(min_value=13, max_value=19).flatmap(
    lambda n: st.text("0123456789", min_size=n, max_size=n)
)
pins = st.integers(min_value=4, max_value=12).flatmap(
    lambda n: st.text("0123456789", min_size=n, max_size=n)
)
expiries = st.text("0123456789", min_size=4, max_size=4)
service_codes = st.text("0123456789", min_size=3, max_size=3)


def _label(p: str) -> str:
    return f"{p}-{uuid.uuid4().hex[:12]}"


def _ref(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


class _Keys:
    """Import a clear test key under a fresh label; delete it afterwards."""

    def __init__(self, h):
        self.h = h
        self.made: list[str] = []

    def __call__(self, kind: str, value: bytes, alg: str | None = None) -> str:
        lab = _label(kind.lower())
        self.h.import_key_components(lab, kind, [value], alg=alg)
        self.made.append(lab)
        return lab

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for lab in self.made:
            self.h.delete_key(lab)


@EXAMPLES
@given(k1=keys16, k2=keys16, pan=pans, pin=pins, src_fmt=st.sampled_from([0, 1, 3]),
       dst_fmt=st.sampled_from([0, 3]))
def test_translate_pin_matches_psec(hsm_scratch, k1, k2, pan, pin, src_fmt, dst_fmt):
    with _Keys(hsm_scratch) as keys:
        tpk, zpk = keys("TPK", k1), keys("ZPK", k2)
        # The terminal's block, made by psec in clear (format 0) or by our codec.
        if src_fmt == 0:
            clear = _ref(psec.pinblock.encode_pinblock_iso_0, pin, pan)
        else:
            clear = pb.encode(pin, pan, src_fmt, bytes(range(10, 26)))
        block = _ref(psec.des.encrypt_tdes_ecb, k1, clear)
        out = hsm_scratch.translate_pin(block, pan, tpk, zpk, src_fmt, dst_fmt)
        back = _ref(psec.des.decrypt_tdes_ecb, k2, out)
        if dst_fmt == 0:
            assert _ref(psec.pinblock.decode_pinblock_iso_0, back, pan) == pin
            if src_fmt == 0:
                assert back == clear
        else:
            assert _ref(psec.pinblock.decode_pinblock_iso_3, back, pan) == pin


@EXAMPLES
@given(k=keys16, pan=pans, pin=pins, pvki=st.integers(0, 9))
def test_pvv_matches_psec(hsm_scratch, k, pan, pin, pvki):
    with _Keys(hsm_scratch) as keys:
        pvk, zpk = keys("PVK", k), keys("ZPK", k[::-1])
        # Visa PVV takes the leftmost 4 PIN digits (psec accepts exactly 4).
        ref = _ref(psec.pin.generate_visa_pvv, k, str(pvki), pin[:4], pan)
        assert hsm_scratch.generate_pvv_clear(pvk, pan, pin, pvki) == ref
        block = hsm_scratch.encrypt_pin(zpk, pin, pan)
        assert hsm_scratch.verify_pin_pvv(block, pan, zpk, pvk, ref, pvki)
        wrong = f"{(int(ref) + 1) % 10000:04d}"
        assert not hsm_scratch.verify_pin_pvv(block, pan, zpk, pvk, wrong, pvki)


@EXAMPLES
@given(k=keys16, pan=pans, pin=pins.filter(lambda p: len(p) <= 12),
       table=st.permutations("0123456789").flatmap(
           lambda p: st.text("0123456789", min_size=6, max_size=6).map(
               lambda t: "".join(p) + t)))
def test_ibm3624_matches_psec(hsm_scratch, k, pan, pin, table):
    with _Keys(hsm_scratch) as keys:
        pvk, zpk = _label("pvk"), keys("ZPK", k[::-1])
        hsm_scratch.import_key_components(pvk, "PVK", [k], dec_table=table)
        keys.made.append(pvk)
        vd = pan[:12]
        ref = _ref(psec.pin.generate_ibm3624_offset, k, table, pin, vd, 0, len(vd), "F")
        assert hsm_scratch.generate_ibm3624_offset_clear(pvk, pin, vd, "F") == ref
        block = hsm_scratch.encrypt_pin(zpk, pin, pan, 3)
        assert hsm_scratch.generate_ibm3624_offset(pvk, block, pan, zpk, vd, fmt=3) == ref
        assert hsm_scratch.verify_pin_ibm3624(block, pan, zpk, pvk, ref, vd, "F", 3)
        other = "".join(str((int(c) + 1) % 10) for c in ref)
        assert not hsm_scratch.verify_pin_ibm3624(block, pan, zpk, pvk, other, vd, "F", 3)


@EXAMPLES
@given(k=keys16, pan=pans, exp=expiries, svc=service_codes)
def test_cvv_cvv2_icvv_match_psec(hsm_scratch, k, pan, exp, svc):
    with _Keys(hsm_scratch) as keys:
        cvk = keys("CVK", k)
        for code in (svc, "000", "999"):
            ref = _ref(psec.cvv.generate_cvv, k, pan, exp, code)
            assert hsm_scratch.generate_cvv(cvk, pan, exp, code) == ref
            assert hsm_scratch.verify_cvv(cvk, pan, exp, code, ref)
        assert hsm_scratch.verify_cvv2(cvk, pan, exp, _ref(psec.cvv.generate_cvv, k, pan, exp,
                                                           "000"))
        assert hsm_scratch.verify_icvv(cvk, pan, exp, _ref(psec.cvv.generate_cvv, k, pan, exp,
                                                           "999"))


@EXAMPLES
@given(k=keys16, pan=pans, psn=st.text("0123456789", min_size=2, max_size=2),
       atc=st.binary(min_size=2, max_size=2), data=st.binary(min_size=1, max_size=80),
       arc=st.binary(min_size=2, max_size=2), padding=st.sampled_from([1, 2]))
def test_arqc_arpc_match_pyemv(hsm_scratch, k, pan, psn, atc, data, arc, padding):
    with _Keys(hsm_scratch) as keys:
        mk = keys("MK-AC", k)
        icc = _ref(emv_kd.derive_icc_mk_b, k, pan, psn)  # CVN 18: option B
        sk = _ref(emv_kd.derive_common_sk, icc, atc + bytes(6))
        ptype = emv_ac.PaddingType.EMV if padding == 2 else emv_ac.PaddingType.VISA
        arqc = _ref(emv_ac.generate_ac, sk, data, ptype)
        assert hsm_scratch.generate_arqc(mk, pan, psn, atc, data, padding=padding) == arqc
        ok, arpc = hsm_scratch.verify_arqc(mk, pan, psn, atc, data, arqc, arc=arc,
                                           padding=padding)
        assert ok
        assert arpc == _ref(emv_ac.generate_arpc_1, sk, arqc, arc)
        bad = bytes([arqc[0] ^ 1]) + arqc[1:]
        assert hsm_scratch.verify_arqc(mk, pan, psn, atc, data, bad, arc=arc,
                                       padding=padding) == (False, None)


@EXAMPLES
@given(k=keys16, data=st.binary(min_size=0, max_size=200), padding=st.sampled_from([1, 2]))
def test_retail_mac_matches_psec_and_pyemv(hsm_scratch, k, data, padding):
    with _Keys(hsm_scratch) as keys:
        zak = keys("ZAK", k)
        mac = hsm_scratch.generate_mac(zak, data, padding=padding)
        if data or padding == 2:
            assert mac == _ref(psec.mac.generate_retail_mac, k[:8], k[8:], data, padding)
            assert mac == _ref(__import__("pyemv").mac.mac_iso9797_3, k[:8], k[8:], data,
                               padding)
        assert hsm_scratch.verify_mac(zak, data, mac, padding=padding)


@settings(max_examples=20, deadline=None)
@given(k=st.binary(min_size=32, max_size=32), data=st.binary(max_size=200))
def test_aes_cmac_matches_cryptography(hsm_scratch, k, data):
    from cryptography.hazmat.primitives.ciphers.algorithms import AES
    from cryptography.hazmat.primitives.cmac import CMAC

    with _Keys(hsm_scratch) as keys:
        zak = keys("ZAK", k, alg="AES")  # MAC length 8, the default
        c = CMAC(AES(k))
        c.update(data)
        ref = c.finalize()
        assert hsm_scratch.generate_mac(zak, data) == ref[:8]
        assert hsm_scratch.verify_mac(zak, data, ref[:8])


@settings(max_examples=15, deadline=None)
@given(k=keys16, pan=pans, pin=pins, n=st.integers(1, 2000))
def test_dukpt_translate_roundtrip(hsm_scratch, k, pan, pin, n):
    # No independent DUKPT reference (psec/pyemv have none): the published vectors
    # are in test_hsm_vectors.py; here terminal side and switch side must agree.
    with _Keys(hsm_scratch) as keys:
        bdk, zpk = keys("BDK", k), keys("ZPK", k[::-1])
        ksn = bytes.fromhex("FFFF9876543210E00000")
        ksn = ksn[:-3] + (int.from_bytes(ksn[-3:], "big") | n).to_bytes(3, "big")
        if bin(n).count("1") > 10:
            return
        block = hsm_scratch.dukpt_encrypt_pin(bdk, ksn, pin, pan)
        out = hsm_scratch.translate_pin_dukpt(block, ksn, pan, bdk, zpk)
        clear = _ref(psec.des.decrypt_tdes_ecb, k[::-1], out)
        assert _ref(psec.pinblock.decode_pinblock_iso_0, clear, pan) == pin


@settings(max_examples=25, deadline=None)
@given(k1=keys16, k2=st.binary(min_size=16, max_size=32).filter(lambda b: len(b) in (16, 32)),
       pan=pans, pin=pins)
def test_format4_aes_matches_psec(hsm_scratch, k1, k2, pan, pin):
    # TDES format 0 from a terminal -> AES ZPK format 4 -> back to TDES format 0.
    with _Keys(hsm_scratch) as keys:
        tpk, azpk, zpk = keys("TPK", k1), keys("ZPK", k2, alg="AES"), keys("ZPK", k1[::-1])
        block = _ref(psec.des.encrypt_tdes_ecb, k1,
                     _ref(psec.pinblock.encode_pinblock_iso_0, pin, pan))
        b4 = hsm_scratch.translate_pin(block, pan, tpk, azpk, 0, 4)
        assert len(b4) == 16
        assert _ref(psec.pinblock.decipher_pinblock_iso_4, k2, b4, pan) == pin
        ref4 = _ref(psec.pinblock.encipher_pinblock_iso_4, k2, pin, pan)
        back = hsm_scratch.translate_pin(ref4, pan, azpk, zpk, 4, 0)
        clear = _ref(psec.des.decrypt_tdes_ecb, k1[::-1], back)
        assert _ref(psec.pinblock.decode_pinblock_iso_0, clear, pan) == pin


@settings(max_examples=25, deadline=None)
@given(k=keys16, pan=pans, atc=st.binary(min_size=2, max_size=2),
       data=st.binary(min_size=1, max_size=64), csu=st.binary(min_size=4, max_size=4),
       prop=st.binary(max_size=8))
def test_arpc_method2_matches_pyemv(hsm_scratch, k, pan, atc, data, csu, prop):
    with _Keys(hsm_scratch) as keys:
        mk = keys("MK-AC", k)
        icc = _ref(emv_kd.derive_icc_mk_b, k, pan, "01")  # CVN 18: option B
        sk = _ref(emv_kd.derive_common_sk, icc, atc + bytes(6))
        arqc = _ref(emv_ac.generate_ac, sk, data)
        ok, arpc = hsm_scratch.verify_arqc(mk, pan, "01", atc, data, arqc, csu=csu,
                                           prop_auth_data=prop)
        ref = _ref(emv_ac.generate_arpc_2, sk, arqc, csu, prop)
        assert ok and arpc == ref
        assert hsm_scratch.generate_arpc(mk, pan, "01", atc, arqc, csu=csu,
                                         prop_auth_data=prop) == ref


@settings(max_examples=60, deadline=None)
@given(k1=keys16, k2=keys16, pan=pans, clear=st.one_of(
    st.binary(min_size=8, max_size=8), st.tuples(pins, st.binary(min_size=3, max_size=3))))
def test_translate_pin_format_0_any_block_as_psec_says(hsm_scratch, k1, k2, pan, clear):
    """Format 0 to 0 (the translation the switch makes per PIN): any clear block the
    terminal's key may give, well formed or not, is refused exactly when psec refuses
    it, and a block it accepts arrives under the ZPK as the same clear bytes."""
    if isinstance(clear, tuple):  # a well-formed block, one byte of it maybe flipped
        pin, noise = clear
        clear = bytearray(_ref(psec.pinblock.encode_pinblock_iso_0, pin, pan))
        if noise[0] % 3 == 0:
            clear[noise[1] % 8] ^= noise[2] or 1
        clear = bytes(clear)
    with _Keys(hsm_scratch) as keys:
        tpk, zpk = keys("TPK", k1), keys("ZPK", k2)
        block = _ref(psec.des.encrypt_tdes_ecb, k1, clear)
        try:
            want = _ref(psec.pinblock.decode_pinblock_iso_0, clear, pan)
        except ValueError:
            want = None
        try:
            out = hsm_scratch.translate_pin(block, pan, tpk, zpk, 0, 0)
        except PinBlockError:
            assert want is None
            return
        assert want is not None
        assert _ref(psec.des.decrypt_tdes_ecb, k2, out) == clear
