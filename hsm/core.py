"""The payment-HSM command set on PKCS#11: one ``Hsm`` object per token.

Every public method takes the process-wide library lock (see ``session.py``), so the
object is safe to share between threads; from trio use ``AsyncHsm`` (``aio.py``), which
runs each call in a worker thread and never blocks the event loop.

Verifications return ``bool`` (the switch turns False into a response code); misuse
raises a typed ``HsmError``. No message ever carries a key, PIN, PIN block or PAN.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import pkcs11
from pkcs11 import Attribute, Mechanism, ObjectClass
from pkcs11 import KeyType as PK
from pkcs11.mechanisms import GCMParams

from payswitch.codecs import pinblock as pb
from payswitch.hsm import dukpt, session
from payswitch.hsm.errors import (
    HsmConfigError,
    HsmDeviceError,
    HsmError,
    HsmInputError,
    KcvMismatchError,
    KeyExistsError,
    KeyNotFoundError,
    KeyUsageError,
    PinBlockError,
)
from payswitch.hsm.keys import (
    BDK_VARIANT,
    COMPANIONS,
    DEFAULT_LENGTH,
    KEY_LENGTHS,
    Alg,
    KeyInfo,
    KeyType,
    Op,
    check_label,
    decode_id,
    encode_id,
    parse_alg,
    parse_type,
    require,
)
from payswitch.hsm.token import TokenConfig, config_from_env

P = ParamSpec("P")
R = TypeVar("R")

MAX_CACHED_KEYS = 4096
# Session objects made for one operation; "/" keeps them apart from any user label.
_TMP_LABEL = "tmp/payswitch"
MAX_MAC_DATA_BYTES = 64 * 1024
CVV2_SERVICE_CODE = "000"
ICVV_SERVICE_CODE = "999"


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _locked(fn: Callable[P, R]) -> Callable[P, R]:
    """Hold the library lock for the whole operation and type every library error."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with session.LIBRARY_LOCK:
            try:
                return fn(*args, **kwargs)
            except HsmError:
                raise
            except pkcs11.PKCS11Error as e:
                # The class name says what failed (e.g. KeyTypeInconsistent); no data.
                raise HsmDeviceError(f"PKCS#11 error: {type(e).__name__}") from None
            except pb.PinBlockFormatError as e:
                raise PinBlockError(str(e)) from None

    return wrapper


@dataclass
class _Key:
    label: str
    key_type: KeyType
    alg: Alg
    main: Any  # pkcs11 SecretKey
    companion: Any | None  # /L or /V object, when the type needs one


def _decimalize(hexstr: str, n: int) -> str:
    """Visa decimalisation: the decimal digits in order, then A-F as 0-5; first n."""
    digits = [c for c in hexstr if c.isdigit()]
    if len(digits) < n:
        digits += [str(int(c, 16) - 10) for c in hexstr if not c.isdigit()]
    return "".join(digits[:n])


def _check_digits(value: str, name: str, lo: int, hi: int) -> None:
    if not isinstance(value, str) or not (lo <= len(value) <= hi) or not value.isdigit():
        raise HsmInputError(f"{name} must be {lo}-{hi} decimal digits")


def _pad_method(data: bytes, method: int) -> bytes:
    """ISO 9797-1 padding method 1 (zeros, none if aligned) or 2 (0x80 then zeros)."""
    if method == 1:
        return data + bytes(-len(data) % 8) if data else bytes(8)
    if method == 2:
        d = data + b"\x80"
        return d + bytes(-len(d) % 8)
    raise HsmInputError("padding method is 1 or 2")


