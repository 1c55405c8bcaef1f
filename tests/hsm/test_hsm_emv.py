"""ARQC input builders for CVN 10 / 18, card side and issuer side agreeing via the HSM,
and against pyemv."""

from __future__ import annotations

import uuid
import warnings

import pytest

from payswitch.hsm import HsmInputError, emv

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from pyemv import ac as emv_ac
    from pyemv import kd as emv_kd

MK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN, PSN = "4761739001010010", "01"
TAGS = {
    "9F02": bytes.fromhex("000000012345"), "9F03": bytes(6), "9F1A": bytes.fromhex("0840"),
    "95": bytes(5), "5F2A": bytes.fromhex("0840"), "9A": bytes.fromhex("261125"),
    "9C": b"\x00", "9F37": bytes.fromhex("A1B2C3D4"), "82": bytes.fromhex("3900"),
    "9F36": bytes.fromhex("002A"),
    "9F10": bytes.fromhex("06011203A0B8000F0300000000000000000000000000000000000000000000"),
}


@pytest.mark.parametrize("cvn", [10, 18])
def test_arqc_for_cvn(hsm_scratch, cvn):
    label = f"mk-{uuid.uuid4().hex[:8]}"
    hsm_scratch.import_key_components(label, "MK-AC", [MK])
    data = emv.arqc_input(TAGS, cvn)
    pad = emv.CVNS[cvn].padding
    if cvn == 10:
        assert data.endswith(bytes.fromhex("03A0B800"))  # CVR = IAD bytes 4-7
        assert len(data) == 33 + 4
    else:
        assert data.endswith(TAGS["9F10"])
    arqc = hsm_scratch.generate_arqc(label, PAN, PSN, emv.atc_of(TAGS), data, cvn=cvn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        icc = emv_kd.derive_icc_mk_a(MK, PAN, PSN)
        # CVN 10 MACs under the card's UDK itself; CVN 18 under the common session key.
        sk = icc if cvn == 10 else emv_kd.derive_common_sk(icc, TAGS["9F36"] + bytes(6))
        ptype = emv_ac.PaddingType.VISA if pad == 1 else emv_ac.PaddingType.EMV
        assert arqc == emv_ac.generate_ac(sk, data, ptype)
    ok, arpc = hsm_scratch.verify_arqc(label, PAN, PSN, emv.atc_of(TAGS), data, arqc,
                                       arc=b"00", cvn=cvn)
    assert ok and arpc
    # Amount changed in flight: the ARQC no longer verifies.
    tampered = dict(TAGS, **{"9F02": bytes.fromhex("000000099999")})
    ok, arpc = hsm_scratch.verify_arqc(label, PAN, PSN, emv.atc_of(TAGS),
                                       emv.arqc_input(tampered, cvn), arqc, arc=b"00",
                                       cvn=cvn)
    assert (ok, arpc) == (False, None)


def test_arqc_input_errors():
    with pytest.raises(HsmInputError):
        emv.arqc_input({k: v for k, v in TAGS.items() if k != "9F37"})
    with pytest.raises(HsmInputError):
        emv.arqc_input(dict(TAGS, **{"9F02": b"\x01"}))
    with pytest.raises(HsmInputError):
        emv.arqc_input(TAGS, cvn=22)
