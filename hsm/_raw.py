"""Direct PKCS#11 calls (ctypes) for the per-transaction steps: derive a TDES key,
encrypt or decrypt a few blocks, destroy; HMAC-SHA256 (PAN token, ledger event MAC),
AES-GCM (PAN at rest).

python-pkcs11 adds ~25 us of Python to each encrypt (SoftHSM's own C_EncryptInit +
C_Encrypt of a block is ~9 us of CPU) and ~150-250 us to each ``derive_key`` (SoftHSM's
C_DeriveKey + C_DestroyObject is ~22-35 us): it resolves the mechanism, merges and
packs a template, reads the new object's attributes back and builds a new Python class
for it. An ARQC with a session key is two derivations and three encryptions, a TDES
DUKPT translation three encryptions, so that wrapper was most of their cost
(hsm/README.md, "Benchmark"). Here the same functions of the same library are called
on the same session with the same templates: keys stay token objects, known by handle
(``TokenKey``). Callers hold ``session.LIBRARY_LOCK``, as for every library call.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pkcs11
from pkcs11 import Attribute, Mechanism, ObjectClass
from pkcs11 import KeyType as PK

from payswitch.hsm import session as _session
from payswitch.hsm.session import DerivationData

_UL = ctypes.c_ulong


class _Mechanism(ctypes.Structure):
    _fields_ = [("mechanism", _UL), ("pParameter", ctypes.c_void_p),
                ("ulParameterLen", _UL)]


class _Attr(ctypes.Structure):
    _fields_ = [("type", _UL), ("pValue", ctypes.c_void_p), ("ulValueLen", _UL)]


class _GcmParams(ctypes.Structure):
    """CK_GCM_PARAMS as SoftHSM 2.6 declares and checks it (``ulParameterLen`` must be
    its size): the PKCS#11 3.0 layout, with ``ulIvBits``. The v2.40 text's struct has
    no ``ulIvBits``; SoftHSM refuses that one (tests/hsm/test_hsm_raw_pan.py)."""

    _fields_ = [("pIv", ctypes.c_char_p), ("ulIvLen", _UL), ("ulIvBits", _UL),
                ("pAAD", ctypes.c_char_p), ("ulAADLen", _UL), ("ulTagBits", _UL)]


_AES_GCM, _GCM_PARAMS_SIZE = int(Mechanism.AES_GCM), ctypes.sizeof(_GcmParams)


class CallError(pkcs11.PKCS11Error):
    """A direct call returned an error code (named in the message, no data)."""


_libs: dict[str, ctypes.CDLL] = {}
_SERIAL_SESSION = 0x4  # CKF_SERIAL_SESSION: read-only is enough to use a key
_BLOCK = {Mechanism.DES3_ECB: 8, Mechanism.DES3_CBC: 8, Mechanism.AES_ECB: 16}


def _library() -> ctypes.CDLL:
    """The module python-pkcs11 loaded (dlopen of the same file gives the same copy,
    with its sessions and objects)."""
    path = _session.module_path()
    lib = _libs.get(path)
    if lib is None:
        lib = ctypes.CDLL(path)
        crypt = [_UL, ctypes.c_char_p, _UL, ctypes.c_char_p, ctypes.POINTER(_UL)]
        for name, args in (
            ("C_DeriveKey", [_UL, ctypes.POINTER(_Mechanism), _UL, ctypes.POINTER(_Attr),
                             _UL, ctypes.POINTER(_UL)]),
            ("C_DestroyObject", [_UL, _UL]),
            ("C_CreateObject", [_UL, ctypes.POINTER(_Attr), _UL, ctypes.POINTER(_UL)]),
            ("C_UnwrapKey", [_UL, ctypes.POINTER(_Mechanism), _UL, ctypes.c_char_p, _UL,
                             ctypes.POINTER(_Attr), _UL, ctypes.POINTER(_UL)]),
            ("C_EncryptInit", [_UL, ctypes.POINTER(_Mechanism), _UL]),
            ("C_Encrypt", crypt),
            ("C_DecryptInit", [_UL, ctypes.POINTER(_Mechanism), _UL]),
            ("C_Decrypt", crypt),
            ("C_SignInit", [_UL, ctypes.POINTER(_Mechanism), _UL]),
            ("C_Sign", crypt),
            ("C_EncryptUpdate", crypt),
            ("C_DecryptUpdate", crypt),
            ("C_OpenSession", [_UL, _UL, ctypes.c_void_p, ctypes.c_void_p,
                               ctypes.POINTER(_UL)]),
            ("C_CloseSession", [_UL]),
        ):
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, _UL
        _libs[path] = lib
    return lib


def _whole_blocks(data: bytes, mechanism: Mechanism) -> None:
    if _BLOCK.get(mechanism) is None or len(data) % _BLOCK[mechanism] or not data:
        raise CallError("whole blocks of DES3 ECB/CBC or AES ECB only")


def _check(rv: int, call: str) -> None:
    if rv != 0:
        raise CallError(f"{call} returned CKR 0x{rv:08X}")


def _crypt(key: Any, data: bytes, mechanism: Mechanism, iv: bytes | None,
           decrypt: bool) -> bytes:
    """One C_{En,De}cryptInit + C_{En,De}crypt of whole blocks (no padding mechanisms:
    the output is as long as the input)."""
    _whole_blocks(data, mechanism)
    lib = _library()
    sess = key.session.handle
    mech = _Mechanism(int(mechanism), None, 0)
    if iv is not None:
        buf = ctypes.create_string_buffer(iv, len(iv))
        mech.pParameter, mech.ulParameterLen = ctypes.cast(buf, ctypes.c_void_p), len(iv)
    name = "C_Decrypt" if decrypt else "C_Encrypt"
    _check(getattr(lib, name + "Init")(sess, mech, key.handle), name + "Init")
    out = ctypes.create_string_buffer(len(data))
    n = _UL(len(data))
    _check(getattr(lib, name)(sess, data, len(data), out, n), name)
    return out.raw[:n.value]


def encrypt(key: Any, data: bytes, mechanism: Mechanism, iv: bytes | None = None) -> bytes:
    """Encrypt under a python-pkcs11 key or a ``TokenKey``."""
    return _crypt(key, data, mechanism, iv, decrypt=False)


def decrypt(key: Any, data: bytes, mechanism: Mechanism, iv: bytes | None = None) -> bytes:
    return _crypt(key, data, mechanism, iv, decrypt=True)


_HMAC = _Mechanism(int(Mechanism.SHA256_HMAC), None, 0)  # no parameter: shared
GCM_NONCE, GCM_TAG = 12, 16


class _Scratch:
    """The ctypes objects of the HMAC and AES-GCM calls, made once and reused (a
    buffer, a length, a CK_GCM_PARAMS and its mechanism per call cost a few µs of
    Python each; these run several times per authorization). Shared: callers hold
    ``session.LIBRARY_LOCK``. A decryption's clear output is zeroed after it is read."""

    def __init__(self) -> None:
        self.mac = ctypes.create_string_buffer(32)
        self.n = _UL()
        self.out = ctypes.create_string_buffer(256)
        self.gcm = _GcmParams(None, GCM_NONCE, 8 * GCM_NONCE, None, 0, 8 * GCM_TAG)
        self.gcm_mech = _Mechanism(_AES_GCM, ctypes.addressof(self.gcm), _GCM_PARAMS_SIZE)