class Hsm:
    """One logged-in token and the payment-HSM operations on its keys."""

    def __init__(self, config: TokenConfig) -> None:
        self.config = config
        self._session = session.open_session(config)
        self._keys: dict[str, _Key] = {}
        self._closed = False

    @classmethod
    def from_env(cls, label: str | None = None) -> Hsm:
        return cls(config_from_env(label))

    def close(self) -> None:
        with session.LIBRARY_LOCK:
            if not self._closed:
                self._closed = True
                self._keys.clear()
                session.release_session(self.config)

    def __enter__(self) -> Hsm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Hsm(token={self.config.label!r})"

    # ------------------------------------------------------------------ key store

    def _find(self, label: str) -> Any | None:
        objs = list(
            self._session.get_objects(
                {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label}
            )
        )
        if len(objs) > 1:
            raise HsmDeviceError(f"token holds {len(objs)} keys labelled {label!r}")
        return objs[0] if objs else None

    def _key(self, label: str) -> _Key:
        if self._closed:
            raise HsmConfigError("this Hsm is closed")
        k = self._keys.get(label)
        if k is not None:
            return k
        check_label(label)
        main = self._find(label)
        if main is None:
            raise KeyNotFoundError(f"no key labelled {label!r}")
        meta = decode_id(bytes(main[Attribute.ID]))
        if meta is None or meta[2] != "main":
            raise KeyUsageError(f"object {label!r} is not a payswitch key")
        key_type, alg, _, _ = meta
        companion = None
        roles = COMPANIONS.get((key_type, alg), ())
        if roles:
            companion = self._find(f"{label}/{roles[0]}")
            if companion is None:
                raise HsmDeviceError(f"key {label!r} is missing its /{roles[0]} part")
        k = _Key(label, key_type, alg, main, companion)
        if len(self._keys) >= MAX_CACHED_KEYS:
            self._keys.clear()
        self._keys[label] = k
        return k

    def _use(self, label: str, op: Op) -> _Key:
        k = self._key(label)
        require(k.key_type, op, label)
        return k

    def _template(self, key_type: KeyType, alg: Alg, role: str, label: str,
                  persistent: bool = True) -> dict[Attribute, Any]:
        t: dict[Attribute, Any] = {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.LABEL: label,
            Attribute.ID: encode_id(key_type, alg, role),
            Attribute.TOKEN: persistent,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.MODIFIABLE: False,
            Attribute.WRAP: False,
            Attribute.UNWRAP: False,
            Attribute.SIGN: False,
            Attribute.VERIFY: False,
            Attribute.ENCRYPT: False,
            Attribute.DECRYPT: False,
            Attribute.DERIVE: False,
        }
        if alg is Alg.TDES:
            t[Attribute.KEY_TYPE] = PK.DES2
        elif alg is Alg.AES:
            t[Attribute.KEY_TYPE] = PK.AES
        else:
            t[Attribute.KEY_TYPE] = PK.GENERIC_SECRET
        # The least each object needs for its operations.
        if role in ("L", "V"):
            t[Attribute.ENCRYPT] = True
        elif key_type in (KeyType.ZMK, KeyType.KEK, KeyType.ZPK, KeyType.TPK):
            t[Attribute.ENCRYPT] = True
            t[Attribute.DECRYPT] = True
        elif key_type is KeyType.BDK and alg is Alg.AES:
            t[Attribute.DERIVE] = True  # AES DUKPT: a chain of derivations, nothing else
        elif key_type in (KeyType.PVK, KeyType.CVK, KeyType.BDK):
            t[Attribute.ENCRYPT] = True
        elif key_type is KeyType.MK_AC:
            t[Attribute.DERIVE] = True
        elif key_type in (KeyType.TAK, KeyType.ZAK):
            if alg is Alg.TDES:
                t[Attribute.ENCRYPT] = True
            else:
                t[Attribute.SIGN] = True
                t[Attribute.VERIFY] = True
        elif key_type is KeyType.DEK:
            t[Attribute.ENCRYPT] = True
            t[Attribute.DECRYPT] = True
        elif key_type is KeyType.TKN:
            t[Attribute.SIGN] = True
        return t

    def _kcv_of(self, obj: Any, alg: Alg) -> str:
        """KCV computed in the token: first 3 bytes of E(zeros) (HMAC: of HMAC(zeros))."""
        if alg is Alg.TDES:
            out = obj.encrypt(bytes(8), mechanism=Mechanism.DES3_ECB)
        elif alg is Alg.AES:
            out = obj.encrypt(bytes(16), mechanism=Mechanism.AES_ECB)
        else:
            out = obj.sign(bytes(16), mechanism=Mechanism.SHA256_HMAC)
        return out[:3].hex().upper()

    def _temp_kcv(self, value: bytes, alg: Alg) -> str:
        """KCV of a clear value (a component): a session object, encrypt zeros, destroy."""
        t = self._template(KeyType.KEK if alg is not Alg.HMAC else KeyType.TKN,
                           alg, "tmp", _TMP_LABEL, persistent=False)
        if alg is Alg.HMAC:
            t[Attribute.SIGN] = True
        else:
            t[Attribute.ENCRYPT] = True
        t[Attribute.VALUE] = value
        obj = self._session.create_object(t)
        try:
            return self._kcv_of(obj, alg)
        finally:
            obj.destroy()

    def _store(self, label: str, key_type: KeyType, alg: Alg, value: bytes) -> str:
        """Create the key's object(s) from its clear value; return the KCV."""
        if len(value) not in KEY_LENGTHS[alg]:
            raise HsmInputError(f"a {alg} key is {'/'.join(map(str, KEY_LENGTHS[alg]))} bytes")
        if key_type is KeyType.BDK and alg is Alg.AES and len(value) != 16:
            # AES-192/256 working keys take two derivation blocks concatenated, which
            # the token cannot do (no CONCATENATE mechanism).
            raise HsmInputError("an AES BDK is AES-128 (16 bytes)")
        if self._find(label) is not None:
            raise KeyExistsError(f"a key labelled {label!r} already exists")
        # KCV first, on a session copy: some keys (MK-AC: derive only) cannot encrypt.
        kcv = self._temp_kcv(value, alg)
        created = []
        try:
            t = self._template(key_type, alg, "main", label)
            t[Attribute.ID] = encode_id(key_type, alg, "main", kcv)
            t[Attribute.VALUE] = value
            created.append(self._session.create_object(t))
            for role in COMPANIONS.get((key_type, alg), ()):
                cval = value[:8] * 2 if role == "L" else _xor(value, BDK_VARIANT)
                ct = self._template(key_type, alg, role, f"{label}/{role}")
                ct[Attribute.VALUE] = cval
                created.append(self._session.create_object(ct))
        except BaseException:
            for o in created:
                o.destroy()
            raise
        self._keys.pop(label, None)
        return kcv

    @staticmethod
    def _norm_kcv(kcv: str | bytes | None) -> str | None:
        if kcv is None:
            return None
        s = kcv.hex() if isinstance(kcv, bytes) else str(kcv)
        s = s.strip().upper()
        if len(s) < 4 or len(s) > 6 or any(c not in "0123456789ABCDEF" for c in s):
            raise HsmInputError("a KCV is 4 to 6 hex digits")
        return s

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
    ) -> str:
        """Import a key as the XOR of clear components; each is checked by its KCV.

        Key-ceremony and test path: the components are clear in host memory while they
        are XORed (see hsm/README.md). Returns the KCV of the whole key.
        """
        check_label(label)
        kt = parse_type(key_type)
        a = parse_alg(kt, alg)
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
        return self._store(label, kt, a, value)

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
    ) -> str:
        """Import a key received from a peer encrypted under a ZMK/KEK (ECB), check its KCV.

        SoftHSM cannot unwrap under DES3 (C_UnwrapKey rejects it), so the cryptogram is
        decrypted with DES3-ECB in the token, and the clear key passes through host memory
        for the few lines that create its object(s) (see hsm/README.md).
        """
        check_label(label)
        kt = parse_type(key_type)
        a = parse_alg(kt, alg)
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
        return self._store(label, kt, a, value)

    @_locked
    def generate_key(
        self,
        label: str,
        key_type: KeyType | str,
        *,
        alg: Alg | str | None = None,
        length: int | None = None,
        export_under: str | None = None,
    ) -> tuple[str, bytes | None]:
        """Generate a key from the token's RNG; return (KCV, cryptogram under ZMK or None).

        The value comes from C_GenerateRandom and is held in host memory only to create
        the object(s) (companions need the halves) and, with ``export_under``, to be
        encrypted under the ZMK in the token.
        """
        check_label(label)
        kt = parse_type(key_type)
        a = parse_alg(kt, alg)
        n = length or DEFAULT_LENGTH[a]
        zmk = self._use(export_under, Op.WRAP) if export_under else None
        value = self._session.generate_random(8 * n)
        if a is Alg.TDES:  # odd parity, as peers expect of a DES key
            value = bytes((b & 0xFE) | ((bin(b >> 1).count("1") + 1) & 1) for b in value)
        kcv = self._store(label, kt, a, value)
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
        for role in COMPANIONS.get((k.key_type, k.alg), ()):
            c = self._find(f"{label}/{role}")
            if c is not None:
                c.destroy()
        k.main.destroy()

    def _info(self, obj: Any, meta: tuple[KeyType, Alg, str, str]) -> KeyInfo:
        key_type, alg, _, stored = meta
        # Recompute in the token when the key may encrypt/sign; else the KCV computed
        # in the token when the key was created (kept in CKA_ID, not modifiable).
        can = obj[Attribute.SIGN] if alg is Alg.HMAC else obj[Attribute.ENCRYPT]
        kcv = self._kcv_of(obj, alg) if can else stored
        return KeyInfo(obj[Attribute.LABEL], key_type, alg, kcv)

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

    # ------------------------------------------------------------------ PIN blocks

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
            a = k.main.encrypt(pb.encode_pin_field_4(pin, self._fill(4)),
                               mechanism=Mechanism.AES_ECB)
            return k.main.encrypt(pb.xor(a, pb.encode_pan_field_4(pan)),
                                  mechanism=Mechanism.AES_ECB)
        clear = pb.encode(pin, pan, fmt, self._fill(fmt))
        return self._encrypt_tdes(k.main, clear)

    def _decode_block(self, k: _Key, block: bytes, pan: str | None, fmt: int) -> str:
        """Decrypt a PIN block under k and return the PIN (checks the layout strictly)."""
        self._check_format(k, fmt)
        size = 16 if fmt == 4 else 8
        if not isinstance(block, bytes | bytearray) or len(block) != size:
            raise PinBlockError(f"a format {fmt} PIN block is {size} bytes")
        if fmt == 4:
            if pan is None:
                raise PinBlockError("format 4 needs the PAN")
            b = k.main.decrypt(bytes(block), mechanism=Mechanism.AES_ECB)
            a = pb.xor(b, pb.encode_pan_field_4(pan))
            return pb.decode_pin_field_4(k.main.decrypt(a, mechanism=Mechanism.AES_ECB))
        return pb.decode(k.main.decrypt(bytes(block), mechanism=Mechanism.DES3_ECB), pan, fmt)

    @staticmethod
    def _encrypt_tdes(obj: Any, clear: bytes) -> bytes:
        return obj.encrypt(clear, mechanism=Mechanism.DES3_ECB)

    @_locked
    def encrypt_pin(self, key: str, pin: str, pan: str | None, fmt: int = 0) -> bytes:
        """Build and encrypt a PIN block as a PIN pad does (TPK, or ZPK for a peer).
        Formats 0/1/3 under TDES keys, 4 under AES keys."""
        return self._encode_block(self._use(key, Op.PIN_OUT), pin, pan, fmt)

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
        src = self._use(src_key, Op.PIN_IN)
        dst = self._zpk_out(dst_key)
        self._check_format(dst, dst_format)
        pin = self._decode_block(src, pin_block, pan, src_format)
        return self._encode_block(dst, pin, pan, dst_format)

    def _dukpt_pin_key(self, bdk: _Key, ksn: bytes) -> bytes:
        """Clear DUKPT PIN key for a KSN (IPEK halves computed in the token)."""
        if not isinstance(ksn, bytes | bytearray) or len(ksn) != 10:
            raise HsmInputError("a DUKPT KSN is 10 bytes")
        data = dukpt.ipek_input(bytes(ksn))
        ipek = bdk.main.encrypt(data, mechanism=Mechanism.DES3_ECB) + bdk.companion.encrypt(
            data, mechanism=Mechanism.DES3_ECB
        )
        return dukpt.pin_key(ipek, bytes(ksn))

    def _with_temp_tdes(self, value: bytes, fn: Callable[[Any], bytes]) -> bytes:
        t = self._template(KeyType.ZPK, Alg.TDES, "tmp", _TMP_LABEL, persistent=False)
        t[Attribute.VALUE] = value
        obj = self._session.create_object(t)
        try:
            return fn(obj)
        finally:
            obj.destroy()

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

    def _derive_aes(self, base: Any, data: bytes, *, final: bool) -> Any:
        """One AES DUKPT step in the token: AES_ECB_ENCRYPT_DATA -> session AES-128 key."""
        return base.derive_key(
            PK.AES,
            128,
            mechanism=Mechanism.AES_ECB_ENCRYPT_DATA,
            mechanism_param=data,
            template={
                Attribute.TOKEN: False,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.ENCRYPT: final,
                Attribute.DECRYPT: final,
                Attribute.DERIVE: not final,
                Attribute.SIGN: False,
                Attribute.VERIFY: False,
                Attribute.WRAP: False,
                Attribute.UNWRAP: False,
            },
        )

    @contextmanager
    def _aes_dukpt_pin_key(self, bdk: _Key, ksn: bytes) -> Iterator[_Key]:
        """AES DUKPT (X9.24-3) PIN encryption key for a 12-byte KSN, derived entirely in
        the token: BDK -> initial key -> intermediate keys -> PIN key, each step an
        AES_ECB_ENCRYPT_DATA derivation of a session object (all destroyed after)."""
        if not isinstance(ksn, bytes | bytearray) or len(ksn) != 12:
            raise HsmInputError("an AES DUKPT KSN is 12 bytes")
        made: list[Any] = []
        try:
            key = self._derive_aes(bdk.main, dukpt.aes_initial_key_data(bytes(ksn)),
                                   final=False)
            made.append(key)
            for data in dukpt.aes_intermediate_data(bytes(ksn)):
                key = self._derive_aes(key, data, final=False)
                made.append(key)
            key = self._derive_aes(key, dukpt.aes_working_key_data(bytes(ksn),
                                                                   dukpt.AES_USAGE_PIN),
                                   final=True)
            made.append(key)
            yield _Key("dukpt-pin-key", KeyType.ZPK, Alg.AES, key, None)
        finally:
            for o in made:
                o.destroy()

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
        key = self._dukpt_pin_key(k, ksn)
        return self._with_temp_tdes(key, lambda o: self._encrypt_tdes(o, clear))

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
        key = self._dukpt_pin_key(k, ksn)
        clear = self._with_temp_tdes(
            key, lambda o: o.decrypt(bytes(pin_block), mechanism=Mechanism.DES3_ECB)
        )
        del key
        pin = pb.decode(clear, pan, src_format)
        return self._encode_block(dst, pin, pan, dst_format)

    # ------------------------------------------------------------------ PIN verification

    def _pvv(self, pvk: _Key, pan: str, pin: str, pvki: int) -> str:
        _check_digits(pan, "PAN", 12, 19)
        if not 0 <= int(pvki) <= 9:
            raise HsmInputError("PVKI is one digit")
        tsp = pan[-12:-1] + str(int(pvki)) + pin[:4]
        out = pvk.main.encrypt(bytes.fromhex(tsp), mechanism=Mechanism.DES3_ECB)
        return _decimalize(out.hex().upper(), 4)

    @_locked
    def generate_pvv(self, pvk: str, pan: str, pin: str, pvki: int = 1) -> str:
        """Visa PVV of a clear PIN (issuance: the PIN is chosen/printed by the issuer)."""
        _check_digits(pin, "PIN", 4, 12)
        return self._pvv(self._use(pvk, Op.PIN_VERIFY), pan, pin, pvki)

    def _pin_from_block(self, pin_block: bytes, pan: str | None, zpk: str, fmt: int) -> str:
        return self._decode_block(self._use(zpk, Op.PIN_IN), pin_block, pan, fmt)

    @_locked
    def verify_pin_pvv(self, pin_block: bytes, pan: str, zpk: str, pvk: str, pvv: str,
                       pvki: int = 1, fmt: int = 0) -> bool:
        """Verify an encrypted PIN block against a Visa PVV."""
        _check_digits(pvv, "PVV", 4, 4)
        pv = self._use(pvk, Op.PIN_VERIFY)
        pin = self._pin_from_block(pin_block, pan, zpk, fmt)
        return hmac.compare_digest(self._pvv(pv, pan, pin, pvki), pvv)

    def _natural_pin(self, pvk: _Key, validation_data: str, dec_table: str, n: int,
                     pad: str) -> str:
        if len(dec_table) != 16 or not dec_table.isdigit():
            raise HsmInputError("decimalisation table is 16 decimal digits")
        if len(validation_data) > 16 or any(
            c not in "0123456789ABCDEFabcdef" for c in validation_data + pad
        ) or len(pad) != 1:
            raise HsmInputError("validation data is up to 16 hex digits, pad one hex digit")
        vd = (validation_data + pad * 16)[:16]
        out = pvk.main.encrypt(bytes.fromhex(vd), mechanism=Mechanism.DES3_ECB).hex()
        return "".join(dec_table[int(c, 16)] for c in out[:n])

    @_locked
    def generate_ibm3624_offset(self, pvk: str, pin: str, validation_data: str,
                                dec_table: str = "0123456789012345", pad: str = "F") -> str:
        _check_digits(pin, "PIN", 4, 12)
        nat = self._natural_pin(self._use(pvk, Op.PIN_VERIFY), validation_data, dec_table,
                                len(pin), pad)
        return "".join(str((int(p) - int(q)) % 10) for p, q in zip(pin, nat, strict=True))

    @_locked
    def verify_pin_ibm3624(self, pin_block: bytes, pan: str, zpk: str, pvk: str, offset: str,
                           validation_data: str, dec_table: str = "0123456789012345",
                           pad: str = "F", fmt: int = 0) -> bool:
        """Verify an encrypted PIN block by IBM 3624 offset (PIN length = offset length)."""
        _check_digits(offset, "offset", 4, 12)
        pv = self._use(pvk, Op.PIN_VERIFY)
        pin = self._pin_from_block(pin_block, pan, zpk, fmt)
        if len(pin) != len(offset):
            return False
        nat = self._natural_pin(pv, validation_data, dec_table, len(pin), pad)
        got = "".join(str((int(p) - int(q)) % 10) for p, q in zip(pin, nat, strict=True))
        return hmac.compare_digest(got, offset)

    # ------------------------------------------------------------------ CVV

    def _cvv(self, cvk: _Key, pan: str, expiry: str, service_code: str) -> str:
        _check_digits(pan, "PAN", 12, 19)
        _check_digits(expiry, "expiry", 4, 4)
        _check_digits(service_code, "service code", 3, 3)
        data = (pan + expiry + service_code).ljust(32, "0")
        b1, b2 = bytes.fromhex(data[:16]), bytes.fromhex(data[16:])
        r = cvk.companion.encrypt(b1, mechanism=Mechanism.DES3_ECB)  # DES with CVK A
        r = cvk.main.encrypt(_xor(r, b2), mechanism=Mechanism.DES3_ECB)  # TDES A,B
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

    # ------------------------------------------------------------------ MAC

    def _derive(self, base: Any, data: bytes, *, encrypt: bool, derive: bool) -> Any:
        param, buf = session.derivation_param(data)
        key = base.derive_key(
            PK.DES2,
            128,
            mechanism=Mechanism.DES3_ECB_ENCRYPT_DATA,
            mechanism_param=param,
            template={
                Attribute.VALUE_LEN: pkcs11.DEFAULT,
                Attribute.TOKEN: False,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.ENCRYPT: encrypt,
                Attribute.DECRYPT: False,
                Attribute.DERIVE: derive,
                Attribute.SIGN: False,
                Attribute.VERIFY: False,
                Attribute.WRAP: False,
                Attribute.UNWRAP: False,
            },
        )
        del buf
        return key

    @staticmethod
    def _retail_mac(kll: Any, klr: Any, padded: bytes) -> bytes:
        """ISO 9797-1 alg 3: CBC with KL (as KL||KL) over all but the last block, then
        3DES (KL,KR) on chaining value xor last block. The chaining value is in host."""
        cv = bytes(8)
        if len(padded) > 8:
            cv = kll.encrypt(padded[:-8], mechanism=Mechanism.DES3_CBC,
                             mechanism_param=bytes(8))[-8:]
        return klr.encrypt(_xor(cv, padded[-8:]), mechanism=Mechanism.DES3_ECB)

    def _mac(self, k: _Key, data: bytes, padding: int, length: int) -> bytes:
        if not isinstance(data, bytes | bytearray) or len(data) > MAX_MAC_DATA_BYTES:
            raise HsmInputError(f"MAC data is bytes, at most {MAX_MAC_DATA_BYTES}")
        if k.alg is Alg.TDES:
            if not 4 <= length <= 8:
                raise HsmInputError("retail MAC length is 4 to 8 bytes")
            return self._retail_mac(k.companion, k.main, _pad_method(bytes(data), padding))[
                :length
            ]
        if not 4 <= length <= 16:
            raise HsmInputError("AES-CMAC length is 4 to 16 bytes")
        return k.main.sign(bytes(data), mechanism=Mechanism.AES_CMAC)[:length]

    @_locked
    def generate_mac(self, key: str, data: bytes, *, padding: int = 1,
                     length: int = 8) -> bytes:
        """TAK/ZAK: retail MAC (ISO 9797-1 alg 3, DES) for TDES keys, AES-CMAC for AES."""
        return self._mac(self._use(key, Op.MAC), data, padding, length)

    @_locked
    def verify_mac(self, key: str, data: bytes, mac: bytes, *, padding: int = 1) -> bool:
        if not isinstance(mac, bytes | bytearray) or not 4 <= len(mac) <= 16:
            return False
        k = self._use(key, Op.MAC)
        if k.alg is Alg.TDES and len(mac) > 8:
            return False
        return hmac.compare_digest(self._mac(k, data, padding, len(mac)), bytes(mac))

    # ------------------------------------------------------------------ EMV

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

    # ------------------------------------------------------------------ PAN protection

    @_locked
    def pan_token(self, key: str, pan: str) -> str:
        """Stable PAN token: HMAC-SHA256 in the token, hex (64 chars)."""
        _check_digits(pan, "PAN", 12, 19)
        k = self._use(key, Op.PAN_TOKEN)
        return k.main.sign(pan.encode(), mechanism=Mechanism.SHA256_HMAC).hex()

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

