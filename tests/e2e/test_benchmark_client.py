"""The e2e benchmark's closed-loop client against a simulator over loopback: every
answer counted by its DE39, a link the host closes counted as an error."""

from __future__ import annotations

import trio

from benchmarks.e2e_full import DIALECT, closed_loop
from payswitch.codecs.framing import encode_frame
from payswitch.simulators import cards
from payswitch.simulators.network import Faults, NetworkSimulator
from payswitch.simulators.terminal import Terminal


def _frames(terminals: int) -> list[list[bytes]]:
    out = []
    for n in range(terminals):
        term = Terminal(f"DEMO{n + 1:04d}", seed=n)
        msgs = [term.purchase(cards.card("visa_approve"), 100),
                term.purchase(cards.card("visa_decline"), 200),
                term.purchase(cards.card("visa_approve"), 300)]
        out.append([encode_frame("len2", DIALECT.encode(m)) for m in msgs])
    return out


def _run(sim: NetworkSimulator, frames: list[list[bytes]]) -> dict:
    async def main():
        async with trio.open_nursery() as nursery:
            port = await nursery.start(sim.serve)
            figures = await closed_loop("127.0.0.1", port, frames, 30.0)
            nursery.cancel_scope.cancel()
        return figures
    return trio.run(main)


def test_closed_loop_counts_every_answer_by_code():
    sim = NetworkSimulator("iso87ascii")
    figures = _run(sim, _frames(3))
    assert figures["by_code"] == {"00": 6, "05": 3}
    assert figures["authorizations"] == 9 and figures["approved"] == 6
    assert figures["errors"] == 0 and figures["exhausted_terminals"] == 3
    assert figures["p99_ms"] >= figures["p50_ms"] > 0
    assert sim.stats.received == 9 and sim.stats.answered == 9


def test_closed_loop_counts_a_closed_link_as_an_error():
    sim = NetworkSimulator("iso87ascii", faults=Faults(link_drop_every=2))
    figures = _run(sim, _frames(3))
    assert figures["by_code"] == {"00": 3}  # the 2nd request of each link: link closed
    assert figures["errors"] == 3 and figures["exhausted_terminals"] == 0
