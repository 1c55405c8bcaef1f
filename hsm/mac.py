"""MACs: ISO 9797-1 algorithm 3 (retail MAC) with TDES keys, AES-CMAC with AES keys."""

from __future__ import annotations

import hmac

from pkcs11 import Mechanism

from payswitch.hsm._base import (
    MAX_MAC_DATA_BYTES,
    HsmBase,
    _Key,
    _locked,
    _pad_method,
)
from payswitch.hsm.errors import (
    HsmInputError,
    MacLengthError,
)
from payswitch.hsm.keys import (
    Alg,
    Op,
)


class MacOps(HsmBase):
    """MACs (mixed into ``Hsm``)."""

    def _mac(self, k: _Key, data: bytes, padding: int, length: int) -> bytes:
        if not isinstance(data, bytes | bytearray) or len(data) > MAX_MAC_DATA_BYTES:
            raise HsmInputError(f"MAC data is bytes, at most {MAX_MAC_DATA_BYTES}")
        if k.alg is Alg.TDES:
            if not 4 <= length <= 8:
                raise HsmInputError("retail MAC length is 4 to 8 bytes")
            padded = _pad_method(bytes(data), padding)
            if k.kept:
                return self._retail_mac_kept(k, padded)[:length]
            return self._retail_mac(k.companion, k.main, padded)[:length]
        if not 4 <= length <= 16:
            raise HsmInputError("AES-CMAC length is 4 to 16 bytes")
        return k.main.sign(bytes(data), mechanism=Mechanism.AES_CMAC)[:length]

    @_locked
    def generate_mac(self, key: str, data: bytes, *, padding: int = 1,
                     length: int | None = None) -> bytes:
        """TAK/ZAK: retail MAC (ISO 9797-1 alg 3, DES) for TDES keys, AES-CMAC for AES,
        of the length fixed for the key when it was imported (``mac_length``, default 8);
        ``length``, when given, must be that one."""
        k = self._use(key, Op.MAC)
        if length is not None and length != k.mac_length:
            raise MacLengthError(f"key {key!r} makes {k.mac_length}-byte MACs")
        return self._mac(k, data, padding, k.mac_length)

    @_locked
    def verify_mac(self, key: str, data: bytes, mac: bytes, *, padding: int = 1) -> bool:
        """False for a MAC of any length but the key's (counted in ``refused`` as
        ``verify_mac:length``): a peer or an attacker cannot choose a 4-byte MAC to make
        a forgery 2^32 times easier. Callers keep their bool contract."""
        k = self._use(key, Op.MAC)
        if not isinstance(mac, bytes | bytearray) or len(mac) != k.mac_length:
            self.refused["verify_mac:length"] += 1
            return False
        return hmac.compare_digest(self._mac(k, data, padding, k.mac_length), bytes(mac))
