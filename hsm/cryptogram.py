"""EMV in the token: ICC master key (option A), common session key; ARQC, ARPC 1 and 2."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pkcs11 import Mechanism

from payswitch.hsm._base import (
    MAX_MAC_DATA_BYTES,
    HsmBase,
    _check_digits,
    _locked,
    _pad_method,
    _xor,
)
from payswitch.hsm.errors import (
    HsmInputError,
)
from payswitch.hsm.keys import (
    Op,
)


class EmvOps(HsmBase):
    """EMV (mixed into ``Hsm``)."""

    @staticmethod
    def _option_a_input(pan: str, psn: str) -> bytes:
        _check_digits(pan, "PAN", 12, 19)
        _check_digits(psn, "PSN", 2, 2)
        y = bytes.fromhex((pan + psn)[-16:].rjust(16, "0"))
        return y + bytes(b ^ 0xFF for b in y)

    @staticmethod
    def _session_key_input(atc: bytes) -> tuple[bytes, bytes]:
        if not isinstance(atc, bytes | bytearray) or len(atc) != 2:
            raise HsmInputError("ATC is 2 bytes")
        left = bytes(atc) + b"\xf0" + bytes(5)
        right = bytes(atc) + b"\x0f" + bytes(5)
        return left, right

    @contextmanager
    def _ac_keys(self, mk_ac: str, pan: str, psn: str, atc: bytes) -> Iterator[tuple[Any, Any]]:
        """Session key SK (and SK_L||SK_L) for an ATC, derived in the token:
        MK-AC -> ICC MK (EMV option A) -> common session key (EMV 4.x A1.3)."""
        k = self._use(mk_ac, Op.EMV_AC)
        left, right = self._session_key_input(atc)
        icc = self._derive(k.main, self._option_a_input(pan, psn), encrypt=False, derive=True)
        made = [icc]
        try:
            sk = self._derive(icc, left + right, encrypt=True, derive=False)
            made.append(sk)
            skll = self._derive(icc, left + left, encrypt=True, derive=False)
            made.append(skll)
            yield skll, sk
        finally:
            for o in made:
                o.destroy()

    @staticmethod
    def _check_arc(arc: bytes) -> None:
        if not isinstance(arc, bytes | bytearray) or len(arc) != 2:
            raise HsmInputError("ARC is 2 bytes")

    @_locked
    def generate_arqc(self, mk_ac: str, pan: str, psn: str, atc: bytes, data: bytes,
                      *, padding: int = 2) -> bytes:
        """The card's ARQC (for simulated cards/terminals): retail MAC under SK."""
        with self._ac_keys(mk_ac, pan, psn, atc) as (skll, sk):
            return self._retail_mac(skll, sk, _pad_method(bytes(data), padding))

    @staticmethod
    def _check_csu(csu: bytes, prop: bytes) -> None:
        if not isinstance(csu, bytes | bytearray) or len(csu) != 4:
            raise HsmInputError("CSU is 4 bytes")
        if not isinstance(prop, bytes | bytearray) or len(prop) > 8:
            raise HsmInputError("proprietary authentication data is 0 to 8 bytes")

    def _arpc(self, skll: Any, sk: Any, arqc: bytes, arc: bytes | None, csu: bytes | None,
              prop: bytes) -> bytes:
        if csu is not None:  # method 2: MAC (alg 3, padding 2) of ARQC || CSU || PAD, 4 bytes
            return self._retail_mac(skll, sk, _pad_method(arqc + csu + prop, 2))[:4]
        assert arc is not None
        # method 1: 3DES_SK(ARQC xor ARC||00..)
        return sk.encrypt(_xor(arqc, bytes(arc) + bytes(6)), mechanism=Mechanism.DES3_ECB)

    @_locked
    def verify_arqc(
        self,
        mk_ac: str,
        pan: str,
        psn: str,
        atc: bytes,
        data: bytes,
        arqc: bytes,
        *,
        arc: bytes | None = None,
        csu: bytes | None = None,
        prop_auth_data: bytes = b"",
        padding: int = 2,
    ) -> tuple[bool, bytes | None]:
        """Verify an ARQC and, when it is right, make the ARPC in the same derivation:
        with ``arc`` ARPC method 1 = 3DES_SK(ARQC xor ARC||0) (8 bytes); with ``csu``
        (4 bytes, and optional proprietary auth data) ARPC method 2 (4 bytes).

        ``padding``: ISO 9797-1 method 2 (EMV, CVN 10/18/22) or 1 (some Visa CVNs).
        Returns (ok, arpc); no ARPC when the ARQC is wrong or none was asked for.
        """
        if not isinstance(arqc, bytes | bytearray) or len(arqc) != 8:
            raise HsmInputError("ARQC is 8 bytes")
        if arc is not None and csu is not None:
            raise HsmInputError("ARPC method 1 (arc) or method 2 (csu), not both")
        if arc is not None:
            self._check_arc(arc)
        if csu is not None:
            self._check_csu(csu, prop_auth_data)
        if len(data) > MAX_MAC_DATA_BYTES:
            raise HsmInputError("ARQC data too long")
        with self._ac_keys(mk_ac, pan, psn, atc) as (skll, sk):
            good = self._retail_mac(skll, sk, _pad_method(bytes(data), padding))
            ok = hmac.compare_digest(good, bytes(arqc))
            arpc = None
            if ok and (arc is not None or csu is not None):
                arpc = self._arpc(skll, sk, bytes(arqc), arc,
                                  bytes(csu) if csu is not None else None, bytes(prop_auth_data))
            return ok, arpc

    @_locked
    def generate_arpc(self, mk_ac: str, pan: str, psn: str, atc: bytes, arqc: bytes,
                      arc: bytes | None = None, *, csu: bytes | None = None,
                      prop_auth_data: bytes = b"") -> bytes:
        """ARPC without verifying the ARQC (e.g. a decline): method 1 with ``arc``,
        method 2 with ``csu``."""
        if (arc is None) == (csu is None):
            raise HsmInputError("give arc (ARPC method 1) or csu (method 2)")
        if arc is not None:
            self._check_arc(arc)
        else:
            self._check_csu(csu, prop_auth_data)
        if not isinstance(arqc, bytes | bytearray) or len(arqc) != 8:
            raise HsmInputError("ARQC is 8 bytes")
        with self._ac_keys(mk_ac, pan, psn, atc) as (skll, sk):
            return self._arpc(skll, sk, bytes(arqc), arc,
                              bytes(csu) if csu is not None else None, bytes(prop_auth_data))
