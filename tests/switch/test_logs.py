"""The JSON log line: one object per line, PAN masked, secrets redacted, the time of
each record (the formatter keeps the formatted second between lines)."""

from __future__ import annotations

import io
import json
import logging

from payswitch.switch import logs


def test_one_json_line_per_call_masked_and_timed(monkeypatch):
    stream = io.StringIO()
    logs.setup("INFO", stream=stream)
    times = iter([1_700_000_000.25, 1_700_000_000.75, 1_700_000_001.5])
    monkeypatch.setattr(logging.time, "time", lambda: next(times))
    for stan in ("000001", "000002", "000003"):
        logs.log("request_done", mti="0200", stan=stan, pan="4761739001010010",
                 pin_block=b"\x01" * 8, emv="9F26", blob=b"abc", ms=1.5)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["ts"] for line in lines] == ["2023-11-14T22:13:20.250Z",
                                              "2023-11-14T22:13:20.750Z",
                                              "2023-11-14T22:13:21.500Z"]
    assert [line["stan"] for line in lines] == ["000001", "000002", "000003"]
    first = lines[0]
    assert first["pan"] == "476173******0010"
    assert first["pin_block"] == first["emv"] == "<redacted>"
    assert first["blob"] == "<3 bytes>"
    assert first["event"] == "request_done" and first["level"] == "info"
    assert "4761739001010010" not in stream.getvalue()


def test_the_direct_line_is_the_formatters_line(monkeypatch):
    """While setup()'s handler is the only one, log() writes the line itself; with a
    second handler the record goes through logging and the formatter. Same bytes."""
    direct, formatted = io.StringIO(), io.StringIO()
    logs.setup("INFO", stream=direct)
    monkeypatch.setattr(logging.time, "time", lambda: 1_700_000_000.125)
    fields = dict(mti="0100", stan="000001", pan="4761739001010010", amount_minor=1250,
                  replayed=False, error=None, ms=12.5, emv=b"\x9f\x26", note="ü \"x\"")
    logs.log("request_done", logging.WARNING, **dict(fields))
    other = logging.StreamHandler(formatted)
    other.setFormatter(logs.JsonFormatter())
    logs.LOGGER.addHandler(other)
    try:
        logs.log("request_done", logging.WARNING, **dict(fields))
    finally:
        logs.LOGGER.removeHandler(other)
    first, second = direct.getvalue().splitlines()
    assert first == second == formatted.getvalue().rstrip("\n")
    line = json.loads(first)
    assert line["ts"] == "2023-11-14T22:13:20.125Z" and line["level"] == "warning"
    assert line["pan"] == "476173******0010" and line["emv"] == "<redacted>"


def test_a_propagating_logger_reaches_its_ancestors_handlers():
    """Someone who turns propagation back on (to collect the switch's lines in the
    root logger) gets every line there too: the direct write is only for the lone
    handler of a logger that does not propagate."""
    logs.setup("INFO", stream=io.StringIO())
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    root_handler = Collect(logging.INFO)
    logging.getLogger().addHandler(root_handler)
    logs.LOGGER.propagate = True
    try:
        logs.log("request_done", mti="0200", stan="000001")
    finally:
        logs.LOGGER.propagate = False
        logging.getLogger().removeHandler(root_handler)
    assert seen == ["request_done"]


def test_a_line_orjson_refuses_is_still_one_valid_json_line():
    """An integer past 64 bits (orjson refuses it) and text beyond ASCII: one line each,
    readable JSON, values intact."""
    stream = io.StringIO()
    logs.setup("INFO", stream=stream)
    logs.log("odd_values", big=2**70, note="ü \"x\"\n", pan="4761739001010010")
    (line,) = stream.getvalue().splitlines()
    parsed = json.loads(line)
    assert parsed["big"] == 2**70 and parsed["note"] == "ü \"x\"\n"
    assert parsed["pan"] == "476173******0010"


def test_a_message_is_logged_through_its_masking_repr_on_both_paths():
    """A Message value (a dataclass, which orjson would write field by field: the PAN,
    track 2 and PIN block in clear) is its masking repr, on the direct line and on
    the formatter's (another handler added), and on json's fallback (a big int)."""
    from payswitch.codecs.iso8583 import Message

    msg = Message(mti="0200", pan="4761739001010010", track2="4761739001010010=2512101",
                  pin_block=b"\x12" * 8)
    direct = io.StringIO()
    logs.setup("INFO", stream=direct)
    logs.log("sent", msg=msg, raw=bytearray(b"abcd"), nested={"k": b"xy"})
    logs.log("sent", msg=msg, big=2**70)
    extra = logging.StreamHandler(formatted := io.StringIO())
    extra.setFormatter(logs.JsonFormatter())
    logs.LOGGER.addHandler(extra)
    try:
        logs.log("sent", msg=msg)
    finally:
        logs.LOGGER.removeHandler(extra)
    lines = [json.loads(x) for x in (direct.getvalue() + formatted.getvalue()).splitlines()]
    assert len(lines) == 4
    for line in lines:
        assert line["msg"] == str(msg) and "476173******0010" in line["msg"]
    assert lines[0]["raw"] == "<4 bytes>" and lines[0]["nested"] == {"k": "<2 bytes>"}
    text = direct.getvalue() + formatted.getvalue()
    assert "4761739001010010" not in text and "2512101" not in text


def test_the_millisecond_of_a_direct_line_is_its_time_truncated(monkeypatch):
    """Each millisecond's text, and a fraction a hair under the next second (which
    rounds to 1000.0 ms) kept in its own second."""
    stream = io.StringIO()
    logs.setup("INFO", stream=stream)
    base = 1_700_000_000
    values = [base + ms / 1000 + 0.0004 for ms in range(0, 1000, 7)]
    values.append(float.fromhex((1_700_000_001.0).hex()) - 2**-22)  # last double < +1 s
    times = iter(values)
    monkeypatch.setattr(logging.time, "time", lambda: next(times))
    for _ in values:
        logs.log("tick")
    got = [json.loads(line)["ts"] for line in stream.getvalue().splitlines()]
    want = [f"2023-11-14T22:13:20.{ms:03d}Z" for ms in range(0, 1000, 7)]
    assert got == [*want, "2023-11-14T22:13:20.999Z"]
