"""Bot-management requests of different bots never wait on each other's Bot API calls
(in process, MockClock): a slow getMe holds up only its own bot."""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import trio
import trio.testing

from actors import BotToken
from actors.simulator import SimulatedBotApi
from tests.admin.helpers import AUTH, client, make_app
from tests.harness import bot_token, running_fleet

SLOW = 100.0  # seconds the slow bot's getMe takes


class SlowGetMe(httpx.AsyncBaseTransport):
    """getMe of one bot answers after SLOW seconds; every other call at once."""

    def __init__(self, inner: httpx.AsyncBaseTransport, bot_id: int) -> None:
        self._inner = inner
        self._slow = f"/bot{bot_id}:"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith(self._slow) and request.url.path.endswith("/getMe"):
            await trio.sleep(SLOW)
        return await self._inner.handle_async_request(request)


async def test_a_slow_get_me_of_one_bot_holds_up_no_other_bot(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(1))
    slow, quick = bot_token(7), bot_token(8)
    api.add_bot(slow)
    api.add_bot(quick)
    slow_id = BotToken(slow).bot_id

    async with running_fleet(
        tmp_path / "c.db", [1], api=api, wrap_transport=lambda inner: SlowGetMe(inner, slow_id)
    ) as fleet:
        async with client(make_app(fleet), **AUTH) as http, trio.open_nursery() as nursery:
            answers: dict[str, int] = {}

            async def add_slow() -> None:
                response = await http.post("/admin/bots", json={"user_id": 7, "token": slow})
                answers["slow"] = response.status_code

            nursery.start_soon(add_slow)
            await trio.testing.wait_all_tasks_blocked()
            started = trio.current_time()

            # Another bot's suspend and resume, and another add, answer at once.
            suspended = await http.post("/admin/bots/1/suspend", json={"reason": "unpaid"})
            assert suspended.status_code == 200, suspended.text
            resumed = await http.post("/admin/bots/1/resume")
            assert resumed.status_code == 200, resumed.text
            added = await http.post("/admin/bots", json={"user_id": 8, "token": quick})
            assert added.status_code == 201, added.text
            # The slow bot's token is reserved meanwhile: another tenant cannot take it.
            taken = await http.post("/admin/bots", json={"user_id": 9, "token": slow})
            assert taken.status_code == 409, taken.text
            assert "already registered for user_id 7" in taken.json()["error"]["message"]
            assert trio.current_time() == started
            assert "slow" not in answers

            # The same user_id waits for its own add, then is refused as registered.
            again = await http.post("/admin/bots", json={"user_id": 7, "token": slow})
            assert again.status_code == 409, again.text
            assert trio.current_time() == started + SLOW
        assert answers == {"slow": 201}
