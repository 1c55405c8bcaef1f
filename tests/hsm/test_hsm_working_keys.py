"""Working keys (hsm/README.md, "Working keys"): a DEK, TKN or EVK is used through a
session object unwrapped once per ``Hsm`` through its ``/W`` companion inside the token
(the PIN holder's extraction attempts: test_hsm_working_key_extraction.py).

Checked at the boundary: the results equal Python's hmac and cryptography's AESGCM under
the TEST keys' clear values (so the unwrapped object holds the key's own value), in this
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
    _raw,
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
        assert src[Attribute.UNWRAP] is True  # unwrapping only
        assert not any(src[a] for a in (Attribute.ENCRYPT, Attribute.DECRYPT, Attribute.SIGN,
                                        Attribute.VERIFY, Attribute.WRAP, Attribute.DERIVE,
                                        Attribute.COPYABLE))
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
        # SoftHSM 2.6.1 leaves VALUE_LEN at 0 on an unwrapped key (the value is 32 bytes:
        # the results above equal hmac / AESGCM under the 32-byte TEST keys)
        assert work[Attribute.VALUE_LEN] == 0
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


def _wrapped_under(h: Hsm, w: bytes, value: bytes, hmac_key: bool) -> bytes:
    """``value`` wrapped (AES_KEY_WRAP) under a W known to the test, as a /W holds it."""
    t = {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: pkcs11.KeyType.AES,
         Attribute.TOKEN: False, Attribute.VALUE: w, Attribute.WRAP: True}
    k = {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.TOKEN: False,
         Attribute.KEY_TYPE: pkcs11.KeyType.GENERIC_SECRET if hmac_key else pkcs11.KeyType.AES,
         Attribute.VALUE: value, Attribute.EXTRACTABLE: True, Attribute.SIGN: hmac_key}
    wk, kk = h._session.create_object(t), h._session.create_object(k)
    try:
        return bytes(wk.wrap_key(kk, mechanism=pkcs11.Mechanism.AES_KEY_WRAP))
    finally:
        wk.destroy()
        kk.destroy()


@pytest.mark.parametrize("wrapped", ["random", "another key"])
def test_a_w_part_that_does_not_give_the_key_is_refused(hsm_scratch, wrapped):
    label = _import(hsm_scratch, devkeys.TKN)
    info = hsm_scratch.key_info(label)
    hsm_scratch._keys.pop(label)  # the key is deleted through another Hsm below
    (src,) = _objects(hsm_scratch, f"{label}/W")
    src.destroy()
    w = os.urandom(32)
    # random: C_UnwrapKey's integrity check refuses it; another key: the KCV check does
    blob = (os.urandom(40) if wrapped == "random"
            else _wrapped_under(hsm_scratch, w, os.urandom(32), True))
    _raw.create_unwrap_source(hsm_scratch._session, label=f"{label}/W".encode(),
                              ident=encode_id(info.key_type, info.alg, "W", info.kcv,
                                              {"wk": blob.hex()}), value=w, hmac=True)
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
            assert h._keys[label].work.handle != first  # made again, the old one destroyed
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


def test_an_aes192_dek_gets_a_working_key_too(hsm_scratch):
    """AES_KEY_WRAP takes any multiple of 8 bytes: a 24-byte DEK has a /W as well."""
    label = f"dek192-{uuid.uuid4().hex[:8]}"
    value = os.urandom(24)
    hsm_scratch.import_key_components(label, "DEK", [value])
    try:
        assert len(_objects(hsm_scratch, f"{label}/W")) == 1
        blob = hsm_scratch.encrypt_pan(label, PAN, AAD)
        assert hsm_scratch._keys[label].work is not None
        assert AESGCM(value).decrypt(blob[:12], blob[12:], AAD) == PAN.encode()
    finally:
        hsm_scratch.delete_key(label)
