"""RegistrationRetries: each failed registration comes back once, when due, doubling to the
cap; forgetting a bot ends its retries and starts its next failure afresh."""

from __future__ import annotations

import random

import trio
import trio.testing

from supervisor.registration import (
    RETRY_JITTER,
    RETRY_MAX,
    RETRY_MIN,
    RegistrationRetries,
)


async def test_each_failure_is_due_once_after_its_delay_and_forgetting_ends_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    retries = RegistrationRetries(random.Random(7))
    due: list[tuple[float, int]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(retries.run, lambda uid: due.append((trio.current_time(), uid)))
        first = retries.failed(1)
        assert RETRY_MIN * (1 - RETRY_JITTER) <= first <= RETRY_MIN * (1 + RETRY_JITTER)
        second_bot = retries.failed(2)
        retries.forget(2)  # registered meanwhile: never due
        assert retries.statistics().waiting == 1
        await trio.sleep(first + 1)
        assert due == [(first, 1)]
        # Failed again: about twice as long; the count of failures in a row goes on.
        again = retries.failed(1)
        assert retries.failures(1) == 2
        assert 2 * RETRY_MIN * (1 - RETRY_JITTER) <= again <= 2 * RETRY_MIN * (1 + RETRY_JITTER)
        await trio.sleep(again + 1)
        assert [uid for _, uid in due] == [1, 1]
        assert due[1][0] == first + 1 + again
        # Many failures later the delay is capped (with its jitter).
        delays = [retries.failed(3) for _ in range(20)]
        assert max(delays) <= RETRY_MAX * (1 + RETRY_JITTER)
        assert min(delays[-5:]) >= RETRY_MAX * (1 - RETRY_JITTER)
        retries.forget(3)
        assert retries.failures(3) == 0
        # The next failure after forgetting starts at the minimum again.
        assert retries.failed(3) <= RETRY_MIN * (1 + RETRY_JITTER)
        assert second_bot > 0
        await trio.sleep(RETRY_MAX * 2)
        assert [uid for _, uid in due] == [1, 1, 3]
        assert retries.statistics().waiting == 0
        nursery.cancel_scope.cancel()
