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
    # The module's string literals are SQL: a survivor that only changes the letter case of
    # a line without a quoted SQL literal on it ('...') is equivalent (SQLite's keywords,
    # table and column names are case-insensitive). Such survivors are listed by name and
    # the score is given with and without them.
    sql_case_insensitive: bool = False
    # mutmut's timeout for a mutant is (the selection's time + 1 s) × this (its default 15).
    # Where the selection takes long and a mutant can make a daemon hang, 15 × a slow
    # selection is minutes per hanging mutant.
    timeout_multiplier: float = 15.0


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
    # adds the lanes-alone races of a read-back, test_redrive.py a redrive's place in the
    # lane (redrive_nowait), test_usage.py the update kind usage counts (usage_kind, here
    # beside chat_key). The four thousand-update fleets of test_head_of_line.py are left out:
    # 7-10 s each (most of a surviving mutant's run) for what the lanes-alone tests check in
    # milliseconds; they still run in `make test`.
    "actors/lanes.py": Target(
        (
            "tests/actors/test_chat_lanes.py",
            "tests/actors/test_lanes.py",
            "tests/actors/test_head_of_line.py",
            "tests/actors/test_redrive.py",
            "tests/actors/test_usage.py",
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
    # The bot's own tests (test_bot.py, test_faults.py, test_lifecycle.py) drive it by
    # polling only; its webhook side (push, redrive, _serve_webhook, _delete_webhook, the
    # registration records) is exercised by the supervisor's webhook tests, its samples
    # (health_sample, metrics_sample) by the fleet summary and /metrics, its getMe check by
    # test_telegram_errors.py, its suspension and resume by test_bot_supervisor.py. All run
    # on the simulator in process under a MockClock, about 15 s together. Left out: the
    # webhook retention test (two simulated days of pruning, storage's rule), the real
    # Prometheus scrape, and test_faults.py's thousand-message run at 20% transient faults
    # (13 s, half of the selection, for the pipeline's and the delivery's retries, which
    # the shorter fault tests beside it also drive through the bot).
    "actors/bot.py": Target(
        (
            *ACTOR_TESTS,
            "tests/actors/test_lifecycle.py",
            "tests/actors/test_telegram_errors.py",
            "tests/actors/test_chat_migration.py",
            "tests/actors/test_redrive.py",
            "tests/actors/test_instruments.py",
            "tests/actors/test_poll_health.py",
            "tests/supervisor/test_bot_supervisor.py",
            "tests/supervisor/test_webhook_mode.py",
            "tests/supervisor/test_webhook_registration.py",
            "tests/supervisor/test_registration_retries.py",
            "tests/supervisor/test_webhook_removal.py",
            "tests/supervisor/test_redrive_webhook.py",
            "tests/supervisor/test_webhook_usage.py",
            "tests/admin/test_metrics.py",
            "tests/admin/test_health_truth.py",
            # The usage a bot writes when its run ends, however it ends (a grace that ran
            # out: test_the_polls_of_a_bot_stopped_by_the_end_of_its_grace_are_counted). The
            # whole file (8 tests, about a second): mutmut did not run a test named by its
            # node id alone for the mutants it kills.
            "tests/supervisor/test_daemon.py",
        ),
        deselect=(
            "tests/actors/test_faults.py::"
            "test_twenty_percent_transient_faults_lose_no_reply_and_duplicate_none",
        ),
        # A mutant of _run or of a callback can leave a daemon waiting forever (its MockClock
        # has no deadline to jump to): 4 × the selection's time is about a minute here,
        # still four times what a survivor takes.
        timeout_multiplier=4.0,
    ),
    # Only the durable inbox of the store (its other parts have their own tests).
    # test_usage.py checks the usage counts the inbox writes commit with their rows (an
    # update's type and sender at inbox_add, the sends at inbox_done); all three take about
    # two seconds together.
    "storage/store.py": Target(
        (
            "tests/storage/test_store.py",
            "tests/storage/test_inbox_lanes.py",
            "tests/storage/test_usage.py",
        ),
        name_filter="inbox",
        sql_case_insensitive=True,
    ),
}

_RESULT = re.compile(r"^\s+(\S+__mutmut_\d+): (.+)$")


# A line of SQL text: a keyword, a parameter placeholder or an upsert's ``excluded.`` row
# (a dict key such as "chat_id", whose case matters, has none of them).
_SQL = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|FROM|WHERE|JOIN|ORDER BY|GROUP BY|VALUES|SET|AND|OR|IS|"
    r"NULL|LIMIT|ON CONFLICT)\b|\?|\bexcluded\.",
    re.IGNORECASE,
)


def only_changes_case(diff: str) -> bool:
    """Whether a mutant's diff only changes the letter case of lines of SQL text with no
    quoted SQL literal on them (a ``'...'`` in SQL is a value, whose case matters)."""
    removed: list[str] = []
    added: list[str] = []
    for line in diff.splitlines():
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("-"):
            removed.append(line[1:])
        elif line.startswith("+"):
            added.append(line[1:])
    return (
        bool(removed)
        and len(removed) == len(added)
        and all(
            old != new and old.lower() == new.lower() and "'" not in old and _SQL.search(old)
            for old, new in zip(removed, added, strict=True)
        )
    )


@dataclass(frozen=True)
class Outcome:
    module: str
    tests: tuple[str, ...]
    name_filter: str | None
    statuses: dict[str, str]  # mutant name -> killed, survived, timeout, no tests...
    diffs: dict[str, str]  # survivors' diffs
    seconds: float
    sql_case_insensitive: bool = False

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

    @property
    def case_only(self) -> list[str]:
        """Survivors that only change the case of SQL text (see ``Target``)."""
        if not self.sql_case_insensitive:
            return []
        return [n for n in self.survivors if only_changes_case(self.diffs.get(n, ""))]

    @property
    def score_without_case_only(self) -> float:
        total = len(self.counted) - len(self.case_only)
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
            f"timeout_multiplier = {chosen.timeout_multiplier}",
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
    chosen = MODULES[module]
    tests, name_filter = chosen.tests, chosen.name_filter
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
    return Outcome(
        module, tests, name_filter, statuses, diffs, outcome.seconds, chosen.sql_case_insensitive
    )


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
    case_only = outcome.case_only
    if case_only:
        lines[-1:-1] = [
            f"- of the survivors, {len(case_only)} only change the letter case of SQL text "
            "(equivalent: SQLite's keywords, table and column names are case-insensitive); "
            f"**score without them {outcome.score_without_case_only:.1f}%** "
            f"({outcome.killed} of {len(counted) - len(case_only)})",
        ]
        lines += [
            "Survivors that only change the case of SQL text: "
            + ", ".join(f"`{name}`" for name in case_only)
            + ".",
            "",
        ]
    others = [name for name in outcome.survivors if name not in case_only]
    if others:
        lines += ["Survivors (each explained below the run, in *Survivors explained*):", ""]
        for name in others:
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
        case_only = outcome.case_only
        print(
            f"{module}: {outcome.killed}/{len(outcome.counted)} killed "
            f"({outcome.score:.1f}%), {len(outcome.survivors)} survived"
            + (
                f" ({len(case_only)} only change the case of SQL text: "
                f"{outcome.score_without_case_only:.1f}% without them)"
                if case_only
                else ""
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
