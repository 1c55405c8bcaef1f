"""Key store operations: import (components, cryptogram), generate/export, list, delete."""

from __future__ import annotations

from typing import Any

from pkcs11 import Attribute, Mechanism, ObjectClass

from payswitch.hsm._base import (
    HsmBase,
    _locked,
    _xor,
)
from payswitch.hsm.errors import (
    HsmInputError,
    KcvMismatchError,
    KeyNotFoundError,
)
from payswitch.hsm.keys import (
    COMPANIONS,
    DEFAULT_LENGTH,
    KEY_LENGTHS,
    Alg,
    KeyInfo,
    KeyType,
    Op,
    check_label,
    decode_id,
    decode_params,
    key_params,
    parse_alg,
    parse_type,
)


class KeyStoreOps(HsmBase):
    """Key store operations (mixed into ``Hsm``)."""

    @_locked
    def import_key_components(
        self,
        label: str,
        key_type: KeyType | str,
        components: list[bytes],
        kcvs: list[str | bytes | None] | None = None,
        *,
        alg: Alg | str | None = None,
        kcv: str | bytes | None = None,
        dec_table: str | None = None,
        mac_length: int | None = None,
    ) -> str:
        """Import a key as the XOR of clear components; each is checked by its KCV.

        Key-ceremony and test path: the components are clear in host memory while they
        are XORed (see hsm/README.md). Returns the KCV of the whole key.
        """
        check_label(label)
        kt = parse_type(key_type)
        a = parse_alg(kt, alg)
        params = key_params(kt, a, dec_table, mac_length)
        if not components:
            raise HsmInputError("at least one component")
        if kcvs is not None and len(kcvs) != len(components):
            raise HsmInputError("one KCV per component")
        n = len(components[0])
        if any(len(c) != n for c in components):
            raise HsmInputError("components differ in length")
        value = bytes(n)
        for i, comp in enumerate(components):
            want = self._norm_kcv(kcvs[i]) if kcvs else None
            if want is not None:
                got = self._temp_kcv(bytes(comp), a)
                if not got.startswith(want):
                    raise KcvMismatchError(f"component {i + 1}: KCV {got} != expected {want}")
            value = _xor(value, bytes(comp))
        want_all = self._norm_kcv(kcv)
        if want_all is not None:
            got = self._temp_kcv(value, a)
            if not got.startswith(want_all):
                raise KcvMismatchError(f"key KCV {got} != expected {want_all}")
        return self._store(label, kt, a, value, params)

    @_locked
    def import_key_cryptogram(
        self,
        label: str,
        key_type: KeyType | str,
        under: str,
        cryptogram: bytes,
        kcv: str | bytes,
        *,
        alg: Alg | str | None = None,
        dec_table: str | None = None,
        mac_length: int | None = None,
    ) -> str:
        """Import a key received from a peer encrypted under a ZMK/KEK (ECB), check its KCV.

        SoftHSM cannot unwrap under DES3 (C_UnwrapKey rejects it), so the cryptogram is
        decrypted with DES3-ECB in the token, and the clear key passes through host memory
        for the few lines that create its object(s) (see hsm/README.md).
        """
        check_label(label)
        kt = parse_type(key_type)
        a = parse_alg(kt, alg)
        params = key_params(kt, a, dec_table, mac_length)
        want = self._norm_kcv(kcv)
        k = self._use(under, Op.WRAP)
        mech = Mechanism.DES3_ECB if k.alg is Alg.TDES else Mechanism.AES_ECB
        block = 8 if k.alg is Alg.TDES else 16
        if not cryptogram or len(cryptogram) % block:
            raise HsmInputError(f"cryptogram length must be a multiple of {block}")
        value = k.main.decrypt(bytes(cryptogram), mechanism=mech)
        got = self._temp_kcv(value, a) if len(value) in KEY_LENGTHS[a] else "?"
        if want is None or not got.startswith(want):
            raise KcvMismatchError(f"imported key KCV {got} != expected {want}")
        return self._store(label, kt, a, value, params)

    @_locked
    def generate_key(
        self,
        label: str,
        key_type: KeyType | str,
        *,
        alg: Alg | str | None = None,
        length: int | None = None,
        export_under: str | None = None,
        dec_table: str | None = None,
        mac_length: int | None = None,
    ) -> tuple[str, bytes | None]:
        """Generate a key from the token's RNG; return (KCV, cryptogram under ZMK or None).

        The value comes from C_GenerateRandom and is held in host memory only to create
        the object(s) (companions need the halves) and, with ``export_under``, to be
        encrypted under the ZMK in the token.
        """
        check_label(label)
        kt = parse_type(key_type)
        a = parse_alg(kt, alg)
        params = key_params(kt, a, dec_table, mac_length)
        n = length or DEFAULT_LENGTH[a]
        zmk = self._use(export_under, Op.WRAP) if export_under else None
        value = self._session.generate_random(8 * n)
        if a is Alg.TDES:  # odd parity, as peers expect of a DES key
            value = bytes((b & 0xFE) | ((bin(b >> 1).count("1") + 1) & 1) for b in value)
        kcv = self._store(label, kt, a, value, params)
        cryptogram = None
        if zmk is not None:
            mech = Mechanism.DES3_ECB if zmk.alg is Alg.TDES else Mechanism.AES_ECB
            if zmk.alg is Alg.AES and len(value) % 16:
                raise HsmInputError("an AES KEK exports keys of 16/32 bytes only")
            cryptogram = zmk.main.encrypt(value, mechanism=mech)
        return kcv, cryptogram

    @_locked
    def delete_key(self, label: str) -> None:
        k = self._key(label)
        self._keys.pop(label, None)
        self._derived.invalidate(label)
        for role in COMPANIONS.get((k.key_type, k.alg), ()):
            c = self._find(f"{label}/{role}")
            if c is not None:
                c.destroy()
        k.main.destroy()

    def _info(self, obj: Any, meta: tuple[KeyType, Alg, str, str]) -> KeyInfo:
        key_type, alg, _, stored = meta
        params = decode_params(bytes(obj[Attribute.ID]))
        # Recompute in the token when the key may encrypt/sign; else the KCV computed
        # in the token when the key was created (kept in CKA_ID, not modifiable).
        can = obj[Attribute.SIGN] if alg is Alg.HMAC else obj[Attribute.ENCRYPT]
        kcv = self._kcv_of(obj, alg) if can else stored
        ml = params.get("ml")
        return KeyInfo(obj[Attribute.LABEL], key_type, alg, kcv, params.get("dt"),
                       int(ml) if ml else None)

    @_locked
    def key_info(self, label: str) -> KeyInfo:
        k = self._key(label)
        return self._info(k.main, decode_id(bytes(k.main[Attribute.ID])))

    @_locked
    def list_keys(self) -> list[KeyInfo]:
        out = []
        # Finish the search before any other operation on the session (OperationActive).
        objs = list(self._session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY}))
        for obj in objs:
            meta = decode_id(bytes(obj[Attribute.ID]))
            if meta is None or meta[2] != "main":
                continue
            out.append(self._info(obj, meta))
        return sorted(out, key=lambda i: i.label)

    @_locked
    def has_key(self, label: str) -> bool:
        try:
            self._key(label)
        except KeyNotFoundError:
            return False
        return True

    @_locked
    def random(self, n: int) -> bytes:
        if not 1 <= n <= 1024:
            raise HsmInputError("1 to 1024 random bytes")
        return self._session.generate_random(8 * n)
