"""TDES DUKPT (ANSI X9.24-1:2009) host-side steps.

PKCS#11 has no mechanism for the non-reversible key generation process (it XORs key
halves into the data), so after the IPEK halves are computed in the token with the BDK
and its C0C0.. variant, the IPEK, the future keys and the PIN key are clear in host
memory for the duration of one derivation (see hsm/README.md). They are plain local
``bytes`` that nothing logs or keeps.
"""

from __future__ import annotations

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from payswitch.hsm.errors import HsmInputError

KEY_MASK = bytes.fromhex("C0C0C0C000000000C0C0C0C000000000")
PIN_VARIANT = bytes.fromhex("00000000000000FF00000000000000FF")
COUNTER_BITS = 21
COUNTER_MASK = (1 << COUNTER_BITS) - 1


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _des(key8: bytes, block: bytes) -> bytes:
    # One DES block with a clear intermediate key (K||K||K is single DES): ECB is the
    # primitive here, not a mode applied to data.
    enc = Cipher(TripleDES(key8 * 3), modes.ECB()).encryptor()  # noqa: S305
    return enc.update(block) + enc.finalize()


def ipek_input(ksn: bytes) -> bytes:
    """The 8 bytes the BDK (and its variant) encrypt: leftmost KSN bytes, counter zeroed."""
    masked = int.from_bytes(ksn, "big") & ~COUNTER_MASK
    return masked.to_bytes(10, "big")[:8]


def _nrkgp(key: bytes, data: bytes) -> bytes:
    """Non-reversible key generation process: a 16-byte key and 8-byte data -> new key."""
    kl, kr = key[:8], key[8:]
    right = _xor(_des(kl, _xor(data, kr)), kr)
    key2 = _xor(key, KEY_MASK)
    kl, kr = key2[:8], key2[8:]
    left = _xor(_des(kl, _xor(data, kr)), kr)
    return left + right


def future_key(ipek: bytes, ksn: bytes) -> bytes:
    """The transaction key for the KSN's counter, from the IPEK."""
    reg = int.from_bytes(ksn[-8:], "big")
    counter = reg & COUNTER_MASK
    if counter == 0:
        raise HsmInputError("DUKPT counter is zero")
    if bin(counter).count("1") > 10:
        raise HsmInputError("DUKPT counter has more than 10 bits set")
    base = reg & ~COUNTER_MASK
    key = ipek
    shift = 1 << (COUNTER_BITS - 1)
    while shift:
        if counter & shift:
            base |= shift
            key = _nrkgp(key, base.to_bytes(8, "big"))
        shift >>= 1
    return key


def pin_key(ipek: bytes, ksn: bytes) -> bytes:
    """The PIN encryption key (the PIN variant of the transaction key)."""
    return _xor(future_key(ipek, ksn), PIN_VARIANT)
