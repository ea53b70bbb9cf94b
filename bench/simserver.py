"""The simulated Bot API in its own process, driven by the benchmark over stdin/stdout.

``python -m bench.simserver --bots N --seed S`` serves N simulated bots on 127.0.0.1 (a free
port) and prints ``{"url": ..., "tokens": [...]}``. Then it answers one JSON line per command:

- ``{"cmd": "stats"}``: the simulator's counters (``waiting_polls``, ``replies``, ``calls``,
  ``webhooks`` set…). With ``--push-webhooks`` it pushes the updates of bots that set a
  webhook, as Telegram does.
- ``{"cmd": "post", "chats": C, "messages": M}``: every bot's C private chats each receive M
  messages now; answers how many were posted.
- ``{"cmd": "wait", "replies": K, "timeout": T}``: waits until K replies were delivered in all;
  answers the seconds since the last post.
- ``{"cmd": "report"}``: answered, unanswered, duplicates, out of order.
- ``{"cmd": "arrivals", "method": "sendMessage"}`` (with ``--record``): the server's Trio time
  of every call of that method as it arrived, oldest first.

Its own process, so the clients' CPU and memory are measured without the server's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from typing import Any, cast

import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from hypercorn.typing import ASGIFramework

from actors.simulator import SimulatedBotApi, create_sim_app
from bench.common import raise_fd_limit
from supervisor.demo import BOTS

__all__ = ["FIRST_BOT_ID", "main", "make_tokens"]

FIRST_BOT_ID = 6_000_000_001
FIRST_CHAT = 10_000


def make_tokens(count: int, seed: int) -> list[str]:
    """The tokens of the simulated bots of ``seed`` (the same seed gives the same tokens)."""
    rng = random.Random(seed)
    return [SimulatedBotApi.make_token(FIRST_BOT_ID + i, rng) for i in range(count)]


class _Control:
    def __init__(self, api: SimulatedBotApi, tokens: list[str]) -> None:
        self.api = api
        self.tokens = tokens
        self.posted_at = time.perf_counter()
        self.next_text = 0

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        cmd = command.get("cmd")
        api = self.api
        if cmd == "stats":
            s = api.statistics()
            return {
                "waiting_polls": s.waiting_polls,
                "replies": s.replies,
                "calls": s.calls,
                "user_messages": s.user_messages,
                "errors": s.errors,
                "conflicts": s.conflicts,
                "by_method": dict(s.calls_by_method),
                "webhooks": 0 if s.webhooks is None else s.webhooks.webhooks,
                "webhook_deliveries": 0 if s.webhooks is None else s.webhooks.deliveries,
            }
        if cmd == "post":
            chats, messages = int(command["chats"]), int(command["messages"])
            posted = 0
            for _ in range(messages):
                for token in self.tokens:
                    for c in range(chats):
                        # No "[m" in the text: tracked by its whole text, not as a tag.
                        self.next_text += 1
                        api.send_user_message(token, FIRST_CHAT + c, f"bench q{self.next_text}.")
                        posted += 1
            self.posted_at = time.perf_counter()
            return {"posted": posted}
        if cmd == "wait":
            target, timeout = int(command["replies"]), float(command["timeout"])
            with trio.move_on_after(timeout):
                # The simulator has no "replies reached K" event; 5 ms polls cost little.
                while api.statistics().replies < target:  # noqa: ASYNC110
                    await trio.sleep(0.005)
            return {
                "replies": api.statistics().replies,
                "elapsed": time.perf_counter() - self.posted_at,
            }
        if cmd == "arrivals":
            method = str(command.get("method", "sendMessage")).lower()
            times = [c.time for c in api.calls if c.method.lower() == method]
            return {"times": sorted(times), "recorded": len(api.calls)}
        if cmd == "report":
            r = api.report()
            return {
                "user_messages": r.user_messages,
                "answered": r.answered,
                "unanswered": r.unanswered,
                "duplicates": r.duplicates,
                "out_of_order": r.out_of_order,
            }
        return {"error": f"unknown command {cmd!r}"}


async def _serve(args: argparse.Namespace) -> None:
    # --record keeps every call's arrival (a few hundred bytes each: for short runs only).
    api = SimulatedBotApi(rng=random.Random(args.seed), record=args.record, call_log_size=500_000)
    tokens = make_tokens(args.bots, args.seed)
    for token in tokens:
        api.add_bot(token)
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = 0.5
    # A thousand clients connect at once: the default backlog of 100 would make some wait
    # for SYN retries (a second or more), which is the listener's cost, not the client's.
    config.backlog = 4096
    config.keep_alive_timeout = 120.0
    control = _Control(api, tokens)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with (
        httpx.AsyncClient(limits=limits, timeout=70.0) as pusher,
        trio.open_nursery() as nursery,
    ):
        if args.push_webhooks:
            # Telegram's side of webhooks: every bot that set one gets its updates pushed.
            await nursery.start(api.push_webhooks, pusher)
        binds: list[str] = await nursery.start(
            lambda task_status: serve(
                cast(ASGIFramework, create_sim_app(api)),
                config,
                shutdown_trigger=trio.sleep_forever,
                task_status=task_status,
            )
        )
        _say({"url": binds[0], "tokens": tokens})
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        buffer = b""
        while True:
            chunk = await stdin.receive_some()
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    _say(await control.handle(json.loads(line)))
        nursery.cancel_scope.cancel()


def _say(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.simserver", description=__doc__)
    parser.add_argument("--bots", type=BOTS, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--record", action="store_true", help="record calls for 'arrivals'")
    parser.add_argument(
        "--push-webhooks", action="store_true", help="push updates to bots that set a webhook"
    )
    args = parser.parse_args(argv)
    raise_fd_limit()
    trio.run(_serve, args)


if __name__ == "__main__":
    main()
