"""`payswitch demo` leaves no process behind when the switch cannot start."""

from __future__ import annotations

import os

import pytest

from payswitch.lab import demo


def test_failed_switch_start_stops_the_simulators(monkeypatch, tmp_path):
    started: list[demo.Proc] = []
    real_init = demo.Proc.__init__

    def recording_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        started.append(self)

    monkeypatch.setattr(demo.Proc, "__init__", recording_init)
    # A config the switch refuses: `serve` exits 2 before it is ready.
    monkeypatch.setattr(demo, "demo_config", lambda *a, **k: "[nonsense]\nx = 1\n")
    with pytest.raises(demo.DemoError, match="exited"), \
            demo.running_topology(str(tmp_path), dsn="host=127.0.0.1 dbname=unused"):
        pass
    assert [p.name for p in started] == ["sim-visa", "sim-mastercard", "switch"]
    for proc in started:
        assert proc.popen.poll() is not None, proc.name
        with pytest.raises(ProcessLookupError):
            os.kill(proc.pid, 0)
