"""The relay's publisher (paho-mqtt driven from the relay's thread): publishes
acknowledged by the real Mosquitto and seen by an independent client (aiomqtt), a
window smaller than a round, a broker that goes silent or away ends in an OSError
within the timeout instead of a hang, and a refused CONNECT is an error."""

from __future__ import annotations

import socket
import threading
import time
import uuid

import pytest
from mqttkit import Subscriber

from payswitch.ledger.relay import MqttError, Publisher

CONNACK_OK = b"\x20\x02\x00\x00"


def test_publishes_reach_a_subscriber_through_the_real_broker(mqtt_broker):
    host, port = mqtt_broker
    prefix = f"pub-{uuid.uuid4().hex[:8]}/"
    msgs = [(f"{prefix}payswitch/events/t{i % 3}",
             f'{{"event_id":"{uuid.UUID(int=i)}","n":{i}}}'.encode()) for i in range(3000)]
    with Subscriber(host, port, prefix) as sub:
        pub = Publisher(host, port, f"test-{uuid.uuid4().hex[:6]}", inflight_max=7,
                        timeout_s=10)
        try:
            pub.publish_all(msgs[:1])
            pub.publish_all(msgs[1:])  # a round far larger than the window; mids go on
            pub.keepalive()
        finally:
            pub.close()
        sub.wait_for(len(msgs))
    assert {m["n"] for m in sub.messages} == set(range(3000))
    assert {m["_topic"] for m in sub.messages} == {t for t, _ in msgs[:3]}


class _FakeBroker:
    """A TCP listener that answers CONNECT with ``connack`` and then does ``then``
    ("silent": reads and never answers; "close": closes after the first PUBLISH)."""

    def __init__(self, connack: bytes, then: str = "silent") -> None:
        self.connack = connack
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.srv.settimeout(10)
        self.port = self.srv.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.then = then
        self.th = threading.Thread(target=self._serve, daemon=True)
        self.th.start()

    def _serve(self) -> None:
        c, _ = self.srv.accept()
        c.settimeout(10)
        self.conns.append(c)
        c.recv(1024)  # CONNECT
        c.sendall(self.connack)
        if self.then == "close":
            c.recv(1024)  # the first PUBLISH
            c.close()

    def __enter__(self) -> _FakeBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.th.join(10)
        for c in self.conns:
            c.close()
        self.srv.close()


def _packet_types(stream: bytes) -> list[int]:
    """The fixed-header types of the MQTT packets in ``stream`` (what the fake got)."""
    out, pos = [], 0
    while pos < len(stream):
        length, shift, at = 0, 0, pos + 1
        while True:
            b = stream[at]
            at += 1
            length |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        out.append(stream[pos] >> 4)
        pos = at + length
    return out


def test_a_broker_that_never_acknowledges_gets_one_window_and_an_error_in_time():
    """No PUBACK ever: the publisher sends its window (3 of 10) and no more, and raises
    after timeout_s; the broker then reads everything it was sent, to the DISCONNECT."""
    with _FakeBroker(CONNACK_OK) as fake:
        pub = Publisher("127.0.0.1", fake.port, "silent", timeout_s=0.5, inflight_max=3)
        started = time.monotonic()
        with pytest.raises(MqttError, match="no PUBACK"):
            pub.publish_all([("t", bytes([i])) for i in range(10)])
        assert time.monotonic() - started < 5
        pub.close()
        fake.th.join(10)
        got = b""
        while chunk := fake.conns[0].recv(65536):  # to EOF: paho closes after DISCONNECT
            got += chunk
    assert _packet_types(got) == [3, 3, 3, 14]  # PUBLISH x 3, DISCONNECT


def test_a_broker_that_closes_mid_round_raises_at_once():
    with _FakeBroker(CONNACK_OK, then="close") as fake:
        pub = Publisher("127.0.0.1", fake.port, "closing", timeout_s=30)
        started = time.monotonic()
        with pytest.raises(OSError):
            pub.publish_all([("t", b"x"), ("t", b"y")])
        assert time.monotonic() - started < 5  # not the 30 s timeout
        pub.close()


def test_a_broker_that_never_answers_connect_raises_within_the_timeout():
    srv = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never answers
    try:
        started = time.monotonic()
        with pytest.raises(MqttError, match="no CONNACK"):
            Publisher("127.0.0.1", srv.getsockname()[1], "mute", timeout_s=0.5)
        assert time.monotonic() - started < 5
    finally:
        srv.close()


def test_a_refused_connection_is_an_error():
    with _FakeBroker(b"\x20\x02\x00\x05") as fake, \
            pytest.raises(MqttError, match="refused"):  # CONNACK: not authorized
        Publisher("127.0.0.1", fake.port, "refused", timeout_s=2)
