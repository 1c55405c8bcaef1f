"""DE7 (transmission date and time) of what the switch sends: UTC MMDDhhmmss of the
second it is sent in. Formatted once a second (issue 8); the text must follow the clock."""

import time

from payswitch.switch import links


def test_de7_is_the_utc_second_it_is_asked_in(monkeypatch):
    now = [1_764_331_199.25]  # 2025-11-28 11:59:59.25 UTC
    monkeypatch.setattr(links.time, "time", lambda: now[0])
    assert links.transmission_time() == "1128115959"
    now[0] += 0.7  # the same second
    assert links.transmission_time() == "1128115959"
    now[0] += 0.1  # the next one
    assert links.transmission_time() == "1128120000"
    now[0] += 86_400 * 3  # days later, a new month
    assert links.transmission_time() == "1201120000"
    assert links.transmission_time() == time.strftime("%m%d%H%M%S", time.gmtime(now[0]))
