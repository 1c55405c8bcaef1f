"""The derived-key cache: EMV UDKs and AES DUKPT intermediate keys kept as session
objects in the token (sensitive, not extractable), bounded, destroyed on eviction,
dropped with their base key; results identical to pyemv with and without it."""

from __future__ import annotations

import uuid
import warnings

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
