"""Key types, their algorithms and the operations each may be used for.

A key lives in the token as one or two secret-key objects. The main object carries the
label the caller chose; a companion object (label + ``/L`` or ``/V``) holds what a
standard PKCS#11 mechanism cannot compute from the main key alone:

* ``/L`` = KL||KL (a double-length key whose halves are equal is single DES): the
  left half alone, for single-DES steps of CVV (CVK A) and retail MAC (CBC with KL).
* ``/V`` = BDK xor C0C0C0C000000000C0C0C0C000000000, the second half of the DUKPT IPEK.

The type, algorithm and role are written into CKA_ID as ``ps1|TYPE|ALG|ROLE``, so the
token itself says what each key is (``payswitch hsm list`` reads it back).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from payswitch.hsm.errors import HsmInputError, KeyUsageError


class KeyType(enum.StrEnum):
    ZMK = "ZMK"  # zone master key: keys exchanged with a peer travel under it
    KEK = "KEK"  # key-encrypting key (TDES or AES), same role inside our own estate
    ZPK = "ZPK"  # zone PIN key: PIN blocks on a network link
    TPK = "TPK"  # terminal PIN key: PIN blocks from a terminal
    PVK = "PVK"  # PIN verification key (Visa PVV, IBM 3624 offset)
    CVK = "CVK"  # card verification key pair A||B (CVV, CVV2, iCVV)
    BDK = "BDK"  # DUKPT base derivation key (TDES, ANSI X9.24-1)
    MK_AC = "MK-AC"  # EMV issuer master key for application cryptograms
    TAK = "TAK"  # terminal authentication (MAC) key
    ZAK = "ZAK"  # zone authentication (MAC) key for a network link
    DEK = "DEK"  # AES data key: PAN encryption at rest (AES-GCM)
    TKN = "TKN"  # HMAC-SHA256 key: stable PAN token
    EVK = "EVK"  # HMAC-SHA256 key: the ledger's event chain MAC


class Alg(enum.StrEnum):
    TDES = "TDES"  # double-length (16-byte) triple DES
    AES = "AES"
    HMAC = "HMAC"  # generic secret for SHA-256 HMAC


class Op(enum.Enum):
    PIN_IN = "decrypt a PIN block"
    PIN_OUT = "encrypt a PIN block"
    PIN_VERIFY = "verify a PIN (PVV / IBM 3624)"
    CVV = "CVV / CVV2 / iCVV"
    DUKPT = "DUKPT derivation"
    EMV_AC = "EMV ARQC / ARPC"
    MAC = "MAC"
    WRAP = "import/export keys"
    PAN_ENCRYPT = "PAN encryption"
    PAN_TOKEN = "PAN token"
    EVENT_MAC = "event chain MAC"


ALGS: dict[KeyType, tuple[Alg, ...]] = {
    KeyType.ZMK: (Alg.TDES,),
    KeyType.KEK: (Alg.TDES, Alg.AES),
    KeyType.ZPK: (Alg.TDES, Alg.AES),  # AES: ISO 9564 format 4 PIN blocks
    KeyType.TPK: (Alg.TDES, Alg.AES),
    KeyType.PVK: (Alg.TDES,),
    KeyType.CVK: (Alg.TDES,),
    KeyType.BDK: (Alg.TDES, Alg.AES),  # AES: X9.24-3 AES DUKPT, AES-128 BDK
    KeyType.MK_AC: (Alg.TDES,),
    KeyType.TAK: (Alg.TDES, Alg.AES),
    KeyType.ZAK: (Alg.TDES, Alg.AES),
    KeyType.DEK: (Alg.AES,),
    KeyType.TKN: (Alg.HMAC,),
    KeyType.EVK: (Alg.HMAC,),
}

USAGE: dict[KeyType, frozenset[Op]] = {
    KeyType.ZMK: frozenset({Op.WRAP}),
    KeyType.KEK: frozenset({Op.WRAP}),
    KeyType.ZPK: frozenset({Op.PIN_IN, Op.PIN_OUT}),
    # A terminal's PIN pad encrypts under its TPK; the switch only decrypts with it.
    # PIN_OUT is allowed so a simulated terminal can build its blocks with its own token.
    KeyType.TPK: frozenset({Op.PIN_IN, Op.PIN_OUT}),
    KeyType.PVK: frozenset({Op.PIN_VERIFY}),
    KeyType.CVK: frozenset({Op.CVV}),
    KeyType.BDK: frozenset({Op.DUKPT}),
    KeyType.MK_AC: frozenset({Op.EMV_AC}),
    KeyType.TAK: frozenset({Op.MAC}),
    KeyType.ZAK: frozenset({Op.MAC}),
    KeyType.DEK: frozenset({Op.PAN_ENCRYPT}),
    KeyType.TKN: frozenset({Op.PAN_TOKEN}),
    KeyType.EVK: frozenset({Op.EVENT_MAC}),
}

# Companion objects each (type, alg) needs: "L" (KL||KL) or "V" (BDK variant).
COMPANIONS: dict[tuple[KeyType, Alg], tuple[str, ...]] = {
    (KeyType.CVK, Alg.TDES): ("L",),
    (KeyType.TAK, Alg.TDES): ("L",),
    (KeyType.ZAK, Alg.TDES): ("L",),
    (KeyType.BDK, Alg.TDES): ("V",),
}

KEY_LENGTHS: dict[Alg, tuple[int, ...]] = {
    Alg.TDES: (16,),
    Alg.AES: (16, 24, 32),  # an AES BDK: 16 (see core.Hsm._store)
    Alg.HMAC: (32,),
}
DEFAULT_LENGTH: dict[Alg, int] = {Alg.TDES: 16, Alg.AES: 32, Alg.HMAC: 32}

BDK_VARIANT = bytes.fromhex("C0C0C0C000000000C0C0C0C000000000")

_LABEL_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def check_label(label: str) -> str:
    if not isinstance(label, str) or not _LABEL_RE.match(label):
        raise HsmInputError("key label must be 1-64 chars of A-Z a-z 0-9 . _ : -")
    return label


def parse_type(name: str | KeyType) -> KeyType:
    try:
        return KeyType(str(name).upper().replace("_", "-"))
    except ValueError:
        raise HsmInputError(
            f"unknown key type {name!r}; one of {', '.join(t.value for t in KeyType)}"
        ) from None


def parse_alg(key_type: KeyType, alg: str | Alg | None) -> Alg:
    allowed = ALGS[key_type]
    if alg is None:
        return allowed[0]
    try:
        a = Alg(str(alg).upper())
    except ValueError:
        raise HsmInputError(f"unknown algorithm {alg!r}") from None
    if a not in allowed:
        raise HsmInputError(f"a {key_type} key cannot be {a}")
    return a


@dataclass(frozen=True)
class KeyInfo:
    """What ``list`` shows: never the key value."""

    label: str
    key_type: KeyType
    alg: Alg
    kcv: str  # 6 hex digits, computed in the token
    dec_table: str | None = None  # PVK: the IBM 3624 decimalisation table
    mac_length: int | None = None  # TAK/ZAK: the only MAC length generated / accepted

    @property
    def usage(self) -> str:
        return ", ".join(sorted(op.value for op in USAGE[self.key_type]))


DEFAULT_DEC_TABLE = "0123456789012345"
DEFAULT_MAC_LENGTH = 8


def check_dec_table(table: str) -> str:
    """16 decimal digits using every digit 0-9: a table that maps onto fewer digits
    shrinks the natural PIN's space (and is the tool of the decimalisation attack)."""
    if (not isinstance(table, str) or len(table) != 16 or not table.isdigit()
            or not table.isascii() or len(set(table)) != 10):
        raise HsmInputError("decimalisation table: 16 decimal digits using all of 0-9")
    return table


