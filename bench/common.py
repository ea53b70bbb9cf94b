"""What every benchmark shares: spreads of repeated runs, process facts, child processes.

Benchmarks are not library code: they time themselves with the real clock
(``time.perf_counter``, ``time.process_time``) because what they measure is real time.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import queue
import resource
import statistics
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = [
    "ROOT",
    "ChildProcess",
    "Spread",
    "cpu_seconds",
    "fmt",
    "machine_facts",
    "raise_fd_limit",
    "rss_kib",
    "self_rss_kib",
    "spread",
    "table",
]

ROOT = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Spread:
    """The median and the range of one figure over several runs."""

    median: float
    low: float
    high: float
    runs: int

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.low, "max": self.high, "runs": self.runs}


def spread(values: Sequence[float]) -> dict[str, float]:
    """``{"median", "min", "max", "runs"}`` of ``values`` (at least one)."""
    if not values:
        raise ValueError("spread needs at least one value")
    return Spread(statistics.median(values), min(values), max(values), len(values)).as_dict()


def fmt(value: dict[str, float] | float | None, digits: int = 0, unit: str = "") -> str:
    """A spread as ``median (min–max)``, a number as itself; None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, dict):
        median, low, high = value["median"], value["min"], value["max"]
        if value.get("runs", 1) <= 1 or low == high:
            return f"{median:,.{digits}f}{unit}"
        return f"{median:,.{digits}f}{unit} ({low:,.{digits}f}–{high:,.{digits}f})"
    return f"{value:,.{digits}f}{unit}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def self_rss_kib() -> int:
    """This process's resident set size now, in KiB."""
    return rss_kib(os.getpid())


def rss_kib(pid: int) -> int:
    """A process's resident set size now, in KiB (Linux ``/proc``)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used, all its threads (10 ms resolution)."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name may hold spaces: fields start after the closing parenthesis.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to the hard limit (thousands of sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def machine_facts() -> dict[str, Any]:
    """What the numbers depend on: cores, memory, CPU model, Python, kernel."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kib = 0
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "load": os.getloadavg()[0],
        "nproc": len(os.sched_getaffinity(0)),
        "ram_gib": mem_kib / 1024 / 1024,
        "cpu": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
    }


class ChildProcess:
    """A benchmark's helper process that talks in JSON lines on stdin/stdout.

    A reader thread queues every stdout line, so ``expect`` can wait with a timeout; stderr
    goes to ``log_path`` and is quoted when the child dies or stays silent.
    """

    def __init__(
        self, argv: Sequence[str], *, log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.log_path = log_path
        self._argv = [str(a) for a in argv]
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=ROOT,
            env=env,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def expect(self, timeout: float) -> dict[str, Any]:
        """The next JSON line the child prints; RuntimeError if it dies or stays silent."""
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise RuntimeError(
                    f"{self._name()} said nothing for {timeout:g} s{self._tail()}"
                ) from None
            if line is None:
                self.proc.wait()
                raise RuntimeError(
                    f"{self._name()} exited with {self.proc.returncode}{self._tail()}"
                )
            line = line.strip()
            if line.startswith("{"):
                message: dict[str, Any] = json.loads(line)
                return message

    def request(self, message: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        self.send(message)
        return self.expect(timeout)

    def close(self, grace: float = 10.0) -> None:
        """Ask the child to stop (SIGTERM, stdin closed), then kill it after ``grace``."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        # The child is gone, so its stdout reaches EOF and the reader ends.
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()

    def __enter__(self) -> ChildProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _name(self) -> str:
        return " ".join(Path(a).name if "/" in a else a for a in self._argv[:3])

    def _tail(self) -> str:
        self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        tail = "\n".join(text.strip().splitlines()[-15:])
        return f"; its stderr ends:\n{tail}" if tail else ""


def python_argv(python: str | Path, module: str, *args: str) -> list[str]:
    """``python -m module args...`` with this repository on the path."""
    return [str(python), "-m", module, *args]


def main_python() -> str:
    return sys.executable
