"""TDES DUKPT (ANSI X9.24-1:2009) host-side steps.

PKCS#11 has no mechanism for the non-reversible key generation process (it XORs key
halves into the data), so after the IPEK halves are computed in the token with the BDK
and its C0C0.. variant, the IPEK, the future keys and the PIN key are clear in host
memory for the duration of one derivation (see hsm/README.md). They are plain local
``bytes`` that nothing logs or keeps.
"""

from __future__ import annotations

import ctypes
import ctypes.util

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from payswitch.hsm.errors import HsmInputError

KEY_MASK = bytes.fromhex("C0C0C0C000000000C0C0C0C000000000")
PIN_VARIANT = bytes.fromhex("00000000000000FF00000000000000FF")
COUNTER_BITS = 21
COUNTER_MASK = (1 << COUNTER_BITS) - 1
_ECB = modes.ECB()  # noqa: S305 (single DES blocks of the NRKGP, not data)
_SCHEDULE_BYTES = 128  # sizeof(DES_key_schedule)


def _load_libcrypto() -> ctypes.CDLL | None:
    """OpenSSL's low-level DES (``DES_ecb_encrypt``: no provider, so no legacy module),
    from the libcrypto SoftHSM itself links. A block costs ~1.5 us there against
    ~4.5 us through ``cryptography``, whose Python checks around each new Cipher were
    most of the NRKGP (2 to 20 single-DES blocks a translation). ``None``, and
    ``cryptography`` does it, when that library or its DES functions are missing."""
    path = ctypes.util.find_library("crypto")
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
        lib.DES_set_key_unchecked.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        lib.DES_ecb_encrypt.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_int]
        lib.DES_ecb3_encrypt.argtypes = [ctypes.c_char_p] * 5 + [ctypes.c_int]
    except (OSError, AttributeError):
        return None
    for fn in (lib.DES_set_key_unchecked, lib.DES_ecb_encrypt, lib.DES_ecb3_encrypt):
        fn.restype = None
    return lib


_libcrypto = _load_libcrypto()


def _xor(a: bytes, b: bytes) -> bytes:
    # As integers: the NRKGP does ~8 of these per counter bit, a byte loop was a third
    # of the DUKPT translation's host time.
    if len(a) != len(b):
        raise ValueError("xor of unequal lengths")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


class _HostDes:
    """DES blocks in host for one derivation. With libcrypto: one set of key-schedule
    buffers, wiped when the block ends (the schedules are the clear keys, expanded).
    Without it: ``cryptography`` (one shared ECB mode object and no finalize(): one
    whole block, update returns it)."""

    def __init__(self) -> None:
        self._ks = ([ctypes.create_string_buffer(_SCHEDULE_BYTES) for _ in range(2)]
                    if _libcrypto is not None else [])
        self._out = ctypes.create_string_buffer(8)

    def __enter__(self) -> _HostDes:
        return self

    def __exit__(self, *exc: object) -> None:
        for buf in (*self._ks, self._out):
            ctypes.memset(buf, 0, ctypes.sizeof(buf))

    def des(self, key8: bytes, block: bytes) -> bytes:
        # K||K||K is single DES: ECB is the primitive here, not a mode applied to data.
        if _libcrypto is None:
            return Cipher(TripleDES(key8 * 3), _ECB).encryptor().update(block)  # noqa: S305
        _libcrypto.DES_set_key_unchecked(key8, self._ks[0])
        _libcrypto.DES_ecb_encrypt(block, self._out, self._ks[0], 1)
        return self._out.raw

    def tdes(self, key16: bytes, block: bytes, *, decrypt: bool) -> bytes:
        if _libcrypto is None:
            c = Cipher(TripleDES(key16 + key16[:8]), _ECB)  # noqa: S305 (one block)
            return (c.decryptor() if decrypt else c.encryptor()).update(block)
        k1, k2 = self._ks
        _libcrypto.DES_set_key_unchecked(key16[:8], k1)
        _libcrypto.DES_set_key_unchecked(key16[8:], k2)
        _libcrypto.DES_ecb3_encrypt(block, self._out, k1, k2, k1, int(not decrypt))
        return self._out.raw


def ipek_input(ksn: bytes) -> bytes:
    """The 8 bytes the BDK (and its variant) encrypt: leftmost KSN bytes, counter zeroed."""
    masked = int.from_bytes(ksn, "big") & ~COUNTER_MASK
    return masked.to_bytes(10, "big")[:8]


_KEY_MASK_INT = int.from_bytes(KEY_MASK, "big")
_M64 = (1 << 64) - 1


def _nrkgp(host: _HostDes, key: bytes, data: bytes) -> bytes:
    """Non-reversible key generation process: a 16-byte key and 8-byte data -> new key.
    The XORs on integers: this runs 2x per counter bit, bytes juggling was a fifth of
    the DUKPT translation's host time."""
    k, d = int.from_bytes(key, "big"), int.from_bytes(data, "big")

    def half(kk: int) -> int:
        kr = kk & _M64
        out = host.des((kk >> 64).to_bytes(8, "big"), (d ^ kr).to_bytes(8, "big"))
        return int.from_bytes(out, "big") ^ kr

    return ((half(k ^ _KEY_MASK_INT) << 64) | half(k)).to_bytes(16, "big")


def _future_key(host: _HostDes, ipek: bytes, ksn: bytes) -> bytes:
    if len(ipek) != 16 or len(ksn) != 10:  # libcrypto reads 8-byte keys by pointer
        raise HsmInputError("a DUKPT IPEK is 16 bytes and a KSN 10")
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
            key = _nrkgp(host, key, base.to_bytes(8, "big"))
        shift >>= 1
    return key


def future_key(ipek: bytes, ksn: bytes) -> bytes:
    """The transaction key for the KSN's counter, from the IPEK."""
    with _HostDes() as host:
        return _future_key(host, ipek, ksn)


def pin_key(ipek: bytes, ksn: bytes) -> bytes:
    """The PIN encryption key (the PIN variant of the transaction key)."""
    return _xor(future_key(ipek, ksn), PIN_VARIANT)


def crypt_pin_block(ipek: bytes, ksn: bytes, block: bytes, *, decrypt: bool) -> bytes:
    """Decrypt (or encrypt, for a simulated terminal) one PIN block under the KSN's PIN
    key, in host: that key is clear here anyway (NRKGP), and a session object for it
    cost more than the rest of the translation (hsm/README.md).
    Future key, PIN variant and the TDES block share one set of wiped key schedules."""
    if len(block) != 8:
        raise HsmInputError("a TDES block is 8 bytes")
    with _HostDes() as host:
        key = _xor(_future_key(host, ipek, ksn), PIN_VARIANT)
        return host.tdes(key, block, decrypt=decrypt)


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
