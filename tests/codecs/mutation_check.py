"""Mutation check for the codec tests (issue 2 acceptance): break an encoder (or the
compiled decoder) on purpose, run tests/codecs, report which tests fail, restore the file.

    .venv/bin/python tests/codecs/mutation_check.py

Refuses to run with uncommitted changes under codecs/ (it restores files with
``git checkout``). Not collected by pytest (its name does not start with test_).
"""

import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]

_VISA_HOOKS = 'hooks_out = {"35": _track_out, "36": _track_out, "22": _pem_out}'
_BCD_OUT = """out += [f"d = a2b_hex('{pad}' + v if len(v) & 1 else v)", "n = len(v)"]"""

# name: (file, text to replace, broken text)
MUTANTS = {
    "M1 Visa BCD: hi/lo nibbles of every numeric byte swapped on encode": (
        "codecs/iso8583/compiled.py", _BCD_OUT,
        _BCD_OUT.replace('"n = len(v)"', '"d = bytes(b >> 4 | (b & 15) << 4 for b in d)", '
                                         '"n = len(v)"')),
    "M2 Visa BCD: first two STAN digits swapped on encode": (
        "codecs/iso8583/visa.py", _VISA_HOOKS,
        _VISA_HOOKS[:-1] + ', "11": lambda s, key: s[1] + s[0] + s[2:]}'),
    "M3 Mastercard bitmap bit for DE2 flipped on encode": (
        "codecs/iso8583/dialect.py",
        "        return self.join_header(msg, body)",
        '        if self.name == "mastercard":\n'
        "            body = body[:4] + bytes([body[4] ^ 0x40]) + body[5:]\n"
        "        return self.join_header(msg, body)"),
    "M4 Mastercard text in cp037 instead of cp500": (
        "codecs/iso8583/mastercard.py", 'EBCDIC = "cp500"', 'EBCDIC = "cp037"'),
    "M5 Visa odd numerics padded right instead of left": (
        "codecs/iso8583/visa.py", 'len_count="nibbles", left_pad="0",',
        'len_count="nibbles", right_pad="0",'),
    "M6 Visa H4 counts the body only": (
        "codecs/iso8583/visa.py", "header.to_bytes(HEADER_BYTES + len(body))",
        "header.to_bytes(len(body))"),
    "M7 iso93 sign-on and echo function codes swapped": (
        "codecs/iso8583/iso93ascii.py",
        '{"001": "801", "002": "802", "161": "811", "301": "831"}',
        '{"001": "831", "002": "802", "161": "811", "301": "801"}'),
    "M8 TLV long lengths one byte too wide": (
        "codecs/tlv.py", 'raw = n.to_bytes((n.bit_length() + 7) // 8, "big")',
        'raw = n.to_bytes((n.bit_length() + 7) // 8 + 1, "big")'),
    "M9 compiled decode takes non-digits in an ASCII or EBCDIC numeric field": (
        "codecs/iso8583/compiled.py",
        'out += ["if not d.isdigit(): raise NotPlain", "v = d.decode()"]',
        'out += ["v = d.decode()"]'),
}


def main() -> int:
    dirty = subprocess.run(["git", "status", "--porcelain", "codecs"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout
    if dirty.strip():
        print("uncommitted changes under codecs/: commit them first")
        return 2
    survivors = sum(_run(name, *m) for name, m in MUTANTS.items())
    print(f"{len(MUTANTS) - survivors}/{len(MUTANTS)} mutants killed")
    return 1 if survivors else 0


def _run(name: str, path: str, old: str, new: str) -> int:
    p = ROOT / path
    src = p.read_text()
    assert old in src, name
    p.write_text(src.replace(old, new, 1))
    try:
        r = subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "pytest", "-q",
                            "tests/codecs"], cwd=ROOT, capture_output=True, text=True)
        failed = [line.split(" ")[1] for line in r.stdout.splitlines()
                  if line.startswith("FAILED")]
        print(f"== {name}: {len(failed)} tests failed")
        for f in failed:
            print("   ", f)
        return 0 if failed else 1
    finally:
        subprocess.run(["git", "checkout", "--", path], cwd=ROOT, check=True)


if __name__ == "__main__":
    raise SystemExit(main())
