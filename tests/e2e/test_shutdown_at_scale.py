"""SIGTERM to the real ``botvisor run`` process with many bots long-polling over HTTP: every
long poll ends at once, no bot polls again, the process exits 0 within its grace period.

Nothing here asserts on elapsed real time: ``make bench`` measures how long the exit takes at
10,000 bots. The behaviour asserted is what Kubernetes and an operator rely on: the exit code,
and the simulated Bot API seeing no getUpdates once the signal was sent.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path

import trio

from actors.simulator import SimulatedBotApi, serve_sim
from tests.e2e.process import DaemonProcess, write_config

BOTS = 200
GRACE = 10


async def test_sigterm_with_every_bot_polling_ends_every_poll_and_exits_zero(
    tmp_path: Path,
) -> None:
    rng = random.Random(15)
    api = SimulatedBotApi(rng=random.Random(16))
    tokens = {3001 + i: SimulatedBotApi.make_token(6_300_000_001 + i, rng) for i in range(BOTS)}
    for token in tokens.values():
        api.add_bot(token)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_sim, api)
        config = write_config(
            tmp_path / "botvisor.toml",
            api_base=url,
            db_path=tmp_path / "daemon.db",
            bots=tokens,
            graceful_timeout=GRACE,
            # Polls longer than the test: every getUpdates after the signal would be new.
            poll_timeout=50,
        )
        daemon = DaemonProcess(config)
        await daemon.start(nursery, within=120)
        # A few bots have work in hand when the signal comes (an echo, answered quickly).
        for token in list(tokens.values())[:5]:
            api.send_user_message(token, 900, "last words before the signal")
        with trio.fail_after(120):
            while api.statistics().waiting_polls < BOTS or api.report().answered < 5:  # noqa: ASYNC110
                await trio.sleep(0.05)
        polls_at_signal = api.statistics().calls_by_method["getUpdates"]
        daemon.send_signal(signal.SIGTERM)
        # The grace is 10 s; the process must be gone well within a generous bound.
        code = await daemon.wait(within=GRACE + 60)
        stats = api.statistics()
        nursery.cancel_scope.cancel()

    assert code == 0, daemon.text
    assert "Traceback" not in daemon.text
    assert "shutdown complete" in daemon.text
    assert f"{BOTS} bots stop polling now" in daemon.text
    # Every long poll ended with the shutdown and none began after the signal.
    assert stats.waiting_polls == 0
    assert stats.calls_by_method["getUpdates"] == polls_at_signal
    assert api.report().duplicates == 0
