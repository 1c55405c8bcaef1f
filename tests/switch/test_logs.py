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
