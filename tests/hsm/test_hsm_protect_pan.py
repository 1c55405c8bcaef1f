"""``Hsm.protect_pan``: the PAN token and the AES-GCM blob of one PAN in one command,
checked against Python's hmac and cryptography's AESGCM on the TEST keys' clear values;
the same role and key usage checks as ``pan_token`` + ``encrypt_pan``; the direct
calls' reused buffers (hsm/_raw.py) keep no clear PAN after a decryption."""

from __future__ import annotations

import hashlib
import hmac

import pytest
import trio
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hsmkit import clear_test_key

from payswitch.hsm import (
    AsyncHsm,
    CommandNotAllowedError,
    HsmInputError,
    KeyUsageError,
    _raw,
    devkeys,
)

PAN = "4761739001010010"
AAD = b"payswitch-pan|0123456789abcdef"




@pytest.mark.parametrize("pan", [PAN, "476173900101", "4761739001010010123"])
@pytest.mark.parametrize("aad", [b"", AAD])
def test_protect_pan_is_hmac_and_aes_gcm(hsm_scratch, pan_keys, pan, aad):
    token, blob = hsm_scratch.protect_pan(pan_keys[devkeys.TKN], pan_keys[devkeys.DEK], pan, aad)
    assert token == hmac.new(clear_test_key(devkeys.TKN), pan.encode(), hashlib.sha256).hexdigest()
    assert token == hsm_scratch.pan_token(pan_keys[devkeys.TKN], pan)
    assert len(blob) == 12 + len(pan) + 16
    clear = AESGCM(clear_test_key(devkeys.DEK)).decrypt(blob[:12], blob[12:], aad or None)
    assert clear == pan.encode()
    assert hsm_scratch.decrypt_pan(pan_keys[devkeys.DEK], blob, aad) == pan


def test_inline_and_thread_calls_give_the_same(hsm_scratch, pan_keys):
    async def both() -> list[tuple[str, bytes]]:
        tkn, dek = pan_keys[devkeys.TKN], pan_keys[devkeys.DEK]
        return [await AsyncHsm(hsm_scratch, calls=mode).protect_pan(tkn, dek, PAN, AAD)
                for mode in ("inline", "thread")]
    (t1, b1), (t2, b2) = trio.run(both)
    assert t1 == t2
    assert b1[:12] != b2[:12]  # a new nonce each
    gcm = AESGCM(clear_test_key(devkeys.DEK))
    assert gcm.decrypt(b1[:12], b1[12:], AAD) == gcm.decrypt(b2[:12], b2[12:], AAD)


def test_the_keys_usage_is_checked(hsm_scratch, pan_keys):
    with pytest.raises(KeyUsageError):  # a DEK does not make tokens
        hsm_scratch.protect_pan(pan_keys[devkeys.DEK], pan_keys[devkeys.DEK], PAN)
    with pytest.raises(KeyUsageError):  # a TKN does not encrypt
        hsm_scratch.protect_pan(pan_keys[devkeys.TKN], pan_keys[devkeys.TKN], PAN)
    with pytest.raises(HsmInputError):
        hsm_scratch.protect_pan(pan_keys[devkeys.TKN], pan_keys[devkeys.DEK], "4761-7390")


@pytest.mark.parametrize("missing", ["pan_token", "encrypt_pan"])
def test_refused_unless_both_commands_are_allowed(hsm_scratch, pan_keys, monkeypatch, missing):
    """A role without either command: refused through ``_authorize`` under that
    command's own name, before the token is touched."""
    from payswitch.hsm import roles
    role = hsm_scratch.role
    monkeypatch.setitem(roles.COMMANDS, role, roles.COMMANDS[role] - {missing})
    monkeypatch.setattr(hsm_scratch, "_allowed", roles.COMMANDS[role])
    before = hsm_scratch.refused[missing]
    with pytest.raises(CommandNotAllowedError, match=missing):
        hsm_scratch.protect_pan(pan_keys[devkeys.TKN], pan_keys[devkeys.DEK], PAN)
    assert hsm_scratch.refused[missing] == before + 1


def test_no_clear_pan_left_in_the_reused_buffer(hsm_scratch, pan_keys):
    blob = hsm_scratch.encrypt_pan(pan_keys[devkeys.DEK], PAN, AAD)
    assert hsm_scratch.decrypt_pan(pan_keys[devkeys.DEK], blob, AAD) == PAN
    assert PAN.encode() not in _raw._scratch.out.raw
    assert _raw._scratch.gcm.pIv is None and _raw._scratch.gcm.pAAD is None
