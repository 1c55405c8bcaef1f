"""Card verification values: CVV, CVV2 (service code 000), iCVV (999) from a CVK pair."""

from __future__ import annotations

import hmac

from payswitch.hsm._base import (
    CVV2_SERVICE_CODE,
    ICVV_SERVICE_CODE,
    HsmBase,
    _check_digits,
    _decimalize,
    _Key,
    _locked,
    _xor,
)
from payswitch.hsm.keys import (
    Op,
)


class CardOps(HsmBase):
    """Card verification values (mixed into ``Hsm``)."""

    def _cvv(self, cvk: _Key, pan: str, expiry: str, service_code: str) -> str:
        _check_digits(pan, "PAN", 12, 19)
        _check_digits(expiry, "expiry", 4, 4)
        _check_digits(service_code, "service code", 3, 3)
        data = (pan + expiry + service_code).ljust(32, "0")
        b1, b2 = bytes.fromhex(data[:16]), bytes.fromhex(data[16:])
        assert cvk.companion is not None  # a CVK is a TDES pair: _key found its /L half
        r = self._ecb(cvk, b1, companion=True)  # DES with CVK A
        r = self._ecb(cvk, _xor(r, b2))  # TDES A,B
        return _decimalize(r.hex().upper(), 3)

    @_locked
    def generate_cvv(self, cvk: str, pan: str, expiry: str, service_code: str) -> str:
        """CVV (track service code), CVV2 (``"000"``) or iCVV (``"999"``); expiry as on
        the track (YYMM)."""
        return self._cvv(self._use(cvk, Op.CVV), pan, expiry, service_code)

    @_locked
    def verify_cvv(self, cvk: str, pan: str, expiry: str, service_code: str, cvv: str) -> bool:
        _check_digits(cvv, "CVV", 3, 3)
        return hmac.compare_digest(self._cvv(self._use(cvk, Op.CVV), pan, expiry,
                                             service_code), cvv)

    def generate_cvv2(self, cvk: str, pan: str, expiry: str) -> str:
        return self.generate_cvv(cvk, pan, expiry, CVV2_SERVICE_CODE)

    def verify_cvv2(self, cvk: str, pan: str, expiry: str, cvv2: str) -> bool:
        return self.verify_cvv(cvk, pan, expiry, CVV2_SERVICE_CODE, cvv2)

    def generate_icvv(self, cvk: str, pan: str, expiry: str) -> str:
        return self.generate_cvv(cvk, pan, expiry, ICVV_SERVICE_CODE)

    def verify_icvv(self, cvk: str, pan: str, expiry: str, icvv: str) -> bool:
        return self.verify_cvv(cvk, pan, expiry, ICVV_SERVICE_CODE, icvv)
