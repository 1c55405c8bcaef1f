"""The fraud feed: requests carry nothing of the label; scoring against labels."""

from __future__ import annotations

from payswitch.simulators.fraudfeed import FEED_PREFIX, build_feed, dup_key, score


def test_the_feed_is_requests_without_labels_in_time_order():
    feed = build_feed(seed=5, cards=60, days=2, fraud_rate=0.1)
    assert any(i.label for i in feed) and any(not i.scored for i in feed)
    for item in feed:
        m = item.message
        assert m.terminal_id.startswith(FEED_PREFIX) and len(m.terminal_id) == 8
        assert item.label not in repr(m) or not item.label
        assert len(m.merchant_id) == 15 and len(m.transmission_time) == 10
    assert len({dup_key(i.message) for i in feed}) == len(feed)  # one answer each


def test_score_counts_declines_by_pattern_and_precision_recall():
    feed = [i for i in build_feed(seed=5, cards=60, days=2, fraud_rate=0.1) if i.scored]
    fraud = [i for i in feed if i.label]
    good = [i for i in feed if not i.label]
    # flag half the fraud and one good authorization
    flagged = {dup_key(i.message): n % 2 == 0 for n, i in enumerate(fraud)}
    flagged |= {dup_key(i.message): n == 0 for n, i in enumerate(good)}
    s = score(feed, flagged)
    tp = sum(1 for n, _ in enumerate(fraud) if n % 2 == 0)
    assert s["recall"] == round(tp / len(fraud), 4)
    assert s["precision"] == round(tp / (tp + 1), 4)
    assert s["by_pattern"]["good"] == {"n": len(good), "declined": 1}
    assert sum(v["n"] for k, v in s["by_pattern"].items() if k != "good") == len(fraud)


def test_no_feed_request_is_a_format_error_to_the_issuer_simulators():
    """The demo's feed (seed 7) has cardholders whose PANs are test cards on file at the
    issuers (e.g. visa_decline); without DE14 those were answered 30. Each network
    simulator's issuer, as it answers (with its HSM checks off: no track, PIN or CVV2 in
    the feed), answers none of them 30, and those cards get their own outcome."""
    from payswitch.simulators.cards import BY_PAN
    from payswitch.simulators.issuer import Issuer

    issuer = Issuer(seed=1)
    codes = {}
    for item in build_feed(seed=7):
        codes.setdefault(issuer.decide(item.message), set()).add(item.message.pan)
    assert "30" not in codes
    on_file = {BY_PAN[p].name for ps in codes.values() for p in ps if p in BY_PAN}
    assert "visa_decline" in on_file and "visa_decline" in {
        BY_PAN[p].name for p in codes["05"]}
