"""The simulator over real HTTP on 127.0.0.1 (real clock, so: few calls, no timing asserts)."""

from __future__ import annotations

import random
from functools import partial

import httpx
import pytest
import trio
import trio.testing

from actors.botapi import (
    BotApiClient,
    ErrorCategory,
    TelegramError,
    make_http_client,
    shared_ssl_context,
)
from actors.config import TelegramConfig
from actors.secrets import BotToken
from actors.simulator import FaultProfile, SimulatedBotApi, serve_sim

# A safety bound for real sockets, not an assertion about speed.
BOUND = 30


async def test_the_client_talks_to_the_simulator_over_http() -> None:
    api = SimulatedBotApi(rng=random.Random(1))
    secret = SimulatedBotApi.make_token(4242, random.Random(1))
    api.add_bot(secret)
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(partial(serve_sim, api))
            assert url.startswith("http://127.0.0.1:")
            telegram = TelegramConfig(api_base=url)
            async with make_http_client(
                ssl_context=shared_ssl_context(), telegram=telegram
            ) as http:
                client = BotApiClient(http, token=BotToken(secret), telegram=telegram)
                assert (await client.get_me())["id"] == 4242

                # A long poll over HTTP wakes when a user writes.
                polled: list[list[dict[str, object]]] = []

                async def poll() -> None:
                    polled.append(await client.get_updates(offset=None, timeout=20))

                async with trio.open_nursery() as polls:
                    polls.start_soon(poll)
                    await trio.testing.wait_all_tasks_blocked()
                    assert api.statistics().waiting_polls == 1
                    update_id = api.send_user_message(secret, 5, "hi")
                assert [u["update_id"] for u in polled[0]] == [update_id]

                sent = await client.send_message(5, "hi")
                assert sent["chat"]["id"] == 5

                # GET with a query string and POST with a form, as Telegram accepts them
                # (a plain httpx client: the bots' own sends only POST).
                async with httpx.AsyncClient() as raw:
                    answer = await raw.get(
                        f"{url}/bot{secret}/getUpdates", params={"offset": update_id + 1}
                    )
                    assert answer.json() == {"ok": True, "result": []}
                    answer = await raw.post(
                        f"{url}/bot{secret}/sendMessage", data={"chat_id": "5", "text": "form"}
                    )
                    assert answer.json()["result"]["text"] == "form"

                    with pytest.raises(TelegramError) as caught:
                        await client.call("noSuchMethod")
                    assert caught.value.error_code == 404
                    answer = await raw.get(f"{url}/favicon.ico")
                    assert (answer.status_code, answer.json()["description"]) == (
                        404,
                        "Not Found",
                    )

                api.revoke(secret)
                with pytest.raises(TelegramError) as caught:
                    await client.get_me()
                assert caught.value.category is ErrorCategory.PERMANENT

            nursery.cancel_scope.cancel()
    report = api.report().bot(4242)
    assert (report.user_messages, report.answered, report.replies) == (1, 1, 2)


async def test_faults_over_http_look_like_a_failing_server() -> None:
    api = SimulatedBotApi(rng=random.Random(2))
    secret = SimulatedBotApi.make_token(99, random.Random(2))
    api.add_bot(secret)
    stop = trio.Event()
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(partial(serve_sim, api, shutdown_trigger=stop.wait))
            async with httpx.AsyncClient() as http:
                api.set_faults(FaultProfile(error_rate_5xx=1))
                answer = await http.post(f"{url}/bot{secret}/getMe", json={})
                assert (answer.status_code, answer.json()["error_code"]) == (500, 500)
                # A connect error cannot be shown on an accepted connection: a gateway page.
                api.set_faults(FaultProfile(connect_error_rate=1))
                answer = await http.post(f"{url}/bot{secret}/getMe", json={})
                assert answer.status_code == 502
                assert "Bad Gateway" in answer.text
                # A timeout holds the request until the client gives up.
                api.set_faults(FaultProfile(timeout_rate=1))
                with pytest.raises(httpx.ReadTimeout):
                    await http.post(
                        f"{url}/bot{secret}/getMe", json={}, timeout=httpx.Timeout(5, read=0.2)
                    )
            stop.set()
    # serve_sim returned on its own once the trigger fired.
    assert api.statistics().timeouts == 1