_scratch = _Scratch()


def hmac_sha256(key: Any, data: bytes) -> bytes:
    """C_SignInit + C_Sign with SHA256_HMAC under ``key``: 32 bytes."""
    lib = _library()
    sess = key.session.handle
    _check(lib.C_SignInit(sess, _HMAC, key.handle), "C_SignInit")
    sc = _scratch
    n = sc.n
    n.value = 32
    _check(lib.C_Sign(sess, data, len(data), sc.mac, n), "C_Sign")
    return ctypes.string_at(sc.mac, n.value)


def _gcm(key: Any, nonce: bytes, aad: bytes, data: bytes, decrypt: bool) -> bytes:
    """One AES-GCM C_{En,De}cryptInit + C_{En,De}crypt with a 16-byte tag: ciphertext
    || tag out of an encryption, the plaintext out of a decryption (a wrong tag, AAD
    or key: CallError)."""
    if len(nonce) != GCM_NONCE or (decrypt and len(data) < GCM_TAG):
        raise CallError("AES-GCM: 12-byte nonce, ciphertext with its 16-byte tag")
    lib = _library()
    sess = key.session.handle
    sc = _scratch
    # c_char_p fields point into the bytes objects, which the struct keeps alive
    param = sc.gcm
    param.pIv, param.pAAD, param.ulAADLen = nonce, aad or None, len(aad)
    init, call = (lib.C_DecryptInit, lib.C_Decrypt) if decrypt else (
        lib.C_EncryptInit, lib.C_Encrypt)
    _check(init(sess, sc.gcm_mech, key.handle),
           "C_DecryptInit" if decrypt else "C_EncryptInit")
    # SoftHSM wants room for the whole input when decrypting (it buffers ct || tag)
    size = len(data) if decrypt else len(data) + GCM_TAG
    out = sc.out if size <= len(sc.out) else ctypes.create_string_buffer(size)
    n = sc.n
    n.value = size
    try:
        _check(call(sess, data, len(data), out, n), "C_Decrypt" if decrypt else "C_Encrypt")
        return ctypes.string_at(out, n.value)
    finally:
        param.pIv = param.pAAD = None  # no reference kept to the caller's bytes
        if decrypt:
            ctypes.memset(out, 0, size)  # a clear PAN is not left in the kept buffer


