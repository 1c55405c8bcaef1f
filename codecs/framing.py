"""Sans-I/O frame readers and writers for the length prefixes ISO 8583 links use.

``len2``   2-byte binary big-endian length, then the message.
``ascii4`` 4 ASCII digits of length, then the message.
``tpdu``   2-byte length, then a 5-byte TPDU (id, destination, source), then the
           message; the length counts the TPDU. A reply swaps destination and source.
``vap``    Visa: 2-byte length of the message, then 00 00, then the message.

A reader is fed any chunking of the byte stream and returns whole frames. A length
above ``max_frame_bytes`` raises ``FramingError`` before anything of that size is
buffered; the stream cannot be trusted after that and the caller should drop the link.
A zero length is a keep-alive some hosts send, and is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

from payswitch.codecs.errors import FramingError

KINDS = ("len2", "ascii4", "tpdu", "vap")
TPDU_BYTES = 5
_PREFIX_BYTES = {"len2": 2, "ascii4": 4, "tpdu": 2, "vap": 4}


@dataclass(frozen=True, slots=True)
class Frame:
    payload: bytes
    tpdu: bytes | None = None


def reply_tpdu(tpdu: bytes) -> bytes:
    """Same id, destination and source swapped."""
    if len(tpdu) != TPDU_BYTES:
        raise FramingError("TPDU is not 5 bytes")
    return tpdu[:1] + tpdu[3:5] + tpdu[1:3]


def encode_frame(kind: str, payload: bytes, tpdu: bytes | None = None,
                 max_frame_bytes: int = 8192) -> bytes:
    if kind not in _PREFIX_BYTES:
        raise ValueError(f"unknown framing {kind!r}")
    if kind == "tpdu":
        if tpdu is None or len(tpdu) != TPDU_BYTES:
            raise FramingError("tpdu framing needs a 5-byte TPDU")
        payload = tpdu + payload
    if not payload or len(payload) > max_frame_bytes:
        raise FramingError(f"frame of {len(payload)} bytes outside 1..{max_frame_bytes}")
    n = len(payload)
    if kind == "ascii4":
        if n > 9999:
            raise FramingError("frame too long for a 4-digit length")
        return b"%04d" % n + payload
    prefix = n.to_bytes(2, "big") + (b"\x00\x00" if kind == "vap" else b"")
    return prefix + payload


class FrameReader:
    """``feed`` returns every whole frame at once; ``append`` + ``next_frame`` cut them
    one at a time, so a reader that stops early (a stream of junk closed after a few
    frames) never pays for cutting the rest of a 64 KiB chunk."""

    def __init__(self, kind: str, max_frame_bytes: int = 8192) -> None:
        if kind not in _PREFIX_BYTES:
            raise ValueError(f"unknown framing {kind!r}")
        self.kind = kind
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._start = 0  # frames before this offset are cut already

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._start

    def feed(self, data: bytes | bytearray) -> list[Frame]:
        self.append(data)
        frames: list[Frame] = []
        while (frame := self.next_frame()) is not None:
            frames.append(frame)
        return frames

    def append(self, data: bytes | bytearray) -> None:
        self._buf += data

    def next_frame(self) -> Frame | None:
        """The next whole frame (keep-alives skipped), or None until more is appended.

        Frames are cut at an offset and the buffer compacted once it holds no whole
        frame: a 64 KiB chunk of small frames costs one memmove, not one per frame."""
        while True:
            frame, end = self._next(self._start)
            if frame is None:
                del self._buf[:self._start]
                self._start = 0
                return None
            self._start = end
            if frame.payload or frame.tpdu:
                return frame

    def _next(self, start: int) -> tuple[Frame | None, int]:
        prefix = _PREFIX_BYTES[self.kind]
        if len(self._buf) - start < prefix:
            return None, start
        n = self._length(bytes(self._buf[start:start + prefix]))
        if n > self.max_frame_bytes:
            raise FramingError(f"frame length {n} above the maximum {self.max_frame_bytes}")
        if self.kind == "tpdu" and 0 < n < TPDU_BYTES:
            raise FramingError("tpdu frame shorter than its TPDU")
        end = start + prefix + n
        if len(self._buf) < end:
            return None, start
        body = bytes(self._buf[start + prefix:end])
        if self.kind == "tpdu" and n:
            return Frame(body[TPDU_BYTES:], body[:TPDU_BYTES]), end
        return Frame(body), end

    def _length(self, prefix: bytes) -> int:
        if self.kind == "ascii4":
            if not prefix.isdigit():
                raise FramingError("ASCII length prefix is not 4 digits")
            return int(prefix)
        if self.kind == "vap" and prefix[2:] != b"\x00\x00":
            raise FramingError("VAP header bytes 3-4 are not 00 00")
        return int.from_bytes(prefix[:2], "big")
