"""ANSI X9.143 / TR-31 key blocks: the header, the key usage each key type travels
under, and the key derivation data (pure functions; the keys stay in the token).

Version B: TDES key block protection key (KBPK), KBEK / KBAK derived with TDES-CMAC
(counter 1 and 2), key data TDES-CBC encrypted with the 8-byte MAC as IV, MAC =
TDES-CMAC under KBAK over header || clear key data. Version D: the same with AES
(AES-CMAC derivation, 16-byte MAC). Checked against psec.tr31 (tests/hsm/test_hsm_tr31.py).

A block: 16-character header (version, 4-digit total length, key usage, algorithm,
mode of use, key version number, exportability, number of optional blocks, reserved),
then the encrypted key data and the MAC in hex. Optional blocks are not supported.
"""

from __future__ import annotations

from dataclasses import dataclass

from payswitch.hsm.errors import HsmInputError
from payswitch.hsm.keys import Alg, KeyType

HEADER_LEN = 16
MAX_BLOCK_LEN = 9992

# Key usage (and mode of use) each key type travels under; the first is what we send.
USAGES: dict[KeyType, tuple[tuple[str, str], ...]] = {
    KeyType.ZPK: (("P0", "B"),),
    KeyType.TPK: (("P0", "B"),),
    KeyType.ZAK: (("M3", "C"), ("M6", "C"), ("M1", "C")),
    KeyType.TAK: (("M3", "C"), ("M6", "C"), ("M1", "C")),
    KeyType.ZMK: (("K0", "B"),),
    KeyType.KEK: (("K0", "B"), ("K1", "B")),
    KeyType.BDK: (("B0", "X"),),
    KeyType.PVK: (("V2", "C"), ("V1", "C")),
    KeyType.CVK: (("C0", "C"),),
    KeyType.MK_AC: (("E0", "X"),),
    KeyType.DEK: (("D0", "B"),),
}
ALG_CODES = {Alg.TDES: "T", Alg.AES: "A", Alg.HMAC: "H"}


@dataclass(frozen=True)
class Header:
    version: str  # "B" (TDES KBPK) or "D" (AES KBPK)
    length: int  # of the whole block, in characters
    usage: str
    algorithm: str
    mode: str
    key_version: str
    exportability: str

    def dump(self) -> str:
        return (f"{self.version}{self.length:04d}{self.usage}{self.algorithm}{self.mode}"
                f"{self.key_version}{self.exportability}00" + "00")


def header_for(key_type: KeyType, alg: Alg, version: str, length: int,
               exportability: str = "N", key_version: str = "00") -> Header:
    usage, mode = USAGES[key_type][0]
    if key_type in (KeyType.ZAK, KeyType.TAK) and alg is Alg.AES:
        usage = "M6"  # AES-CMAC
    if exportability not in ("E", "N", "S"):
        raise HsmInputError("exportability is E, N or S")
    return Header(version, length, usage, ALG_CODES[alg], mode, key_version, exportability)


def parse(block: str) -> tuple[Header, bytes, bytes]:
    """(header, encrypted key data, MAC) of a key block; structure checked only."""
    if not isinstance(block, str) or not HEADER_LEN + 32 <= len(block) <= MAX_BLOCK_LEN:
        raise HsmInputError("a TR-31 key block is 48 to 9992 characters")
    if not block.isascii():
        raise HsmInputError("a TR-31 key block is ASCII")
    version = block[0]
    if version not in ("B", "D"):
        raise HsmInputError("TR-31 key block version must be B (TDES) or D (AES)")
    if not block[1:5].isdigit() or int(block[1:5]) != len(block):
        raise HsmInputError("TR-31 key block length field does not match")
    if block[12:14] != "00":
        raise HsmInputError("TR-31 optional blocks are not supported")
    h = Header(version, len(block), block[5:7], block[7], block[8], block[9:11], block[11])
    mac_hex = 16 if version == "B" else 32
    body = block[HEADER_LEN:]
    try:
        data, mac = bytes.fromhex(body[:-mac_hex]), bytes.fromhex(body[-mac_hex:])
    except ValueError:
        raise HsmInputError("TR-31 key data is not hex") from None
    bs = 8 if version == "B" else 16
    if not data or len(data) % bs:
        raise HsmInputError("TR-31 key data is not whole cipher blocks")
    return h, data, mac


def check_usage(h: Header, key_type: KeyType, alg: Alg) -> None:
    """The block must say what we import it as: its usage binds the key to one job."""
    if (h.usage, h.mode) not in USAGES.get(key_type, ()) and not (
            key_type in (KeyType.ZAK, KeyType.TAK) and h.usage == "M6"):
        raise HsmInputError(f"key block usage {h.usage}/{h.mode} is not a {key_type}")
    if h.algorithm != ALG_CODES[alg]:
        raise HsmInputError(f"key block algorithm {h.algorithm} is not {alg}")


def derivation_data(version: str, kbpk_len: int, usage: int, counter: int) -> bytes:
    """The 8-byte KDF input: counter, usage (0000 encryption, 0001 MAC), 00, algorithm,
    length in bits (X9.143 / TR-31 key derivation)."""
    if version == "B":
        alg, bits = (0x0000, 128) if kbpk_len == 16 else (0x0001, 192)
    else:
        alg, bits = {16: (0x0002, 128), 24: (0x0003, 192), 32: (0x0004, 256)}[kbpk_len]
    return (bytes([counter]) + usage.to_bytes(2, "big") + b"\x00" + alg.to_bytes(2, "big")
            + bits.to_bytes(2, "big"))


def cmac_subkeys(l_block: bytes) -> tuple[bytes, bytes]:
    """CMAC subkeys K1, K2 from L = E_K(0) (NIST SP 800-38B)."""
    rb = 0x1B if len(l_block) == 8 else 0x87
    n = len(l_block) * 8

    def dbl(b: bytes) -> bytes:
        v = int.from_bytes(b, "big") << 1
        if v >> n:
            v = (v & ((1 << n) - 1)) ^ rb
        return v.to_bytes(len(b), "big")

    k1 = dbl(l_block)
    return k1, dbl(k1)


def cmac_block_input(data: bytes, k1: bytes, k2: bytes, bs: int) -> bytes:
    """One CMAC block input for a message of at most one block: M xor K1 when full,
    (M || 80 00..) xor K2 when short. E_K of it is the CMAC (the KDF is one block)."""
    if len(data) == bs:
        return bytes(a ^ b for a, b in zip(data, k1, strict=True))
    padded = data + b"\x80" + bytes(bs - len(data) - 1)
    return bytes(a ^ b for a, b in zip(padded, k2, strict=True))
