"""The engine is grouped by concern, and no folder imports from one that depends on it
(issue 25): each folder may import only from the folders before it in ``LAYERS``."""

import ast
from pathlib import Path

import training

ROOT = Path(training.__file__).parent
# bottom first; a folder imports only from itself and the folders before it
LAYERS = ["core", "engine", "methods", "fit", "weak", "interactive", "library", "bench", "cli"]


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "training" or len(parts) == 1:
        return None  # the package root holds only label constants
    return parts[1] if parts[1] in LAYERS else "cli"  # cli*.py, __main__.py


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):  # lazy imports inside functions count too
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


def test_no_module_imports_from_a_folder_above_it():
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        own = _layer(".".join(rel.parts))
        for module in _imports(path):
            other = _layer(module)
            if own and other and LAYERS.index(other) > LAYERS.index(own):
                bad.append(f"{rel} ({own}) imports {module} ({other})")
    assert not bad, "\n".join(bad)


def test_every_engine_module_lives_in_a_folder():
    loose = sorted(p.name for p in ROOT.glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "cli.py", "cli_benchmark.py", "cli_checks.py"]
