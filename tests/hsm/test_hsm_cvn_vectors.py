"""EMV cryptogram versions against published vectors (pyemv's tests/test_cvn.py:
IMK 0123456789ABCDEFFEDCBA9876543210, PAN 1234567890123456, PSN 00, ATC 001C) and
against pyemv's per-CVN classes for random inputs. Never against our own derivation."""

from __future__ import annotations

import uuid
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payswitch.hsm import emv

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from pyemv import cvn as pyemv_cvn

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN, PSN, ATC = "1234567890123456", "00", bytes.fromhex("001C")

VISA_TAGS = {
    "9F02": bytes.fromhex("000000004000"), "9F03": bytes(6), "9F1A": bytes.fromhex("0124"),
    "95": bytes.fromhex("8000048000"), "5F2A": bytes.fromhex("0124"),
    "9A": bytes.fromhex("191105"), "9C": b"\x01", "9F37": bytes.fromhex("52BF4585"),
    "82": bytes.fromhex("1800"), "9F36": ATC,
}
MC_TAGS = {
    "9F02": bytes.fromhex("000000009999"), "9F03": bytes(6), "9F1A": bytes.fromhex("0124"),
    "95": bytes.fromhex("8000000000"), "5F2A": bytes.fromhex("0124"),
    "9A": bytes.fromhex("209906"), "9C": b"\x00", "9F37": bytes.fromhex("ABCDEF12"),
    "82": bytes.fromhex("1800"), "9F36": ATC,
}

# cvn, tags, IAD (9F10), published ARQC, ARPC arguments, published ARPC
VECTORS = [
    (10, VISA_TAGS, "06010A03A06010", "29CCA15AE665FA2E", {"arc": b"00"}, "28993816AFAE4AEB"),
    (18, VISA_TAGS, "06011203A0B800", "7A788EA6B8A3E733", {"csu": bytes(4)}, "9AF514C1"),
    (16, MC_TAGS, "0110A00003220000000000000000000000FF", "24CCF3DEE3158C70",
     {"arc": bytes.fromhex("0010")}, "73F6BBF389A6586C"),
    (17, MC_TAGS, "0111A00003220000000000000000000322FF", "EAE8A620A75648D8",
     {"arc": bytes.fromhex("0010")}, "29CF11FBDB9CA650"),
]


@pytest.fixture(scope="module")
def imk(hsm_scratch):
    label = f"imk-{uuid.uuid4().hex[:8]}"
    hsm_scratch.import_key_components(label, "MK-AC", [IMK])
    yield label
    hsm_scratch.delete_key(label)


@pytest.mark.parametrize(("cvn", "tags", "iad", "arqc", "arpc_args", "arpc"), VECTORS,
                         ids=[f"cvn{v[0]}" for v in VECTORS])
def test_published_vector(hsm_scratch, imk, cvn, tags, iad, arqc, arpc_args, arpc):
    tags = dict(tags, **{"9F10": bytes.fromhex(iad)})
    assert emv.cvn_of(tags) == cvn
    data = emv.arqc_input(tags, cvn)
    un = tags["9F37"]
    got = hsm_scratch.generate_arqc(imk, PAN, PSN, ATC, data, cvn=cvn, un=un)
    assert got.hex().upper() == arqc
    ok, got_arpc = hsm_scratch.verify_arqc(imk, PAN, PSN, ATC, data, got, cvn=cvn, un=un,
                                           **arpc_args)
    assert ok and got_arpc.hex().upper() == arpc
    assert hsm_scratch.generate_arpc(imk, PAN, PSN, ATC, got, cvn=cvn, un=un,
                                     **arpc_args).hex().upper() == arpc
    # One bit changed in the amount: refused, no ARPC.
    bad = emv.arqc_input(dict(tags, **{"9F02": bytes.fromhex("000000004001")}), cvn)
    assert hsm_scratch.verify_arqc(imk, PAN, PSN, ATC, bad, got, cvn=cvn, un=un,
                                   **arpc_args) == (False, None)


def _pyemv(cvn: int, k: bytes, pan: str, psn: str, tags: dict) -> tuple[bytes, bytes]:
    """(ARQC, ARPC method 1 with ARC '00' or method 2 with CSU 0) from pyemv's CVN class."""
    cls = {10: pyemv_cvn.VisaCVN10, 18: pyemv_cvn.VisaCVN18,
           16: pyemv_cvn.MasterCardCVN16, 17: pyemv_cvn.MasterCardCVN17}[cvn]
    base = {f"tag_{t.lower()}": tags[t] for t in
            ("9F02", "9F03", "9F1A", "95", "5F2A", "9A", "9C", "9F37", "82", "9F36")}
    iad = tags["9F10"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = cls(iss_mk_ac=k, iss_mk_smi=k, iss_mk_smc=k, pan=pan, psn=psn)
        if cvn == 10:
            arqc = c.generate_ac(**base, cvr=iad[3:7])
            return arqc, c.generate_arpc(tag_9f26=arqc, arpc_rc=b"00")
        if cvn == 18:
            arqc = c.generate_ac(**base, tag_9f10=iad)
            return arqc, c.generate_arpc(tag_9f26=arqc, tag_9f36=tags["9F36"], csu=bytes(4))
        extra = {"counters": iad[10:18]} if cvn == 17 else {}
        arqc = c.generate_ac(**base, cvr=iad[2:8], **extra)
        return arqc, c.generate_arpc(tag_9f26=arqc, arpc_rc=b"00")


IADS = {10: "06010A03A00000", 18: "06011203A0B800",
        16: "0110A00003220000000000000000000000FF",
        17: "0111A00003220000000000000000000322FF"}


@settings(max_examples=20, deadline=None)
@given(k=st.binary(min_size=16, max_size=16), cvn=st.sampled_from([10, 18, 16, 17]),
       atc=st.binary(min_size=2, max_size=2), un=st.binary(min_size=4, max_size=4),
       pan=st.text("0123456789", min_size=12, max_size=19),
       psn=st.text("0123456789", min_size=2, max_size=2))
def test_matches_pyemv_cvn_classes(hsm_scratch, k, cvn, atc, un, pan, psn):
    tags = dict(VISA_TAGS, **{"9F36": atc, "9F37": un, "9F10": bytes.fromhex(IADS[cvn])})
    arqc, arpc = _pyemv(cvn, k, pan, psn, tags)
    label = f"mk-{uuid.uuid4().hex[:8]}"
    hsm_scratch.import_key_components(label, "MK-AC", [k])
    try:
        data = emv.arqc_input(tags, cvn)
        assert hsm_scratch.generate_arqc(label, pan, psn, atc, data, cvn=cvn, un=un) == arqc
        arpc_args = {"csu": bytes(4)} if cvn == 18 else {"arc": b"00"}
        ok, got = hsm_scratch.verify_arqc(label, pan, psn, atc, data, arqc, cvn=cvn, un=un,
                                          **arpc_args)
        assert ok and got == arpc
    finally:
        hsm_scratch.delete_key(label)
