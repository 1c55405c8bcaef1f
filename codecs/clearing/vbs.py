"""Mastercard's file framing: VBS records (RDW) and optional 1014-byte blocking.

VBS: each record is preceded by a 4-byte big-endian record descriptor word holding
its length; the file ends with a zero RDW. 1014 blocking: the VBS bytes are cut into
1012-byte pieces, each followed by two ``0x40`` bytes; the last block is filled with
``0x40``. As cardutil (and GCMS) do, a VBS stream that ends exactly on a block
boundary still gets one block of pure padding, so the block count is always
``len(vbs) // 1012 + 1``.
"""

from __future__ import annotations

import struct

from payswitch.codecs.clearing.errors import ClearingError

BLOCK_BYTES = 1014
BLOCK_DATA = 1012
PAD = b"\x40"
MAX_RECORD_BYTES = 6000  # cardutil's limit too; an IPM message is far shorter


def write_vbs(records: list[bytes]) -> bytes:
    out = bytearray()
    for r in records:
        out += struct.pack(">I", len(r))
        out += r
    out += b"\x00\x00\x00\x00"
    return bytes(out)


def block(vbs: bytes) -> bytes:
    blocks = len(vbs) // BLOCK_DATA + 1
    padded = vbs.ljust(blocks * BLOCK_DATA, PAD)
    return b"".join(padded[i * BLOCK_DATA:(i + 1) * BLOCK_DATA] + PAD * 2
                    for i in range(blocks))


def unblock(data: bytes) -> tuple[bytes, int | None]:
    """The VBS bytes, and the number of a last block that is cut short (else None): its
    bytes are kept so that the reader can name the record the cut falls in."""
    whole, rest = divmod(len(data), BLOCK_BYTES)
    out = bytearray()
    for i in range(whole):
        chunk = data[i * BLOCK_BYTES:(i + 1) * BLOCK_BYTES]
        if chunk[BLOCK_DATA:] != PAD * 2:
            raise ClearingError(f"1014-byte block {i + 1} does not end in two x'40' bytes")
        out += chunk[:BLOCK_DATA]
    out += data[whole * BLOCK_BYTES:][:BLOCK_DATA]
    return bytes(out), (whole + 1 if rest or not whole else None)


def read_vbs(data: bytes, *, blocked: bool) -> list[bytes]:
    """The records, in order. The zero RDW must come; after it only block padding."""
    if not isinstance(data, (bytes, bytearray)):
        raise ClearingError("file is not bytes")
    cut_block = None
    if blocked:
        data, cut_block = unblock(bytes(data))
    else:
        data = bytes(data)
    cut = f" (1014-byte block {cut_block} is cut short)" if cut_block else ""
    records: list[bytes] = []
    pos = 0
    while True:
        number = len(records) + 1
        if pos + 4 > len(data):
            raise ClearingError(f"truncated: no record length (and no zero RDW){cut}",
                                record=number)
        (length,) = struct.unpack_from(">I", data, pos)
        pos += 4
        if length == 0:
            break
        if length > MAX_RECORD_BYTES:
            raise ClearingError(f"record length over {MAX_RECORD_BYTES}", record=number)
        if pos + length > len(data):
            raise ClearingError(f"truncated: {len(data) - pos} of {length} bytes{cut}",
                                record=number)
        records.append(data[pos:pos + length])
        pos += length
    tail = data[pos:]
    if tail.strip(PAD) if blocked else tail:
        raise ClearingError("bytes after the zero RDW that ends the file")
    if cut_block:
        raise ClearingError(f"truncated: 1014-byte block {cut_block} is cut short after "
                            f"the file's last record", record=len(records))
    return records
