"""Child process for the ledger crash test: authorizations through the BatchWriter, with a
journal of what was submitted and what was acknowledged. Killed with SIGKILL at random.

On start it first re-submits every journalled request that has no acknowledgement (same ids:
the answer must be created, exists, or the same decline), then makes new ones.
usage: python ledger_crash_child.py DSN JOURNAL SEED
"""

from __future__ import annotations

import os
import random
import sys

import trio

import payswitch.ledger as L

CARDS = list(range(1, 51))
MERCHANT = 100
MAC = L.hmac_sha256(b"crash-test-key-0123456789abcdef")


def request_for(n: int):
    """Everything about authorization n is derived from n, so a retry is identical."""
    rng = random.Random(n)
    hold, pay = 10**6 + n, 2 * 10**6 + n
    amount = rng.randrange(1, 500)
    ok, ko = L.authorization_events(
        payment_id=pay, hold_id=hold, approved_event_id=3 * 10**6 + n,
        held_event_id=4 * 10**6 + n, declined_event_id=5 * 10**6 + n, amount_minor=amount,
        currency="USD", declined={"response_code": "51"})
    return dict(hold_id=hold, debit_account_id=rng.choice(CARDS), credit_account_id=MERCHANT,
                amount_minor=amount, ledger=840, code=7, timeout_s=3600, on_success=ok,
                on_failure=ko)


async def main(dsn: str, journal_path: str, seed: int) -> None:
    submitted, acked = set(), set()
    if os.path.exists(journal_path):
        with open(journal_path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "S":
                    submitted.add(int(parts[1]))
                elif len(parts) >= 3 and parts[0] == "A":
                    acked.add(int(parts[1]))
    journal = open(journal_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    writer = L.BatchWriter(dsn, mac=MAC, config=L.WriterConfig(max_batch=200))
    relay = L.OutboxRelay(dsn, L.RelayConfig(host=os.environ["MQTT_HOST"],
                                             port=int(os.environ["MQTT_PORT"]),
                                             topic_prefix=os.environ["MQTT_PREFIX"]))
    start = max(submitted, default=0) + 1
    rng = random.Random(seed)

    async def one(n: int) -> None:
        journal.write(f"S {n}\n")
        out = await writer.hold(**request_for(n))
        journal.write(f"A {n} {out.results[0]}\n")
        if out.results[0] == "created" and rng.random() < 0.3:
            await writer.void(void_id=7 * 10**6 + n, pending_id=10**6 + n)

    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await nursery.start(relay.run_trio)
        async with trio.open_nursery() as retries:
            for n in sorted(submitted - acked):
                retries.start_soon(one, n)
        n = start
        while True:  # until killed
            async with trio.open_nursery() as wave:
                for _ in range(50):
                    wave.start_soon(one, n)
                    n += 1


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
