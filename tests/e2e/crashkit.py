"""The load of the crash tests: closed-loop terminals in a thread, each reconnecting
after its connection is reset (the switch was killed), recording every answer."""

from __future__ import annotations

import random
import threading

import trio

from payswitch.simulators.cards import Card
from payswitch.simulators.terminal import Terminal, TransportError, open_link


class Load:
    """``answers``: (DE39, (DE41, DE11, DE7, DE4)) per answer a terminal received."""

    def __init__(self, port: int, terminals: int, cards: list[Card]) -> None:
        self.port, self.terminals, self.cards = port, terminals, cards
        self.answers: list[tuple[str, tuple[str, str, str, int]]] = []
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        async with trio.open_nursery() as n:
            for i in range(self.terminals):
                n.start_soon(self._terminal, i)

    async def _terminal(self, i: int) -> None:
        rng = random.Random(i)
        term = Terminal(f"DEMO{i + 1:04d}", seed=i)
        while not self.stop.is_set():
            try:
                async with open_link("127.0.0.1", self.port) as link:
                    while not self.stop.is_set() and not link.closed:
                        msg = term.purchase(rng.choice(self.cards), rng.randrange(100, 5000))
                        self.sent += 1
                        r = await link.request(msg, 5.0)
                        if r.response is not None:
                            self.answers.append((r.response.response_code, (
                                msg.terminal_id, msg.stan, msg.transmission_time,
                                msg.amount_minor)))
            except TransportError:
                pass
            await trio.sleep(0.1)

    def with_code(self, code: str) -> list[str]:
        """The switch's duplicate keys of the 0200s answered ``code``."""
        return [f"T:{t}|0200|{stan}|{when}|{amount}"
                for c, (t, stan, when, amount) in self.answers if c == code]
