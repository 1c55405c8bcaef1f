"""The payment-HSM command set on PKCS#11: one ``Hsm`` object per token.

Every public method takes the process-wide library lock (see ``session.py``), so the
object is safe to share between threads; from trio use ``AsyncHsm`` (``aio.py``), which
runs each call in a worker thread and never blocks the event loop.

Verifications return ``bool`` (the switch turns False into a response code); misuse
raises a typed ``HsmError``. No message ever carries a key, PIN, PIN block or PAN.
"""

from __future__ import annotations

from payswitch.hsm._base import CVV2_SERVICE_CODE, ICVV_SERVICE_CODE, MAX_MAC_DATA_BYTES
from payswitch.hsm.card import CardOps
from payswitch.hsm.cryptogram import EmvOps
from payswitch.hsm.keystore import KeyStoreOps
from payswitch.hsm.mac import MacOps
from payswitch.hsm.pan import PanOps
from payswitch.hsm.pin import PinOps
from payswitch.hsm.token import config_from_env

__all__ = ["CVV2_SERVICE_CODE", "ICVV_SERVICE_CODE", "MAX_MAC_DATA_BYTES", "Hsm"]


class Hsm(KeyStoreOps, PinOps, CardOps, MacOps, EmvOps, PanOps):
    """One logged-in token and the payment-HSM operations on its keys.

    Each group of operations lives in its own module (keystore, pin, card, mac,
    cryptogram, pan); the shared internals in ``_base``.
    """

    @classmethod
    def from_env(cls, label: str | None = None) -> Hsm:
        return cls(config_from_env(label))
