"""The derived-key cache: EMV UDKs and AES DUKPT intermediate keys kept as session
objects in the token (sensitive, not extractable), bounded, destroyed on eviction,
dropped with their base key; results identical to pyemv with and without it."""

from __future__ import annotations

import uuid
import warnings

import pkcs11
import pytest
from pkcs11 import Attribute, ObjectClass

from payswitch.hsm import Hsm, Policy, emv

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from pyemv import cvn as pyemv_cvn

MK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
TAGS = ("9F02", "9F03", "9F1A", "95", "5F2A", "9A", "9C", "9F37", "82", "9F36")


def _session_keys(h: Hsm) -> list:
    return list(h._session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                        Attribute.TOKEN: False}))


def test_udk_cache_is_bounded_sensitive_and_dropped_with_its_key(hsm_tokens):
    cfg = hsm_tokens["scratch-test"]
    with Hsm(cfg, policy=Policy(derived_keys=2)) as h:
        label = f"mk-{uuid.uuid4().hex[:8]}"
        h.import_key_components(label, "MK-AC", [MK])
        base = len(_session_keys(h))
        tags = {"9F02": bytes(5) + b"\x01", "9F03": bytes(6), "9F1A": b"\x08\x40",
                "95": bytes(5), "5F2A": b"\x08\x40", "9A": b"\x26\x11\x28", "9C": b"\x00",
                "9F37": b"\x01\x02\x03\x04", "82": b"\x39\x00", "9F36": b"\x00\x07",
                "9F10": bytes.fromhex("06010A03A00000")}
        data = emv.arqc_input(tags, 10)
        pans = [f"47617390010100{i}0" for i in range(10, 15)]
        for pan in pans:
            arqc = h.generate_arqc(label, pan, "00", b"\x00\x07", data, cvn=10)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = pyemv_cvn.VisaCVN10(MK, MK, MK, pan, "00")
                want = ref.generate_ac(**{f"tag_{t.lower()}": tags[t] for t in TAGS},
                                       cvr=tags["9F10"][3:7])
            assert arqc == want
            ok, _ = h.verify_arqc(label, pan, "00", b"\x00\x07", data, arqc, cvn=10)
            assert ok
        assert len(h._derived) == 2
        objs = _session_keys(h)
        assert len(objs) - base == 4  # two cards: UDK and UDK_L||UDK_L each
        for o in objs:
            assert o[Attribute.SENSITIVE] and not o[Attribute.EXTRACTABLE]
        assert h._derived.hits >= len(pans)  # verify reused what generate derived
        h.delete_key(label)
        assert len(h._derived) == 0
        assert len(_session_keys(h)) == base


def test_session_keys_per_atc_stay_sensitive_and_are_destroyed(hsm_tokens, monkeypatch):
    # CVN 18/16/17 derive SK and SK_L||SK_L per ATC by direct PKCS#11 calls (hsm/_raw.py):
    # each is a sensitive, non-extractable, encrypt-only session object whose value the
    # token refuses to give, and none is left once the call returns.
    cfg = hsm_tokens["scratch-test"]
    with Hsm(cfg) as h:
        label = f"mk-{uuid.uuid4().hex[:8]}"
        h.import_key_components(label, "MK-AC", [MK])
        base = len(_session_keys(h))
        seen = []
        derive = h._derive

        def spy(base_key, data, **kw):
            key = derive(base_key, data, **kw)
            obj = {o.handle: o for o in _session_keys(h)}[key.handle]
            seen.append(tuple(obj[a] for a in (Attribute.TOKEN, Attribute.SENSITIVE,
                                               Attribute.EXTRACTABLE, Attribute.ENCRYPT,
                                               Attribute.DECRYPT, Attribute.DERIVE)))
            with pytest.raises(pkcs11.AttributeSensitive):
                obj[Attribute.VALUE]
            return key

        monkeypatch.setattr(h, "_derive", spy)
        pan, un, data = "4761739001010010", b"\x01\x02\x03\x04", bytes(40)
        for cvn in (18, 16, 17):
            for atc in (b"\x00\x01", b"\x00\x02"):
                arqc = h.generate_arqc(label, pan, "00", atc, data, cvn=cvn, un=un)
                ok, arpc = h.verify_arqc(label, pan, "00", atc, data, arqc, cvn=cvn, un=un,
                                         arc=b"00")
                assert ok and len(arpc) == 8
        udk_objects = 2 * len(h._derived)  # the cached UDK pairs (options A and B)
        assert len(_session_keys(h)) - base == udk_objects
        # CVNs x ATCs x (generate, verify) x (SK, SK_L||SK_L), and the UDK pairs
        assert len(seen) == 3 * 2 * 2 * 2 + udk_objects
        assert seen.count((False, True, False, True, False, False)) == len(seen) - len(h._derived)
        assert seen.count((False, True, False, True, False, True)) == len(h._derived)  # UDKs
        h.delete_key(label)


def test_direct_call_errors_are_typed_and_name_the_call(hsm_tokens):
    # A failing direct call is a PKCS11Error (so the derived cache's eviction and the
    # command wrapper handle it like python-pkcs11's) and reaches the caller as an
    # HsmDeviceError naming the function and return code, no data.
    from payswitch.hsm import _raw
    from payswitch.hsm._base import _locked
    from payswitch.hsm.errors import HsmDeviceError

    cfg = hsm_tokens["scratch-test"]
    with Hsm(cfg) as h:
        label = f"mk-{uuid.uuid4().hex[:8]}"
        h.import_key_components(label, "MK-AC", [MK])
        base = len(_session_keys(h))
        key = _raw.derive_des2(h._key(label).main, bytes(16), encrypt=True, derive=False)
        assert len(_session_keys(h)) == base + 1
        key.destroy()
        assert len(_session_keys(h)) == base
        with pytest.raises(pkcs11.PKCS11Error, match="C_DestroyObject returned CKR 0x"):
            key.destroy()

        @_locked
        def verify_arqc(self):  # a command name the role allows
            key.encrypt(bytes(8), mechanism=pkcs11.Mechanism.DES3_ECB)

        with pytest.raises(HsmDeviceError, match=r"C_EncryptInit returned CKR 0x\w{8}$"):
            verify_arqc(h)
        h.delete_key(label)
