"""Cipher operations kept open on hot keys (hsm/_raw.py ``Streams``): many calls in a
row on one key give what psec computes in clear for each call alone; the sessions
they hold are bounded and closed; a key deleted elsewhere stops within the age bound.
"""

from __future__ import annotations

import ctypes
import uuid
import warnings

import pytest
from hsmkit import SCRATCH_TOKEN
from hypothesis import given, settings
from hypothesis import strategies as st

from payswitch.hsm import Hsm, Policy, _raw
from payswitch.hsm.errors import HsmDeviceError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import psec

keys16 = st.binary(min_size=16, max_size=16)
pans = st.integers(min_value=13, max_value=19).flatmap(
    lambda n: st.text("0123456789", min_size=n, max_size=n))
pins = st.integers(min_value=4, max_value=12).flatmap(
    lambda n: st.text("0123456789", min_size=n, max_size=n))


def _ref(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args)


def _import(h: Hsm, kind: str, value: bytes) -> str:
    label = f"{kind.lower()}-{uuid.uuid4().hex[:12]}"
    h.import_key_components(label, kind, [value])
    return label


class _FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module", params=[64, 0], ids=["kept-open", "fresh"])
def scratch(request, hsm_tokens, hsm_scratch):  # hsm_scratch: the token's login session
    with Hsm(hsm_tokens[SCRATCH_TOKEN], policy=Policy(key_streams=request.param)) as h:
        yield h


@settings(max_examples=25, deadline=None)
@given(k=keys16, messages=st.lists(
    st.tuples(st.binary(min_size=1, max_size=120), st.sampled_from([1, 2])),
    min_size=2, max_size=6))
def test_retail_macs_in_a_row_match_psec(scratch, k, messages):
    # The kept-open CBC operation continues its chain from call to call; each MAC must
    # still be the one of its message alone.
    zak = _import(scratch, "ZAK", k)
    try:
        for data, padding in messages:
            mac = scratch.generate_mac(zak, data, padding=padding)
            assert mac == _ref(psec.mac.generate_retail_mac, k[:8], k[8:], data, padding)
            assert scratch.verify_mac(zak, data, mac, padding=padding)
            assert not scratch.verify_mac(zak, data + b"\x01", mac, padding=padding)
    finally:
        scratch.delete_key(zak)


@settings(max_examples=20, deadline=None)
@given(k1=keys16, k2=keys16, cards=st.lists(st.tuples(pins, pans), min_size=2, max_size=5))
def test_pin_translations_in_a_row_match_psec(scratch, k1, k2, cards):
    tpk, zpk = _import(scratch, "TPK", k1), _import(scratch, "ZPK", k2)
    try:
        for pin, pan in cards:
            block = _ref(psec.des.encrypt_tdes_ecb, k1,
                         _ref(psec.pinblock.encode_pinblock_iso_0, pin, pan))
            out = scratch.translate_pin(block, pan, tpk, zpk)
            clear = _ref(psec.des.decrypt_tdes_ecb, k2, out)
            assert _ref(psec.pinblock.decode_pinblock_iso_0, clear, pan) == pin
    finally:
        scratch.delete_key(tpk)
        scratch.delete_key(zpk)


def _session_open(handle: int) -> bool:
    info = (ctypes.c_ulong * 4)()  # CK_SESSION_INFO
    lib = _raw._library()
    lib.C_GetSessionInfo.argtypes = [ctypes.c_ulong, ctypes.c_void_p]
    return lib.C_GetSessionInfo(handle, info) == 0


def test_streams_are_bounded_and_closed(hsm_tokens, hsm_scratch):
    with Hsm(hsm_tokens[SCRATCH_TOKEN], policy=Policy(key_streams=2)) as h:
        zaks = [_import(h, "ZAK", bytes([i]) * 16) for i in range(1, 4)]
        try:
            for zak in zaks:  # two streams each (CBC under /L, ECB under the key)
                h.generate_mac(zak, bytes(16))
                assert len(h._streams) <= 2
            sessions = [s.session for s in h._streams._open.values()]
            assert sessions and all(_session_open(s) for s in sessions)
        finally:
            for zak in zaks:
                h.delete_key(zak)
        assert len(h._streams) == 0  # deleting a key closes its streams
        h.generate_mac(_import(h, "ZAK", bytes(range(16))), bytes(16))
        sessions = [s.session for s in h._streams._open.values()]
    assert sessions and not any(_session_open(s) for s in sessions)  # closed with the Hsm
    assert hsm_scratch.random(4)  # the shared login session is still there


def test_key_deleted_elsewhere_stops_within_the_age(hsm_tokens, hsm_scratch):
    clock = _FakeClock()
    policy = Policy(key_streams=8, key_stream_age_s=1.0, clock=clock)
    with Hsm(hsm_tokens[SCRATCH_TOKEN], policy=policy) as h:
        zak = _import(h, "ZAK", bytes(range(16)))
        mac = h.generate_mac(zak, b"payload")
        hsm_scratch.delete_key(zak)  # another Hsm of the process (or another process)
        clock.now = 1.0
        with pytest.raises(HsmDeviceError):
            h.generate_mac(zak, b"payload")
        with pytest.raises(HsmDeviceError):
            h.verify_mac(zak, b"payload", mac)
