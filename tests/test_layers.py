"""The package layers: storage ← actors ← admin ← supervisor, each entered through its
``__init__``, and the simulated Bot API kept out of production code paths."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"storage": 0, "actors": 1, "admin": 2, "supervisor": 3}
# Subpackages that are entered through their own ``__init__`` (like ``trio.testing``).
PUBLIC_SUBPACKAGES = {"actors.simulator"}
# Where the simulated Bot API may be imported: itself, and the demo's composition root.
SIMULATOR_USERS = {"actors.simulator", "supervisor.demo"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, imported module) of every absolute import in the file, nested ones included."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def violations(path: Path) -> Iterator[str]:
    here = module_name(path)
    package = here.split(".")[0]
    for line, target in imports(path):
        top = target.split(".")[0]
        if top not in LAYERS:
            continue
        where = f"{path.relative_to(ROOT)}:{line} imports {target}"
        in_simulator = any(target == s or target.startswith(s + ".") for s in PUBLIC_SUBPACKAGES)
        if in_simulator and not any(here == u or here.startswith(u + ".") for u in SIMULATOR_USERS):
            yield f"{where}: the simulated Bot API is for the demo, tests and benchmarks only"
        if top == package:
            continue
        if LAYERS[top] > LAYERS[package]:
            yield f"{where}: {package} is below {top} and must not depend on it"
        if target != top and target not in PUBLIC_SUBPACKAGES:
            yield f"{where}: import from {top} (its __init__), not from its module {target}"


def test_packages_import_only_lower_layers_through_their_init() -> None:
    found = [
        problem
        for package in LAYERS
        for path in sorted((ROOT / package).rglob("*.py"))
        for problem in violations(path)
    ]
    assert found == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from supervisor import Fleet\n", "admin is below supervisor"),
        ("from actors.bot import BotActor\n", "not from its module actors.bot"),
        ("from actors.simulator import SimulatedBotApi\n", "demo, tests and benchmarks only"),
        ("def f():\n    import supervisor.fleet\n", "admin is below supervisor"),
    ],
)
def test_the_checker_catches_each_kind_of_violation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, expected: str
) -> None:
    (tmp_path / "admin").mkdir()
    module = tmp_path / "admin" / "bad.py"
    module.write_text(source, encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert any(expected in problem for problem in violations(module))


def test_importing_actors_loads_no_web_server_and_no_simulator() -> None:
    # A fresh interpreter: this test process has loaded everything already.
    code = (
        "import sys, actors\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('starlette', 'hypercorn', 'admin', 'supervisor') or m.startswith('actors.simulator'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""