def gcm_encrypt(key: Any, nonce: bytes, data: bytes, aad: bytes = b"") -> bytes:
    return _gcm(key, nonce, aad, data, decrypt=False)


def gcm_decrypt(key: Any, nonce: bytes, data: bytes, aad: bytes = b"") -> bytes:
    return _gcm(key, nonce, aad, data, decrypt=True)


_TRUE, _FALSE = ctypes.c_ubyte(1), ctypes.c_ubyte(0)


def _des2_template(encrypt: bool, derive: bool, private: bool) -> ctypes.Array:
    """The template ``HsmBase._derive`` gave python-pkcs11 (which added CLASS, KEY_TYPE
    and PRIVATE): a DES2 session key, sensitive, not extractable, only the rights asked
    for; private unless asked otherwise (hsm/README.md, "CKA_PRIVATE")."""
    values: list[tuple[Attribute, Any]] = [
        (Attribute.CLASS, _UL(ObjectClass.SECRET_KEY)),
        (Attribute.KEY_TYPE, _UL(PK.DES2)),
        (Attribute.TOKEN, _FALSE),
        (Attribute.PRIVATE, _TRUE if private else _FALSE),
        (Attribute.SENSITIVE, _TRUE),
        (Attribute.EXTRACTABLE, _FALSE),
        (Attribute.ENCRYPT, _TRUE if encrypt else _FALSE),
        (Attribute.DECRYPT, _FALSE),
        (Attribute.DERIVE, _TRUE if derive else _FALSE),
        (Attribute.SIGN, _FALSE),
        (Attribute.VERIFY, _FALSE),
        (Attribute.WRAP, _FALSE),
        (Attribute.UNWRAP, _FALSE),
    ]
    arr = (_Attr * len(values))()
    for slot, (attr, value) in zip(arr, values, strict=True):
        slot.type = int(attr)
        slot.pValue = ctypes.cast(ctypes.pointer(value), ctypes.c_void_p)
        slot.ulValueLen = ctypes.sizeof(value)
    return arr


# Built once: the values they point to are module constants, so they stay alive.
_TEMPLATES = {(e, d, p): _des2_template(e, d, p)
              for e in (False, True) for d in (False, True) for p in (False, True)}


class TokenKey:
    """A derived session object by handle, with the two methods the EMV steps call on
    keys (``encrypt`` as python-pkcs11's, ``destroy``), so they take either kind."""

    __slots__ = ("handle", "session")

    def __init__(self, session: Any, handle: int) -> None:  # a pkcs11 Session
        self.session, self.handle = session, handle

    def encrypt(self, data: bytes, *, mechanism: Mechanism,
                mechanism_param: bytes | None = None) -> bytes:
        return _crypt(self, data, mechanism, mechanism_param, decrypt=False)

    def destroy(self) -> None:
        _check(_library().C_DestroyObject(self.session.handle, self.handle),
               "C_DestroyObject")


