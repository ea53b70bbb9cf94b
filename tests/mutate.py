"""``make mutate``: mutation testing of the core modules with mutmut, one module at a time.

Each module is mutated in a scratch copy of the repository (``.mutate/<module>/``, ignored by
git), so the work tree is never touched, and each mutant is run against a bounded test
selection: the tests of that module (``MODULES``), not the whole suite. The score and every
surviving mutant go to ``docs/TESTING.md``, between the markers of that module's section, so
runs of different modules (or on different days) add up in one file.

    python -m tests.mutate                      # every module of MODULES
    python -m tests.mutate actors/breaker.py    # only these
    python -m tests.mutate --list               # the modules and their test selections

Not part of ``make test``: a full run takes long on a small machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / ".mutate"
REPORT = ROOT / "docs" / "TESTING.md"
PACKAGES = ("actors", "admin", "storage", "supervisor")


@dataclass(frozen=True)
class Target:
    """A module to mutate and the bounded test selection each of its mutants runs."""

    tests: tuple[str, ...]
    # Tests of those files left out: slow ones that test other modules' behaviour.
    deselect: tuple[str, ...] = ()
    # Count only mutants whose name contains this (a part of a large module).
    name_filter: str | None = None


ACTOR_TESTS = ("tests/actors/test_bot.py", "tests/actors/test_faults.py")
MODULES: dict[str, Target] = {
    "admin/auth.py": Target(("tests/admin/test_auth.py",)),
    "actors/secrets.py": Target(
        (
            "tests/actors/test_secrets.py",
            "tests/actors/test_bot_token.py",
            "tests/actors/botapi/test_client.py",
            "tests/actors/test_health.py",
        )
    ),
    "actors/bucket.py": Target(("tests/actors/test_bucket.py",)),
    "actors/breaker.py": Target(("tests/actors/test_breaker.py",)),
    "actors/retry.py": Target(("tests/actors/test_retry.py",)),
    "actors/limits.py": Target(
        ("tests/actors/test_limits.py",),
        # Two simulated hours of fairness (most of a minute each on a loaded machine): the
        # round-robin tests above them cover the same rotation in a few ticks.
        deselect=(
            "tests/actors/test_limits.py::test_light_tenants_get_all_they_ask_beside_a_heavy_one",
            "tests/actors/test_limits.py::test_busy_tenants_share_equally",
        ),
    ),
    "actors/pipeline.py": Target(("tests/actors/test_pipeline.py",)),
    # test_chat_lanes.py drives ChatLanes alone (order, the cap, reaping, closing, overflow and
    # read-back), test_lanes.py the chat rule (chat_key, lane names); test_head_of_line.py
    # adds the lanes-alone races of a read-back. Its four thousand-update fleets are left out:
    # 7-10 s each (most of a surviving mutant's run) for what the lanes-alone tests check in
    # milliseconds; they still run in `make test`.
    "actors/lanes.py": Target(
        (
            "tests/actors/test_chat_lanes.py",
            "tests/actors/test_lanes.py",
            "tests/actors/test_head_of_line.py",
        ),
        deselect=(
            "tests/actors/test_head_of_line.py::"
            "test_a_group_with_a_thousand_undone_updates_does_not_delay_a_private_chat",
            *(
                "tests/actors/test_head_of_line.py::"
                f"test_a_thousand_undone_updates_left_at_a_restart_do_not_delay_a_private_chat[{p}]"
                for p in ("lane-named", "stored-before-v3", "named-by-another-rule")
            ),
        ),
    ),
    "actors/delivery.py": Target(ACTOR_TESTS),
    "actors/poller.py": Target(ACTOR_TESTS),
    "actors/bot.py": Target((*ACTOR_TESTS, "tests/actors/test_lifecycle.py")),
    # Only the durable inbox of the store (its other parts have their own tests).
    "storage/store.py": Target(
        ("tests/storage/test_store.py", "tests/storage/test_inbox_lanes.py"), name_filter="inbox"
    ),
}

_RESULT = re.compile(r"^\s+(\S+__mutmut_\d+): (.+)$")


@dataclass(frozen=True)
class Outcome:
    module: str
    tests: tuple[str, ...]
    name_filter: str | None
    statuses: dict[str, str]  # mutant name -> killed, survived, timeout, no tests...
    diffs: dict[str, str]  # survivors' diffs
    seconds: float

    @property
    def counted(self) -> dict[str, str]:
        return {
            name: status
            for name, status in self.statuses.items()
            if self.name_filter is None or self.name_filter in name
        }

    @property
    def killed(self) -> int:
        # A mutant that makes a test hang (timeout) or crash the run is caught too.
        return sum(s in ("killed", "timeout", "segfault") for s in self.counted.values())

    @property
    def survivors(self) -> list[str]:
        return sorted(
            n for n, s in self.counted.items() if s not in ("killed", "timeout", "segfault")
        )

    @property
    def score(self) -> float:
        total = len(self.counted)
        return 100.0 * self.killed / total if total else 0.0


def scratch_copy(module: str) -> Path:
    """A fresh copy of the tracked files, with a ``[tool.mutmut]`` section for ``module``."""
    target = SCRATCH / module.replace("/", "_").removesuffix(".py")
    if target.exists():
        shutil.rmtree(target)
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in tracked:
        if not raw:
            continue
        relative = Path(raw.decode())
        source = ROOT / relative
        if not source.is_file():
            continue
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / relative)
    chosen = MODULES[module]
    existing = [t for t in chosen.tests if (target / t).exists()]
    for test in chosen.deselect:
        existing += ["--deselect", test]
    section = "\n".join(
        [
            "",
            "[tool.mutmut]",
            f"source_paths = {json.dumps(list(PACKAGES))}",
            f"only_mutate = {json.dumps([module])}",
            'also_copy = ["bench"]',
            f"pytest_add_cli_args_test_selection = {json.dumps(existing)}",
            'pytest_add_cli_args = ["-q", "-x", "-p", "no:cacheprovider"]',
            "use_git_change_detection = false",
            "",
        ]
    )
    with (target / "pyproject.toml").open("a", encoding="utf-8") as file:
        file.write(section)
    return target


def mutmut(workdir: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mutmut", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"mutmut {' '.join(args)} failed in {workdir}:\n{done.stdout}\n{done.stderr}"
        )
    return done.stdout


def run_module(module: str, jobs: int) -> Outcome:
    started = time.monotonic()
    tests, name_filter = MODULES[module].tests, MODULES[module].name_filter
    workdir = scratch_copy(module)
    # A part of a large module: only its mutants are run (mutmut matches names with fnmatch).
    only = [f"*{name_filter}*"] if name_filter else []
    mutmut(workdir, "run", "--max-children", str(jobs), *only)
    statuses: dict[str, str] = {}
    for line in mutmut(workdir, "results", "--all", "true").splitlines():
        if found := _RESULT.match(line):
            statuses[found.group(1)] = found.group(2).strip()
    outcome = Outcome(module, tests, name_filter, statuses, {}, time.monotonic() - started)
    diffs = {name: mutmut(workdir, "show", name) for name in outcome.survivors}
    return Outcome(module, tests, name_filter, statuses, diffs, outcome.seconds)


def section(outcome: Outcome) -> str:
    counted = outcome.counted
    scope = f", mutants whose name contains `{outcome.name_filter}`" if outcome.name_filter else ""
    lines = [
        f"<!-- mutate:{outcome.module}:begin -->",
        f"### `{outcome.module}`",
        "",
        f"- tests run per mutant: {', '.join(f'`{t}`' for t in outcome.tests)}{scope}",
        f"- mutants: {len(counted)}; killed: {outcome.killed}; survived: "
        f"{len(outcome.survivors)}; **score {outcome.score:.1f}%**; "
        f"run took {outcome.seconds / 60:.1f} min",
        "",
    ]
    if outcome.survivors:
        lines += ["Survivors (each explained below the run, in *Survivors explained*):", ""]
        for name in outcome.survivors:
            lines += [f"`{name}` ({counted[name]}):", "", "```diff"]
            diff = outcome.diffs.get(name, "").strip().splitlines()
            lines += [line for line in diff if not line.startswith("#")][:30]
            lines += ["```", ""]
    lines.append(f"<!-- mutate:{outcome.module}:end -->")
    return "\n".join(lines)


def record(outcome: Outcome) -> None:
    """Put the module's section into docs/TESTING.md, replacing an older one."""
    text = REPORT.read_text(encoding="utf-8") if REPORT.exists() else "# Testing\n"
    begin = f"<!-- mutate:{outcome.module}:begin -->"
    end = f"<!-- mutate:{outcome.module}:end -->"
    new = section(outcome)
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + new + tail
    else:
        marker = "<!-- mutate:results -->"
        if marker in text:
            text = text.replace(marker, marker + "\n\n" + new, 1)
        else:
            text = text.rstrip("\n") + "\n\n" + new + "\n"
    REPORT.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutate", description=__doc__)
    parser.add_argument("modules", nargs="*", help="modules to mutate (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once (default 2)")
    parser.add_argument("--list", action="store_true", help="list the modules and exit")
    args = parser.parse_args(argv)
    if args.list:
        for module, chosen in MODULES.items():
            scope = f" (mutants named *{chosen.name_filter}*)" if chosen.name_filter else ""
            print(f"{module}: {' '.join(chosen.tests)}{scope}")
        return 0
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"not a core module: {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    for module in args.modules or list(MODULES):
        outcome = run_module(module, args.jobs)
        record(outcome)
        print(
            f"{module}: {outcome.killed}/{len(outcome.counted)} killed "
            f"({outcome.score:.1f}%), {len(outcome.survivors)} survived",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
