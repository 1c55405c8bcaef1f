"""PAN protection in the token: a stable token (HMAC-SHA256), encryption (AES-GCM)."""

from __future__ import annotations

import pkcs11
from pkcs11 import Mechanism
from pkcs11.mechanisms import GCMParams

from payswitch.hsm._base import (
    HsmBase,
    _check_digits,
    _locked,
)
from payswitch.hsm.errors import (
    HsmInputError,
)
from payswitch.hsm.keys import (
    Op,
)


class PanOps(HsmBase):
    """PAN protection (mixed into ``Hsm``)."""

    @_locked
    def pan_token(self, key: str, pan: str) -> str:
        """Stable PAN token: HMAC-SHA256 in the token, hex (64 chars)."""
        _check_digits(pan, "PAN", 12, 19)
        k = self._use(key, Op.PAN_TOKEN)
        return k.main.sign(pan.encode(), mechanism=Mechanism.SHA256_HMAC).hex()

    @_locked
    def event_mac(self, key: str, data: bytes) -> bytes:
        """HMAC-SHA256 in the token with an EVK key: the ledger's event chain MAC (32 bytes).
        Sync on purpose: the ledger's writer calls it from its worker thread."""
        k = self._use(key, Op.EVENT_MAC)
        return bytes(k.main.sign(bytes(data), mechanism=Mechanism.SHA256_HMAC))

    @_locked
    def encrypt_pan(self, key: str, pan: str, aad: bytes = b"") -> bytes:
        """AES-GCM in the token: nonce (12, from the token RNG) || ciphertext || tag."""
        _check_digits(pan, "PAN", 12, 19)
        k = self._use(key, Op.PAN_ENCRYPT)
        nonce = self._session.generate_random(96)
        ct = k.main.encrypt(pan.encode(), mechanism=Mechanism.AES_GCM,
                            mechanism_param=GCMParams(nonce, bytes(aad) or None))
        return nonce + ct

    @_locked
    def decrypt_pan(self, key: str, blob: bytes, aad: bytes = b"") -> str:
        k = self._use(key, Op.PAN_ENCRYPT)
        if not isinstance(blob, bytes | bytearray) or not 40 <= len(blob) <= 47:
            raise HsmInputError("encrypted PAN has a bad length")
        try:
            pan = k.main.decrypt(bytes(blob[12:]), mechanism=Mechanism.AES_GCM,
                                 mechanism_param=GCMParams(bytes(blob[:12]), bytes(aad) or None))
        except pkcs11.PKCS11Error:
            raise HsmInputError("encrypted PAN failed authentication") from None
        return pan.decode()
