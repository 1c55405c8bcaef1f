"""Requests pipelined on one terminal connection, answered by the issuer out of order:
real sockets, real PostgreSQL, a fake issuer that holds its answers."""

from __future__ import annotations

from switchkit import (
    FakeIssuer,
    Terminal,
    approve,
    config_dict,
    purchase,
    running_switch,
    serving,
    trio_test,
)

from payswitch.switch.channel import Channel

PIPELINED = 8


class LastInFirstOut(FakeIssuer):
    """Answers nothing until ``n`` requests are in, then answers them last first, in
    one burst on the link."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.held: list = []
        self.answered: list[str] = []  # STANs in the order they were answered

    async def _frame(self, channel: Channel, payload: bytes) -> None:
        msg = self.dialect.decode(payload)
        if msg.mti[:2] == "08":
            await super()._frame(channel, payload)
            return
        self.received.append(msg)
        self.held.append(msg)
        if len(self.held) < self.n:
            return
        for m in reversed(self.held):
            self.answered.append(m.stan)
            await channel.send_frame(self.dialect.encode(approve(m)))


@trio_test
async def test_pipelined_requests_answered_out_of_order_are_all_answered(dsn):
    issuer = LastInFirstOut(PIPELINED)
    async with serving(issuer), running_switch(config_dict(dsn, issuer.port)) as sw:
        term = await Terminal.connect(sw.ports["pos"])
        sent = [purchase(stan=f"{i:06d}", amount=1000 + i) for i in range(1, PIPELINED + 1)]
        for msg in sent:  # all written before any answer can come back
            await term.send(msg)
        answers = [await term.recv() for _ in sent]
        await term.aclose()
    # every request reached the issuer while the others were still unanswered
    assert len(issuer.traffic()) == PIPELINED
    assert issuer.answered[0] != issuer.traffic()[0].stan  # out of order on the link
    by_stan = {a.stan: a for a in answers}
    assert sorted(by_stan) == [m.stan for m in sent]
    for msg in sent:  # each answer is its own request's: amount and approval
        got = by_stan[msg.stan]
        assert got.mti == "0210" and got.response_code == "00"
        assert got.amount_minor == msg.amount_minor