def derive_des2(base: Any, data: bytes, *, encrypt: bool, derive: bool,
                private: bool = True) -> TokenKey:
    """DES3_ECB_ENCRYPT_DATA of 16 bytes under ``base`` (a python-pkcs11 key or a
    TokenKey): a DES2 session key in the token, returned by handle."""
    if len(data) != 16:
        raise CallError("DES2 derivation data is 16 bytes")
    buf = ctypes.create_string_buffer(data, len(data))
    param = DerivationData(ctypes.cast(buf, ctypes.c_void_p), len(data))
    mech = _Mechanism(int(Mechanism.DES3_ECB_ENCRYPT_DATA),
                      ctypes.cast(ctypes.pointer(param), ctypes.c_void_p),
                      ctypes.sizeof(param))
    template = _TEMPLATES[(encrypt, derive, private)]
    out = _UL()
    _check(_library().C_DeriveKey(base.session.handle, mech, base.handle, template,
                                  len(template), out), "C_DeriveKey")
    return TokenKey(base.session, out.value)


def _pack(values: list[tuple[int, Any]]) -> tuple[ctypes.Array, list[Any]]:
    """A CK_ATTRIBUTE array from (type, value) pairs: ``bytes`` (copied into a buffer),
    a ctypes scalar (CK_BBOOL, CK_ULONG) or a ctypes array (a nested attribute
    template, a mechanism list). Returns the array and the objects it points into
    (kept alive by the caller for the call)."""
    arr = (_Attr * len(values))()
    keep: list[Any] = []
    for slot, (attr, value) in zip(arr, values, strict=True):
        slot.type = int(attr)
        if isinstance(value, bytes):
            value = ctypes.create_string_buffer(value, len(value))
            slot.ulValueLen = len(value)
        else:
            slot.ulValueLen = ctypes.sizeof(value)
        keep.append(value)
        slot.pValue = ctypes.cast(ctypes.pointer(value), ctypes.c_void_p)
    return arr, keep


def working_template(*, hmac: bool) -> list[tuple[int, Any]]:
    """The attributes of a working key (``HsmBase._working``): a session object,
    sensitive, not extractable, not modifiable, not private; a GENERIC_SECRET that only
    signs (``hmac``) or an AES key that only encrypts and decrypts. The same list is the
    ``/W`` key's CKA_UNWRAP_TEMPLATE, which SoftHSM's C_UnwrapKey enforces: every
    attribute in it must be in the caller's template with the same value, else
    CKR_TEMPLATE_INCONSISTENT (tests/hsm/test_hsm_working_keys.py). MODIFIABLE false
    comes last: SoftHSM applies a template in order and refuses what follows it."""
    return [
        (Attribute.CLASS, _UL(ObjectClass.SECRET_KEY)),
        (Attribute.KEY_TYPE, _UL(PK.GENERIC_SECRET if hmac else PK.AES)),
        (Attribute.TOKEN, _FALSE),
        # not CKA_PRIVATE: SoftHSM would decrypt the value under the token key at each
        # use, ~4 us of a ~10 us HMAC (hsm/README.md, "Working keys")
        (Attribute.PRIVATE, _FALSE),
        (Attribute.SENSITIVE, _TRUE),
        (Attribute.EXTRACTABLE, _FALSE),
        (Attribute.SIGN, _TRUE if hmac else _FALSE),
        (Attribute.ENCRYPT, _FALSE if hmac else _TRUE),
        (Attribute.DECRYPT, _FALSE if hmac else _TRUE),
        (Attribute.VERIFY, _FALSE),
        (Attribute.DERIVE, _FALSE),
        (Attribute.WRAP, _FALSE),
        (Attribute.UNWRAP, _FALSE),
        (Attribute.COPYABLE, _FALSE),
        (Attribute.MODIFIABLE, _FALSE),
    ]


