"""A bot actor's lifecycle: its states, the legal transitions, and the error for the others.

The actor alone moves itself through these states (httpx's ``ClientState`` shape)::

    IDLE ──run──▶ STARTING ──ready──▶ RUNNING ──stop──▶ STOPPING ──ended──▶ IDLE
      │               │                  │                  │
      └──suspend──────┴── (incarnation ends while suspended) ┴──────────▶ SUSPENDED
                                                                             │
    IDLE ◀─────────────────────────────── resume ───────────────────────────┘

A start that fails, or an incarnation that crashes, goes back to IDLE (or SUSPENDED if the
bot was suspended meanwhile), so the supervisor may start it again.
"""

from __future__ import annotations

import enum

__all__ = ["TRANSITIONS", "ActorState", "LifecycleError", "check_transition"]


class ActorState(enum.Enum):
    IDLE = "idle"  # registered, no incarnation running; may be started
    STARTING = "starting"  # an incarnation is loading the offset and the undone inbox
    RUNNING = "running"  # polling and handling updates
    STOPPING = "stopping"  # no new polls; in-flight handlers finishing
    SUSPENDED = "suspended"  # stopped by a permanent error, the supervisor or an operator


class LifecycleError(RuntimeError):
    """An operation the bot's lifecycle state does not allow now; the message says why and
    what to do instead (the admin API answers it with 409 Conflict)."""


_S = ActorState

TRANSITIONS: dict[ActorState, frozenset[ActorState]] = {
    _S.IDLE: frozenset({_S.STARTING, _S.SUSPENDED}),
    # A start that fails goes back to IDLE (SUSPENDED if suspended meanwhile).
    _S.STARTING: frozenset({_S.RUNNING, _S.IDLE, _S.SUSPENDED}),
    # A crash ends an incarnation without passing through STOPPING.
    _S.RUNNING: frozenset({_S.STOPPING, _S.IDLE, _S.SUSPENDED}),
    _S.STOPPING: frozenset({_S.IDLE, _S.SUSPENDED}),
    _S.SUSPENDED: frozenset({_S.IDLE}),
}

# What to do instead of an illegal transition, by the state it was tried from.
_HINTS: dict[ActorState, str] = {
    _S.IDLE: "start it first",
    _S.STARTING: "wait until it has started",
    _S.RUNNING: "stop it first",
    _S.STOPPING: "wait until it has stopped",
    _S.SUSPENDED: "resume it first",
}


def check_transition(user_id: int, current: ActorState, target: ActorState) -> None:
    """Raise :class:`LifecycleError` unless ``current -> target`` is in :data:`TRANSITIONS`."""
    if target not in TRANSITIONS[current]:
        raise LifecycleError(
            f"bot {user_id} cannot go from {current.value} to {target.value}: {_HINTS[current]}"
        )
