"""Who may import whom (ARCHITECTURE.md, "Layers"): fails `make lint` on a violation.

Reads every .py file of each top-level folder with `ast` (no import is executed) and
collects what it imports from payswitch: `import` / `from ... import` anywhere in the
file (also inside functions and `if TYPE_CHECKING:`), relative imports resolved, and
`importlib.import_module("payswitch....")` with a literal (or f-string) prefix. A folder
may import itself and the folders in its row of ALLOWED. The runtime packages and the
simulators may not import test-only tools (DEV_ONLY) either.

Why not import-linter: it builds its graph with grimp, which accepts only top-level
packages, and pyproject maps our folders into one package (payswitch.codecs, ...).

    python scripts/check_layers.py [ROOT]      # exit 1 and one line per violation
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

RUNTIME = ("codecs", "hsm", "ledger", "routing", "switch")
EVERYTHING = frozenset({*RUNTIME, "simulators", "lab"})
# folder -> the other payswitch folders it may import
ALLOWED: dict[str, frozenset[str]] = {
    "pkg": frozenset(),  # the `payswitch` package itself (pyproject maps it to pkg/)
    "codecs": frozenset(),
    "hsm": frozenset({"codecs"}),
    "ledger": frozenset({"codecs"}),
    "routing": frozenset({"codecs"}),
    "switch": frozenset({"codecs", "hsm", "ledger", "routing"}),
    "simulators": frozenset({"codecs", "hsm"}),
    "lab": EVERYTHING,
    "benchmarks": EVERYTHING,
}
DEV_ONLY = frozenset({"pytest", "hypothesis", "psec", "pyemv"})
NO_DEV_IMPORTS = frozenset({*RUNTIME, "simulators", "pkg"})


def _module_of(root: Path, path: Path) -> list[str]:
    """payswitch-relative module parts of a file: ledger/store.py -> [ledger, store]."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _targets(tree: ast.AST, module: list[str], is_pkg: bool) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of everything a file imports; payswitch-internal relative
    imports come back as absolute `payswitch.<folder>...` names."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module if is_pkg else module[:-1]
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                name = ".".join(["payswitch", *base, *(node.module or "").split(".")])
                yield node.lineno, name.rstrip(".")
            elif node.module:
                yield node.lineno, node.module
        elif isinstance(node, ast.Call) and _is_import_module(node.func) and node.args:
            prefix = _literal_prefix(node.args[0])
            if prefix:
                yield node.lineno, prefix


def _is_import_module(func: ast.expr) -> bool:
    return (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id in ("import_module", "__import__"))


def _literal_prefix(arg: ast.expr) -> str | None:
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values:
        first = arg.values[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value.rstrip(".")
    return None


def _folder_of(name: str) -> str | None:
    """The payswitch folder a dotted import name lands in (None: not payswitch)."""
    parts = name.split(".")
    if parts[0] != "payswitch":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else "pkg"


def violations(root: Path) -> list[str]:
    found = []
    for folder, allowed in ALLOWED.items():
        for path in sorted((root / folder).rglob("*.py")):
            module = _module_of(root / folder, path)
            tree = ast.parse(path.read_text(), str(path))
            is_pkg = path.name == "__init__.py"
            own = [] if folder == "pkg" else [folder]
            for line, name in _targets(tree, [*own, *module], is_pkg):
                where = f"{path.relative_to(root)}:{line}"
                target = _folder_of(name)
                if target is not None and target != folder and target not in allowed:
                    may = ", ".join(sorted(allowed)) or "nothing from payswitch"
                    found.append(f"{where}: {folder}/ imports {name} ({folder}/ may import"
                                 f" {may})")
                top = name.split(".")[0]
                if folder in NO_DEV_IMPORTS and top in DEV_ONLY:
                    found.append(f"{where}: {folder}/ imports {top}, a test-only package")
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent
    found = violations(root)
    for line in found:
        print(line)
    if found:
        print(f"check_layers: {len(found)} import(s) break the layers (ARCHITECTURE.md)")
        return 1
    print(f"check_layers: imports follow the layers ({', '.join(ALLOWED)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
