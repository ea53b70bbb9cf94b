"""The peers' own virtual environment: aiogram, python-telegram-bot, tenacity, pybreaker,
aiolimiter, installed from ``bench/requirements-peers.txt`` into ``.venv-bench``.

Built on first use by ``python -m bench`` (so ``make bench`` works from a fresh clone) and
rebuilt when the requirements file changes. botvisor itself never imports these packages.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from bench.common import ROOT

__all__ = ["REQUIREMENTS", "VENV", "ensure_peer_python"]

VENV = ROOT / ".venv-bench"
REQUIREMENTS = Path(__file__).with_name("requirements-peers.txt")


def ensure_peer_python(venv: Path = VENV, *, log: bool = True) -> Path:
    """The peers' interpreter, creating and filling its environment if needed.

    Raises RuntimeError with pip's last lines when the environment cannot be built.
    """
    python = venv / "bin" / "python"
    stamp = venv / ".installed-peers"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return python
    if log:
        print(f"bench: installing the peers into {venv.name} (once)", file=sys.stderr, flush=True)
    steps = []
    if not python.exists():
        steps.append([sys.executable, "-m", "venv", str(venv)])
    steps.append(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
            str(REQUIREMENTS),
        ]
    )
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-10:])
            raise RuntimeError(
                f"could not build the peers' environment ({' '.join(step[:3])}):\n{tail}"
            )
    stamp.write_text(wanted + "\n")
    return python
