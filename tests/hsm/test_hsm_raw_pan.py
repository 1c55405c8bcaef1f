"""PAN token, PAN encryption and the ledger's event MAC through the direct PKCS#11
calls (hsm/_raw.py): equal to Python's hmac and cryptography's AESGCM on the TEST keys'
clear values, interchangeable with python-pkcs11's calls, usage and tags enforced."""

from __future__ import annotations

import ctypes
import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hsmkit import clear_test_key
from pkcs11 import Mechanism
from pkcs11.mechanisms import GCMParams

from payswitch.hsm import HsmInputError, KeyUsageError, _raw, devkeys, session

PAN = "4761739001010010"




@pytest.mark.parametrize("pan", [PAN, "476173900101", "4761739001010010123"])
def test_pan_token_is_hmac_sha256(hsm_scratch, pan_keys, pan):
    expected = hmac.new(clear_test_key(devkeys.TKN), pan.encode(), hashlib.sha256).hexdigest()
    assert hsm_scratch.pan_token(pan_keys[devkeys.TKN], pan) == expected


@pytest.mark.parametrize("size", [0, 1, 64, 200, 4096])
def test_event_mac_is_hmac_sha256(hsm_scratch, pan_keys, size):
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    expected = hmac.digest(clear_test_key(devkeys.EVK), data, hashlib.sha256)
    assert hsm_scratch.event_mac(pan_keys[devkeys.EVK], data) == expected


def test_direct_hmac_equals_python_pkcs11(hsm_scratch, pan_keys):
    k = hsm_scratch._key(pan_keys[devkeys.EVK]).main
    with session.LIBRARY_LOCK:
        by_wrapper = k.sign(b"event", mechanism=Mechanism.SHA256_HMAC)
    assert hsm_scratch.event_mac(pan_keys[devkeys.EVK], b"event") == by_wrapper


@pytest.mark.parametrize("aad", [b"", b"acct-1"])
def test_encrypt_pan_is_aes_gcm(hsm_scratch, pan_keys, aad):
    blob = hsm_scratch.encrypt_pan(pan_keys[devkeys.DEK], PAN, aad=aad)
    assert len(blob) == 12 + len(PAN) + 16
    clear = AESGCM(clear_test_key(devkeys.DEK)).decrypt(blob[:12], blob[12:], aad or None)
    assert clear == PAN.encode()
    nonce = bytes.fromhex("00112233445566778899aabb")
    theirs = nonce + AESGCM(clear_test_key(devkeys.DEK)).encrypt(nonce, PAN.encode(), aad or None)
    assert hsm_scratch.decrypt_pan(pan_keys[devkeys.DEK], theirs, aad=aad) == PAN


def test_a_new_nonce_per_encryption(hsm_scratch, pan_keys):
    blobs = {hsm_scratch.encrypt_pan(pan_keys[devkeys.DEK], PAN) for _ in range(4)}
    assert len({b[:12] for b in blobs}) == 4


@pytest.mark.parametrize("aad", [b"", b"acct-1"])
def test_gcm_cross_decrypts_with_python_pkcs11(hsm_scratch, pan_keys, aad):
    label = pan_keys[devkeys.DEK]
    k = hsm_scratch._key(label).main
    blob = hsm_scratch.encrypt_pan(label, PAN, aad=aad)
    nonce = bytes(range(12))
    with session.LIBRARY_LOCK:
        theirs = k.decrypt(blob[12:], mechanism=Mechanism.AES_GCM,
                           mechanism_param=GCMParams(blob[:12], aad or None))
        ours = nonce + k.encrypt(PAN.encode(), mechanism=Mechanism.AES_GCM,
                                 mechanism_param=GCMParams(nonce, aad or None))
    assert theirs == PAN.encode()
    assert hsm_scratch.decrypt_pan(label, ours, aad=aad) == PAN


@pytest.mark.parametrize("where", [0, 12, -1])  # nonce, ciphertext, tag
def test_tampered_blob_is_refused_without_data(hsm_scratch, pan_keys, where):
    label = pan_keys[devkeys.DEK]
    blob = bytearray(hsm_scratch.encrypt_pan(label, PAN, aad=b"acct-1"))
    good = bytes(blob)
    blob[where] ^= 0x01
    with pytest.raises(HsmInputError) as e:
        hsm_scratch.decrypt_pan(label, bytes(blob), aad=b"acct-1")
    assert PAN not in str(e.value) and PAN[-4:] not in str(e.value)
    with pytest.raises(HsmInputError):
        hsm_scratch.decrypt_pan(label, good, aad=b"acct-2")
    # a refused decryption leaves no operation open on the session
    assert hsm_scratch.decrypt_pan(label, good, aad=b"acct-1") == PAN


def test_wrong_usage_is_refused(hsm_scratch, pan_keys):
    tkn, dek, evk = pan_keys[devkeys.TKN], pan_keys[devkeys.DEK], pan_keys[devkeys.EVK]
    blob = hsm_scratch.encrypt_pan(dek, PAN)
    for call in (lambda: hsm_scratch.pan_token(evk, PAN),
                 lambda: hsm_scratch.pan_token(dek, PAN),
                 lambda: hsm_scratch.event_mac(tkn, b"x"),
                 lambda: hsm_scratch.event_mac(dek, b"x"),
                 lambda: hsm_scratch.encrypt_pan(tkn, PAN),
                 lambda: hsm_scratch.decrypt_pan(evk, blob)):
        with pytest.raises(KeyUsageError):
            call()


def test_token_refuses_hmac_under_an_aes_key(hsm_scratch, pan_keys):
    # below the usage check: the library's own refusal is a CallError naming the call
    k = hsm_scratch._key(pan_keys[devkeys.DEK]).main
    with session.LIBRARY_LOCK, pytest.raises(_raw.CallError) as e:
        _raw.hmac_sha256(k, PAN.encode())
    assert str(e.value).startswith("C_SignInit returned CKR 0x") and PAN not in str(e.value)


def test_softhsm_wants_the_gcm_params_with_iv_bits(hsm_scratch, pan_keys):
    # Why _GcmParams has ulIvBits: the v2.40 layout (without it) is refused as bad
    # arguments, so a wrong layout fails loudly rather than encrypting garbage.
    class V240(ctypes.Structure):
        _fields_ = [("pIv", ctypes.c_char_p), ("ulIvLen", ctypes.c_ulong),
                    ("pAAD", ctypes.c_char_p), ("ulAADLen", ctypes.c_ulong),
                    ("ulTagBits", ctypes.c_ulong)]

    k = hsm_scratch._key(pan_keys[devkeys.DEK]).main
    param = V240(bytes(12), 12, None, 0, 128)
    mech = _raw._Mechanism(int(Mechanism.AES_GCM), ctypes.addressof(param),
                           ctypes.sizeof(param))
    with session.LIBRARY_LOCK:
        rv = _raw._library().C_EncryptInit(k.session.handle, mech, k.handle)
    assert rv == 0x7  # CKR_ARGUMENTS_BAD
