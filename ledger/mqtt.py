"""The part of MQTT 3.1.1 the outbox relay uses: connect, QoS 1 publish, PUBACK, ping.

Why not aiomqtt/paho here: the relay publishes one QoS 1 message per event (about ten
per authorization), and through aiomqtt each cost an asyncio future, paho's message
object, its locks and callbacks, and one socket write: a profile of the demo's
``payswitch serve`` put 20 % of the switch's CPU there. The relay needs four packets
of the protocol (CONNECT/CONNACK, PUBLISH/PUBACK, PINGREQ/PINGRESP, DISCONNECT), so
it builds them itself: a window of publishes goes out in one ``sendall`` and every
PUBACK that arrived is read in one ``recv`` (``QosPublisher.publish_all``).

Sans-I/O first (h11's shape): ``connect_packet``, ``publish_packet`` and
``PacketReader`` are pure; ``QosPublisher`` is the small blocking-socket loop around
them. Subscribers (tests, consumers) still use aiomqtt.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence

CONNECT, CONNACK, PUBLISH, PUBACK = 0x10, 0x20, 0x30, 0x40
PINGREQ, PINGRESP, DISCONNECT = 0xC0, 0xD0, 0xE0
QOS1 = 0x02  # PUBLISH fixed-header flags: QoS 1, not DUP, not RETAIN
PACKET_MAX = 268_435_455  # the largest remaining length MQTT can encode
READ_MAX = 65_536  # bytes per recv


class MqttError(OSError):
    """The broker refused, broke the protocol or went silent: reconnect and resend."""


def _varint(n: int) -> bytes:
    if not 0 <= n <= PACKET_MAX:
        raise MqttError(f"packet too long: {n} bytes")
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    if len(b) > 0xFFFF:
        raise MqttError("string longer than 65535 bytes")
    return len(b).to_bytes(2, "big") + b


def connect_packet(client_id: str, keepalive_s: int) -> bytes:
    """CONNECT, MQTT 3.1.1 (level 4), clean session, no will, no credentials."""
    body = _str("MQTT") + bytes([4, 0x02]) + keepalive_s.to_bytes(2, "big") + _str(client_id)
    return bytes([CONNECT]) + _varint(len(body)) + body


def publish_packet(topic: bytes, packet_id: int, payload: bytes) -> bytes:
    """PUBLISH, QoS 1; ``topic`` already UTF-8 (the relay encodes each topic once)."""
    assert 0 < packet_id <= 0xFFFF
    head = len(topic).to_bytes(2, "big") + topic + packet_id.to_bytes(2, "big")
    return bytes([PUBLISH | QOS1]) + _varint(len(head) + len(payload)) + head + payload


class PacketReader:
    """Bytes from the broker in, whole packets out: ``(type, flags, body)``."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        self._buf += data
        buf, pos, out = self._buf, 0, []
        while True:
            head = _remaining_length(buf, pos + 1)
            if head is None:
                break  # the length is not all here yet
            length, body_at = head
            if len(buf) - body_at < length:
                break  # the body is not all here yet
            out.append((buf[pos] & 0xF0, buf[pos] & 0x0F, bytes(buf[body_at:body_at + length])))
            pos = body_at + length
        del buf[:pos]
        return out


def _remaining_length(buf: bytearray, at: int) -> tuple[int, int] | None:
    """(remaining length, where the body starts), or None when not all here yet."""
    length = 0
    for shift in (0, 7, 14, 21):
        if at >= len(buf):
            return None
        b = buf[at]
        at += 1
        length |= (b & 0x7F) << shift
        if not b & 0x80:
            return length, at
    raise MqttError("malformed remaining length from broker")


class QosPublisher:
    """One connection to the broker; ``publish_all`` returns once every message has its
    PUBACK, at most ``inflight_max`` unacknowledged at a time. Any failure (refused,
    closed, silent for ``timeout_s``) raises MqttError or OSError: the caller drops this
    publisher, makes a new one and publishes again (at least once)."""

    def __init__(self, host: str, port: int, client_id: str, *, timeout_s: float = 10.0,
                 keepalive_s: int = 60, inflight_max: int = 100) -> None:
        assert 0 < inflight_max < 0xFFFF
        self.timeout_s = timeout_s
        self.keepalive_s = keepalive_s
        self.inflight_max = inflight_max
        self._next_id = 1
        self._reader = PacketReader()
        self._sock = socket.create_connection((host, port), timeout=timeout_s)
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock.sendall(connect_packet(client_id, keepalive_s))
            kind, _, body = self._next_packet()
            if kind != CONNACK or len(body) != 2:
                raise MqttError(f"expected CONNACK, got packet type {kind >> 4}")
            if body[1] != 0:
                raise MqttError(f"broker refused the connection: return code {body[1]}")
        except BaseException:
            self._sock.close()
            raise
        self._last_sent = time.monotonic()

    def _packets(self) -> list[tuple[int, int, bytes]]:
        # Mosquitto sends without TCP_NODELAY (its default): its later PUBACKs wait in
        # its Nagle buffer until we ACK the first, and Linux delays that ACK (up to
        # 40 ms) when we have nothing to send, at the tail of each round. QUICKACK (reset
        # by the kernel after a while, hence before each read) ACKs at once.
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        data = self._sock.recv(READ_MAX)  # socket timeout: timeout_s
        if not data:
            raise MqttError("broker closed the connection")
        return self._reader.feed(data)

    def _next_packet(self) -> tuple[int, int, bytes]:
        """The next packet (CONNACK, PINGRESP: nothing else is outstanding then)."""
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            packets = self._packets()
            if packets:
                return packets[0]
        raise MqttError("broker silent")

    def publish_all(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """(topic, payload) pairs, QoS 1; returns when the broker acknowledged all."""
        waiting: set[int] = set()
        sent = 0
        deadline = time.monotonic() + self.timeout_s
        while sent < len(messages) or waiting:
            room = self.inflight_max - len(waiting)
            if room > 0 and sent < len(messages):
                out = []
                for topic, payload in messages[sent:sent + room]:
                    pid = self._next_id
                    self._next_id = pid % 0xFFFF + 1
                    waiting.add(pid)
                    out.append(publish_packet(topic, pid, payload))
                sent += len(out)
                self._sock.sendall(b"".join(out))
                self._last_sent = time.monotonic()
            for kind, _, body in self._packets():
                if kind == PUBACK and len(body) == 2:
                    waiting.discard(int.from_bytes(body, "big"))
                    deadline = time.monotonic() + self.timeout_s  # progress
                elif kind not in (PINGRESP,):
                    raise MqttError(f"unexpected packet type {kind >> 4} from broker")
            if time.monotonic() > deadline:
                raise MqttError(f"no PUBACK within {self.timeout_s} s")

    def keepalive(self) -> None:
        """A PINGREQ (and its PINGRESP) when nothing was sent for half the keepalive:
        an idle relay stays connected and finds a dead broker before its next event."""
        if time.monotonic() - self._last_sent < self.keepalive_s / 2:
            return
        self._sock.sendall(bytes([PINGREQ, 0]))
        self._last_sent = time.monotonic()
        kind, _, _ = self._next_packet()
        if kind != PINGRESP:
            raise MqttError(f"expected PINGRESP, got packet type {kind >> 4}")

    def close(self) -> None:
        try:
            self._sock.sendall(bytes([DISCONNECT, 0]))
        except OSError:
            pass
        finally:
            self._sock.close()
