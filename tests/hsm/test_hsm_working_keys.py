"""Working keys (hsm/README.md, "Working keys"): a DEK, TKN or EVK is used through a
session object derived once per ``Hsm`` from its ``/W`` companion inside the token.

Checked at the boundary: the results equal Python's hmac and cryptography's AESGCM under
the TEST keys' clear values (so the derived object holds the key's own value), in this
process, in a second ``Hsm`` and in a fresh process; the objects' attributes as the token
reports them; a ``/W`` that does not give the key is refused; a key without ``/W`` still
works on its token object; deleting a key destroys its ``/W`` and working objects; a key
deleted elsewhere stops working within ``Policy.key_stream_age_s``."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import uuid

import pkcs11
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hsmkit import clear_test_key
from pkcs11 import Attribute, ObjectClass

from payswitch.hsm import (
    HsmDeviceError,
    HsmError,
    KeyNotFoundError,
    Policy,
    devkeys,
)
from payswitch.hsm._base import _WORK_LABEL
from payswitch.hsm.core import Hsm
from payswitch.hsm.keys import encode_id

PAN = "4761739001010010"
AAD = b"payswitch-pan|0123456789abcdef"


def _tkn(pan: str) -> str:
    return hmac.new(clear_test_key(devkeys.TKN), pan.encode(), hashlib.sha256).hexdigest()


def _import(h: Hsm, test_label: str) -> str:
    label = f"{test_label}-{uuid.uuid4().hex[:8]}"
    h.import_key_components(label, devkeys.TEST_KEYS[test_label].key_type,
                            [clear_test_key(test_label)])
    return label


def _objects(h: Hsm, label: str) -> list:
    return list(h._session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                        Attribute.LABEL: label}))


def _working_handles(h: Hsm) -> set[int]:
    return {o.handle for o in _objects(h, _WORK_LABEL)}


def test_results_come_from_the_working_key_and_equal_independent_libraries(hsm_scratch,
                                                                         pan_keys):
    tkn, dek, evk = (pan_keys[x] for x in (devkeys.TKN, devkeys.DEK, devkeys.EVK))
    token, blob = hsm_scratch.protect_pan(tkn, dek, PAN, AAD)
    assert hsm_scratch.event_mac(evk, b"event") == hmac.new(
        clear_test_key(devkeys.EVK), b"event", hashlib.sha256).digest()
    for label in (tkn, dek, evk):
        assert hsm_scratch._keys[label].work is not None  # not the token object
    assert token == _tkn(PAN)
    assert AESGCM(clear_test_key(devkeys.DEK)).decrypt(blob[:12], blob[12:], AAD) == PAN.encode()
    # and the other way: a blob made outside the token decrypts through the working key
    nonce = os.urandom(12)
    outside = nonce + AESGCM(clear_test_key(devkeys.DEK)).encrypt(nonce, PAN.encode(), AAD)
    assert hsm_scratch.decrypt_pan(dek, outside, AAD) == PAN


def test_objects_are_what_the_token_says(hsm_scratch, pan_keys):
    for test_label, sign in ((devkeys.TKN, True), (devkeys.DEK, False), (devkeys.EVK, True)):
        label = pan_keys[test_label]
        (src,) = _objects(hsm_scratch, f"{label}/W")
        assert src[Attribute.KEY_TYPE] == pkcs11.KeyType.AES
        assert (src[Attribute.TOKEN], src[Attribute.PRIVATE], src[Attribute.SENSITIVE],
                src[Attribute.EXTRACTABLE], src[Attribute.MODIFIABLE]) == (
            True, True, True, False, False)
        assert src[Attribute.DERIVE] is True  # derivation only
        assert not any(src[a] for a in (Attribute.ENCRYPT, Attribute.DECRYPT, Attribute.SIGN,
                                        Attribute.VERIFY, Attribute.WRAP, Attribute.UNWRAP))
        hsm_scratch.pan_token(pan_keys[devkeys.TKN], PAN)
        hsm_scratch.encrypt_pan(pan_keys[devkeys.DEK], PAN)
        hsm_scratch.event_mac(pan_keys[devkeys.EVK], b"x")
        handle = hsm_scratch._keys[label].work.handle
        (work,) = [o for o in _objects(hsm_scratch, _WORK_LABEL) if o.handle == handle]
        assert (work[Attribute.TOKEN], work[Attribute.PRIVATE], work[Attribute.SENSITIVE],
                work[Attribute.EXTRACTABLE], work[Attribute.DERIVE],
                work[Attribute.MODIFIABLE]) == (False, False, True, False, False, False)
        assert work[Attribute.KEY_TYPE] == (
            pkcs11.KeyType.GENERIC_SECRET if sign else pkcs11.KeyType.AES)
        assert work[Attribute.VALUE_LEN] == 32
        assert (work[Attribute.SIGN], work[Attribute.ENCRYPT], work[Attribute.DECRYPT]) == (
            sign, not sign, not sign)
        assert not any(work[a] for a in (Attribute.VERIFY, Attribute.WRAP, Attribute.UNWRAP))
        with pytest.raises(pkcs11.PKCS11Error):  # AttributeSensitive: never readable
            work[Attribute.VALUE]
        with pytest.raises(pkcs11.PKCS11Error):
            src[Attribute.VALUE]


def test_stable_across_hsm_instances_and_a_fresh_process(hsm_scratch, pan_keys):
    tkn, dek = pan_keys[devkeys.TKN], pan_keys[devkeys.DEK]
    here, blob = hsm_scratch.protect_pan(tkn, dek, PAN, AAD)
    with Hsm(hsm_scratch.config) as other:  # its own cache: a working key of its own
        assert other.pan_token(tkn, PAN) == here
        assert other.decrypt_pan(dek, blob, AAD) == PAN
        assert other._keys[tkn].work.handle != hsm_scratch._keys[tkn].work.handle
    c = hsm_scratch.config
    script = (
        "import json, sys\n"
        "from payswitch.hsm.core import Hsm\n"
        "from payswitch.hsm.token import TokenConfig\n"
        "a = json.loads(sys.argv[1])\n"
        "with Hsm(TokenConfig(module=a['module'], conf=a['conf'], label=a['label'],"
        " pin=a['pin'], role=a['role'])) as h:\n"
        "    t = h.pan_token(a['tkn'], a['pan'])\n"
        "    assert h._keys[a['tkn']].work is not None\n"
        "    print(json.dumps([t, h.decrypt_pan(a['dek'], bytes.fromhex(a['blob']),"
        " a['aad'].encode())]))\n")
    arg = json.dumps({"module": c.module, "conf": c.conf, "label": c.label, "pin": c.pin,
                      "role": c.role, "tkn": tkn, "dek": dek, "pan": PAN,
                      "blob": blob.hex(), "aad": AAD.decode()})
    out = subprocess.run([sys.executable, "-c", script, arg], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "SOFTHSM2_CONF": c.conf})
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == [_tkn(PAN), PAN]
    assert here == _tkn(PAN)


def test_a_w_part_that_does_not_give_the_key_is_refused(hsm_scratch):
    label = _import(hsm_scratch, devkeys.TKN)
    info = hsm_scratch.key_info(label)
    hsm_scratch._keys.pop(label)  # the key is deleted through another Hsm below
    (src,) = _objects(hsm_scratch, f"{label}/W")
    src.destroy()
    t = hsm_scratch._template(info.key_type, info.alg, "W", f"{label}/W")
    t[Attribute.ID] = encode_id(info.key_type, info.alg, "W", info.kcv,
                                {"d": os.urandom(32).hex()})
    t[Attribute.VALUE] = os.urandom(32)
    hsm_scratch._session.create_object(t)
    before = _working_handles(hsm_scratch)
    with Hsm(hsm_scratch.config) as fresh:
        with pytest.raises(HsmDeviceError, match="/W"):
            fresh.pan_token(label, PAN)
        assert _working_handles(hsm_scratch) == before  # the wrong object destroyed
        fresh.delete_key(label)  # a broken /W does not stop the deletion
    assert _objects(hsm_scratch, label) == [] and _objects(hsm_scratch, f"{label}/W") == []


def test_a_key_without_w_part_works_on_its_token_object(hsm_scratch):
    """A key imported before working keys existed (no /W): same results, slower."""
    label = _import(hsm_scratch, devkeys.TKN)
    try:
        _objects(hsm_scratch, f"{label}/W")[0].destroy()
        with Hsm(hsm_scratch.config) as fresh:
            assert fresh.pan_token(label, PAN) == _tkn(PAN)
            assert fresh._keys[label].work is None
    finally:
        hsm_scratch.delete_key(label)
    assert _objects(hsm_scratch, label) == []


def test_delete_and_close_destroy_what_was_made(hsm_scratch):
    label = _import(hsm_scratch, devkeys.DEK)
    with Hsm(hsm_scratch.config) as other:
        before = _working_handles(hsm_scratch)
        other.encrypt_pan(label, PAN)
        made = _working_handles(hsm_scratch) - before
        assert len(made) == 1
    assert _working_handles(hsm_scratch) == before  # close destroyed it
    hsm_scratch.encrypt_pan(label, PAN)
    assert len(_working_handles(hsm_scratch) - before) == 1
    hsm_scratch.delete_key(label)
    assert _working_handles(hsm_scratch) == before
    assert _objects(hsm_scratch, label) == [] and _objects(hsm_scratch, f"{label}/W") == []
    # imported again under the same label: a new /W, same results
    hsm_scratch.import_key_components(label, "DEK", [clear_test_key(devkeys.DEK)])
    try:
        blob = hsm_scratch.encrypt_pan(label, PAN, AAD)
        clear = AESGCM(clear_test_key(devkeys.DEK)).decrypt(blob[:12], blob[12:], AAD)
        assert clear == PAN.encode()
    finally:
        hsm_scratch.delete_key(label)


def test_rederived_after_the_age_and_a_key_deleted_elsewhere_stops(hsm_scratch):
    label = _import(hsm_scratch, devkeys.EVK)
    now = [0.0]
    try:
        with Hsm(hsm_scratch.config, policy=Policy(clock=lambda: now[0],
                                                   key_stream_age_s=5.0)) as h:
            mac = h.event_mac(label, b"e")
            first = h._keys[label].work.handle
            now[0] = 4.0
            assert h.event_mac(label, b"e") == mac and h._keys[label].work.handle == first
            now[0] = 6.0
            assert h.event_mac(label, b"e") == mac
            assert h._keys[label].work.handle != first  # re-derived, the old one destroyed
            assert first not in _working_handles(hsm_scratch)
            hsm_scratch.delete_key(label)  # another Hsm of the process deletes it
            now[0] = 12.0
            with pytest.raises(HsmError):
                h.event_mac(label, b"e")
            with pytest.raises(KeyNotFoundError):
                h.event_mac(label, b"e")
    finally:
        if hsm_scratch.has_key(label):
            hsm_scratch.delete_key(label)
