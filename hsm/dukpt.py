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
_ECB = modes.ECB()  # noqa: S305 (single DES blocks of the NRKGP, not data)


def _xor(a: bytes, b: bytes) -> bytes:
    # As integers: the NRKGP does ~8 of these per counter bit, a byte loop was a third
    # of the DUKPT translation's host time.
    if len(a) != len(b):
        raise ValueError("xor of unequal lengths")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _des(key8: bytes, block: bytes) -> bytes:
    # One DES block with a clear intermediate key (K||K||K is single DES): ECB is the
    # primitive here, not a mode applied to data.
    # One shared ECB mode object and no finalize() (one whole block: update returns it,
    # finalize adds nothing): 5.5 instead of 9 us a block, the NRKGP's main cost.
    return Cipher(TripleDES(key8 * 3), _ECB).encryptor().update(block)  # noqa: S305


def tdes_ecb(key16: bytes, block: bytes, *, decrypt: bool) -> bytes:
    """One TDES block under the clear DUKPT PIN key, in host: the key is already clear
    here (NRKGP), and a session object for it cost ~430 us in SoftHSM, more than the
    rest of the translation (hsm/README.md)."""
    if len(block) != 8:  # update() alone: a partial block would be held back silently
        raise HsmInputError("a TDES block is 8 bytes")
    c = Cipher(TripleDES(key16 + key16[:8]), _ECB)  # noqa: S305 (one block)
    return (c.decryptor() if decrypt else c.encryptor()).update(block)  # whole block


def ipek_input(ksn: bytes) -> bytes:
    """The 8 bytes the BDK (and its variant) encrypt: leftmost KSN bytes, counter zeroed."""
    masked = int.from_bytes(ksn, "big") & ~COUNTER_MASK
    return masked.to_bytes(10, "big")[:8]


_KEY_MASK_INT = int.from_bytes(KEY_MASK, "big")
_M64 = (1 << 64) - 1


def _nrkgp(key: bytes, data: bytes) -> bytes:
    """Non-reversible key generation process: a 16-byte key and 8-byte data -> new key.
    The XORs on integers: this runs 2x per counter bit, bytes juggling was a fifth of
    the DUKPT translation's host time."""
    k, d = int.from_bytes(key, "big"), int.from_bytes(data, "big")

    def half(kk: int) -> int:
        kr = kk & _M64
        out = _des((kk >> 64).to_bytes(8, "big"), (d ^ kr).to_bytes(8, "big"))
        return int.from_bytes(out, "big") ^ kr

    return ((half(k ^ _KEY_MASK_INT) << 64) | half(k)).to_bytes(16, "big")


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


# --- AES DUKPT (ANSI X9.24-3-2017), AES-128 keys -----------------------------------
# Every step is "AES-ECB encrypt 16 bytes of derivation data under the current key",
# which the token does as AES_ECB_ENCRYPT_DATA: these functions only lay out the data.

AES_USAGE_KEY_DERIVATION = 0x8000
AES_USAGE_INITIAL_KEY = 0x8001
AES_USAGE_PIN = 0x1000
AES_ALG_AES128 = 0x0002
AES_MAX_ONE_BITS = 16


def _aes_data(usage: int, tail: bytes) -> bytes:
    # version 01, key block counter 01, key usage, algorithm AES-128, length 128 bits
    return (b"\x01\x01" + usage.to_bytes(2, "big") + AES_ALG_AES128.to_bytes(2, "big")
            + (128).to_bytes(2, "big") + tail)


def _aes_split(ksn: bytes) -> tuple[bytes, int]:
    if len(ksn) != 12:
        raise HsmInputError("an AES DUKPT KSN is 12 bytes")
    counter = int.from_bytes(ksn[8:], "big")
    if counter == 0 or bin(counter).count("1") > AES_MAX_ONE_BITS:
        raise HsmInputError("AES DUKPT counter is zero or has more than 16 bits set")
    return ksn[:8], counter


def aes_initial_key_data(ksn: bytes) -> bytes:
    """Derivation data of the initial key: usage 8001 and the 8-byte initial key ID."""
    ikid, _ = _aes_split(ksn)
    return _aes_data(AES_USAGE_INITIAL_KEY, ikid)


def aes_intermediate_data(ksn: bytes) -> list[bytes]:
    """Derivation data of each intermediate key, from the counter's top set bit down."""
    ikid, counter = _aes_split(ksn)
    out, working, mask = [], 0, 1 << 31
    while mask:
        if counter & mask:
            working |= mask
            out.append(_aes_data(AES_USAGE_KEY_DERIVATION, ikid[4:] + working.to_bytes(4, "big")))
        mask >>= 1
    return out


def aes_working_key_data(ksn: bytes, usage: int) -> bytes:
    ikid, counter = _aes_split(ksn)
    return _aes_data(usage, ikid[4:] + counter.to_bytes(4, "big"))