def key_params(key_type: KeyType, alg: Alg, dec_table: str | None,
               mac_length: int | None) -> dict[str, str]:
    """The per-key parameters kept with the key in the token (CKA_ID, not modifiable):
    a PVK's decimalisation table, a TAK/ZAK's MAC length."""
    out: dict[str, str] = {}
    if dec_table is not None and key_type is not KeyType.PVK:
        raise HsmInputError("only a PVK has a decimalisation table")
    if mac_length is not None and key_type not in (KeyType.TAK, KeyType.ZAK):
        raise HsmInputError("only a TAK or ZAK has a MAC length")
    if key_type is KeyType.PVK:
        out["dt"] = check_dec_table(dec_table or DEFAULT_DEC_TABLE)
    if key_type in (KeyType.TAK, KeyType.ZAK):
        n = DEFAULT_MAC_LENGTH if mac_length is None else mac_length
        hi = 8 if alg is Alg.TDES else 16
        if not isinstance(n, int) or not 4 <= n <= hi:
            raise HsmInputError(f"MAC length is 4 to {hi} bytes")
        out["ml"] = str(n)
    return out


def encode_id(key_type: KeyType, alg: Alg, role: str, kcv: str = "",
              params: dict[str, str] | None = None) -> bytes:
    """CKA_ID: ``ps1|TYPE|ALG|ROLE|KCV[|k=v;k=v]`` (the KCV computed in the token at
    creation; the per-key parameters of ``key_params``)."""
    base = f"ps1|{key_type.value}|{alg.value}|{role}|{kcv}"
    if params:
        base += "|" + ";".join(f"{k}={v}" for k, v in sorted(params.items()))
    return base.encode()


def _split_id(raw: bytes) -> list[str] | None:
    try:
        parts = raw.decode().split("|")
    except UnicodeDecodeError:
        return None
    return parts if len(parts) in (5, 6) and parts[0] == "ps1" else None


def decode_id(raw: bytes) -> tuple[KeyType, Alg, str, str] | None:
    parts = _split_id(raw)
    if parts is None:
        return None
    try:
        return KeyType(parts[1]), Alg(parts[2]), parts[3], parts[4]
    except ValueError:
        return None


def decode_params(raw: bytes) -> dict[str, str]:
    parts = _split_id(raw)
    if parts is None or len(parts) < 6 or not parts[5]:
        return {}
    return dict(kv.split("=", 1) for kv in parts[5].split(";"))


def require(key_type: KeyType, op: Op, label: str) -> None:
    if op not in USAGE[key_type]:
        raise KeyUsageError(f"key {label!r} is a {key_type}: not allowed to {op.value}")
