"""The issuer simulator's checks with its own SoftHSM token (no sockets): PIN try
counting and reset, CVV vs iCVV by entry mode, CVV2, and the repr hides DE48."""

from __future__ import annotations

import pytest

from payswitch.hsm import devkeys
from payswitch.simulators.cards import card
from payswitch.simulators.issuer import Issuer
from payswitch.simulators.terminal import CardCrypto, Terminal


@pytest.fixture(scope="module")
def issuer_and_terminal(issuer_hsm, terminal_hsm):
    devkeys.load_issuer_keys(issuer_hsm)
    devkeys.load_terminal_keys(terminal_hsm)
    return Issuer(hsm=issuer_hsm), Terminal("TERM0001", seed=9,
                                            crypto=CardCrypto(terminal_hsm)), issuer_hsm


def under_zpk(issuer_hsm, msg, pin):
    """What the switch does: the PIN block re-encrypted under the link's ZPK."""
    msg.pin_block = issuer_hsm.encrypt_pin(devkeys.zpk("visa"), pin, msg.pan)
    return msg


def test_pin_tries_count_reset_and_block(issuer_and_terminal):
    issuer, term, ihsm = issuer_and_terminal
    c = card("visa_pin_tries")

    def attempt(pin):
        msg = under_zpk(ihsm, term.withdrawal(c, 1000), pin)
        return issuer.respond(msg).response_code

    assert [attempt("9999"), attempt("9999"), attempt(c.pin)] == ["55", "55", "00"]
    assert [attempt("9999"), attempt("9999"), attempt("9999")] == ["55", "55", "75"]
    assert attempt(c.pin) == "75"  # blocked: even the right PIN


def test_cvv_icvv_cvv2(issuer_and_terminal):
    issuer, term, ihsm = issuer_and_terminal
    ok = card("visa_approve")
    mag = under_zpk(ihsm, term.purchase(ok, 500, chip=False), ok.pin)
    assert issuer.respond(mag).response_code == "00"
    chip_track_on_mag = under_zpk(ihsm, term.purchase(ok, 500, chip=True), ok.pin)
    chip_track_on_mag.pos_entry_mode = "021"  # iCVV read as a magstripe CVV: 82
    chip_track_on_mag.emv = None
    assert issuer.respond(chip_track_on_mag).response_code == "82"
    keyed = term.keyed_purchase(ok, 500)
    assert issuer.respond(keyed).response_code == "00"
    assert "additional_data='<redacted>'" in repr(keyed)  # DE48 holds the CVV2
    assert issuer.respond(term.keyed_purchase(card("visa_bad_cvv2"), 500)).response_code \
        == "N7"



@pytest.mark.parametrize(("name", "cvn"), [("visa_approve", 10), ("visa_approve_2", 18),
                                           ("mastercard_approve", 17),
                                           ("mastercard_approve_2", 16)])
