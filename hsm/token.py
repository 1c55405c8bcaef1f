"""SoftHSM2 tokens for development, tests and the demo; the PKCS#11 module path.

A token lives in a directory holding ``softhsm2.conf`` and ``tokens/``. SoftHSM reads
``SOFTHSM2_CONF`` when the library is initialised (the first ``pkcs11.lib(...)`` in the
process), so ``make_token`` / ``use_token`` set it before anything loads the library,
and every token of one process must live under the same conf file (one tokendir,
several labels).

PINs come from the environment (``PAYSWITCH_HSM_PIN``, ``PAYSWITCH_HSM_SO_PIN``). The
dev defaults below exist only for throwaway test and demo tokens.
"""

from __future__ import annotations

import glob
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from payswitch.hsm.errors import HsmConfigError

#: Dev/test defaults: never use these for a token holding real keys.
DEV_PIN = "1234"
DEV_SO_PIN = "5678"
DEFAULT_LABEL = "payswitch"

ENV_CONF = "SOFTHSM2_CONF"
ENV_TOKEN = "PAYSWITCH_HSM_TOKEN"
ENV_PIN = "PAYSWITCH_HSM_PIN"
ENV_SO_PIN = "PAYSWITCH_HSM_SO_PIN"
ENV_MODULE = "PAYSWITCH_HSM_MODULE"
ENV_ROLE = "PAYSWITCH_HSM_ROLE"

_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/*/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)


@dataclass(frozen=True)
class TokenConfig:
    """Where a token is and how to log in. ``repr`` never shows the PIN."""

    module: str
    conf: str
    label: str
    pin: str
    # The token's role (hsm/roles.py): bound into the token at its first open; a later
    # open asking for another role is refused.
    role: str = "switch"
    # Known at setup only (make_token, or PAYSWITCH_HSM_SO_PIN for a key ceremony): its
    # PBKDF2 hash is kept in the role object so `Hsm.ceremony(so_pin)` can check it.
    so_pin: str | None = None

    def __repr__(self) -> str:
        return (f"TokenConfig(module={self.module!r}, conf={self.conf!r}, "
                f"label={self.label!r}, role={self.role!r})")


def module_path() -> str:
    """Path of libsofthsm2.so: ``PAYSWITCH_HSM_MODULE`` or the usual install places."""
    explicit = os.environ.get(ENV_MODULE)
    if explicit:
        if not os.path.exists(explicit):
            raise HsmConfigError(f"{ENV_MODULE} points to a missing file: {explicit}")
        return explicit
    for pattern in _MODULE_CANDIDATES:
        for path in sorted(glob.glob(pattern)):
            return path
    raise HsmConfigError("libsofthsm2.so not found: install softhsm2 (make setup)")


def write_conf(directory: str | os.PathLike[str]) -> str:
    """Write ``softhsm2.conf`` with its own tokendir under ``directory``; return its path."""
    d = Path(directory).resolve()
    tokens = d / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = d / "softhsm2.conf"
    if not conf.exists():
        conf.write_text(
            f"directories.tokendir = {tokens}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n"
        )
    return str(conf)


def _activate_conf(conf: str) -> None:
    current = os.environ.get(ENV_CONF)
    if current and os.path.abspath(current) != os.path.abspath(conf):
        import sys

        if "pkcs11" in sys.modules and _library_loaded():
            raise HsmConfigError(
                "SoftHSM is already initialised with another SOFTHSM2_CONF in this process; "
                "put all tokens of one process under one directory"
            )
    os.environ[ENV_CONF] = conf


def _library_loaded() -> bool:
    from payswitch.hsm import session as _session

    return _session.library_loaded()


def token_exists(conf: str, label: str) -> bool:
    out = subprocess.run(
        ["softhsm2-util", "--show-slots"],
        env={**os.environ, ENV_CONF: conf},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return any(
        line.strip().startswith("Label:") and line.split(":", 1)[1].strip() == label
        for line in out.stdout.splitlines()
    )


def make_token(
    directory: str | os.PathLike[str],
    label: str = DEFAULT_LABEL,
    pin: str | None = None,
    so_pin: str | None = None,
    role: str = "switch",
) -> TokenConfig:
    """Create (if missing) a token ``label`` in ``directory``; return how to open it.
    ``role`` (hsm/roles.py) is bound into the token the first time it is opened.

    PINs: the arguments, else ``PAYSWITCH_HSM_PIN`` / ``PAYSWITCH_HSM_SO_PIN``, else the
    dev defaults (throwaway tokens only). Idempotent: an existing token is kept.
    """
    pin = pin or os.environ.get(ENV_PIN) or DEV_PIN
    so_pin = so_pin or os.environ.get(ENV_SO_PIN) or DEV_SO_PIN
    conf = write_conf(directory)
    _activate_conf(conf)
    if not token_exists(conf, label):
        res = subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", label,
             "--so-pin", so_pin, "--pin", pin],
            env={**os.environ, ENV_CONF: conf},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if res.returncode != 0:
            # softhsm2-util does not echo PINs; its message is safe to show.
            raise HsmConfigError(f"softhsm2-util --init-token failed: {res.stderr.strip()}")
    return TokenConfig(module=module_path(), conf=conf, label=label, pin=pin, role=role,
                       so_pin=so_pin)


def config_from_env(label: str | None = None, role: str | None = None) -> TokenConfig:
    """The token named by the environment: ``SOFTHSM2_CONF``, ``PAYSWITCH_HSM_TOKEN``
    (label, default ``payswitch``), ``PAYSWITCH_HSM_PIN`` (required),
    ``PAYSWITCH_HSM_ROLE`` (default ``switch``; must match the role the token was set
    up with; ``role`` overrides it: the simulators ask for ``personalisation``) and,
    for a key ceremony only, ``PAYSWITCH_HSM_SO_PIN``."""
    conf = os.environ.get(ENV_CONF)
    if not conf:
        raise HsmConfigError(f"{ENV_CONF} is not set (run `payswitch hsm init`)")
    pin = os.environ.get(ENV_PIN)
    if not pin:
        raise HsmConfigError(f"{ENV_PIN} is not set")
    return TokenConfig(
        module=module_path(),
        conf=conf,
        label=label or os.environ.get(ENV_TOKEN, DEFAULT_LABEL),
        pin=pin,
        role=role or os.environ.get(ENV_ROLE) or "switch",
        so_pin=os.environ.get(ENV_SO_PIN) or None,
    )
