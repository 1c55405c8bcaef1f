"""PIN: ISO 9564 blocks 0/1/3/4, translation incl. TDES/AES DUKPT, PVV, IBM 3624."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from payswitch.codecs import pinblock as pb
from payswitch.hsm import dukpt
from payswitch.hsm._base import (
    HsmBase,
    _check_digits,
    _decimalize,
    _Key,
    _locked,
)
from payswitch.hsm.errors import (
    HsmInputError,
    KeyUsageError,
    PinBlockError,
)
from payswitch.hsm.keys import (
    Alg,
    KeyType,
    Op,
)


class PinOps(HsmBase):
    """PIN operations (mixed into ``Hsm``)."""

    @staticmethod
    def _check_format(k: _Key, fmt: int) -> None:
        """TDES keys carry 8-byte formats 0, 1, 3; AES keys the 16-byte format 4."""
        allowed = (4,) if k.alg is Alg.AES else (0, 1, 3)
        if fmt not in allowed:
            raise HsmInputError(
                f"key {k.label!r} ({k.alg}) takes PIN block format {' or '.join(map(str, allowed))}"
            )

    def _fill(self, fmt: int) -> bytes:
        return self._session.generate_random(8 * 16) if fmt in (1, 3, 4) else b""

    def _encode_block(self, k: _Key, pin: str, pan: str | None, fmt: int) -> bytes:
        """Lay out and encrypt a PIN block under k (the clear block is in host memory)."""
        self._check_format(k, fmt)
        if fmt == 4:
            if pan is None:
                raise PinBlockError("format 4 needs the PAN")
            a = self._ecb(k, pb.encode_pin_field_4(pin, self._fill(4)))
            return self._ecb(k, pb.xor(a, pb.encode_pan_field_4(pan)))
        return self._ecb(k, pb.encode(pin, pan, fmt, self._fill(fmt)))

    def _decode_block(self, k: _Key, block: bytes, pan: str | None, fmt: int) -> str:
        """Decrypt a PIN block under k and return the PIN (checks the layout strictly)."""
        if fmt != 4:
            return pb.decode(self._clear_block(k, block, fmt), pan, fmt)
        self._check_format(k, fmt)
        if not isinstance(block, bytes | bytearray) or len(block) != 16:
            raise PinBlockError(f"a format {fmt} PIN block is 16 bytes")
        if pan is None:
            raise PinBlockError("format 4 needs the PAN")
        b = self._ecb(k, bytes(block), decrypt=True)
        a = pb.xor(b, pb.encode_pan_field_4(pan))
        return pb.decode_pin_field_4(self._ecb(k, a, decrypt=True))

    def _clear_block(self, k: _Key, block: bytes, fmt: int) -> bytes:
        """An 8-byte (format 0, 1, 3) PIN block decrypted under k, layout not checked."""
        self._check_format(k, fmt)
        if not isinstance(block, bytes | bytearray) or len(block) != 8:
            raise PinBlockError(f"a format {fmt} PIN block is 8 bytes")
        return self._ecb(k, bytes(block), decrypt=True)

    def _reencrypt(self, dst: _Key, clear: bytes, pan: str | None, src_format: int,
                   dst_format: int) -> bytes:
        """A clear 8-byte block (layout checked here) as a ``dst_format`` block under dst.
        Format 0 to 0 under a TDES key: the clear block itself, as format 0 has no random
        fill and a layout ``pb.decode`` accepts encodes back to the same bytes (one
        encode fewer per translated PIN)."""
        pin = pb.decode(clear, pan, src_format)
        if src_format == 0 and dst_format == 0 and dst.alg is Alg.TDES:
            return self._ecb(dst, clear)
        return self._encode_block(dst, pin, pan, dst_format)

    @_locked
    def encrypt_pin(self, key: str, pin: str, pan: str | None, fmt: int = 0) -> bytes:
        """Build and encrypt a PIN block as a PIN pad does (TPK, or ZPK for a peer).
        Formats 0/1/3 under TDES keys, 4 under AES keys."""
        return self._encode_block(self._use(key, Op.PIN_OUT), pin, pan, fmt)

    @staticmethod
    def _check_no_downgrade(src_format: int, dst_format: int) -> None:
        """ISO 9564-1: a block in a PAN-bound format (0, 3, 4) may not be translated to
        format 1 or 2, which drop the PAN binding (the block could be replayed with
        another card, and format 1 makes an encrypt-and-compare oracle easier)."""
        if src_format in (0, 3, 4) and dst_format in (1, 2):
            raise PinBlockError(
                f"PIN block format {src_format} may not be translated to format {dst_format}")

    def _zpk_out(self, dst_key: str) -> _Key:
        dst = self._use(dst_key, Op.PIN_OUT)
        if dst.key_type is not KeyType.ZPK:
            raise KeyUsageError(f"key {dst_key!r} is a {dst.key_type}: translate to a ZPK")
        return dst

    @_locked
    def translate_pin(
        self,
        pin_block: bytes,
        pan: str | None,
        src_key: str,
        dst_key: str,
        src_format: int = 0,
        dst_format: int = 0,
    ) -> bytes:
        """PIN block under a TPK/ZPK -> under a ZPK, optionally changing ISO format
        (0/1/3 with TDES keys, 4 with AES keys; TDES <-> AES is allowed)."""
        self._check_no_downgrade(src_format, dst_format)
        src = self._use(src_key, Op.PIN_IN)
        dst = self._zpk_out(dst_key)
        self._check_format(dst, dst_format)
        if src_format != 4:
            return self._reencrypt(dst, self._clear_block(src, pin_block, src_format), pan,
                                   src_format, dst_format)
        pin = self._decode_block(src, pin_block, pan, src_format)
        return self._encode_block(dst, pin, pan, dst_format)

    def _dukpt_ipek(self, bdk: _Key, ksn: bytes) -> bytes:
        """Clear DUKPT IPEK for a KSN (its halves computed in the token)."""
        if not isinstance(ksn, bytes | bytearray) or len(ksn) != 10:
            raise HsmInputError("a DUKPT KSN is 10 bytes")
        data = dukpt.ipek_input(bytes(ksn))
        return self._ecb(bdk, data) + self._ecb(bdk, data, companion=True)

    @staticmethod
    def _dukpt_format(k: _Key, fmt: int | None) -> int:
        if k.alg is Alg.AES:
            if fmt not in (None, 4):
                raise HsmInputError("AES DUKPT PIN blocks are format 4")
            return 4
        if fmt is None:
            return 0
        if fmt not in (0, 1, 3):
            raise HsmInputError("TDES DUKPT PIN blocks are format 0, 1 or 3")
        return fmt

    @contextmanager
    def _aes_dukpt_pin_key(self, bdk: _Key, ksn: bytes) -> Iterator[_Key]:
        """AES DUKPT (X9.24-3) PIN encryption key for a 12-byte KSN, derived entirely in
        the token: BDK -> initial key -> intermediate keys -> PIN key, each step an
        AES_ECB_ENCRYPT_DATA derivation of a session object (all destroyed after)."""
        if not isinstance(ksn, bytes | bytearray) or len(ksn) != 12:
            raise HsmInputError("an AES DUKPT KSN is 12 bytes")
        ksn = bytes(ksn)
        key = self._derived_aes(("aes-ik", bdk.label, ksn[:8]), bdk.main,
                                dukpt.aes_initial_key_data(ksn))
        for data in dukpt.aes_intermediate_data(ksn):
            key = self._derived_aes(("aes-ik", bdk.label, ksn[:8], data), key, data)
        final = self._derive_aes(key, dukpt.aes_working_key_data(ksn, dukpt.AES_USAGE_PIN),
                                 final=True)
        try:
            yield _Key("dukpt-pin-key", KeyType.ZPK, Alg.AES, final, None)
        finally:
            final.destroy()

    def _derived_aes(self, cache_key: tuple, base: Any, data: bytes) -> Any:
        """An AES DUKPT initial or intermediate key (derive-only session object), from the
        bounded LRU of handles: consecutive KSNs of a device share the initial key and
        the intermediate keys of their counter's high bits."""
        hit = self._derived.get(cache_key)
        if hit is not None:
            return hit[0]
        key = self._derive_aes(base, data, final=False)
        self._derived.put(cache_key, (key,))
        return key

    @_locked
    def dukpt_encrypt_pin(self, bdk: str, ksn: bytes, pin: str, pan: str | None,
                          fmt: int | None = None) -> bytes:
        """A DUKPT terminal's PIN block (simulators and tests hold the BDK for this).
        TDES BDK: 10-byte KSN, format 0 (default), 1 or 3. AES BDK: 12-byte KSN, format 4."""
        k = self._use(bdk, Op.DUKPT)
        fmt = self._dukpt_format(k, fmt)
        if k.alg is Alg.AES:
            with self._aes_dukpt_pin_key(k, ksn) as pin_key:
                return self._encode_block(pin_key, pin, pan, 4)
        clear = pb.encode(pin, pan, fmt, self._fill(fmt))
        return dukpt.crypt_pin_block(self._dukpt_ipek(k, ksn), bytes(ksn), clear, decrypt=False)

    @_locked
    def translate_pin_dukpt(
        self,
        pin_block: bytes,
        ksn: bytes,
        pan: str | None,
        bdk: str,
        dst_key: str,
        src_format: int | None = None,
        dst_format: int = 0,
    ) -> bytes:
        """PIN block from a DUKPT terminal (BDK + KSN) -> under a ZPK.
        TDES BDK (X9.24-1): 10-byte KSN, 8-byte block of format 0 (default), 1 or 3.
        AES BDK (X9.24-3, AES-128): 12-byte KSN, 16-byte format 4 block."""
        k = self._use(bdk, Op.DUKPT)
        src_format = self._dukpt_format(k, src_format)
        self._check_no_downgrade(src_format, dst_format)
        dst = self._zpk_out(dst_key)
        self._check_format(dst, dst_format)
        if k.alg is Alg.AES:
            if not isinstance(pin_block, bytes | bytearray) or len(pin_block) != 16:
                raise PinBlockError("a format 4 PIN block is 16 bytes")
            with self._aes_dukpt_pin_key(k, ksn) as pin_key:
                pin = self._decode_block(pin_key, pin_block, pan, 4)
            return self._encode_block(dst, pin, pan, dst_format)
        if not isinstance(pin_block, bytes | bytearray) or len(pin_block) != 8:
            raise PinBlockError("a TDES PIN block is 8 bytes")
        clear = dukpt.crypt_pin_block(self._dukpt_ipek(k, ksn), bytes(ksn), bytes(pin_block),
                                      decrypt=True)
        return self._reencrypt(dst, clear, pan, src_format, dst_format)

    def _pvv(self, pvk: _Key, pan: str, pin: str, pvki: int) -> str:
        _check_digits(pan, "PAN", 12, 19)
        if not 0 <= int(pvki) <= 9:
            raise HsmInputError("PVKI is one digit")
        tsp = pan[-12:-1] + str(int(pvki)) + pin[:4]
        out = self._ecb(pvk, bytes.fromhex(tsp))
        return _decimalize(out.hex().upper(), 4)

    @_locked
    def generate_pvv(self, pvk: str, pan: str, pin_block: bytes, zpk: str, *,
                     pvki: int = 1, fmt: int = 0) -> str:
        """Visa PVV of the PIN in an encrypted PIN block (under a ZPK/TPK): issuing,
        e.g. a PIN change or a PIN chosen at a branch. No clear PIN crosses the API."""
        pv = self._use(pvk, Op.PIN_VERIFY)
        return self._pvv(pv, pan, self._pin_from_block(pin_block, pan, zpk, fmt), pvki)

    @_locked
    def generate_pvv_clear(self, pvk: str, pan: str, pin: str, pvki: int = 1) -> str:
        """Visa PVV of a clear PIN: card personalisation only (personalisation role)."""
        _check_digits(pin, "PIN", 4, 12)
        return self._pvv(self._use(pvk, Op.PIN_VERIFY), pan, pin, pvki)

    def _pin_from_block(self, pin_block: bytes, pan: str | None, zpk: str, fmt: int) -> str:
        return self._decode_block(self._use(zpk, Op.PIN_IN), pin_block, pan, fmt)

    @_locked
    def verify_pin_pvv(self, pin_block: bytes, pan: str, zpk: str, pvk: str, pvv: str,
                       pvki: int = 1, fmt: int = 0) -> bool:
        """Verify an encrypted PIN block against a Visa PVV."""
        _check_digits(pvv, "PVV", 4, 4)
        self._limit_pin_verify(pan)
        pv = self._use(pvk, Op.PIN_VERIFY)
        pin = self._pin_from_block(pin_block, pan, zpk, fmt)
        return hmac.compare_digest(self._pvv(pv, pan, pin, pvki), pvv)

    def _natural_pin(self, pvk: _Key, validation_data: str, n: int, pad: str) -> str:
        """Decimalised E_PVK(validation data), with the key's own decimalisation table
        (kept with the key in the token: a caller cannot choose it)."""
        if len(validation_data) > 16 or any(
            c not in "0123456789ABCDEFabcdef" for c in validation_data + pad
        ) or len(pad) != 1:
            raise HsmInputError("validation data is up to 16 hex digits, pad one hex digit")
        table = pvk.dec_table
        vd = (validation_data + pad * 16)[:16]
        out = self._ecb(pvk, bytes.fromhex(vd)).hex()
        return "".join(table[int(c, 16)] for c in out[:n])

    @staticmethod
    def _offset(pin: str, natural: str) -> str:
        return "".join(str((int(p) - int(q)) % 10) for p, q in zip(pin, natural, strict=True))

    @_locked
    def generate_ibm3624_offset(self, pvk: str, pin_block: bytes, pan: str, zpk: str,
                                validation_data: str, *, pad: str = "F",
                                fmt: int = 0) -> str:
        """IBM 3624 offset of the PIN in an encrypted PIN block (issuing)."""
        pv = self._use(pvk, Op.PIN_VERIFY)
        pin = self._pin_from_block(pin_block, pan, zpk, fmt)
        return self._offset(pin, self._natural_pin(pv, validation_data, len(pin), pad))

    @_locked
    def generate_ibm3624_offset_clear(self, pvk: str, pin: str, validation_data: str,
                                      pad: str = "F") -> str:
        """IBM 3624 offset of a clear PIN: card personalisation only."""
        _check_digits(pin, "PIN", 4, 12)
        pv = self._use(pvk, Op.PIN_VERIFY)
        return self._offset(pin, self._natural_pin(pv, validation_data, len(pin), pad))

    @_locked
    def verify_pin_ibm3624(self, pin_block: bytes, pan: str, zpk: str, pvk: str, offset: str,
                           validation_data: str, pad: str = "F", fmt: int = 0) -> bool:
        """Verify an encrypted PIN block by IBM 3624 offset (PIN length = offset length),
        with the PVK's own decimalisation table."""
        _check_digits(offset, "offset", 4, 12)
        self._limit_pin_verify(pan)
        pv = self._use(pvk, Op.PIN_VERIFY)
        pin = self._pin_from_block(pin_block, pan, zpk, fmt)
        if len(pin) != len(offset):
            return False
        got = self._offset(pin, self._natural_pin(pv, validation_data, len(pin), pad))
        return hmac.compare_digest(got, offset)