async def test_named_clients_polls_are_recorded_and_a_second_concurrent_poller_gets_409() -> None:
    api = SimulatedBotApi(rng=random.Random(3))
    first = SimulatedBotApi.make_token(5151, random.Random(3))
    second = SimulatedBotApi.make_token(5152, random.Random(4))
    api.add_bot(first)
    api.add_bot(second)
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(partial(serve_sim, api))
            async with httpx.AsyncClient(base_url=url, timeout=BOUND) as http:

                async def poll(client: str, token: str, wait: int) -> httpx.Response:
                    return await http.post(
                        f"/c/{client}/bot{token}/getUpdates", json={"timeout": wait}
                    )

                answers: dict[str, httpx.Response] = {}

                async def held() -> None:
                    answers["a"] = await poll("shard-a", first, 20)

                async with trio.open_nursery() as polls:
                    polls.start_soon(held)
                    with trio.fail_after(BOUND):
                        while api.statistics().waiting_polls == 0:  # noqa: ASYNC110
                            await trio.sleep(0.01)
                    # Another client polls the same bot meanwhile: Telegram's 409.
                    answers["b"] = await poll("shard-b", first, 0)
                    answers["own"] = await poll("shard-b", second, 0)
                    api.send_user_message(first, 5, "wake the first poll")
                seen = (await http.get("/sim/pollers")).json()
            nursery.cancel_scope.cancel()
    assert answers["a"].status_code == 200
    assert answers["b"].status_code == 409
    assert "terminated by other getUpdates request" in answers["b"].json()["description"]
    assert answers["own"].status_code == 200
    assert api.pollers() == {5151: {"shard-a": 1, "shard-b": 1}, 5152: {"shard-b": 1}}
    assert seen["pollers"] == {"5151": {"shard-a": 1, "shard-b": 1}, "5152": {"shard-b": 1}}
    assert seen["conflicts"] == {"shard-b": 1}
    assert seen["statistics"]["conflicts"] == 1


async def test_the_report_over_http_names_the_bots_whose_users_saw_something_wrong() -> None:
    api = SimulatedBotApi(rng=random.Random(5))
    tokens = [SimulatedBotApi.make_token(bot_id, random.Random(bot_id)) for bot_id in (61, 62)]
    for token in tokens:
        api.add_bot(token)
    api.send_user_message(tokens[0], 7, "first")
    api.send_user_message(tokens[0], 7, "second")
    api.send_user_message(tokens[1], 8, "only")
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(partial(serve_sim, api))
            async with httpx.AsyncClient(base_url=url, timeout=BOUND) as http:

                async def reply(token: str, chat_id: int, text: str) -> None:
                    answer = await http.post(
                        f"/bot{token}/sendMessage", json={"chat_id": chat_id, "text": text}
                    )
                    assert answer.status_code == 200

                await reply(tokens[1], 8, "only")
                clean = (await http.get("/sim/report")).json()
                # The first bot answers its first message twice and its second not at all.
                await reply(tokens[0], 7, "first")
                await reply(tokens[0], 7, "first")
                seen = (await http.get("/sim/report")).json()
            nursery.cancel_scope.cancel()
    assert clean["user_messages"] == 3
    assert clean["answered"] == 1
    assert clean["unanswered"] == 2
    assert clean["bots"] == {
        "61": {
            "user_messages": 2,
            "answered": 0,
            "unanswered": 2,
            "duplicates": 0,
            "out_of_order": 0,
            "replies": 0,
            "untracked_replies": 0,
            "updates_pending": 2,
        }
    }
    assert (seen["answered"], seen["unanswered"], seen["duplicates"]) == (2, 1, 1)
    assert seen["bots"] == {
        "61": {
            "user_messages": 2,
            "answered": 1,
            "unanswered": 1,
            "duplicates": 1,
            "out_of_order": 0,
            "replies": 2,
            "untracked_replies": 0,
            "updates_pending": 2,
        }
    }
    assert seen["updates_pending"] == 3
