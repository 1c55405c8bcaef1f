"""The TEST key set loads with every KCV checked, and the sides interoperate."""

from __future__ import annotations

import hashlib
import hmac
import warnings

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from payswitch.hsm import devkeys

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import psec


def _ref_kcv(dk: devkeys.DevKey) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dk.alg == "AES":
            e = Cipher(algorithms.AES(dk.clear), modes.ECB()).encryptor()  # noqa: S305
            return e.update(bytes(16))[:3].hex().upper()
        if dk.alg == "HMAC":
            return hmac.new(dk.clear, bytes(16), hashlib.sha256).digest()[:3].hex().upper()
        return psec.des.generate_kcv(dk.clear, 3).hex().upper()


def test_test_keys_kcvs_are_right():
    for dk in devkeys.TEST_KEYS.values():
        if dk.kcv:
            assert _ref_kcv(dk) == dk.kcv, dk.label


def test_switch_issuer_terminal_interoperate(hsm, issuer_hsm, hsm_scratch):
    sw = devkeys.load_switch_keys(hsm)
    iss = devkeys.load_issuer_keys(issuer_hsm)
    term = devkeys.load_terminal_keys(hsm_scratch)
    assert devkeys.load_switch_keys(hsm) == sw  # idempotent
    for label, kcv in {**sw, **iss, **term}.items():
        assert kcv == _ref_kcv(devkeys.TEST_KEYS[label])
    assert {i.label for i in hsm.list_keys()} >= set(devkeys.SWITCH_LABELS)

    pan, pin = "4761739001010010", "1234"
    pvv = hsm_scratch.generate_pvv_clear(devkeys.pvk("visa"), pan, pin)
    # Terminal: PIN block under the TPK; switch: TPK -> link ZPK; issuer: PVV.
    block = hsm_scratch.encrypt_pin(devkeys.TPK, pin, pan)
    fwd = hsm.translate_pin(block, pan, devkeys.TPK, devkeys.zpk("visa"))
    assert issuer_hsm.verify_pin_pvv(fwd, pan, devkeys.zpk("visa"), devkeys.pvk("visa"), pvv)
    # DUKPT terminal.
    ksn = bytes.fromhex("FFFF9876543210E00007")
    block = hsm_scratch.dukpt_encrypt_pin(devkeys.BDK, ksn, pin, pan)
    fwd = hsm.translate_pin_dukpt(block, ksn, pan, devkeys.BDK, devkeys.zpk("visa"))
    assert issuer_hsm.verify_pin_pvv(fwd, pan, devkeys.zpk("visa"), devkeys.pvk("visa"), pvv)
    # Card data personalised on the terminal side verifies at the issuer.
    cvv = hsm_scratch.generate_cvv(devkeys.cvk("visa"), pan, "2812", "201")
    assert issuer_hsm.verify_cvv(devkeys.cvk("visa"), pan, "2812", "201", cvv)
    arqc = hsm_scratch.generate_arqc(devkeys.mkac("visa"), pan, "00", b"\x00\x2a", b"tx data")
    ok, arpc = issuer_hsm.verify_arqc(devkeys.mkac("visa"), pan, "00", b"\x00\x2a",
                                      b"tx data", arqc, arc=b"00")
    assert ok and arpc and len(arpc) == 8
    # Link MAC: switch signs, issuer verifies.
    mac = hsm.generate_mac(devkeys.zak("mastercard"), b"0100...")
    assert issuer_hsm.verify_mac(devkeys.zak("mastercard"), b"0100...", mac)


def test_make_dev_tokens_in_a_fresh_process(tmp_path):
    # A fresh process: SoftHSM reads its conf once per process.
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from payswitch.hsm import Hsm, devkeys\n"
        "cfgs = devkeys.make_dev_tokens(sys.argv[1])\n"
        "cfgs = devkeys.make_dev_tokens(sys.argv[1])  # idempotent\n"
        "with Hsm(cfgs['switch']) as s, Hsm(cfgs['issuer']) as i, \\\n"
        "        Hsm(cfgs['terminal']) as t:\n"
        "    b = t.encrypt_pin(devkeys.TPK, '1234', '4761739001010010')\n"
        "    b = s.translate_pin(b, '4761739001010010', devkeys.TPK, devkeys.zpk('visa'))\n"
        "    pvv = i.generate_pvv_clear(devkeys.pvk('visa'), '4761739001010010', '1234')\n"
        "    assert i.verify_pin_pvv(b, '4761739001010010', devkeys.zpk('visa'),\n"
        "                            devkeys.pvk('visa'), pvv)\n"
        "    print(sorted(k.label for k in s.list_keys()) == sorted(devkeys.SWITCH_LABELS))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOFTHSM", "PAYSWITCH"))}
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "True"
