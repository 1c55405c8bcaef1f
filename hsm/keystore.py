"""Key store operations: import (components, cryptogram), generate/export, list, delete."""

from __future__ import annotations

import hmac
from typing import Any

import pkcs11
from pkcs11 import Attribute, Mechanism, ObjectClass
from pkcs11 import KeyType as PK

from payswitch.hsm import session, tr31
from payswitch.hsm._base import (
    HsmBase,
    _Key,
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
        value = self._random_key(a, n)
        kcv = self._store(label, kt, a, value, params)
        cryptogram = None
        if zmk is not None:
            mech = Mechanism.DES3_ECB if zmk.alg is Alg.TDES else Mechanism.AES_ECB
            if zmk.alg is Alg.AES and len(value) % 16:
                raise HsmInputError("an AES KEK exports keys of 16/32 bytes only")
            cryptogram = zmk.main.encrypt(value, mechanism=mech)
        return kcv, cryptogram

    def _random_key(self, a: Alg, n: int) -> bytes:
        value = self._session.generate_random(8 * n)
        if a is Alg.TDES:  # odd parity, as peers expect of a DES key
            value = bytes((b & 0xFE) | ((bin(b >> 1).count("1") + 1) & 1) for b in value)
        return value

    # --- TR-31 key blocks -------------------------------------------------------------

    def _tr31_keys(self, kbpk: _Key) -> tuple[str, int, Any, Any]:
        """(version, block size, KBEK, KBAK): KBEK / KBAK derived in the token from the
        KBPK (CMAC-based KDF: one ECB_ENCRYPT_DATA derivation each, on the CMAC block
        inputs computed from L = E_KBPK(0)). Session objects: the caller destroys them."""
        if kbpk.alg is Alg.TDES:
            version, bs, n, mech = "B", 8, 16, Mechanism.DES3_ECB
        else:
            version, bs, mech = "D", 16, Mechanism.AES_ECB
            n = int(kbpk.main[Attribute.VALUE_LEN])
            if n == 24:
                raise HsmInputError("an AES-192 KBPK is not supported (SoftHSM derives 16/32)")
        k1, k2 = tr31.cmac_subkeys(kbpk.main.encrypt(bytes(bs), mechanism=mech))
        counters = range(1, 3) if n == 32 or version == "B" else range(1, 2)
        out = []
        for usage in (0, 1):  # 0000 encryption (KBEK), 0001 MAC (KBAK)
            data = b"".join(tr31.cmac_block_input(
                tr31.derivation_data(version, n, usage, c), k1, k2, bs) for c in counters)
            out.append(self._derive_tr31(kbpk.main, data, version, mac=usage == 1))
        return version, bs, out[0], out[1]

    def _derive_tr31(self, base: Any, data: bytes, version: str, *, mac: bool) -> Any:
        caps = {Attribute.TOKEN: False, Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False, Attribute.ENCRYPT: not mac,
                Attribute.DECRYPT: not mac, Attribute.SIGN: mac, Attribute.VERIFY: False,
                Attribute.DERIVE: False, Attribute.WRAP: False, Attribute.UNWRAP: False}
        if version == "B":
            param, buf = session.derivation_param(data)
            key = base.derive_key(PK.DES2, 128, mechanism=Mechanism.DES3_ECB_ENCRYPT_DATA,
                                  mechanism_param=param,
                                  template={Attribute.VALUE_LEN: pkcs11.DEFAULT, **caps})
            del buf
            return key
        return base.derive_key(PK.AES, len(data) * 8, mechanism=Mechanism.AES_ECB_ENCRYPT_DATA,
                               mechanism_param=data, template=caps)

    @staticmethod
    def _tr31_mechs(version: str) -> tuple[Any, Any]:
        if version == "B":
            return Mechanism.DES3_CBC, Mechanism.DES3_CMAC
        return Mechanism.AES_CBC, Mechanism.AES_CMAC

    @_locked
    def generate_key_tr31(
        self,
        label: str,
        key_type: KeyType | str,
        kbpk: str,
        *,
        alg: Alg | str | None = None,
        length: int | None = None,
        exportability: str = "N",
        dec_table: str | None = None,
        mac_length: int | None = None,
    ) -> tuple[str, str]:
        """Generate a key and export it as a TR-31 key block under a KBPK (ZMK / KEK:
        TDES -> version B, AES -> version D). Returns (KCV, key block). Keys in the
        token are not extractable, so a key is exported when it is made (its value
        is in host memory for these lines, as for ``generate_key``)."""
        check_label(label)
        kt = parse_type(key_type)
        a = parse_alg(kt, alg)
        params = key_params(kt, a, dec_table, mac_length)
        kp = self._use(kbpk, Op.WRAP)
        value = self._random_key(a, length or DEFAULT_LENGTH[a])
        version, bs, kbek, kbak = self._tr31_keys(kp)
        try:
            cbc, cmac = self._tr31_mechs(version)
            data = (len(value) * 8).to_bytes(2, "big") + value
            data += self._session.generate_random(8 * (bs - len(data) % bs))
            mac_len = 8 if version == "B" else 16
            header = tr31.header_for(kt, a, version, tr31.HEADER_LEN + 2 * (len(data) + mac_len),
                                     exportability).dump()
            mac = bytes(kbak.sign(header.encode() + data, mechanism=cmac))[:mac_len]
            enc = kbek.encrypt(data, mechanism=cbc, mechanism_param=mac)
        finally:
            kbek.destroy()
            kbak.destroy()
        kcv = self._store(label, kt, a, value, params)
        return kcv, header + enc.hex().upper() + mac.hex().upper()

    @_locked
    def import_key_tr31(
        self,
        label: str,
        key_type: KeyType | str,
        kbpk: str,
        block: str,
        *,
        kcv: str | bytes | None = None,
        dec_table: str | None = None,
        mac_length: int | None = None,
    ) -> str:
        """Import a key from a TR-31 key block (version B under a TDES KBPK, D under an
        AES one): MAC checked under the KBAK, the block's usage and algorithm must be
        those of ``key_type``, and the KCV when given. Returns the KCV. The key data
        is decrypted in the token; the clear key passes through host memory to create
        its object(s), as for ``import_key_cryptogram``."""
        check_label(label)
        kt = parse_type(key_type)
        h, enc, mac = tr31.parse(block)
        a = {v: k for k, v in tr31.ALG_CODES.items()}.get(h.algorithm)
        if a is None:
            raise HsmInputError(f"key block algorithm {h.algorithm} is not supported")
        a = parse_alg(kt, a)
        tr31.check_usage(h, kt, a)
        params = key_params(kt, a, dec_table, mac_length)
        want = self._norm_kcv(kcv)
        kp = self._use(kbpk, Op.WRAP)
        version, bs, kbek, kbak = self._tr31_keys(kp)
        try:
            if version != h.version:
                raise HsmInputError(f"a version {h.version} block is not under {kbpk!r} "
                                    f"({kp.alg} KBPK: version {version})")
            cbc, cmac = self._tr31_mechs(version)
            data = kbek.decrypt(enc, mechanism=cbc, mechanism_param=mac)
            good = bytes(kbak.sign(block[:tr31.HEADER_LEN].encode() + data,
                                   mechanism=cmac))[:len(mac)]
        finally:
            kbek.destroy()
            kbak.destroy()
        if not hmac.compare_digest(good, mac):
            raise KcvMismatchError("key block MAC does not verify (wrong KBPK or altered)")
        bits = int.from_bytes(data[:2], "big")
        value = data[2:2 + bits // 8]
        if bits % 8 or len(value) != bits // 8 or len(value) not in KEY_LENGTHS[a]:
            raise HsmInputError("key block holds a key of a bad length")
        got = self._temp_kcv(value, a)
        if want is not None and not got.startswith(want):
            raise KcvMismatchError(f"imported key KCV {got} != expected {want}")
        return self._store(label, kt, a, value, params)

    @_locked
    def delete_key(self, label: str) -> None:
        k = self._key(label)
        self._forget_key(k)
        self._derived.invalidate(label)
        self._streams.forget({o.handle for o in (k.main, k.companion) if o is not None})
        for role in COMPANIONS.get((k.key_type, k.alg), ()):
            c = self._find(f"{label}/{role}")
            if c is not None:
                c.destroy()
        w = self._find(f"{label}/W")
        if w is not None:
            w.destroy()
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
        meta = decode_id(bytes(k.main[Attribute.ID]))
        assert meta is not None  # _key refuses an object without a payswitch id
        return self._info(k.main, meta)

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
