"""EMV in the token: ICC master key (option A) = UDK, session keys (EMV common, Mastercard
SKD) per CVN; ARQC, ARPC methods 1 and 2. Profiles in ``emv.py``."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pkcs11 import Mechanism

from payswitch.hsm import _raw, emv
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
    def _session_key_input(prof: emv.Cvn, atc: bytes, un: bytes | None) -> bytes:
        """R (8 bytes): EMV common session key ATC||0..0; Mastercard SKD ATC||0000||UN."""
        if not isinstance(atc, bytes | bytearray) or len(atc) != 2:
            raise HsmInputError("ATC is 2 bytes")
        if prof.session_key == "mastercard":
            if not isinstance(un, bytes | bytearray) or len(un) != 4:
                raise HsmInputError("the unpredictable number (9F37) is 4 bytes")
            return bytes(atc) + bytes(2) + bytes(un)
        return bytes(atc) + bytes(6)

    def _udk(self, mk_ac: str, pan: str, psn: str, option: str) -> tuple[Any, Any]:
        """The card's UDK (ICC MK, option A or B) and UDK_L||UDK_L, derived in the token
        from the MK-AC; kept as session-object handles in a bounded LRU (never clear)."""
        k = self._use(mk_ac, Op.EMV_AC)
        _check_digits(pan, "PAN", 12, 19)
        _check_digits(psn, "PSN", 2, 2)
        y = emv.udk_input(pan, psn, option)
        key = ("udk", mk_ac, pan, psn, option)
        hit = self._derived.get(key)
        if hit is not None:
            return hit
        udk = self._derive(k.main, y + bytes(b ^ 0xFF for b in y), encrypt=True, derive=True)
        try:
            udk_ll = self._derive(k.main, y + y, encrypt=True, derive=False)
        except BaseException:
            udk.destroy()
            raise
        self._derived.put(key, (udk_ll, udk))
        return udk_ll, udk

    @contextmanager
    def _ac_keys(self, mk_ac: str, pan: str, psn: str, atc: bytes, prof: emv.Cvn,
                 un: bytes | None) -> Iterator[tuple[tuple[Any, Any], tuple[Any, Any]]]:
        """((AC key L||L, AC key), (ARPC key L||L, ARPC key)) for the CVN, all in the
        token: UDK from the cache; a session key (EMV CSK or Mastercard SKD) derived from
        it for this ATC and destroyed after use. Never computed into host memory, though
        that was faster: a clear session key forges this ATC's cryptograms
        (hsm/README.md, "Benchmark")."""
        r = self._session_key_input(prof, atc, un)
        udk = self._udk(mk_ac, pan, psn, prof.udk_option)
        if prof.session_key == "none":
            yield udk, udk
            return
        left = r[:2] + b"\xf0" + r[3:]
        right = r[:2] + b"\x0f" + r[3:]
        made = []  # session keys stay token objects: never clear in host memory
        try:
            # Not CKA_PRIVATE: SoftHSM then skips encrypting the value under its token
            # key, a third of a derivation; why that weakens nothing: hsm/README.md.
            sk = self._derive(udk[1], left + right, encrypt=True, derive=False, private=False)
            made.append(sk)
            skll = self._derive(udk[1], left + left, encrypt=True, derive=False, private=False)
            made.append(skll)
            yield (skll, sk), ((skll, sk) if prof.arpc_key == "session" else udk)
        finally:
            for o in made:
                o.destroy()

    @staticmethod
    def _check_arc(arc: bytes) -> None:
        if not isinstance(arc, bytes | bytearray) or len(arc) != 2:
            raise HsmInputError("ARC is 2 bytes")

    @_locked
    def generate_arqc(self, mk_ac: str, pan: str, psn: str, atc: bytes, data: bytes,
                      *, cvn: int = 18, un: bytes | None = None,
                      padding: int | None = None) -> bytes:
        """The card's ARQC (simulated cards): retail MAC under the CVN's AC key.
        ``un`` (9F37) is needed by Mastercard CVN 16/17."""
        prof = emv.profile(cvn)
        if len(data) > MAX_MAC_DATA_BYTES:
            raise HsmInputError("ARQC data too long")
        with self._ac_keys(mk_ac, pan, psn, atc, prof, un) as (ac, _):
            return self._retail_mac(*ac, _pad_method(bytes(data), padding or prof.padding))

    @staticmethod
    def _check_csu(csu: bytes, prop: bytes) -> None:
        if not isinstance(csu, bytes | bytearray) or len(csu) != 4:
            raise HsmInputError("CSU is 4 bytes")
        if not isinstance(prop, bytes | bytearray) or len(prop) > 8:
            raise HsmInputError("proprietary authentication data is 0 to 8 bytes")

    def _arpc(self, keys: tuple[Any, Any], arqc: bytes, arc: bytes | None,
              csu: bytes | None, prop: bytes) -> bytes:
        kll, key = keys
        if csu is not None:  # method 2: MAC (alg 3, padding 2) of ARQC || CSU || PAD, 4 bytes
            return self._retail_mac(kll, key, _pad_method(arqc + csu + prop, 2))[:4]
        assert arc is not None
        # method 1: 3DES_K(ARQC xor ARC||00..)
        return _raw.encrypt(key, _xor(arqc, bytes(arc) + bytes(6)), Mechanism.DES3_ECB)

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
        cvn: int = 18,
        un: bytes | None = None,
        arc: bytes | None = None,
        csu: bytes | None = None,
        prop_auth_data: bytes = b"",
        padding: int | None = None,
    ) -> tuple[bool, bytes | None]:
        """Verify an ARQC and, when it is right, make the ARPC in the same derivation:
        with ``arc`` ARPC method 1 = 3DES_K(ARQC xor ARC||0) (8 bytes); with ``csu``
        (4 bytes, and optional proprietary auth data) ARPC method 2 (4 bytes).

        ``cvn`` picks the key path (``emv.CVNS``: 10, 18, 16, 17); ``un`` (9F37) is needed
        by 16/17; ``padding`` defaults to the CVN's. Returns (ok, arpc); no ARPC when the
        ARQC is wrong or none was asked for.
        """
        prof = emv.profile(cvn)
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
        with self._ac_keys(mk_ac, pan, psn, atc, prof, un) as (ac, rk):
            good = self._retail_mac(*ac, _pad_method(bytes(data), padding or prof.padding))
            ok = hmac.compare_digest(good, bytes(arqc))
            arpc = None
            if ok and (arc is not None or csu is not None):
                arpc = self._arpc(rk, bytes(arqc), arc,
                                  bytes(csu) if csu is not None else None, bytes(prop_auth_data))
            return ok, arpc

    @_locked
    def generate_arpc(self, mk_ac: str, pan: str, psn: str, atc: bytes, arqc: bytes,
                      arc: bytes | None = None, *, cvn: int = 18, un: bytes | None = None,
                      csu: bytes | None = None, prop_auth_data: bytes = b"") -> bytes:
        """ARPC without verifying the ARQC (e.g. a decline): method 1 with ``arc``,
        method 2 with ``csu``; key path by ``cvn`` as in ``verify_arqc``."""
        prof = emv.profile(cvn)
        if (arc is None) == (csu is None):
            raise HsmInputError("give arc (ARPC method 1) or csu (method 2)")
        if arc is not None:
            self._check_arc(arc)
        elif csu is not None:
            self._check_csu(csu, prop_auth_data)
        if not isinstance(arqc, bytes | bytearray) or len(arqc) != 8:
            raise HsmInputError("ARQC is 8 bytes")
        with self._ac_keys(mk_ac, pan, psn, atc, prof, un) as (_, rk):
            return self._arpc(rk, bytes(arqc), arc,
                              bytes(csu) if csu is not None else None, bytes(prop_auth_data))
