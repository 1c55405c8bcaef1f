"""An attacker who controls the switch's process (its HSM API on the switch token, with
the TPKs, BDKs and ZPKs) tries the known PIN-recovery attacks of issue 13; each must be
refused before it learns anything. On the old code the first one recovered a format 0
PIN block in 0.15 s."""

from __future__ import annotations

import pytest

from payswitch.hsm import (
    CommandNotAllowedError,
    HsmError,
    PinBlockError,
    PinVerifyLimitError,
    devkeys,
)

PAN, SECRET_PIN = "4761739001010010", "7391"


@pytest.fixture(scope="module")
def captured(hsm, terminal_hsm):
    """A PIN block captured on the wire: the victim keyed their PIN at a terminal."""
    devkeys.load_switch_keys(hsm)
    devkeys.load_terminal_keys(terminal_hsm)
    return terminal_hsm.encrypt_pin(devkeys.TPK, SECRET_PIN, PAN)


def test_attacker_on_the_switch_token_learns_nothing(hsm, captured):
    assert hsm.role == "switch"
    zpk = devkeys.zpk("visa")
    target = hsm.translate_pin(captured, PAN, devkeys.TPK, zpk)
    refused_before = sum(hsm.refused.values())

    # 1. Encrypt-and-compare: encrypt every PIN under the same key, compare blocks.
    #    Format 0 fill is fixed (F), so equal blocks mean equal PINs.
    with pytest.raises(CommandNotAllowedError):
        for guess in range(10_000):
            if hsm.encrypt_pin(zpk, f"{guess:04d}", PAN) == target:
                pytest.fail("PIN recovered by encrypt-and-compare")
    with pytest.raises(CommandNotAllowedError):
        hsm.dukpt_encrypt_pin(devkeys.BDK, bytes.fromhex("FFFF9876543210E00001"), "0000", PAN)

    # 2. Format downgrade: to ISO 1 (no PAN binding), then replay under other PANs /
    #    compare with format 1 blocks of known PINs.
    for dst in (1, 2):
        with pytest.raises(PinBlockError):
            hsm.translate_pin(captured, PAN, devkeys.TPK, zpk, 0, dst)

    # 3. Decimalisation table: a caller-chosen table (all zeros but one digit) tells
    #    which digits the natural PIN holds. No such argument; no PVK the attacker can
    #    load with its own table (clear components need the key ceremony's SO PIN).
    with pytest.raises(TypeError):
        hsm.verify_pin_ibm3624(target, PAN, zpk, "pvk.any", "0000", PAN[:12],
                               dec_table="1000000000000000")
    with pytest.raises(CommandNotAllowedError):
        hsm.import_key_components("pvk.attacker", "PVK", [bytes(range(16))],
                                  dec_table="0123456789012345")
    with pytest.raises(CommandNotAllowedError), hsm.ceremony("guess"):
        pass

    # 4. Clear-PIN generate: PVV / offset of every candidate PIN, compared with the
    #    card's stored PVV; and the block form (issuing) is not the switch's either.
    with pytest.raises(CommandNotAllowedError):
        hsm.generate_pvv_clear("pvk.any", PAN, "0000")
    with pytest.raises(CommandNotAllowedError):
        hsm.generate_ibm3624_offset_clear("pvk.any", "0000", PAN[:12])
    with pytest.raises(CommandNotAllowedError):
        hsm.generate_pvv("pvk.any", PAN, target, zpk)
    with pytest.raises(CommandNotAllowedError):
        hsm.generate_ibm3624_offset("pvk.any", target, PAN, zpk, PAN[:12])

    # 5. Brute force through verification: every PVV against the captured block.
    #    Rate-limited per card long before 10,000 tries.
    with pytest.raises(PinVerifyLimitError):
        for pvv in range(10_000):
            try:
                hsm.verify_pin_pvv(target, PAN, zpk, "pvk.none", f"{pvv:04d}")
            except PinVerifyLimitError:
                raise
            except HsmError:
                pass  # no PVK on the switch token: the attempt still counts
    assert pvv <= hsm.policy.pin_verify_max

    assert sum(hsm.refused.values()) - refused_before >= 8
