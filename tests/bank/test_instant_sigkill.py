"""SIGKILL of the switch side (`payswitch iso20022 submit`, a real process) while
instant payments are in flight: after a restart every payment is settled or reversed
exactly once in the ledger, and as the peer bank sees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import psycopg
import pytest
import trio
from bankkit import DEBTOR, MAC, codec, pain001, schema_dir

from payswitch.ledger import verify
from payswitch.simulators.instant import InstantPeer, PeerConfig
from payswitch.switch.instant_book import InstantBook, det_id

N = 16
FUNDS = 10**7


def argv(path, port, dsn, deadline_s):
    return [sys.executable, "-m", "payswitch.lab.cli", "iso20022", "submit", str(path),
            "--peer", f"127.0.0.1:{port}", "--dsn", dsn, "--schemas", str(schema_dir()),
            "--allow-missing-schemas", "--deadline-s", str(deadline_s),
            "--status-wait-s", "2", "--json"]


@pytest.mark.slow
def test_sigkill_in_flight_then_restart_settles_or_reverses_each_once(pg_dsn, tmp_path):
    pain = pain001([100 * (i + 1) for i in range(N)], msg_id="KILL-1")
    path = tmp_path / "pain001.xml"
    path.write_bytes(codec().build(pain))
    book = InstantBook(pg_dsn, MAC)
    book.open_customer(DEBTOR, "EUR", FUNDS)
    env = {**os.environ, "PAYSWITCH_EVENT_MAC_KEY": "00" * 32}
    # answers: some at once, most late (after the kill), some never
    peer = InstantPeer(codec(), PeerConfig(reject_share=0.3, late_share=0.4,
                                           never_share=0.2, seed=7, late_s=60.0))

    async def main():
        async with trio.open_nursery() as n:
            port = await n.start(peer.serve)
            proc = await trio.lowlevel.open_process(argv(path, port, pg_dsn, 60.0), env=env,
                                                    stdout=subprocess.DEVNULL)
            with trio.fail_after(60):
                while len(peer.view) < N // 2:
                    await trio.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            pending = len(book.pending())
            with trio.fail_after(120):
                done = await trio.run_process(argv(path, port, pg_dsn, 1.0), env=env,
                                              capture_stdout=True, check=False)
            n.cancel_scope.cancel()
        return pending, done

    pending, done = trio.run(main)
    assert pending > 0, "the kill came after everything was final: nothing was tested"
    assert done.returncode == 0, done.stdout
    states = dict(book.db.execute("select tx_id, state from instant_payments").fetchall())
    assert len(states) == N and set(states.values()) <= {"settled", "reversed"}
    for tx, state in states.items():
        assert (state == "settled") == (peer.view.get(tx) == "ACSC"), tx
        hold = _uuid(det_id("hold", tx))
        (held, n_resolutions) = book.db.execute(
            "select (select count(*) from transfers where id = %s),"
            " (select count(*) from transfers where pending_id = %s)", (hold, hold)).fetchone()
        # one post or one void, never both, never two; or (killed between the row and
        # the hold) nothing held, nothing sent, and reversed
        assert (held, n_resolutions) in ((1, 1), (0, 0)), tx
        assert held or state == "reversed"
    settled = sum(r[0] for r in book.db.execute(
        "select amount_minor from instant_payments where state = 'settled'"))
    assert book.balance(DEBTOR) == FUNDS - settled
    with psycopg.connect(pg_dsn) as c:
        rep = verify(c, MAC)
    assert rep.ok, rep.to_text()
    book.close()


def _uuid(i: int) -> uuid.UUID:
    return uuid.UUID(int=i)
