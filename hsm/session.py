"""The one PKCS#11 library of the process, its lock, and the logged-in sessions.

python-pkcs11 initialises SoftHSM with ``C_Initialize(NULL)``: SoftHSM then takes no
locks of its own, while python-pkcs11 releases the GIL during every call. Two threads
in the library at once crash the process. So every call into the library, for every
token, goes through ``LIBRARY_LOCK``: one thread at a time, process-wide. On 2 cores
more threads gave no more throughput anyway (see notes/softhsm-pkcs11.md).

Login is per token and closing the session that logged in logs every session out, so
each token gets one long-lived session, opened once and kept (``TokenSession``).
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import TYPE_CHECKING

import pkcs11

from payswitch.hsm.errors import HsmConfigError

if TYPE_CHECKING:  # the class; pkcs11.lib itself is a loader function
    from pkcs11._pkcs11 import lib as Pkcs11Lib

LIBRARY_LOCK = threading.RLock()

_lib: Pkcs11Lib | None = None
_lib_path: str | None = None
_lib_conf: str | None = None


def library_loaded() -> bool:
    return _lib is not None


def module_path() -> str:
    """The path of the loaded PKCS#11 module (hsm/_raw.py calls it directly)."""
    if _lib_path is None:
        raise HsmConfigError("the PKCS#11 library is not loaded")
    return _lib_path


def load_library(module: str, conf: str) -> Pkcs11Lib:
    """Load the PKCS#11 module once per process, after pointing SoftHSM at ``conf``."""
    global _lib, _lib_path, _lib_conf
    with LIBRARY_LOCK:
        if _lib is not None:
            if os.path.abspath(conf) != os.path.abspath(_lib_conf or ""):
                raise HsmConfigError(
                    "the PKCS#11 library is already loaded with another SOFTHSM2_CONF; "
                    "keep every token of one process under one directory"
                )
            if module != _lib_path:
                raise HsmConfigError("the PKCS#11 library is already loaded from another path")
            return _lib
        os.environ["SOFTHSM2_CONF"] = conf
        _lib = pkcs11.lib(module)
        _lib_path, _lib_conf = module, conf
        return _lib


def reinitialize() -> None:
    """Let SoftHSM see tokens created after it was loaded (``softhsm2-util`` runs in
    another process). Only call when no ``Hsm`` of this process is open."""
    with LIBRARY_LOCK:
        if _lib is not None:
            _lib.reinitialize()


class DerivationData(ctypes.Structure):
    """CK_KEY_DERIVATION_STRING_DATA {pData, ulLen} (made once: a ctypes class built per
    call cost ~20 us and garbage-collector work)."""

    _fields_ = [("pData", ctypes.c_void_p), ("ulLen", ctypes.c_ulong)]


def derivation_param(data: bytes) -> tuple[bytes, ctypes.Array]:
    """A packed ``CK_KEY_DERIVATION_STRING_DATA`` for *_ECB_ENCRYPT_DATA.

    python-pkcs11 packs it only for AES_ECB_ENCRYPT_DATA; for DES3 it passes bytes as
    they are. Returns (packed struct, buffer): keep the buffer alive during the call.
    """
    buf = ctypes.create_string_buffer(data, len(data))
    return bytes(DerivationData(ctypes.cast(buf, ctypes.c_void_p), len(data))), buf


# One logged-in session per token, shared by every Hsm of the process on that token.
_sessions: dict[tuple[str, str], list] = {}  # (conf, label) -> [session, refcount]


def open_session(config) -> pkcs11.Session:
    """The long-lived logged-in R/W session of ``config``'s token (reference counted)."""
    key = (os.path.abspath(config.conf), config.label)
    with LIBRARY_LOCK:
        entry = _sessions.get(key)
        if entry is not None:
            entry[1] += 1
            return entry[0]
        lib = load_library(config.module, config.conf)
        try:
            token = lib.get_token(token_label=config.label)
        except pkcs11.NoSuchToken:
            # Made by softhsm2-util after the library loaded: look again.
            if len(_sessions) == 0:
                lib.reinitialize()
            try:
                token = lib.get_token(token_label=config.label)
            except pkcs11.NoSuchToken:
                raise HsmConfigError(
                    f"no token labelled {config.label!r} (SoftHSM sees tokens made after "
                    "it loaded only while no session is open: make every token first)"
                ) from None
        try:
            sess = token.open(user_pin=config.pin, rw=True)
        except pkcs11.PinIncorrect:
            raise HsmConfigError(f"wrong PIN for token {config.label!r}") from None
        except pkcs11.UserAlreadyLoggedIn:
            raise HsmConfigError(f"token {config.label!r} is logged in elsewhere") from None
        _sessions[key] = [sess, 1]
        return sess


def release_session(config) -> None:
    key = (os.path.abspath(config.conf), config.label)
    with LIBRARY_LOCK:
        entry = _sessions.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _sessions[key]
            entry[0].close()
