"""Open files: the daemon raises its own soft ``RLIMIT_NOFILE`` and refuses a fleet that
cannot fit.

Every polling bot holds sockets (its long poll and its calls: up to its HTTP pool's
``BOT_CONNECTIONS``), so a fleet of 1,500 bots does not fit the common default of 1,024 open
files. At start the CLI raises the soft limit to the hard one (:func:`raise_open_files_limit`;
any process may); the daemon then compares the estimate :func:`files_needed` with it before it
opens a socket, and refuses to start with :class:`OpenFilesLimitError`, which names the numbers
and how to raise the hard limit (``ulimit -n``, systemd's ``LimitNOFILE``), instead of failing
later with "Too many open files" somewhere unrelated.

The estimate: ``FIXED_FILES + FILES_PER_POLLING_BOT × polling bots``, that is
``64 + 4 × polling bots`` (suspended bots do not poll).
"""

from __future__ import annotations

import contextlib
import resource
from dataclasses import dataclass

from actors import BOT_CONNECTIONS

__all__ = [
    "FILES_PER_POLLING_BOT",
    "FIXED_FILES",
    "OpenFilesLimit",
    "OpenFilesLimitError",
    "check_open_files",
    "files_needed",
    "raise_open_files_limit",
]

# A polling bot holds at most its HTTP pool's connections: its getUpdates long poll and its
# calls. Measured on the simulator over loopback: 200 idle bots held 216 files in all, the same
# bots answering 3 chats each 708-816: the pool's bound is reached, not an average. The fleet's
# sub-pools (actors.FleetHttpPool, LEASES_PER_CLIENT leases each) keep that bound: a sub-pool
# holds at most BOT_CONNECTIONS per lease it serves, and the open ones are those leases hold
# plus at most SPARE_CLIENTS idle ones kept for the next lease (their sockets, 32 at most, are
# within FIXED_FILES' room). Measured with a pool per lease: 100 bots answering 2 chats each
# held 315 files, 1,000 bots answering one each 2,015. Webhook bots awake at the same time hold
# theirs too, a fleet call (a token check) one lease's worth.
FILES_PER_POLLING_BOT = BOT_CONNECTIONS
# Everything else (16 measured with no bot): stdio, Trio's wakeup socket pair and epoll,
# SQLite's database, WAL and shared-memory files for the writer and the reader, the admin
# listener and its clients, worker threads' files, with room to spare.
FIXED_FILES = 64

# Linux refuses a soft limit above fs.nr_open (1,048,576 by default) even when the hard limit
# is "unlimited".
_UNLIMITED_TARGET = 1_048_576


@dataclass(frozen=True)
class OpenFilesLimit:
    """The process's open-files limits after :func:`raise_open_files_limit`."""

    soft: int
    hard: int  # resource.RLIM_INFINITY when unlimited
    before: int  # the soft limit the process started with


class OpenFilesLimitError(Exception):
    """The fleet needs more open files than the process may have; the message says how many
    and how to allow them."""


def raise_open_files_limit() -> OpenFilesLimit:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (as far as the system allows)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        # The system may cap it lower (macOS's OPEN_MAX): then keep what we have.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    now, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return OpenFilesLimit(soft=now, hard=hard, before=soft)


def files_needed(polling_bots: int) -> int:
    """The estimate of open files a fleet of ``polling_bots`` needs."""
    if polling_bots < 0:
        raise ValueError(f"polling_bots must be >= 0, got {polling_bots!r}")
    return FIXED_FILES + FILES_PER_POLLING_BOT * polling_bots


def check_open_files(polling_bots: int, limit: OpenFilesLimit) -> None:
    """OpenFilesLimitError if ``polling_bots`` do not fit ``limit``."""
    needed = files_needed(polling_bots)
    if limit.soft == resource.RLIM_INFINITY or needed <= limit.soft:
        return
    # A round number with room for growth.
    suggested = max(needed * 2, 4096)
    raise OpenFilesLimitError(
        f"{polling_bots} polling bots need about {needed} open files "
        f"({FIXED_FILES} + {FILES_PER_POLLING_BOT} per polling bot), but this process may open "
        f"only {limit.soft} (soft limit {limit.soft}, hard limit {_show(limit.hard)}; raised "
        f"from {limit.before} as far as allowed): raise the hard limit, e.g. "
        f"'ulimit -n {suggested}' in the shell that starts botvisor, or "
        f"'LimitNOFILE={suggested}' in its systemd unit"
    )


def _show(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)