def test_card_arqc_and_issuer_arpc_match_pyemv(issuer_and_terminal, name, cvn):
    """The simulated chip's ARQC and the issuer's ARPC (method 1, ARC 00), recomputed by
    pyemv's CVN classes from the TEST MK-AC: the cards use a mix of CVN 10 (the UDK,
    no session key), 18 (common session key), M/Chip 16 and 17 (Mastercard SKD)."""
    import warnings

    from payswitch.codecs.tlv import decode_tlv
    from payswitch.hsm import emv

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pyemv import ac as pyemv_ac
        from pyemv import cvn as pyemv_cvn
    issuer, term, ihsm = issuer_and_terminal
    c = card(name)
    msg = term.purchase(c, 4000, chip=True)
    msg.pin_block = ihsm.encrypt_pin(devkeys.zpk(c.network), c.pin, msg.pan)
    tags = {t.tag_hex: t.value for t in decode_tlv(msg.emv)}
    assert emv.cvn_of(tags) == cvn == c.cvn
    mk = devkeys.TEST_KEYS[devkeys.mkac(c.network)].clear
    base = {f"tag_{t.lower()}": tags[t] for t in (
        "9F02", "9F03", "9F1A", "95", "5F2A", "9A", "9C", "9F37", "82", "9F36")}
    iad, psn = tags["9F10"], msg.card_sequence[-2:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cls = {10: pyemv_cvn.VisaCVN10, 18: pyemv_cvn.VisaCVN18,
               16: pyemv_cvn.MasterCardCVN16, 17: pyemv_cvn.MasterCardCVN17}[cvn]
        ref = cls(mk, mk, mk, c.pan, psn)
        if cvn == 10:
            want = ref.generate_ac(**base, cvr=iad[3:7])
        elif cvn == 18:
            want = ref.generate_ac(**base, tag_9f10=iad)
        else:
            extra = {"counters": iad[10:18]} if cvn == 17 else {}
            want = ref.generate_ac(**base, cvr=iad[2:8], **extra)
        if cvn == 18:  # ARPC method 1 under the session key
            arpc = pyemv_ac.generate_arpc_1(ref._derive_sk_ac_common(tags["9F36"]), want,
                                            b"00")
        else:  # method 1 under the UDK
            arpc = ref.generate_arpc(tag_9f26=want, arpc_rc=b"00")
    assert tags["9F26"] == want
    before = issuer.arqc_by_cvn[cvn]
    resp = issuer.respond(msg)
    assert resp.response_code == "00"
    assert issuer.arqc_by_cvn[cvn] == before + 1
    resp_tags = {t.tag_hex: t.value for t in decode_tlv(resp.emv)}
    assert resp_tags["91"] == arpc + b"00"


def test_issuer_refuses_a_cvn_the_card_does_not_have(issuer_and_terminal):
    """A CVN 18 card whose DE55 claims CVN 10 (a weaker key path): 82, no ARPC."""
    from payswitch.codecs.tlv import Tlv, as_tag, decode_tlv, encode_tlv

    issuer, term, ihsm = issuer_and_terminal
    c = card("visa_approve_2")
    msg = under_zpk(ihsm, term.purchase(c, 4000, chip=True), c.pin)
    tlvs = [Tlv(as_tag("9F10"), bytes.fromhex("06010A03A00000")) if t.tag_hex == "9F10"
            else t for t in decode_tlv(msg.emv)]
    msg.emv = encode_tlv(tlvs)
    resp = issuer.respond(msg)
    assert resp.response_code == "82" and not resp.emv


class _CountingHsm:
    """The issuer's HSM, counting the card checks that reach it."""

    def __init__(self, hsm):
        self._hsm, self.calls = hsm, []

    def __getattr__(self, name):
        fn = getattr(self._hsm, name)
        if not name.startswith("verify_"):
            return fn

        def counted(*args, **kw):
            self.calls.append(name)
            return fn(*args, **kw)
        return counted


def test_a_repeated_card_check_is_answered_without_the_hsm(issuer_and_terminal):
    """The same track 2 and PIN block again: the HSM's first verdicts, no new round
    trip; a wrong PIN or a wrong CVV is still a new input, checked and refused."""
    _, term, ihsm = issuer_and_terminal
    counting = _CountingHsm(ihsm)
    issuer = Issuer(hsm=counting)
    ok, bad_cvv = card("visa_approve"), card("visa_bad_cvv")
    msg = under_zpk(ihsm, term.purchase(ok, 500, chip=False), ok.pin)
    assert issuer.respond(msg).response_code == "00"
    assert counting.calls == ["verify_cvv", "verify_pin_pvv"]
    again = under_zpk(ihsm, term.purchase(ok, 700, chip=False), ok.pin)
    assert again.pin_block == msg.pin_block  # ISO format 0: same PIN, PAN, ZPK
    assert issuer.respond(again).response_code == "00"
    assert len(counting.calls) == 2
    wrong = under_zpk(ihsm, term.purchase(ok, 700, chip=False), "9999")
    assert issuer.respond(wrong).response_code == "55"
    assert counting.calls[2:] == ["verify_pin_pvv"]  # same track 2: CVV remembered
    assert issuer.respond(term.purchase(bad_cvv, 500, chip=False)).response_code == "82"
    assert issuer.respond(term.purchase(bad_cvv, 500, chip=False)).response_code == "82"
    assert counting.calls[3:] == ["verify_cvv"]


def test_a_remembered_pin_verdict_is_bound_to_its_zpk(issuer_and_terminal):
    """A block verified under the link's ZPK is not accepted once that ZPK is no longer
    one the link accepts (here: the ring names a key the token does not hold)."""
    from payswitch.hsm.keyexchange import KeyRing

    _, term, ihsm = issuer_and_terminal
    issuer = Issuer(hsm=ihsm)
    issuer.zpk_rings["visa"] = ring = KeyRing(devkeys.zpk("visa"), 60.0)
    ok = card("visa_approve")
    msg = under_zpk(ihsm, term.purchase(ok, 500, chip=False), ok.pin)
    assert issuer.respond(msg).response_code == "00"
    ring.current = "zpk.visa.not-held"
    again = under_zpk(ihsm, term.purchase(ok, 500, chip=False), ok.pin)
    again.pin_block = msg.pin_block
    assert issuer.respond(again).response_code == "55"
    assert issuer.pin_checks["failed"] == 1
