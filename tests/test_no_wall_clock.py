"""Library code takes time from Trio only, and never runs on asyncio.

A call to ``time.time``/``time.monotonic``/``time.sleep``/``time.perf_counter`` (or their
``_ns`` forms) or ``datetime.now`` reads a clock a ``MockClock`` cannot move, and
``time.sleep`` blocks the whole event loop; asyncio is a different event loop altogether.
Either would make the timing tests lie. The check parses the source with ``ast``, so comments,
strings and names that merely contain these words do not count, while aliases (``import time
as t``, ``from time import monotonic as now``, ``import datetime as dt``) do.

The one exception is the daemon's wall-clock anchor (``supervisor/clock.py``): it reads the
system's date once, at start, and derives every later timestamp from Trio's clock.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBRARY_PACKAGES = ("supervisor", "actors", "admin", "storage")
FORBIDDEN_TIME = frozenset(
    {
        "time",
        "time_ns",
        "monotonic",
        "monotonic_ns",
        "sleep",
        "perf_counter",
        "perf_counter_ns",
    }
)
FORBIDDEN_MODULES = frozenset({"asyncio"})
READS_THE_DATE = frozenset({"now", "utcnow", "today"})
# file -> what it may do, and why.
ALLOWED = {
    "supervisor/clock.py": ("calls datetime.", "the wall-clock anchor, read once at start"),
}


@dataclass(frozen=True)
class Violation:
    path: Path
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}: {self.what}"


class _Scanner(ast.NodeVisitor):
    """Finds forbidden clocks and asyncio in one module."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.violations: list[Violation] = []
        # Local names bound to the time module, and to forbidden functions of it.
        self.time_modules: set[str] = set()
        self.time_functions: dict[str, str] = {}
        # Local names bound to the datetime module, and to its datetime and date classes.
        self.datetime_modules: set[str] = set()
        self.datetime_classes: dict[str, str] = {}

    def _flag(self, node: ast.AST, what: str) -> None:
        self.violations.append(Violation(self.path, getattr(node, "lineno", 0), what))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            top = alias.name.split(".")[0]
            if top in FORBIDDEN_MODULES:
                self._flag(node, f"imports {alias.name} (use Trio)")
            if alias.name == "time":
                self.time_modules.add(alias.asname or "time")
            if alias.name == "datetime":
                self.datetime_modules.add(alias.asname or "datetime")
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if module.split(".")[0] in FORBIDDEN_MODULES:
            self._flag(node, f"imports from {module} (use Trio)")
        if module == "time" and node.level == 0:
            for alias in node.names:
                if alias.name in FORBIDDEN_TIME or alias.name == "*":
                    self._flag(node, f"imports time.{alias.name} (use trio.current_time/sleep)")
                    self.time_functions[alias.asname or alias.name] = alias.name
        if module == "datetime" and node.level == 0:
            for alias in node.names:
                if alias.name in ("datetime", "date"):
                    self.datetime_classes[alias.asname or alias.name] = alias.name
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id in self.time_modules
            and func.attr in FORBIDDEN_TIME
        ):
            self._flag(node, f"calls time.{func.attr}() (use trio.current_time/sleep)")
        elif isinstance(func, ast.Name) and func.id in self.time_functions:
            self._flag(node, f"calls time.{self.time_functions[func.id]}() via {func.id}()")
        elif isinstance(func, ast.Attribute) and func.attr in READS_THE_DATE:
            cls = self._datetime_class(func.value)
            if cls is not None:
                self._flag(node, f"calls datetime.{cls}.{func.attr}() (use the wall_clock)")
        self.generic_visit(node)

    def _datetime_class(self, node: ast.expr) -> str | None:
        """``datetime`` or ``date`` if ``node`` names one of those classes, else None."""
        if isinstance(node, ast.Name):
            return self.datetime_classes.get(node.id)
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ("datetime", "date")
            and isinstance(node.value, ast.Name)
            and node.value.id in self.datetime_modules
        ):
            return node.attr
        return None

    def visit_Attribute(self, node: ast.Attribute) -> None:
        # A reference without a call (``clock=time.monotonic``) reads the same clock later.
        if (
            isinstance(node.value, ast.Name)
            and node.value.id in self.time_modules
            and node.attr in FORBIDDEN_TIME
            and not isinstance(getattr(node, "_parent_call", None), ast.Call)
        ):
            self._flag(node, f"refers to time.{node.attr} (use trio.current_time)")
        self.generic_visit(node)


