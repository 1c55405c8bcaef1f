"""Typed errors of the hsm package. Messages never carry key values, PINs or PANs."""

from __future__ import annotations


class HsmError(Exception):
    """Base class of every error raised by payswitch.hsm."""


class HsmConfigError(HsmError):
    """No module, no token, no PIN, or a token made with another configuration."""


class KeyNotFoundError(HsmError):
    """No key with that label in the token."""


class KeyExistsError(HsmError):
    """A key with that label is already in the token."""


class KeyUsageError(HsmError):
    """The key's type does not allow this operation (a PVK cannot encrypt PIN blocks...)."""


class KcvMismatchError(HsmError):
    """A key or component did not match its expected key check value."""


class PinBlockError(HsmError):
    """A PIN block that is malformed, truncated or does not decode under its format."""


class HsmInputError(HsmError):
    """Bad input to an operation (length, digits, format)."""


class HsmBusyError(HsmError):
    """Too many operations waiting for the HSM (the bounded queue is full)."""


class HsmDeviceError(HsmError):
    """The PKCS#11 library reported an error we did not expect."""


class CommandNotAllowedError(HsmError):
    """The token's role does not allow this command (e.g. encrypt_pin on the switch's)."""


class PinVerifyLimitError(HsmError):
    """Too many PIN verifications for one card in the window (switch role)."""


class MacLengthError(HsmInputError):
    """A MAC whose length is not the one fixed for its key."""
