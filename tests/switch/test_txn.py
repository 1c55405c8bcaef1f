"""The transaction manager and its participants, in-process against the fakes of
txnfakes.py, in virtual time (trio's MockClock with autojump: a timeout of seconds
takes none, and its length is asserted exactly). What is asserted is what the sender
and the issuer would see: the DE39, the 0420 queued, the hold voided, the journal's
answer."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest
import trio
from trio.testing import MockClock
from txnfakes import (
    MC_PAN,
    ONUS_PAN,
    Bench,
    FakeHsm,
    FakeLedger,
    approve,
    busy,
    key,
    request,
)

from payswitch.codecs.iso8583.message import Message
from payswitch.switch.errors import InsufficientFunds, IssuerTimeout, StoreError
from payswitch.switch.messages import original_data
from payswitch.switch.participants import PATHS, Participant, Path
from payswitch.switch.participants.admit import Identify
from payswitch.switch.participants.duplicate import DUPLICATE_POLL_S, CheckDuplicate
from payswitch.switch.record import UNWRITTEN_RETRY_S
from payswitch.switch.services import Context


def virtual(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run an async test under MockClock(autojump_threshold=0): time moves only when
    every task waits, straight to the next deadline."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        trio.run(functools.partial(fn, *args, **kwargs),
                 clock=MockClock(autojump_threshold=0))
    return wrapper


def silent(msg: Message) -> Message | None:
    return None


# -- the manager ------------------------------------------------------------------------
class _Recording(Participant):
    log: list[str]
    refuse: BaseException | None = None

    async def prepare(self, ctx: Context) -> None:
        self.log.append("prepare " + self.name)
        if self.refuse is not None:
            raise self.refuse

    async def abort(self, ctx: Context) -> None:
        self.log.append("abort " + self.name)


class _RecordingSync(_Recording):
    """The same, as a ``sync`` participant: called, not awaited."""

    sync = True

    def check(self, ctx: Context) -> None:
        self.log.append("check " + self.name)
        if self.refuse is not None:
            raise self.refuse


def _recording_path(log: list[str], refuse_at: str, error: BaseException) -> Path:
    def step(name: str, base: type[_Recording] = _Recording) -> type[Participant]:
        return type(name, (base,), {"log": log,
                                    "refuse": error if name == refuse_at else None})
    return Path(head=(Identify, CheckDuplicate, step("A"), step("B", _RecordingSync),
                      step("C"), step("D", _RecordingSync)))


@virtual
async def test_a_refusal_aborts_the_asked_participants_in_reverse_order_refuser_first():
    log: list[str] = []
    bench = Bench(paths={"020": _recording_path(log, "C", InsufficientFunds("no"))})
    resp = await bench.send(request())
    assert log == ["prepare A", "check B", "prepare C", "abort C", "abort B", "abort A"]
    assert resp.response_code == "51"  # errors.response_code_for
    assert bench.store.answer(key(request())) == "51"  # the refusal is journalled


@virtual
async def test_a_sync_participants_refusal_is_answered_and_aborted_like_any_other():
    log: list[str] = []
    bench = Bench(paths={"020": _recording_path(log, "B", InsufficientFunds("no"))})
    resp = await bench.send(request())
    assert log == ["prepare A", "check B", "abort B", "abort A"]
    assert resp.response_code == "51"
    assert bench.store.answer(key(request())) == "51"


@virtual
async def test_a_failed_journal_write_aborts_every_participant_and_answers_96():
    log: list[str] = []
    bench = Bench(paths={"020": _recording_path(log, "none", StoreError("x"))})
    bench.store.fail_complete = 1
    resp = await bench.send(request())
    assert resp.response_code == "96"
    assert log[4:] == ["abort D", "abort C", "abort B", "abort A"]


@virtual
async def test_a_participant_whose_abort_fails_does_not_stop_the_others():
    log: list[str] = []

    class Broken(_Recording):
        async def abort(self, ctx: Context) -> None:
            raise RuntimeError("bug")

    Broken.log = log
    path = _recording_path(log, "D", IssuerTimeout("t"))
    bench = Bench(paths={"020": Path(head=path.head[:3] + (Broken,) + path.head[3:])})
    resp = await bench.send(request())
    assert resp.response_code == "91"
    assert log[-3:] == ["abort C", "abort B", "abort A"]


@virtual
async def test_unknown_mti_is_12_and_unknown_terminal_58():
    bench = Bench()
    assert (await bench.send(request("0300"))).response_code == "12"
    assert (await bench.send(request(terminal="NOBODY01"))).response_code == "58"
    assert (await bench.send(request(processing="990000"))).response_code == "12"
    assert (await bench.send(request("0800", terminal="NOBODY01"))).response_code == "58"
    assert (await bench.send(request("0800"))).response_code == "00"


# -- off-us: Route, TranslatePin, Forward, PostLedger -----------------------------------
@virtual
async def test_approval_holds_then_answers_00_nothing_to_undo():
    ledger = FakeLedger()
    bench = Bench(ledger=ledger)
    req = request()
    resp = await bench.send(req)
    assert resp.response_code == "00" and resp.auth_code == "A1B2C3"
    assert ledger.holds == {key(req): 1250}
    assert bench.store.saf == [] and ledger.voids_later == []


@virtual
async def test_issuer_silence_is_91_after_request_timeout_ms_with_its_0420():
    bench = Bench(answer=silent)
    started = trio.current_time()
    resp = await bench.send(request())
    assert trio.current_time() - started == pytest.approx(2.0)  # links[].request_timeout_ms
    assert resp.response_code == "91"
    (sent,) = bench.links["visa"].sent
    assert bench.store.saf_mtis() == [("0420", original_data(sent))]  # Forward's abort


@virtual
async def test_a_failing_hold_after_approval_voids_it_and_reverses_at_the_issuer():
    # PostLedger refuses after Forward prepared: PostLedger's abort voids the hold whose
    # outcome is unknown, then Forward's abort queues the 0420 for the issuer's approval.
    ledger = FakeLedger(fail_hold=True)
    bench = Bench(ledger=ledger)
    req = request()
    resp = await bench.send(req)
    assert resp.response_code == "96"
    assert ledger.voids_later == [key(req)]
    (sent,) = bench.links["visa"].sent
    assert bench.store.saf_mtis() == [("0420", original_data(sent))]
    assert ("ledger_void_pending", key(req)) in bench.store.events


@virtual
async def test_a_decline_is_answered_as_is_and_undoes_nothing():
    ledger = FakeLedger()
    bench = Bench(ledger=ledger, answer=lambda m: Message(
        mti=m.response_mti, stan=m.stan, rrn=m.rrn, response_code="05"))
    resp = await bench.send(request())
    assert resp.response_code == "05"
    assert bench.store.saf == [] and ledger.holds == {} and ledger.declines


@virtual
async def test_a_busy_link_is_91_and_queues_no_0420():
    bench = Bench(answer=busy)
    resp = await bench.send(request())
    assert resp.response_code == "91"
    assert bench.store.saf == []


@virtual
async def test_a_link_down_is_91_before_anything_is_journalled_for_it():
    bench = Bench()
    bench.links["visa"].state = "connecting"
    resp = await bench.send(request())
    assert resp.response_code == "91"
    assert bench.store.saf == [] and ("issuer_request", key(request())) not in \
        bench.store.events


@virtual
async def test_the_pin_block_goes_to_the_routed_links_zpk():
    hsm = FakeHsm()
    bench = Bench(hsm=hsm)
    await bench.send(request(pan=MC_PAN, pin_block=b"\x01" * 8))
    await bench.send(request(stan="000002", pin_block=b"\x01" * 8))
    assert hsm.translations == [("tpk.pos", "zpk.mc"), ("tpk.pos", "zpk.visa")]
    (out,) = bench.links["mc"].sent
    assert out.pin_block == b"X" * 8


@virtual
async def test_pin_codes_81_for_a_bad_block_15_for_an_unknown_bin_nothing_sent():
    hsm = FakeHsm(bad_pin_block=True)
    bench = Bench(hsm=hsm)
    assert (await bench.send(request(pin_block=b"\x01" * 8))).response_code == "81"
    unrouted = request(stan="000002", pan="9999990000000001", pin_block=b"\x01" * 8)
    assert (await bench.send(unrouted)).response_code == "15"
    assert bench.links["visa"].sent == [] and bench.store.saf == []


@virtual
async def test_terminal_mac_missing_is_63_before_any_claim():
    bench = Bench(hsm=FakeHsm())
    resp = await bench.send(request(terminal="TERMMAC1"))
    assert resp.response_code == "63"
    assert bench.store.payments == {}


# -- the journal write, and its retry -----------------------------------------------------
@virtual
async def test_journal_down_after_approval_tells_96_then_records_it_and_the_0420():
    ledger = FakeLedger()
    bench = Bench(ledger=ledger)
    bench.store.fail_complete = 1
    req = request()
    async with trio.open_nursery() as n:
        n.start_soon(bench.txn.recorder.retry_loop)
        resp = await bench.send(req)
        assert resp.response_code == "96"
        assert bench.store.answer(key(req)) is None  # not yet written
        await trio.sleep(UNWRITTEN_RETRY_S + 0.001)  # virtual: one retry round
        n.cancel_scope.cancel()
    assert bench.store.answer(key(req)) == "96"  # a repeat is told what it was told
    (sent,) = bench.links["visa"].sent
    assert bench.store.saf_mtis() == [("0420", original_data(sent))]
    assert ledger.voids_later == [key(req)]  # PostLedger's abort: the hold is voided
    assert bench.txn.recorder.unwritten == []


@virtual
async def test_lost_commit_ack_is_corrected_and_the_owed_0420_queued_once():
    bench = Bench()
    bench.store.lose_ack = 1
    req = request()
    async with trio.open_nursery() as n:
        n.start_soon(bench.txn.recorder.retry_loop)
        assert (await bench.send(req)).response_code == "96"
        await trio.sleep(UNWRITTEN_RETRY_S + 0.001)
        n.cancel_scope.cancel()
    assert bench.store.answer(key(req)) == "96"
    assert ("response_corrected", key(req)) in bench.store.events
    assert [m for m, _ in bench.store.saf_mtis()] == ["0420"]


# -- on-us ---------------------------------------------------------------------------------
@virtual
async def test_onus_approval_holds_without_a_link_and_51_holds_nothing():
    ledger = FakeLedger(funds_minor=2000)
    bench = Bench(ledger=ledger, hsm=FakeHsm())
    ok = await bench.send(request(pan=ONUS_PAN, pin_block=b"\x01" * 8))
    poor = await bench.send(request(pan=ONUS_PAN, stan="000002", amount=5000))
    assert (ok.response_code, ok.auth_code) == ("00", "123456")
    assert poor.response_code == "51"
    assert list(ledger.holds.values()) == [1250] and ledger.voids_later == []
    assert all(not link.sent for link in bench.links.values())
    assert bench.svc.hsm.translations == []  # on-us: no PIN translation


@virtual
async def test_onus_hold_unknown_is_96_and_voided():
    ledger = FakeLedger(fail_hold=True)
    bench = Bench(ledger=ledger)
    req = request(pan=ONUS_PAN)
    assert (await bench.send(req)).response_code == "96"
    assert ledger.voids_later == [key(req)]


@virtual
async def test_onus_approval_whose_answer_is_not_journalled_is_voided():
    ledger = FakeLedger()
    bench = Bench(ledger=ledger)
    bench.store.fail_complete = 1
    req = request(pan=ONUS_PAN)
    assert (await bench.send(req)).response_code == "96"
    assert ledger.voids_later == [key(req)] and bench.store.saf == []


# -- duplicates and reversals, in virtual time ---------------------------------------------
@virtual
async def test_a_duplicate_waits_for_its_original_and_gets_its_answer():
    bench = Bench()
    answers: dict[str, Message] = {}
    at: dict[str, float] = {}

    async def send(name: str, req: Message) -> None:
        answers[name] = await bench.send(req)
        at[name] = trio.current_time()

    async with trio.open_nursery() as n:
        n.start_soon(send, "first", request())
        await trio.testing.wait_all_tasks_blocked()  # the first is at the issuer
        n.start_soon(send, "repeat", request("0201"))
    assert answers["repeat"].response_code == "00"
    assert answers["repeat"].auth_code == answers["first"].auth_code
    assert len(bench.links["visa"].sent) == 1
    # woken when the original's answer is recorded (10 ms in), not by polling as for
    # another process's original (DUPLICATE_POLL_S: 50 ms in)
    assert at["repeat"] - at["first"] < DUPLICATE_POLL_S / 10


@virtual
async def test_a_duplicate_gives_up_after_duplicate_wait_ms():
    bench = Bench(answer=silent, duplicate_wait_ms=500)
    answers: dict[str, tuple[str, float]] = {}

    async def send(name: str, req: Message) -> None:
        started = trio.current_time()
        resp = await bench.send(req)
        answers[name] = (resp.response_code, trio.current_time() - started)

    async with trio.open_nursery() as n:
        n.start_soon(send, "first", request())
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(send, "repeat", request("0201"))
    assert answers["repeat"] == ("91", pytest.approx(0.5))
    assert answers["first"] == ("91", pytest.approx(2.0))


@virtual
async def test_a_0400_the_issuer_does_not_answer_is_91_its_0420_queued_hold_voided():
    ledger = FakeLedger()
    bench = Bench(ledger=ledger)
    orig = request()
    assert (await bench.send(orig)).response_code == "00"
    bench.links["visa"].answer = silent
    rev = request("0400", stan="000002")
    rev = rev.replace(original_data="0200" + "000001" + "1128091500" + "0" * 22)
    started = trio.current_time()
    resp = await bench.send(rev)
    assert trio.current_time() - started == pytest.approx(2.0)
    assert resp.response_code == "91"
    first, reversal = bench.links["visa"].sent
    assert reversal.mti == "0400"
    # the 0420 repeats the 0400's DE90: the original, never the reversal itself
    assert bench.store.saf_mtis() == [("0420", original_data(first))]
    assert ledger.voided == [key(orig)]


@virtual
async def test_a_second_reversal_of_the_same_original_sends_nothing():
    bench = Bench()
    assert (await bench.send(request())).response_code == "00"
    od = "0200" + "000001" + "1128091500" + "0" * 22
    for stan in ("000002", "000003"):
        resp = await bench.send(request("0400", stan=stan).replace(original_data=od))
        assert resp.response_code == "00"
    assert [m.mti for m in bench.links["visa"].sent] == ["0200", "0400"]


def test_every_authorization_path_starts_by_identifying_the_sender():
    for mti, path in PATHS.items():
        if mti != "080":
            assert path.head[0] is Identify, mti


def test_the_manager_and_participants_never_import_the_server():
    # the server <-> pipeline cycle must not come back: participants see Services only
    import ast
    from pathlib import Path as FsPath

    import payswitch.switch as pkg

    root = FsPath(pkg.__file__).parent
    files = [root / "txn.py", root / "services.py", root / "record.py", root / "pans.py",
             root / "messages.py", *sorted((root / "participants").glob("*.py"))]
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.endswith("switch.server") for n in names), f


@virtual
async def test_reversal_and_duplicate_refusals_keep_their_codes():
    bench = Bench()
    assert (await bench.send(request())).response_code == "00"
    od = "0200" + "000001" + "1128091500" + "0" * 22
    other_card = await bench.send(request("0201", pan=MC_PAN))  # same key, other card
    unknown = await bench.send(request("0400", stan="000007").replace(
        original_data="0200" + "000099" + "1128091500" + "0" * 22))
    amount = await bench.send(request("0400", stan="000008", amount=999).replace(
        original_data=od))
    assert (other_card.response_code, unknown.response_code,
            amount.response_code) == ("94", "25", "13")
    assert [m.mti for m in bench.links["visa"].sent] == ["0200"]  # none reversed


@virtual
async def test_payment_in_flight_gauge_counts_requests_being_answered():
    """The gauge is read when scraped (from the manager's own count): two requests
    waiting for the issuer show as 2, none once both are answered."""
    bench = Bench()
    gauge = bench.svc.metrics.registry.get_sample_value
    seen: list[float | None] = []

    async def scrape_while_waiting() -> None:
        await trio.sleep(0.005)  # both sent, the issuer answers after 10 ms
        seen.append(gauge("payment_in_flight"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(bench.send, request(stan="000001"))
        nursery.start_soon(bench.send, request(stan="000002", pan=MC_PAN))
        nursery.start_soon(scrape_while_waiting)
    assert seen == [2.0]
    assert gauge("payment_in_flight") == 0.0


@virtual
async def test_payment_metrics_count_every_request_and_show_success_only_once_approved():
    """Per MTI and DE39, counted by the manager: attempts and durations of every
    request, responses by code, and a success series that appears with the first 00."""
    bench = Bench(answer=lambda m: Message(mti=m.response_mti, stan=m.stan, rrn=m.rrn,
                                           response_code="05"))
    sample = bench.svc.metrics.registry.get_sample_value
    for stan in ("000001", "000002"):
        assert (await bench.send(request(stan=stan))).response_code == "05"
    assert sample("payment_attempts_total", {"mti": "0200"}) == 2.0
    assert sample("payment_responses_total", {"mti": "0200", "response_code": "05"}) == 2.0
    assert sample("payment_processing_duration_seconds_count", {"mti": "0200"}) == 2.0
    assert sample("payment_success_total", {"mti": "0200"}) is None  # never approved
    bench.links["visa"].answer = approve
    assert (await bench.send(request(stan="000003"))).response_code == "00"
    assert sample("payment_attempts_total", {"mti": "0200"}) == 3.0
    assert sample("payment_responses_total", {"mti": "0200", "response_code": "00"}) == 1.0
    assert sample("payment_success_total", {"mti": "0200"}) == 1.0
