"""Shared internals of ``Hsm``: the lock decorator, the key cache and templates,
session objects for one operation, and the TDES/AES derivation and retail-MAC steps."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ParamSpec, Self, TypeVar

import pkcs11
from pkcs11 import Attribute, Mechanism, ObjectClass
from pkcs11 import KeyType as PK

from payswitch.codecs import pinblock as pb
from payswitch.hsm import _raw, roles, session
from payswitch.hsm.errors import (
    CommandNotAllowedError,
    HsmConfigError,
    HsmDeviceError,
    HsmError,
    HsmInputError,
    KeyExistsError,
    KeyNotFoundError,
    KeyUsageError,
    PinBlockError,
    PinVerifyLimitError,
)
from payswitch.hsm.keys import (
    BDK_VARIANT,
    COMPANIONS,
    DEFAULT_DEC_TABLE,
    DEFAULT_MAC_LENGTH,
    KEY_LENGTHS,
    Alg,
    KeyType,
    Op,
    check_label,
    decode_id,
    decode_params,
    encode_id,
    require,
)
from payswitch.hsm.token import TokenConfig

P = ParamSpec("P")
R = TypeVar("R")

MAX_CACHED_KEYS = 4096
# Derived keys kept as session-object handles (EMV UDKs, DUKPT keys): each entry is one
# to three objects in the token; bounded so a flood of new cards cannot fill the token.
MAX_DERIVED_KEYS = 1024
# Keys with a cipher operation kept open (_raw.Streams): a session each, in the token.
MAX_KEY_STREAMS = 64
# Session objects made for one operation; "/" keeps them apart from any user label.
_TMP_LABEL = "tmp/payswitch"
# Keys used by a per-authorization command on every call (PAN token and blob, the
# ledger's event MAC): besides the token object, a ``/W`` companion (an AES key, UNWRAP
# only, with an unwrap template) through which each process unwraps the same value once
# as a session object (the working key): a token object costs ~2x per use
# (hsm/README.md, "Working keys").
WORKING = frozenset({(KeyType.DEK, Alg.AES), (KeyType.TKN, Alg.HMAC),
                     (KeyType.EVK, Alg.HMAC)})
_WORK_LABEL = "work/payswitch"
MAX_MAC_DATA_BYTES = 64 * 1024
CVV2_SERVICE_CODE = "000"
ICVV_SERVICE_CODE = "999"


GCM_NONCE_BYTES = 12
NONCE_BATCH = 256  # AES-GCM nonces drawn from the token's RNG in one call
_fork_generation = 0  # bumped in a forked child: a pool inherited from the parent is dropped


def _forked() -> None:
    global _fork_generation
    _fork_generation += 1


os.register_at_fork(after_in_child=_forked)


class NoncePool:
    """AES-GCM nonces (12 random bytes each) from the token's RNG, ``NONCE_BATCH`` per
    ``C_GenerateRandom`` instead of one call per encryption. Each nonce is handed out
    once: the pool is read forward and refilled when used up, and a forked child drops
    what it inherited (it would hand out the parent's next nonces). Random bytes kept
    for a nonce are not secret: a nonce is stored in clear next to its ciphertext.
    Callers hold ``session.LIBRARY_LOCK``."""

    __slots__ = ("_buf", "_at", "_generation")

    def __init__(self) -> None:
        self._buf = b""
        self._at = 0
        self._generation = _fork_generation

    def take(self, source: Any) -> bytes:
        """The next nonce; ``source`` is the python-pkcs11 session (``generate_random``)."""
        at = self._at
        if at + GCM_NONCE_BYTES > len(self._buf) or self._generation != _fork_generation:
            buf = bytes(source.generate_random(8 * GCM_NONCE_BYTES * NONCE_BATCH))
            if len(buf) != GCM_NONCE_BYTES * NONCE_BATCH:
                raise HsmDeviceError("the token's RNG returned a short buffer")
            self._buf, at, self._generation = buf, 0, _fork_generation
        self._at = at + GCM_NONCE_BYTES
        return self._buf[at:at + GCM_NONCE_BYTES]


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _locked(fn: Callable[P, R]) -> Callable[P, R]:
    """A command: check the token's role allows it (hsm/roles.py), hold the library lock
    for the whole operation and type every library error."""
    return _locked_as(fn.__name__)(fn)


def _locked_as(*commands: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """``_locked`` for a method that does the work of ``commands`` in one lock hold:
    allowed exactly when each of them is (each checked, and counted when refused, under
    its own name, in this order)."""
    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        name = commands[0]
        rest = commands[1:]

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            allowed = args[0]._allowed  # type: ignore[attr-defined]
            if name not in allowed:
                args[0]._authorize(name)  # type: ignore[attr-defined]  # ceremony, or refused
            for other in rest:
                if other not in allowed:
                    args[0]._authorize(other)  # type: ignore[attr-defined]
            with session.LIBRARY_LOCK:
                try:
                    return fn(*args, **kwargs)
                except HsmError:
                    raise
                except pkcs11.PKCS11Error as e:
                    # The class name says what failed (e.g. KeyTypeInconsistent), or for
                    # a direct call its function and return code; no data.
                    what = str(e) if isinstance(e, _raw.CallError) else type(e).__name__
                    raise HsmDeviceError(f"PKCS#11 error: {what}") from None
                except pb.PinBlockFormatError as e:
                    raise PinBlockError(str(e)) from None

        return wrapper
    return decorate


@dataclass
class _Key:
    label: str
    key_type: KeyType
    alg: Alg
    main: Any  # pkcs11 SecretKey
    companion: Any | None  # /L or /V object, when the type needs one
    params: dict[str, str] = field(default_factory=dict)  # keys.key_params
    kept: bool = False  # a token key from the cache: its cipher operations stay open
    # WORKING keys with a /W companion: the session-object copy, when it was made, the
    # /W object and the key wrapped under it (hsm/README.md, "Working keys").
    work: Any | None = None
    work_born: float = 0.0
    work_src: Any | None = None
    work_data: bytes = b""
    kcv: str = ""  # the KCV the token computed at import (CKA_ID)

    @property
    def dec_table(self) -> str:
        return self.params.get("dt", DEFAULT_DEC_TABLE)

    @property
    def mac_length(self) -> int:
        return int(self.params.get("ml", DEFAULT_MAC_LENGTH))


class DerivedCache:
    """Bounded LRU of derived keys held as PKCS#11 session-object handles (sensitive,
    non-extractable, ``CKA_TOKEN=false``): the values never leave the token. Evicted
    entries are destroyed. Keys are tuples whose second item is the base key's label,
    so deleting that key drops what was derived from it. Callers hold the library lock."""

    def __init__(self, max_entries: int = MAX_DERIVED_KEYS) -> None:
        if max_entries < 0:
            raise HsmConfigError("derived key cache size >= 0")
        self.max_entries = max_entries
        self._d: OrderedDict[tuple, tuple[Any, ...]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._d)

    def get(self, key: tuple) -> tuple[Any, ...] | None:
        objs = self._d.get(key)
        if objs is None:
            self.misses += 1
            return None
        self.hits += 1
        self._d.move_to_end(key)
        return objs

    def put(self, key: tuple, objs: tuple[Any, ...]) -> None:
        if self.max_entries == 0:
            # No cache: nothing would destroy these later, so callers must not rely on
            # put() to own them; keep one entry at most.
            self._drop_all()
        self._d[key] = objs
        while len(self._d) > max(self.max_entries, 1):
            _, old = self._d.popitem(last=False)
            self._destroy(old)

    def invalidate(self, label: str) -> None:
        for key in [k for k in self._d if k[1] == label]:
            self._destroy(self._d.pop(key))

    def _drop_all(self) -> None:
        while self._d:
            self._destroy(self._d.popitem()[1])

    clear = _drop_all

    @staticmethod
    def _destroy(objs: tuple[Any, ...]) -> None:
        for o in objs:
            with contextlib.suppress(pkcs11.PKCS11Error):  # session closed: gone already
                o.destroy()


def _pin_hash(pin: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, 200_000)


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



@dataclass(frozen=True)
class Policy:
    """Limits of one ``Hsm``: PIN verifications per card (switch role) and the derived
    key cache. The switch sets them from its config; the defaults suit tests and demo."""

    pin_verify_max: int = 10  # verifications of one card's PIN per window
    pin_verify_window_s: float = 600.0
    pin_verify_cards: int = 100_000  # cards tracked at most (oldest dropped)
    derived_keys: int = MAX_DERIVED_KEYS
    # Cipher operations kept open on hot keys (_raw.Streams), one session each; 0: none.
    key_streams: int = MAX_KEY_STREAMS
    key_stream_age_s: float = 1.0  # re-initialised after: a key deleted elsewhere stops
    clock: Callable[[], float] = time.monotonic


class PinVerifyLimiter:
    """Sliding window of PIN verifications per card, keyed by a hash of the PAN (the
    PAN itself is not kept). Bounded in cards and in attempts per card."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._seen: OrderedDict[bytes, list[float]] = OrderedDict()
        self._salt = os.urandom(16)

    def check(self, pan: str) -> None:
        p = self.policy
        key = hashlib.sha256(self._salt + pan.encode()).digest()
        now = p.clock()
        times = [t for t in self._seen.pop(key, []) if now - t < p.pin_verify_window_s]
        if len(times) >= p.pin_verify_max:
            self._seen[key] = times
            raise PinVerifyLimitError(
                f"more than {p.pin_verify_max} PIN verifications for one card "
                f"in {p.pin_verify_window_s:g} s")
        times.append(now)
        self._seen[key] = times
        while len(self._seen) > p.pin_verify_cards:
            self._seen.popitem(last=False)