def scan_source(source: str, path: Path) -> list[Violation]:
    """Every forbidden clock or asyncio use in one module's source."""
    tree = ast.parse(source, filename=str(path))
    # Mark attributes that are the callee of a call, so they are reported once, as calls.
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            node.func._parent_call = node  # type: ignore[attr-defined]
    scanner = _Scanner(path)
    scanner.visit(tree)
    return scanner.violations


def library_modules() -> Iterator[Path]:
    for package in LIBRARY_PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_the_library_packages_are_where_the_scan_looks() -> None:
    modules = list(library_modules())
    # A moved tree would make the scan pass vacuously.
    for package in LIBRARY_PACKAGES:
        assert (ROOT / package / "__init__.py") in modules, f"{package}/ not found under {ROOT}"
    assert len(modules) >= 20


def allowed(violation: Violation) -> bool:
    rule = ALLOWED.get(violation.path.relative_to(ROOT).as_posix())
    return rule is not None and violation.what.startswith(rule[0])


def test_library_code_takes_time_from_trio_and_never_uses_asyncio() -> None:
    violations = [
        violation
        for path in library_modules()
        for violation in scan_source(path.read_text(encoding="utf-8"), path)
        if not allowed(violation)
    ]
    assert not violations, (
        "library code must take time from Trio (trio.current_time, trio.sleep, "
        "move_on_after) and wall-clock time from the injected wall_clock, never asyncio:\n"
        + "\n".join(f"  {v}" for v in violations)
    )


def test_only_the_wall_clock_anchor_may_read_the_date() -> None:
    anchor = ROOT / "supervisor" / "clock.py"
    found = scan_source(anchor.read_text(encoding="utf-8"), anchor)
    assert found, "supervisor/clock.py no longer reads the date: drop it from ALLOWED"
    assert all(allowed(v) for v in found)
    elsewhere = Violation(ROOT / "supervisor" / "daemon.py", 1, "calls datetime.datetime.now()")
    assert not allowed(elsewhere)
    sleeping = Violation(anchor, 1, "calls time.sleep()")
    assert not allowed(sleeping)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import time\nx = time.time()\n", ["calls time.time()"]),
        ("import time as t\nt.sleep(1)\n", ["calls time.sleep()"]),
        ("import time\nclock = time.monotonic\n", ["refers to time.monotonic"]),
        (
            "from time import perf_counter as pc\npc()\n",
            ["imports time.perf_counter", "calls time.perf_counter() via pc()"],
        ),
        ("import asyncio\n", ["imports asyncio"]),
        ("from asyncio import sleep\n", ["imports from asyncio"]),
        ("import asyncio.subprocess\n", ["imports asyncio.subprocess"]),
        ("from datetime import datetime\nx = datetime.now()\n", ["calls datetime.datetime.now()"]),
        ("import datetime as dt\nx = dt.date.today()\n", ["calls datetime.date.today()"]),
        ("from datetime import date as D\nD.today()\n", ["calls datetime.date.today()"]),
        ("import datetime\ndatetime.datetime.utcnow()\n", ["calls datetime.datetime.utcnow()"]),
        ("import datetime as dt\ndt.datetime.fromtimestamp(0, dt.UTC)\n", []),
        ("import time\nx = time.strftime('%Y')\n", []),
        ("# time.time() in a comment\ns = 'time.sleep(1)'\n", []),
        ("import trio\nasync def f():\n    await trio.sleep(1)\n", []),
        ("def sleep(x): ...\nsleep(1)\n", []),
    ],
)
def test_the_scanner_finds_what_it_should_and_nothing_else(
    source: str, expected: list[str]
) -> None:
    found = scan_source(source, ROOT / "actors" / "example.py")
    assert [v.what.split(" (")[0] for v in found] == expected
    for violation in found:
        assert str(violation).startswith("actors/example.py:")
