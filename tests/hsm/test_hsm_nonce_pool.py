"""AES-GCM nonces of the PAN at rest drawn from the token's RNG in batches
(``hsm._base.NoncePool``): each handed out once, a forked child draws its own. Blobs
checked with cryptography's AESGCM on the TEST DEK's clear value."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hsmkit import clear_test_key

from payswitch.hsm import HsmDeviceError, _base, devkeys

PAN = "4761739001010010"




class _CountingRng:
    """A stand-in for the python-pkcs11 session: counts the RNG calls."""

    def __init__(self, short: bool = False) -> None:
        self.calls = 0
        self.short = short

    def generate_random(self, bits: int) -> bytes:
        self.calls += 1
        return os.urandom(bits // 8 - (1 if self.short else 0))


def test_nonces_across_batches_are_distinct_and_decrypt(hsm_scratch, pan_keys):
    n = 2 * _base.NONCE_BATCH + 3  # three refills
    aad = b"payswitch-pan|k"
    blobs = [hsm_scratch.encrypt_pan(pan_keys[devkeys.DEK], PAN, aad) for _ in range(n)]
    assert len({b[:12] for b in blobs}) == n
    gcm = AESGCM(clear_test_key(devkeys.DEK))
    for blob in blobs:
        assert len(blob) == 12 + len(PAN) + 16
        assert gcm.decrypt(blob[:12], blob[12:], aad) == PAN.encode()


def test_one_rng_call_per_batch():
    pool, rng = _base.NoncePool(), _CountingRng()
    nonces = [pool.take(rng) for _ in range(_base.NONCE_BATCH + 1)]
    assert rng.calls == 2
    assert all(len(x) == 12 for x in nonces)
    assert len(set(nonces)) == len(nonces)


def test_a_short_rng_answer_is_refused():
    with pytest.raises(HsmDeviceError):
        _base.NoncePool().take(_CountingRng(short=True))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_reuse_the_parents_nonces():
    pool, rng = _base.NoncePool(), _CountingRng()
    pool.take(rng)  # the pool now holds the parent's next NONCE_BATCH - 1 nonces
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: its first nonce must come from a fresh RNG call
        try:
            nonce = pool.take(rng)
            os.write(w, bytes([rng.calls]) + nonce)
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 64)
    os.close(r)
    os.waitpid(pid, 0)
    calls, child_nonce = got[0], got[1:]
    assert calls == 2  # refilled in the child
    assert pool.take(rng) != child_nonce  # the parent's next one is not the child's
    assert rng.calls == 1  # and the parent's pool was not touched
