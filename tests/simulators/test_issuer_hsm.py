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


def test_card_arqc_and_issuer_arpc_match_pyemv(issuer_and_terminal):
    """The simulated chip's ARQC and the issuer's ARPC, recomputed by pyemv's CVN class
    from the TEST MK-AC: CVN 10 under the card's UDK, no session key (issue 13)."""
    import warnings

    from payswitch.codecs.tlv import decode_tlv
    from payswitch.hsm import emv

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pyemv import cvn as pyemv_cvn
    issuer, term, ihsm = issuer_and_terminal
    c = card("visa_approve")
    msg = under_zpk(ihsm, term.purchase(c, 4000, chip=True), c.pin)
    tags = {t.tag_hex: t.value for t in decode_tlv(msg.emv)}
    assert emv.cvn_of(tags) == 10
    mk = devkeys.TEST_KEYS[devkeys.mkac("visa")].clear
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = pyemv_cvn.VisaCVN10(mk, mk, mk, c.pan, msg.card_sequence[-2:])
        want = ref.generate_ac(**{f"tag_{t.lower()}": tags[t] for t in (
            "9F02", "9F03", "9F1A", "95", "5F2A", "9A", "9C", "9F37", "82", "9F36")},
            cvr=tags["9F10"][3:7])
        arpc = ref.generate_arpc(tag_9f26=want, arpc_rc=b"00")
    assert tags["9F26"] == want
    resp = issuer.respond(msg)
    assert resp.response_code == "00"
    resp_tags = {t.tag_hex: t.value for t in decode_tlv(resp.emv)}
    assert resp_tags["91"] == arpc + b"00"