def create_unwrap_source(session: Any, *, label: bytes, ident: bytes, value: bytes,
                         hmac: bool, unwrap_template: bool = True) -> TokenKey:
    """The ``/W`` token object of a working key: AES, private, sensitive, not
    extractable, not copyable, not modifiable, UNWRAP only, with CKM_AES_KEY_WRAP as
    its only allowed mechanism and ``working_template`` as its CKA_UNWRAP_TEMPLATE, so
    whatever a PIN holder unwraps through it is a non-extractable, sensitive session
    key (python-pkcs11 0.10 cannot pack a nested template: direct C_CreateObject).
    ``unwrap_template=False`` leaves the template out (only for the test that shows it
    is what refuses an extractable copy)."""
    inner, keep = _pack(working_template(hmac=hmac))
    mechs = (_UL * 1)(int(Mechanism.AES_KEY_WRAP))
    values: list[tuple[int, Any]] = [
        (Attribute.CLASS, _UL(ObjectClass.SECRET_KEY)),
        (Attribute.KEY_TYPE, _UL(PK.AES)),
        (Attribute.TOKEN, _TRUE),
        (Attribute.PRIVATE, _TRUE),
        (Attribute.SENSITIVE, _TRUE),
        (Attribute.EXTRACTABLE, _FALSE),
        (Attribute.LABEL, label),
        (Attribute.ID, ident),
        (Attribute.VALUE, value),
        (Attribute.UNWRAP, _TRUE),
        (Attribute.WRAP, _FALSE),
        (Attribute.ENCRYPT, _FALSE),
        (Attribute.DECRYPT, _FALSE),
        (Attribute.SIGN, _FALSE),
        (Attribute.VERIFY, _FALSE),
        (Attribute.DERIVE, _FALSE),
        (Attribute.ALLOWED_MECHANISMS, mechs),
        (Attribute.COPYABLE, _FALSE),
    ]
    if unwrap_template:
        values.append((Attribute.UNWRAP_TEMPLATE, inner))
    values.append((Attribute.MODIFIABLE, _FALSE))
    template, keep2 = _pack(values)
    out = _UL()
    try:
        _check(_library().C_CreateObject(session.handle, template, len(template),
                                         ctypes.byref(out)), "C_CreateObject")
    finally:
        for buf in keep2:  # the key value W was copied into one of these
            if isinstance(buf, ctypes.Array) and buf._type_ is ctypes.c_char:
                ctypes.memset(buf, 0, len(buf))
    del keep
    return TokenKey(session, out.value)


def unwrap(base: Any, wrapped: bytes, values: list[tuple[int, Any]],
           mechanism: Mechanism = Mechanism.AES_KEY_WRAP, iv: bytes | None = None) -> TokenKey:
    """C_UnwrapKey of ``wrapped`` under ``base`` with the template ``values``: the new
    object by handle."""
    template, keep = _pack(values)
    mech = _Mechanism(int(mechanism), None, 0)
    if iv is not None:
        buf = ctypes.create_string_buffer(iv, len(iv))
        mech.pParameter, mech.ulParameterLen = ctypes.cast(buf, ctypes.c_void_p), len(iv)
    out = _UL()
    _check(_library().C_UnwrapKey(base.session.handle, mech, base.handle, wrapped,
                                  len(wrapped), template, len(template), ctypes.byref(out)),
           "C_UnwrapKey")
    del keep
    return TokenKey(base.session, out.value)


def unwrap_working(base: Any, wrapped: bytes, *, hmac: bool, label: bytes) -> TokenKey:
    """The working key: C_UnwrapKey (CKM_AES_KEY_WRAP, whose integrity check refuses
    any other blob) of ``wrapped`` under ``base`` (a ``/W`` key) with exactly the
    attributes its CKA_UNWRAP_TEMPLATE forces, plus the label (``HsmBase._make_work``;
    made once a second per key)."""
    values = working_template(hmac=hmac)
    values.insert(-1, (Attribute.LABEL, label))  # MODIFIABLE false stays last
    return unwrap(base, wrapped, values)


class _Stream:
    """One cipher operation left open on a session of its own (one operation per
    session in PKCS#11), with its update function and output buffer kept (a stream
    mostly sees one size: a PIN block, a MAC's chaining blocks)."""

    __slots__ = ("session", "born", "chain", "update", "out", "n")

    def __init__(self, session: int, born: float, update: Any) -> None:
        self.session, self.born, self.update = session, born, update
        self.chain = bytes(8)  # CBC: the last ciphertext block the operation produced
        self.out = ctypes.create_string_buffer(0)
        self.n = _UL()


