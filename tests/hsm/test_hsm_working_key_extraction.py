"""A raw PKCS#11 client holding the user PIN cannot get a DEK, TKN or EVK in clear
through its ``/W`` companion (hsm/README.md, "Working keys").

The attacker here is ctypes on the same library and login, with every call the
standard offers on ``/W``: unwrap asking for an extractable or token copy (or not
saying), other unwrap mechanisms (CBC_PAD would be a padding oracle on a crafted blob),
derive, encrypt / decrypt / sign, change or copy ``/W``; then, on the best copy it can
get (the working key's own attributes), read, change, copy or wrap it. Each result code
is the token's own. The control: the same ``/W`` made without its CKA_UNWRAP_TEMPLATE
gives the key in clear to the first unwrap (so the template is what refuses it)."""

from __future__ import annotations

import ctypes
import hmac
import os

import pkcs11
import pytest
from hsmkit import clear_test_key
from pkcs11 import Attribute, Mechanism, ObjectClass
from pkcs11 import KeyType as PK

from payswitch.hsm import _raw, devkeys, session
from payswitch.hsm.keys import decode_params

_UL = ctypes.c_ulong
_T, _F = ctypes.c_ubyte(1), ctypes.c_ubyte(0)
CKR_ATTRIBUTE_SENSITIVE = 0x11
CKR_ACTION_PROHIBITED = 0x1B
CKR_KEY_FUNCTION_NOT_PERMITTED = 0x68
CKR_KEY_UNEXTRACTABLE = 0x6A
CKR_MECHANISM_INVALID = 0x70
CKR_TEMPLATE_INCONSISTENT = 0xD1


