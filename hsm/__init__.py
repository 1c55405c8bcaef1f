"""payswitch.hsm: a payment HSM command set on PKCS#11 (SoftHSM2 via python-pkcs11).

Start here: ``Hsm`` (sync, thread-safe), ``AsyncHsm`` (trio), ``make_token`` /
``config_from_env`` (tokens), ``devkeys`` (the documented TEST key set). See README.md.
"""

from payswitch.hsm import emv
from payswitch.hsm._base import Policy
from payswitch.hsm.aio import AsyncHsm
from payswitch.hsm.core import CVV2_SERVICE_CODE, ICVV_SERVICE_CODE, Hsm
from payswitch.hsm.errors import (
    CommandNotAllowedError,
    HsmBusyError,
    HsmConfigError,
    HsmDeviceError,
    HsmError,
    HsmInputError,
    KcvMismatchError,
    KeyExistsError,
    KeyNotFoundError,
    KeyUsageError,
    MacLengthError,
    PinBlockError,
    PinVerifyLimitError,
)
from payswitch.hsm.keys import Alg, KeyInfo, KeyType
from payswitch.hsm.token import TokenConfig, config_from_env, make_token

__all__ = [
    "CVV2_SERVICE_CODE",
    "CommandNotAllowedError",
    "MacLengthError",
    "PinVerifyLimitError",
    "ICVV_SERVICE_CODE",
    "Alg",
    "AsyncHsm",
    "Hsm",
    "HsmBusyError",
    "HsmConfigError",
    "HsmDeviceError",
    "HsmError",
    "HsmInputError",
    "KcvMismatchError",
    "KeyExistsError",
    "KeyInfo",
    "KeyNotFoundError",
    "KeyType",
    "KeyUsageError",
    "PinBlockError",
    "Policy",
    "TokenConfig",
    "config_from_env",
    "emv",
    "make_token",
]
