"""TR-31 key blocks (version B under a TDES KBPK, D under an AES KBPK) against psec.tr31,
the independent implementation: our blocks unwrap in psec to a key with our KCV, psec's
blocks import here with psec's KCV; altered blocks, wrong usage and a wrong KBPK are
refused; ``payswitch hsm export`` / ``import`` show the KCV."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payswitch.hsm import HsmInputError, KcvMismatchError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import psec


def _label(p: str) -> str:
    return f"{p}-{uuid.uuid4().hex[:10]}"


def _kcv(key: bytes, aes: bool) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if aes:  # AES KCV: first 3 bytes of E_K(16 zero bytes)
            return psec.aes.encrypt_aes_ecb(key, bytes(16))[:3].hex().upper()
        return psec.des.generate_kcv(key, 3).hex().upper()


KBPKS = [("B", "KEK", "TDES", 16), ("D", "KEK", "AES", 16), ("D", "KEK", "AES", 32),
         ("B", "ZMK", "TDES", 16)]


@pytest.mark.parametrize(("version", "kind", "alg", "n"), KBPKS)
def test_export_unwraps_in_psec(hsm_scratch, version, kind, alg, n):
    kbpk_value = os.urandom(n)
    kbpk = _label("kbpk")
    hsm_scratch.import_key_components(kbpk, kind, [kbpk_value], alg=alg)
    made = [kbpk]
    try:
        for key_type, key_alg in (("ZPK", "TDES"), ("ZAK", "TDES"), ("ZPK", "AES")):
            label = _label(key_type.lower())
            kcv, block = hsm_scratch.generate_key_tr31(label, key_type, kbpk, alg=key_alg,
                                                       length=16)
            made.append(label)
            assert block[0] == version
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                header, key = psec.tr31.unwrap(kbpk_value, block)
            assert header.key_usage == ("P0" if key_type == "ZPK" else "M3")
            assert header.algorithm == ("A" if key_alg == "AES" else "T")
            assert _kcv(key, key_alg == "AES") == kcv
    finally:
        for lab in made:
            hsm_scratch.delete_key(lab)


@settings(max_examples=6, deadline=None)
@given(aes=st.booleans(), key=st.binary(min_size=16, max_size=16),
       kbpk_value=st.binary(min_size=16, max_size=16))
def test_psec_blocks_import(hsm_scratch, aes, key, kbpk_value):
    kbpk, label = _label("kbpk"), _label("zpk")
    hsm_scratch.import_key_components(kbpk, "KEK", [kbpk_value], alg="AES" if aes else "TDES")
    try:
        header = ("D0000P0AB00N0000" if aes else "B0000P0TB00N0000")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            block = psec.tr31.wrap(kbpk_value, header, key)
        kcv = hsm_scratch.import_key_tr31(label, "ZPK", kbpk, block,
                                          kcv=_kcv(key, aes))
        assert kcv == _kcv(key, aes)
        assert hsm_scratch.key_info(label).kcv == kcv
        hsm_scratch.delete_key(label)
        # One hex digit of the encrypted key changed: the MAC refuses it.
        i = 20
        bad = block[:i] + ("0" if block[i] != "0" else "1") + block[i + 1:]
        with pytest.raises(KcvMismatchError):
            hsm_scratch.import_key_tr31(label, "ZPK", kbpk, bad)
        # The block says PIN key: it cannot come in as a MAC key or a KEK.
        with pytest.raises(HsmInputError, match="usage"):
            hsm_scratch.import_key_tr31(label, "ZAK", kbpk, block)
        # Header altered (usage P0 -> M3 with a forged header): MAC covers the header.
        forged = block[:5] + "M3" + block[7] + "C" + block[9:]
        with pytest.raises(KcvMismatchError):
            hsm_scratch.import_key_tr31(label, "ZAK", kbpk, forged)
        assert not hsm_scratch.has_key(label)
    finally:
        hsm_scratch.delete_key(kbpk)


def test_wrong_kbpk_and_bad_blocks(hsm_scratch):
    a, b = _label("kbpk"), _label("kbpk")
    hsm_scratch.import_key_components(a, "KEK", [os.urandom(16)])
    hsm_scratch.import_key_components(b, "KEK", [os.urandom(16)])
    aes = _label("kbpk")
    hsm_scratch.import_key_components(aes, "KEK", [os.urandom(16)], alg="AES")
    try:
        _, block = hsm_scratch.generate_key_tr31(_label("zpk"), "ZPK", a)
        with pytest.raises(KcvMismatchError):
            hsm_scratch.import_key_tr31(_label("zpk"), "ZPK", b, block)
        with pytest.raises(HsmInputError, match="version"):
            hsm_scratch.import_key_tr31(_label("zpk"), "ZPK", aes, block)
        for junk in ("", "B0010P0TB00N0000", block[:-1], "X" + block[1:],
                     block[:1] + "9999" + block[5:]):
            with pytest.raises(HsmInputError):
                hsm_scratch.import_key_tr31(_label("zpk"), "ZPK", a, junk)
    finally:
        for lab in (a, b, aes):
            hsm_scratch.delete_key(lab)


def test_cli_export_import_show_kcv(tmp_path):
    """`payswitch hsm export` on one token, `payswitch hsm import` on another sharing
    the KBPK: both print the same KCV, which psec computes from the unwrapped key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOFTHSM", "PAYSWITCH"))}
    kbpk = os.urandom(16).hex().upper()

    def run(*args: str) -> str:
        res = subprocess.run([sys.executable, "-m", "payswitch.lab.cli", "hsm", *args],
                             env=env, capture_output=True, text=True, timeout=120,
                             check=False)
        assert res.returncode == 0, res.stderr
        return res.stdout

    for tok in ("a", "b"):
        out = run("init", "--dir", str(tmp_path), "--label", tok, "--role", "personalisation")
        for line in out.splitlines():
            k, _, v = line.removeprefix("export ").partition("=")
            env[k] = v.split()[0]
        run("import-key", "--label", "kbpk.net", "--type", "KEK", "--alg", "AES",
            "--component", kbpk, "--kcv", _kcv(bytes.fromhex(kbpk), True))
    env["PAYSWITCH_HSM_TOKEN"] = "a"
    out = run("export", "--label", "zpk.new", "--type", "ZPK", "--kbpk", "kbpk.net")
    kcv = out.split("KCV ")[1].split()[0]
    block = out.split("key block: ")[1].split()[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, key = psec.tr31.unwrap(bytes.fromhex(kbpk), block)
    assert _kcv(key, False) == kcv
    env["PAYSWITCH_HSM_TOKEN"] = "b"
    out = run("import", "--label", "zpk.new", "--type", "ZPK", "--kbpk", "kbpk.net",
              "--block", block, "--kcv", kcv)
    assert f"KCV {kcv}" in out


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(
    st.text(max_size=120),
    st.builds(lambda v, body: v + f"{16 + len(body):04d}" + body,
              st.sampled_from("BDAC"), st.text("0123456789ABCDEF", min_size=11, max_size=90))))
def test_parse_never_crashes(text):
    """Any string: a parsed header or HsmInputError, nothing else (no token involved)."""
    from payswitch.hsm import tr31

    try:
        h, data, mac = tr31.parse(text)
    except HsmInputError:
        return
    assert h.version in "BD" and len(mac) in (8, 16) and data
