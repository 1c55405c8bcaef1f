"""PAN protection in the token: a stable token (HMAC-SHA256), encryption (AES-GCM).

The HMAC and GCM calls go straight to the library (``_raw``): python-pkcs11's wrapper
was ~2 µs of each ~25 µs call, on a path taken 3-6 times per authorization."""

from __future__ import annotations

import pkcs11

from payswitch.hsm import _raw
from payswitch.hsm._base import (
    HsmBase,
    _check_digits,
    _locked,
    _locked_as,
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
        return _raw.hmac_sha256(self._working(k), pan.encode()).hex()

    @_locked
    def event_mac(self, key: str, data: bytes) -> bytes:
        """HMAC-SHA256 in the token with an EVK key: the ledger's event chain MAC (32 bytes).
        Sync on purpose: the ledger's writer calls it from its worker thread."""
        k = self._use(key, Op.EVENT_MAC)
        return _raw.hmac_sha256(self._working(k), bytes(data))

    @_locked
    def encrypt_pan(self, key: str, pan: str, aad: bytes = b"") -> bytes:
        """AES-GCM in the token: nonce (12, from the token RNG, drawn in batches:
        ``NoncePool``) || ciphertext || tag."""
        _check_digits(pan, "PAN", 12, 19)
        k = self._use(key, Op.PAN_ENCRYPT)
        nonce = self._nonces.take(self._session)
        return nonce + _raw.gcm_encrypt(self._working(k), nonce, pan.encode(), bytes(aad))

    @_locked_as("pan_token", "encrypt_pan")
    def protect_pan(self, tkn: str, dek: str, pan: str, aad: bytes = b"",
                    ) -> tuple[str, bytes]:
        """``(pan_token(tkn, pan), encrypt_pan(dek, pan, aad))`` in one command: the same
        two results, role checks and key usage checks, with one lock hold and one PAN
        check (the journal's PAN at rest: both for every forwarded authorization)."""
        _check_digits(pan, "PAN", 12, 19)
        t = self._use(tkn, Op.PAN_TOKEN)
        d = self._use(dek, Op.PAN_ENCRYPT)
        data = pan.encode()
        token = _raw.hmac_sha256(self._working(t), data).hex()
        nonce = self._nonces.take(self._session)
        return token, nonce + _raw.gcm_encrypt(self._working(d), nonce, data, bytes(aad))

    @_locked
    def decrypt_pan(self, key: str, blob: bytes, aad: bytes = b"") -> str:
        k = self._use(key, Op.PAN_ENCRYPT)
        if not isinstance(blob, bytes | bytearray) or not 40 <= len(blob) <= 47:
            raise HsmInputError("encrypted PAN has a bad length")
        try:
            pan = _raw.gcm_decrypt(self._working(k), bytes(blob[:12]), bytes(blob[12:]), bytes(aad))
        except pkcs11.PKCS11Error:
            raise HsmInputError("encrypted PAN failed authentication") from None
        return pan.decode()