class _Lib:
    """The attacker's view: the library's C functions, declared here (not _raw's)."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL(session.module_path())
        a = ctypes.POINTER(_raw._Attr)
        m = ctypes.POINTER(_raw._Mechanism)
        for name, args in (
            ("C_UnwrapKey", [_UL, m, _UL, ctypes.c_char_p, _UL, a, _UL, ctypes.POINTER(_UL)]),
            ("C_DeriveKey", [_UL, m, _UL, a, _UL, ctypes.POINTER(_UL)]),
            ("C_EncryptInit", [_UL, m, _UL]),
            ("C_DecryptInit", [_UL, m, _UL]),
            ("C_SignInit", [_UL, m, _UL]),
            ("C_SetAttributeValue", [_UL, _UL, a, _UL]),
            ("C_GetAttributeValue", [_UL, _UL, a, _UL]),
            ("C_CopyObject", [_UL, _UL, a, _UL, ctypes.POINTER(_UL)]),
            ("C_WrapKey", [_UL, m, _UL, _UL, ctypes.c_char_p, ctypes.POINTER(_UL)]),
            ("C_DestroyObject", [_UL, _UL]),
        ):
            fn = getattr(self.lib, name)
            fn.argtypes, fn.restype = args, _UL

    def unwrap(self, sess: int, w: int, blob: bytes, values: list, mech: int,
               param: bytes | None = None) -> tuple[int, int]:
        t, keep = _raw._pack(values)
        mm = _raw._Mechanism(mech, None, 0)
        if param is not None:
            buf = ctypes.create_string_buffer(param, len(param))
            mm.pParameter, mm.ulParameterLen = ctypes.cast(buf, ctypes.c_void_p), len(param)
        out = _UL()
        rv = self.lib.C_UnwrapKey(sess, mm, w, blob, len(blob), t, len(t), ctypes.byref(out))
        del keep
        return rv, out.value

    def value(self, sess: int, obj: int) -> tuple[int, bytes]:
        buf = ctypes.create_string_buffer(64)
        t = (_raw._Attr * 1)()
        t[0].type, t[0].pValue, t[0].ulValueLen = int(Attribute.VALUE), ctypes.cast(
            buf, ctypes.c_void_p), 64
        rv = self.lib.C_GetAttributeValue(sess, obj, t, 1)
        return rv, (buf.raw[:t[0].ulValueLen] if rv == 0 else b"")

    def set(self, sess: int, obj: int, values: list) -> int:
        t, keep = _raw._pack(values)
        rv = self.lib.C_SetAttributeValue(sess, obj, t, len(t))
        del keep
        return rv

    def copy(self, sess: int, obj: int, values: list) -> tuple[int, int]:
        t, keep = _raw._pack(values) if values else ((_raw._Attr * 1)(), [])
        out = _UL()
        rv = self.lib.C_CopyObject(sess, obj, t, len(values), ctypes.byref(out))
        del keep
        return rv, out.value


def _open(values: list) -> list:
    """An extractable, readable copy: what the attacker wants."""
    return [*values, (Attribute.SENSITIVE, _F), (Attribute.EXTRACTABLE, _T)]


def _with(values: list, attr: Attribute, v: ctypes.c_ubyte) -> list:
    return [(a, v if a == attr else x) for a, x in values]


def _w_and_blob(h, label: str) -> tuple[int, bytes]:
    (w,) = h._session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                   Attribute.LABEL: f"{label}/W"})
    return w.handle, bytes.fromhex(decode_params(bytes(w[Attribute.ID]))["wk"])


@pytest.mark.parametrize("which", [devkeys.TKN, devkeys.DEK, devkeys.EVK])
def test_a_pin_holder_gets_no_key_in_clear_through_w(hsm_scratch, pan_keys, which):
    h, lib = hsm_scratch, _Lib()
    sess = h._session.handle
    sign = which != devkeys.DEK
    w, blob = _w_and_blob(h, pan_keys[which])
    kt = PK.GENERIC_SECRET if sign else PK.AES
    base = [(Attribute.CLASS, _UL(ObjectClass.SECRET_KEY)), (Attribute.KEY_TYPE, _UL(kt)),
            (Attribute.TOKEN, _F)]
    ours = _raw.working_template(hmac=sign)
    kw = int(Mechanism.AES_KEY_WRAP)
    made: list[int] = []
    try:
        # 1. unwrap asking for an extractable, readable copy; 2. not saying (defaults);
        # 3. the working key's template with EXTRACTABLE true added after it; 4-6. the
        # working key's template with one right more: a token object, DERIVE, WRAP
        for values in (_open(base), base, [*ours[:-1], (Attribute.EXTRACTABLE, _T), ours[-1]],
                       _with(ours, Attribute.TOKEN, _T), _with(ours, Attribute.DERIVE, _T),
                       _with(ours, Attribute.WRAP, _T), _with(ours, Attribute.SENSITIVE, _F)):
            rv, obj = lib.unwrap(sess, w, blob, values, kw)
            if rv == 0:
                made.append(obj)
            assert rv == CKR_TEMPLATE_INCONSISTENT, hex(rv)
        # 7. other unwrap mechanisms (an attacker's blob and IV: CBC_PAD is a padding
        # oracle): only AES_KEY_WRAP is allowed on /W
        for mech, param in ((Mechanism.AES_CBC_PAD, bytes(16)), (Mechanism.AES_KEY_WRAP_PAD,
                                                                 None)):
            rv, obj = lib.unwrap(sess, w, os.urandom(48), ours, int(mech), param)
            if rv == 0:
                made.append(obj)
            assert rv == CKR_MECHANISM_INVALID, hex(rv)
        # 8. derive from /W (the branch's first design: an extractable derived copy)
        data = ctypes.create_string_buffer(32)
        param = session.DerivationData(ctypes.cast(data, ctypes.c_void_p), 32)
        mm = _raw._Mechanism(int(Mechanism.AES_ECB_ENCRYPT_DATA),
                             ctypes.cast(ctypes.pointer(param), ctypes.c_void_p),
                             ctypes.sizeof(param))
        t, keep = _raw._pack(_open([*base, (Attribute.VALUE_LEN, _UL(32))]))
        out = _UL()
        rv = lib.lib.C_DeriveKey(sess, mm, w, t, len(t), ctypes.byref(out))
        if rv == 0:
            made.append(out.value)
        assert rv == CKR_KEY_FUNCTION_NOT_PERMITTED, hex(rv)
        # 9. /W as a cipher or MAC key
        ecb = _raw._Mechanism(int(Mechanism.AES_ECB), None, 0)
        hm = _raw._Mechanism(int(Mechanism.SHA256_HMAC), None, 0)
        assert lib.lib.C_EncryptInit(sess, ecb, w) == CKR_KEY_FUNCTION_NOT_PERMITTED
        assert lib.lib.C_DecryptInit(sess, ecb, w) == CKR_KEY_FUNCTION_NOT_PERMITTED
        assert lib.lib.C_SignInit(sess, hm, w) == CKR_KEY_FUNCTION_NOT_PERMITTED
        # 10. read /W; change it (DERIVE, no template); copy it (plain, with DERIVE)
        assert lib.value(sess, w)[0] == CKR_ATTRIBUTE_SENSITIVE
        # (not modifiable: SoftHSM refuses any change with CKR_ACTION_PROHIBITED)
        assert lib.set(sess, w, [(Attribute.DERIVE, _T)]) == CKR_ACTION_PROHIBITED
        assert lib.set(sess, w, [(Attribute.UNWRAP_TEMPLATE, (_raw._Attr * 0)())]) == (
            CKR_ACTION_PROHIBITED)
        for values in ([], [(Attribute.DERIVE, _T)], [(Attribute.TOKEN, _F)]):
            rv, obj = lib.copy(sess, w, values)
            if rv == 0:
                made.append(obj)
            assert rv == CKR_ACTION_PROHIBITED, hex(rv)
        # 11. the best copy there is (the working key's template): usable, never readable
        rv, work = lib.unwrap(sess, w, blob, ours, kw)
        assert rv == 0
        made.append(work)
        assert lib.value(sess, work)[0] == CKR_ATTRIBUTE_SENSITIVE
        assert lib.set(sess, work, [(Attribute.EXTRACTABLE, _T)]) == CKR_ACTION_PROHIBITED
        assert lib.set(sess, work, [(Attribute.SENSITIVE, _F)]) == CKR_ACTION_PROHIBITED
        rv, obj = lib.copy(sess, work, [(Attribute.EXTRACTABLE, _T)])
        if rv == 0:
            made.append(obj)
        assert rv == CKR_ACTION_PROHIBITED, hex(rv)
        kek = h._session.create_object({
            Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: PK.AES,
            Attribute.TOKEN: False, Attribute.VALUE: os.urandom(32), Attribute.WRAP: True})
        try:  # wrapped under a key the attacker knows
            n = _UL(64)
            buf = ctypes.create_string_buffer(64)
            mm = _raw._Mechanism(kw, None, 0)
            assert lib.lib.C_WrapKey(sess, mm, kek.handle, work, buf, ctypes.byref(n)) == (
                CKR_KEY_UNEXTRACTABLE)
        finally:
            kek.destroy()
        if sign:  # and it is the key (so the refusals above are about this key)
            assert _raw.hmac_sha256(_raw.TokenKey(h._session, work), b"x") == hmac.new(
                clear_test_key(which), b"x", "sha256").digest()
    finally:
        for obj in made:
            lib.lib.C_DestroyObject(sess, obj)


@pytest.mark.parametrize("template", [True, False])
def test_the_unwrap_template_is_what_refuses_an_extractable_copy(hsm_scratch, template):
    """Control: a /W made as the import makes it, from a W the test knows, with and
    without its CKA_UNWRAP_TEMPLATE. Without it, SoftHSM hands the key out in clear."""
    h, lib = hsm_scratch, _Lib()
    sess = h._session.handle
    value, w_value = clear_test_key(devkeys.TKN), os.urandom(32)
    wk = h._session.create_object({
        Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: PK.AES,
        Attribute.TOKEN: False, Attribute.VALUE: w_value, Attribute.WRAP: True})
    kk = h._session.create_object({
        Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: PK.GENERIC_SECRET,
        Attribute.TOKEN: False, Attribute.VALUE: value, Attribute.EXTRACTABLE: True})
    blob = bytes(wk.wrap_key(kk, mechanism=Mechanism.AES_KEY_WRAP))
    wk.destroy()
    kk.destroy()
    w = _raw.create_unwrap_source(h._session, label=b"control/W", ident=b"control",
                                  value=w_value, hmac=True, unwrap_template=template)
    base = [(Attribute.CLASS, _UL(ObjectClass.SECRET_KEY)),
            (Attribute.KEY_TYPE, _UL(PK.GENERIC_SECRET)), (Attribute.TOKEN, _F)]
    try:
        rv, obj = lib.unwrap(sess, w.handle, blob, _open(base), int(Mechanism.AES_KEY_WRAP))
        if template:
            assert rv == CKR_TEMPLATE_INCONSISTENT, hex(rv)
        else:
            assert rv == 0
            assert lib.value(sess, obj) == (0, value)  # the key, in clear
            lib.lib.C_DestroyObject(sess, obj)
    finally:
        w.destroy()
    with pytest.raises(pkcs11.PKCS11Error):
        h._session.get_key(label="control/W")
