"""link_in_flight is read when scraped, from the link's MUX: a request registered
(sent, awaiting its answer) counts until it is answered or forgotten."""

from payswitch.codecs.iso8583 import Message
from payswitch.switch.config import LinkSection
from payswitch.switch.links import IssuerLink
from payswitch.switch.metrics import Metrics


def test_link_in_flight_counts_the_requests_the_mux_awaits():
    metrics = Metrics()
    link = IssuerLink(LinkSection("visa", "127.0.0.1", 9), metrics)
    other = IssuerLink(LinkSection("mc", "127.0.0.1", 9), metrics)

    def gauge(name: str) -> float | None:
        return metrics.registry.get_sample_value("link_in_flight", {"link": name})

    assert gauge("visa") == gauge("mc") == 0
    first = link.mux.register(Message(mti="0100", stan="000001"))
    link.mux.register(Message(mti="0100", stan="000002"))
    other.mux.register(Message(mti="0100", stan="000001"))
    assert (gauge("visa"), gauge("mc")) == (2, 1)
    assert link.mux.deliver(Message(mti="0110", stan="000002")) == "matched"
    link.mux.forget(first, timed_out=True)
    assert (gauge("visa"), gauge("mc")) == (0, 1)