ROLE_LABEL = "payswitch.role"


class HsmBase:
    """One logged-in token, its key cache and the steps every operation shares."""

    def __init__(self, config: TokenConfig, *, policy: Policy | None = None) -> None:
        if config.role not in roles.ROLES:
            raise HsmConfigError(f"unknown HSM role {config.role!r}; one of "
                                 f"{', '.join(roles.ROLES)}")
        self.config = config
        self.policy = policy or Policy()
        self._session = session.open_session(config)
        self._keys: dict[str, _Key] = {}
        self._derived = DerivedCache(self.policy.derived_keys)
        self._nonces = NoncePool()
        if self.policy.key_streams < 0 or self.policy.key_stream_age_s <= 0:
            session.release_session(config)
            raise HsmConfigError("key streams >= 0, their age > 0")
        self._streams = _raw.Streams(self._session, self.policy.key_streams,
                                     self.policy.key_stream_age_s, self.policy.clock)
        self._closed = False
        self._ceremony = False
        self._pin_limiter = PinVerifyLimiter(self.policy)
        self.refused: Counter[str] = Counter()  # refused commands by name (metrics)
        try:
            self._role_record = self._bind_role(config)
        except BaseException:
            session.release_session(config)
            raise
        self.role = config.role
        self._allowed = roles.COMMANDS[self.role]  # _locked's check before _authorize

    # --- command authorization ------------------------------------------------------

    def _bind_role(self, config: TokenConfig) -> dict[str, str]:
        """The role written in the token; written now (setup) if the token has none."""
        with session.LIBRARY_LOCK:
            objs = list(self._session.get_objects(
                {Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: ROLE_LABEL}))
            if len(objs) > 1:
                raise HsmDeviceError("token holds more than one role object")
            if objs:
                record = json.loads(bytes(objs[0][Attribute.VALUE]))
                if record.get("role") != config.role:
                    raise HsmConfigError(
                        f"token {config.label!r} was set up for role {record.get('role')!r}, "
                        f"not {config.role!r}")
                return record
            record = {"role": config.role}
            if config.so_pin:
                salt = os.urandom(16)
                record["salt"] = salt.hex()
                record["so_pin_hash"] = _pin_hash(config.so_pin, salt).hex()
            self._session.create_object({
                Attribute.CLASS: ObjectClass.DATA,
                Attribute.LABEL: ROLE_LABEL,
                Attribute.APPLICATION: "payswitch",
                Attribute.VALUE: json.dumps(record).encode(),
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.MODIFIABLE: False,
            })
            return record

    def _authorize(self, command: str) -> None:
        allowed = roles.COMMANDS[self.role]
        if command in allowed or (self._ceremony and command in roles.CEREMONY):
            return
        self.refused[command] += 1
        raise CommandNotAllowedError(f"{command} is not allowed on a {self.role} token")

    def _limit_pin_verify(self, pan: str) -> None:
        if not isinstance(pan, str) or not pan.isdigit() or len(pan) > 19:
            raise HsmInputError("PAN must be up to 19 decimal digits")
        if self.role in roles.RATE_LIMITED:
            self._pin_limiter.check(pan)

    @contextlib.contextmanager
    def ceremony(self, so_pin: str) -> Iterator[None]:
        """Key ceremony: allow the clear-key commands (``roles.CEREMONY``) for the block,
        after checking the SO PIN against the hash kept in the token at setup."""
        rec = self._role_record
        if "so_pin_hash" not in rec:
            raise HsmConfigError("this token was set up without an SO PIN: no key ceremony")
        got = _pin_hash(so_pin, bytes.fromhex(rec["salt"]))
        if not hmac.compare_digest(got, bytes.fromhex(rec["so_pin_hash"])):
            self.refused["ceremony"] += 1
            raise CommandNotAllowedError("key ceremony refused: wrong SO PIN")
        self._ceremony = True
        try:
            yield
        finally:
            self._ceremony = False

    def close(self) -> None:
        with session.LIBRARY_LOCK:
            if not self._closed:
                self._closed = True
                self._drop_keys()
                self._derived.clear()
                self._streams.close()
                session.release_session(self.config)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Hsm(token={self.config.label!r})"

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
        k = _Key(label, key_type, alg, main, companion, decode_params(bytes(main[Attribute.ID])),
                 kept=True, kcv=meta[3])
        if (key_type, alg) in WORKING:
            src = self._find(f"{label}/W")
            wrapped = decode_params(bytes(src[Attribute.ID])).get("wk", "") if src else ""
            if src is not None and wrapped:  # else none, or the derive-only /W of 2b30c60:
                k.work_src, k.work_data = src, bytes.fromhex(wrapped)  # token object
        if len(self._keys) >= MAX_CACHED_KEYS:
            self._drop_keys()
        self._keys[label] = k
        return k

    def _make_work(self, k: _Key) -> None:
        """The working key of ``k``: C_UnwrapKey (AES_KEY_WRAP) of the key wrapped under
        its /W at import (``_store_work_source``), a session object (sensitive, not
        extractable, not modifiable, not private; the rights of the main object only: the
        /W's unwrap template forces them) whose value is the key's own. Checked against
        the KCV the token computed when the key was imported: a wrong /W is refused
        here, not used."""
        src = k.work_src
        if src is None:
            raise HsmDeviceError(f"key {k.label!r} has no /W part")
        sign = k.alg is Alg.HMAC
        try:
            obj = _raw.unwrap_working(src, k.work_data, hmac=sign,
                                      label=_WORK_LABEL.encode())
        except _raw.CallError as e:  # e.g. CKR_WRAPPED_KEY_INVALID: not wrapped under it
            raise HsmDeviceError(f"key {k.label!r}: its /W part does not give the key "
                                 f"({e})") from None
        try:
            got = (_raw.hmac_sha256(obj, bytes(16)) if sign else
                   _raw.encrypt(obj, bytes(16), Mechanism.AES_ECB))[:3].hex().upper()
        except BaseException:
            obj.destroy()
            raise
        if not k.kcv or got != k.kcv:
            obj.destroy()
            raise HsmDeviceError(f"key {k.label!r}: its /W part does not give the key (KCV)")
        old, k.work, k.work_born = k.work, obj, self.policy.clock()
        if old is not None:
            with contextlib.suppress(pkcs11.PKCS11Error):
                old.destroy()

    def _working(self, k: _Key) -> Any:
        """The object a hot command uses: the working key, else the token object.
        Made at the key's first use here, not when it is looked up (a broken /W must
        not stop ``delete_key``); made again after ``Policy.key_stream_age_s`` (a key
        deleted by another process stops working here within that age, as a kept-open
        stream does)."""
        if k.work_src is None:
            return k.main
        if k.work is None or self.policy.clock() - k.work_born >= self.policy.key_stream_age_s:
            try:
                self._make_work(k)
            except BaseException:
                self._forget_key(k)
                raise
        return k.work

    def _forget_key(self, k: _Key) -> None:
        """Drop ``k`` from the cache and destroy its working key (session object)."""
        if self._keys.get(k.label) is k:
            del self._keys[k.label]
        if k.work is not None:
            with contextlib.suppress(pkcs11.PKCS11Error):
                k.work.destroy()
            k.work = None

    def _drop_keys(self) -> None:
        for k in list(self._keys.values()):
            self._forget_key(k)
        self._keys.clear()

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
        elif key_type in (KeyType.ZMK, KeyType.KEK):
            t[Attribute.ENCRYPT] = True
            t[Attribute.DECRYPT] = True
            # TR-31: the KBEK / KBAK are derived in the token (ECB_ENCRYPT_DATA: nothing
            # an ENCRYPT right does not already give).
            t[Attribute.DERIVE] = True
        elif key_type in (KeyType.ZPK, KeyType.TPK):
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
        elif key_type in (KeyType.TKN, KeyType.EVK):
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

    def _store(self, label: str, key_type: KeyType, alg: Alg, value: bytes,
               params: dict[str, str] | None = None) -> str:
        """Create the key's object(s) from its clear value; return the KCV."""
        if len(value) not in KEY_LENGTHS[alg]:
            raise HsmInputError(f"a {alg} key is {'/'.join(map(str, KEY_LENGTHS[alg]))} bytes")
        if key_type is KeyType.BDK and alg is Alg.AES and len(value) != 16:
            # AES-192/256 working keys take two derivation blocks concatenated, which
            # the token cannot do (no CONCATENATE mechanism).
            raise HsmInputError("an AES BDK is AES-128 (16 bytes)")
        if self._find(label) is not None:
            raise KeyExistsError(f"a key labelled {label!r} already exists")
        stale = self._find(f"{label}/W")  # left by a key deleted outside this package
        if stale is not None:
            stale.destroy()
        # KCV first, on a session copy: some keys (MK-AC: derive only) cannot encrypt.
        kcv = self._temp_kcv(value, alg)
        created = []
        try:
            t = self._template(key_type, alg, "main", label)
            t[Attribute.ID] = encode_id(key_type, alg, "main", kcv, params)
            t[Attribute.VALUE] = value
            created.append(self._session.create_object(t))
            for role in COMPANIONS.get((key_type, alg), ()):
                cval = value[:8] * 2 if role == "L" else _xor(value, BDK_VARIANT)
                ct = self._template(key_type, alg, role, f"{label}/{role}")
                ct[Attribute.VALUE] = cval
                created.append(self._session.create_object(ct))
            if (key_type, alg) in WORKING:
                created.append(self._store_work_source(label, key_type, alg, value, kcv))
        except BaseException:
            for o in created:
                o.destroy()
            raise
        old = self._keys.get(label)
        if old is not None:  # deleted through another Hsm: its working key goes too
            self._forget_key(old)
        return kcv

    def _store_work_source(self, label: str, key_type: KeyType, alg: Alg, value: bytes,
                           kcv: str) -> Any:
        """The ``/W`` companion of a WORKING key: a new AES-256 key W from the token's RNG
        (token object, UNWRAP only, AES_KEY_WRAP only, not copyable, with an unwrap
        template: ``_raw.create_unwrap_source``) and, in its CKA_ID, the key wrapped
        under W (AES_KEY_WRAP, RFC 3394), as a cryptogram is under a ZMK. The wrap is
        made in the token, from two session objects that live for these lines: a copy
        of W that can only wrap, and a copy of the key that can only be wrapped. W's
        value is in host memory for these lines, as the key's own is (a key ceremony)."""
        w = self._session.generate_random(8 * 32)
        t = self._template(KeyType.KEK, Alg.AES, "tmp", _TMP_LABEL, persistent=False)
        t[Attribute.WRAP] = True
        t[Attribute.VALUE] = w
        kt = self._template(key_type, alg, "tmp", _TMP_LABEL, persistent=False)
        kt[Attribute.EXTRACTABLE] = True  # wrappable; sensitive: never readable in clear
        kt[Attribute.VALUE] = value
        made: list[Any] = []
        try:
            made.append(self._session.create_object(t))
            made.append(self._session.create_object(kt))
            wrapper: Any = made[0]  # a SecretKey (python-pkcs11 types it as an Object)
            wrapped = bytes(wrapper.wrap_key(made[1], mechanism=Mechanism.AES_KEY_WRAP))
        finally:
            for o in made:
                o.destroy()
        return _raw.create_unwrap_source(
            self._session, label=f"{label}/W".encode(),
            ident=encode_id(key_type, alg, "W", kcv, {"wk": wrapped.hex()}),
            value=w, hmac=alg is Alg.HMAC)

    @staticmethod
    def _norm_kcv(kcv: str | bytes | None) -> str | None:
        if kcv is None:
            return None
        s = kcv.hex() if isinstance(kcv, bytes) else str(kcv)
        s = s.strip().upper()
        if len(s) < 4 or len(s) > 6 or any(c not in "0123456789ABCDEF" for c in s):
            raise HsmInputError("a KCV is 4 to 6 hex digits")
        return s

    def _ecb(self, k: _Key, data: bytes, *, decrypt: bool = False,
             companion: bool = False) -> bytes:
        """DES3 or AES ECB of whole blocks under a key's main (or companion) object: a
        kept-open operation for a token key (``_raw.Streams``), else a fresh one."""
        obj = k.companion if companion else k.main
        mech = Mechanism.AES_ECB if k.alg is Alg.AES else Mechanism.DES3_ECB
        if k.kept:
            return self._streams.ecb(obj, data, mech, decrypt)
        return _raw.decrypt(obj, data, mech) if decrypt else _raw.encrypt(obj, data, mech)

    def _derive(self, base: Any, data: bytes, *, encrypt: bool, derive: bool,
                private: bool = True) -> Any:
        """DES3_ECB_ENCRYPT_DATA -> a DES2 session key, by handle (``_raw``: python-pkcs11's
        derive_key cost 3-4x the token's own call, and EMV derives two keys per ATC)."""
        return _raw.derive_des2(base, data, encrypt=encrypt, derive=derive, private=private)

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

    @staticmethod
    def _retail_mac(kll: Any, klr: Any, padded: bytes) -> bytes:
        """ISO 9797-1 alg 3: CBC with KL (as KL||KL) over all but the last block, then
        3DES (KL,KR) on chaining value xor last block. The chaining value is in host."""
        cv = bytes(8)
        if len(padded) > 8:
            cv = _raw.encrypt(kll, padded[:-8], Mechanism.DES3_CBC, bytes(8))[-8:]
        return _raw.encrypt(klr, _xor(cv, padded[-8:]), Mechanism.DES3_ECB)

    def _retail_mac_kept(self, k: _Key, padded: bytes) -> bytes:
        """``_retail_mac`` of a TAK/ZAK from the cache, on its kept-open operations."""
        cv = 0
        if len(padded) > 8:
            cv = int.from_bytes(self._streams.cbc(k.companion, padded[:-8])[-8:], "big")
        last = (cv ^ int.from_bytes(padded[-8:], "big")).to_bytes(8, "big")
        return self._streams.ecb(k.main, last, Mechanism.DES3_ECB)
