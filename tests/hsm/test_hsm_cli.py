"""`payswitch hsm ...` end to end, in a subprocess with its own token directory."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import psec

K1 = "0123456789ABCDEFFEDCBA9876543210"
K2 = "89ABCDEF0123456776543210FEDCBA98"


def run(env, *args, ok=True):
    res = subprocess.run([sys.executable, "-m", "payswitch.lab.cli", "hsm", *args],
                         env=env, capture_output=True, text=True, timeout=60, check=False)
    if ok:
        assert res.returncode == 0, res.stderr
    return res


def test_cli_init_import_generate_list(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOFTHSM", "PAYSWITCH"))}
    env["PAYSWITCH_HSM_PIN"] = "7777"
    env["PAYSWITCH_HSM_SO_PIN"] = "8888"
    out = run(env, "init", "--dir", str(tmp_path), "--label", "cli-test").stdout
    exports = dict(line.split(" ", 1)[1].split("=", 1) for line in out.splitlines()
                   if line.startswith("export "))
    env.update(exports)
    assert env["PAYSWITCH_HSM_TOKEN"] == "cli-test"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kcv2 = psec.des.generate_kcv(bytes.fromhex(K2), 3).hex().upper()
        k = bytes(a ^ b for a, b in zip(bytes.fromhex(K1), bytes.fromhex(K2), strict=True))
        zmk_kcv = psec.des.generate_kcv(k, 3).hex().upper()
    r = run(env, "import-key", "--label", "zmk.peer", "--type", "ZMK",
            "--component", K1, "--kcv", "08D7B4", "--component", K2, "--kcv", kcv2)
    assert zmk_kcv in r.stdout
    bad = run(env, "import-key", "--label", "zmk.bad", "--type", "ZMK", "--component", K1,
              "--kcv", "000000", ok=False)
    assert bad.returncode == 2 and "KcvMismatchError" in bad.stderr and K1 not in bad.stderr

    g = run(env, "generate-key", "--label", "zpk.peer", "--type", "ZPK",
            "--export-under", "zmk.peer").stdout
    kcv = g.split("KCV ")[1].split()[0]
    crypt = g.split(": ")[-1].strip()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clear = psec.des.decrypt_tdes_ecb(k, bytes.fromhex(crypt))
        assert psec.des.generate_kcv(clear, 3).hex().upper() == kcv
    r = run(env, "import-key", "--label", "zpk.back", "--type", "ZPK", "--under", "zmk.peer",
            "--cryptogram", crypt, "--kcv", kcv)
    assert kcv in r.stdout

    listing = run(env, "list").stdout
    assert "zmk.peer" in listing and "zpk.peer" in listing and "zpk.back" in listing
    assert K1 not in listing and crypt not in listing and clear.hex().upper() not in listing
    row = next(line for line in listing.splitlines() if line.startswith("zpk.back"))
    assert "ZPK" in row and kcv in row

    # Wrong PIN is a clear error.
    env["PAYSWITCH_HSM_PIN"] = "0000"
    bad = run(env, "list", ok=False)
    assert bad.returncode == 2 and "PIN" in bad.stderr
