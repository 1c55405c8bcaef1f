"""The relay's MQTT publisher: packets as MQTT 3.1.1 spells them, a reader that cuts
packets at any split, publishes acknowledged by the real Mosquitto and seen by an
independent client (aiomqtt), and a silent broker ends in MqttError within the
timeout instead of a hang."""

from __future__ import annotations

import socket
import threading
import time
import uuid

import pytest
from mqttkit import Subscriber

from payswitch.ledger import mqtt


def test_packets_as_the_spec_spells_them():
    assert mqtt._varint(0) == b"\x00"
    assert mqtt._varint(127) == b"\x7f"
    assert mqtt._varint(128) == b"\x80\x01"
    assert mqtt._varint(16_383) == b"\xff\x7f"
    assert mqtt._varint(16_384) == b"\x80\x80\x01"
    assert mqtt._varint(mqtt.PACKET_MAX) == b"\xff\xff\xff\x7f"
    with pytest.raises(mqtt.MqttError):
        mqtt._varint(mqtt.PACKET_MAX + 1)
    # PUBLISH QoS 1: 0x32, remaining length, topic length + topic, packet id, payload
    assert mqtt.publish_packet(b"a/b", 10, b"xy") == b"\x32\x09\x00\x03a/b\x00\x0axy"
    # CONNECT: "MQTT", level 4, clean session, keepalive 60, client id "c"
    assert mqtt.connect_packet("c", 60) == (b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c"
                                            b"\x00\x01c")


def test_reader_cuts_packets_at_any_split():
    big = bytes([0x30]) + mqtt._varint(300) + bytes(300)  # a two-byte length
    stream = b"\x40\x02\x00\x01" + b"\xd0\x00" + big + b"\x40\x02\xff\xff"
    want = [(0x40, 0, b"\x00\x01"), (0xD0, 0, b""), (0x30, 0, bytes(300)),
            (0x40, 0, b"\xff\xff")]
    for cut in range(len(stream) + 1):
        for cut2 in (cut, min(len(stream), cut + 3)):
            r = mqtt.PacketReader()
            got = r.feed(stream[:cut]) + r.feed(stream[cut:cut2]) + r.feed(stream[cut2:])
            assert got == want, (cut, cut2)


def test_publishes_reach_a_subscriber_through_the_real_broker(mqtt_broker):
    host, port = mqtt_broker
    prefix = f"mqtt-{uuid.uuid4().hex[:8]}/"
    msgs = [(f"{prefix}payswitch/events/t{i % 3}".encode(),
             f'{{"event_id":"{uuid.UUID(int=i)}","n":{i}}}'.encode()) for i in range(3000)]
    with Subscriber(host, port, prefix) as sub:
        pub = mqtt.QosPublisher(host, port, f"test-{uuid.uuid4().hex[:6]}",
                                inflight_max=7, timeout_s=10)
        try:
            pub.publish_all(msgs[:1])
            pub.publish_all(msgs[1:])  # packet ids go on across calls
            pub.keepalive_s = 0  # due: a PINGREQ answered by PINGRESP
            pub.keepalive()
        finally:
            pub.close()
        sub.wait_for(len(msgs))
    assert {m["n"] for m in sub.messages} == set(range(3000))
    assert {m["_topic"] for m in sub.messages} == {t.decode() for t, _ in msgs[:3]}


def test_a_broker_that_never_acknowledges_raises_within_the_timeout():
    """CONNACK, then silence: publish_all raises MqttError after timeout_s."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    conns: list[socket.socket] = []

    def broker():
        c, _ = srv.accept()
        conns.append(c)
        c.recv(1024)  # CONNECT
        c.sendall(b"\x20\x02\x00\x00")  # CONNACK accepted, then nothing
    th = threading.Thread(target=broker, daemon=True)
    th.start()
    try:
        pub = mqtt.QosPublisher("127.0.0.1", port, "silent", timeout_s=0.5)
        started = time.monotonic()
        with pytest.raises(OSError):  # MqttError or the socket's timeout: both OSError
            pub.publish_all([(b"t", b"x")])
        assert time.monotonic() - started < 5
        pub.close()
    finally:
        th.join(5)
        for c in conns:
            c.close()
        srv.close()


def test_a_refused_connection_is_an_error():
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def broker():
        c, _ = srv.accept()
        with c:
            c.recv(1024)
            c.sendall(b"\x20\x02\x00\x05")  # not authorized
    th = threading.Thread(target=broker, daemon=True)
    th.start()
    try:
        with pytest.raises(mqtt.MqttError, match="return code 5"):
            mqtt.QosPublisher("127.0.0.1", port, "refused", timeout_s=2)
    finally:
        th.join(5)
        srv.close()