class Streams:
    """Cipher operations kept open on the hot keys: ``C_{En,De}cryptInit`` once, then
    one ``C_{En,De}cryptUpdate`` per call.

    SoftHSM's init on a token key is most of a block's cost: it opens, locks and reads
    the token's and the object's files and decrypts the private key value (~30 µs
    against ~5 µs for the update; ``python -m benchmarks.run hsm_calls``). The update
    of a whole-block ECB or CBC operation (no padding mechanism) returns every block at
    once, so a kept-open ECB operation gives the same bytes as a fresh one. A kept-open
    CBC operation continues the chain of the previous call: ``cbc`` cancels it by
    XORing the first block with the last ciphertext block (E(P1 xor C0 xor C0)), so each
    call is a CBC with a zero IV.

    Each stream is one session of the logged-in token (nothing else runs on it) and
    is bounded: at most ``max_streams`` (least recently used closed first), each
    re-initialised after ``max_age_s``, so a key deleted by another process or another
    ``Hsm`` stops working here within that age, as it would with a fresh init. Keys
    deleted through this ``Hsm`` are forgotten at once (``forget``). A failed call
    closes its stream. Callers hold ``session.LIBRARY_LOCK``."""

    def __init__(self, session: Any, max_streams: int, max_age_s: float,
                 clock: Callable[[], float]) -> None:
        self._main = session  # the logged-in python-pkcs11 session (for its slot)
        self.max_streams, self.max_age_s, self._clock = max_streams, max_age_s, clock
        self._open: OrderedDict[tuple[int, int, bool], _Stream] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def ecb(self, key: Any, data: bytes, mechanism: Mechanism, decrypt: bool = False) -> bytes:
        """ECB (DES3 or AES) of whole blocks under a token key, kept-open operation."""
        if self.max_streams == 0:
            return _crypt(key, data, mechanism, None, decrypt)
        _whole_blocks(data, mechanism)
        ident = (key.handle, int(mechanism), decrypt)
        return self._update(ident, self._stream(ident), data)

    def cbc(self, key: Any, data: bytes) -> bytes:
        """DES3-CBC encryption of whole blocks with a zero IV (retail MAC chaining)."""
        if self.max_streams == 0:
            return _crypt(key, data, Mechanism.DES3_CBC, bytes(8), False)
        _whole_blocks(data, Mechanism.DES3_CBC)
        ident = (key.handle, int(Mechanism.DES3_CBC), False)
        stream = self._stream(ident)
        first = int.from_bytes(data[:8], "big") ^ int.from_bytes(stream.chain, "big")
        out = self._update(ident, stream, first.to_bytes(8, "big") + data[8:])
        stream.chain = out[-8:]
        return out

    def _stream(self, ident: tuple[int, int, bool]) -> _Stream:
        stream = self._open.get(ident)
        if stream is not None and self._clock() - stream.born < self.max_age_s:
            self._open.move_to_end(ident)
            return stream
        if stream is not None:
            self._close(ident)
        handle, mechanism, decrypt = ident
        lib = _library()
        session = _UL()
        _check(lib.C_OpenSession(self._main.token.slot.slot_id, _SERIAL_SESSION, None, None,
                                 ctypes.byref(session)), "C_OpenSession")
        mech = _Mechanism(mechanism, None, 0)
        iv = ctypes.create_string_buffer(8)  # zeros; CBC only
        if mechanism == int(Mechanism.DES3_CBC):
            mech.pParameter, mech.ulParameterLen = ctypes.cast(iv, ctypes.c_void_p), 8
        init = lib.C_DecryptInit if decrypt else lib.C_EncryptInit
        rv = init(session.value, mech, handle)
        if rv != 0:
            lib.C_CloseSession(session.value)
            _check(rv, "C_DecryptInit" if decrypt else "C_EncryptInit")
        stream = self._open[ident] = _Stream(
            session.value, self._clock(), lib.C_DecryptUpdate if decrypt else lib.C_EncryptUpdate)
        while len(self._open) > self.max_streams:
            self._close(next(iter(self._open)))
        return stream

    def _update(self, ident: tuple[int, int, bool], stream: _Stream, data: bytes) -> bytes:
        size = len(data)
        out, n = stream.out, stream.n
        if len(out) != size:
            out = stream.out = ctypes.create_string_buffer(size)
        n.value = size
        rv = stream.update(stream.session, data, size, out, n)
        if rv != 0 or n.value != size:
            self._close(ident)  # the token ended the operation (or it is out of step)
            _check(rv or 0x5, "C_DecryptUpdate" if ident[2] else "C_EncryptUpdate")
        if not ident[2]:
            return out.raw
        clear = out.raw
        ctypes.memset(out, 0, size)  # a clear PIN block is not left in the kept buffer
        return clear

    def forget(self, handles: set[int]) -> None:
        """Close the streams of these key objects (the key is being deleted)."""
        for ident in [i for i in self._open if i[0] in handles]:
            self._close(ident)

    def close(self) -> None:
        while self._open:
            self._close(next(iter(self._open)))

    def _close(self, ident: tuple[int, int, bool]) -> None:
        stream = self._open.pop(ident)
        _library().C_CloseSession(stream.session)  # ends its operation; nothing to report
