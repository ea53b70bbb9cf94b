"""``/admin/bots/{user_id}/dead-letters``: the running daemon in process (MockClock), a bot
whose replies Telegram refuses (the user blocked it) until it does not, and the admin API."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from starlette.applications import Starlette

from actors.simulator import SimulatedBotApi
from tests import payloads
from tests.actors.transports import FailingMethod
from tests.admin.helpers import AUTH, client, make_app
from tests.harness import Fleet, running_fleet

FORUM = -1001234567890
BUSINESS_CUSTOMER = 555
CONNECTION = "bc-AbCdEf123"
BASE = "/admin/bots/1/dead-letters"


@dataclass
class Blocked:
    fleet: Fleet
    app: Starlette
    http: httpx.AsyncClient
    refusing: FailingMethod

    @property
    def api(self) -> SimulatedBotApi:
        return self.fleet.api

    @property
    def token(self) -> str:
        return self.fleet.tokens[1]


@asynccontextmanager
async def blocked_bot(
    db: Path, user_ids: tuple[int, ...] = (1,), api: SimulatedBotApi | None = None
) -> AsyncIterator[Blocked]:
    """Bot 1 (echo) whose sendMessage and answerCallbackQuery Telegram answers 403 "bot was
    blocked by the user" until ``refusing.active`` is set False."""
    api = api or SimulatedBotApi(rng=random.Random(14), record=True)
    holder: list[FailingMethod] = []

    def wrap(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        failing = FailingMethod(
            inner,
            {"sendMessage", "answerCallbackQuery"},
            status=403,
            description="Forbidden: bot was blocked by the user",
        )
        holder.append(failing)
        return failing

    async with running_fleet(db, list(user_ids), api=api, wrap_transport=wrap) as fleet:
        app = make_app(fleet)
        async with client(app, **AUTH) as http:
            yield Blocked(fleet, app, http, holder[0])


def three_kinds(blocked: Blocked) -> list[int]:
    """A button press, a question in a forum topic, a customer's business message: the
    update_ids, in that order."""
    api, token = blocked.api, blocked.token
    api.send_update(token, payloads.business_connection(user_id=444))
    return [
        api.send_update(token, payloads.callback_query(chat_id=111)),
        api.send_update(token, payloads.forum_topic_message(chat_id=FORUM, thread_id=77)),
        api.send_update(
            token, payloads.business_message(chat_id=BUSINESS_CUSTOMER, connection=CONNECTION)
        ),
    ]


async def dead_letters(http: httpx.AsyncClient, query: str = "") -> dict[str, Any]:
    response = await http.get(BASE + query)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_dead_letters_are_listed_with_reason_and_payload_newest_first(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with blocked_bot(tmp_path / "d.db") as blocked:
        ids = three_kinds(blocked)
        await trio.sleep(30)
        listing = await dead_letters(blocked.http)
        assert listing["user_id"] == 1 and listing["total"] == 3
        assert listing["next_cursor"] is None
        letters = listing["dead_letters"]
        assert [d["update_id"] for d in letters] == ids[::-1]
        assert [d["update_type"] for d in letters] == [
            "business_message",
            "message",
            "callback_query",
        ]
        business, topic, button = letters
        assert business["payload"]["business_message"]["business_connection_id"] == CONNECTION
        assert topic["payload"]["message"]["message_thread_id"] == 77
        assert topic["chat_id"] == FORUM
        assert button["payload"]["callback_query"]["data"] == "a"
        assert button["chat_id"] == 111
        for letter in letters:
            assert "blocked by the user" in letter["reason"]
            assert letter["recorded_at"].endswith("Z") and letter["redriven_at"] is None
            assert letter["payload"]["update_id"] == letter["update_id"]

        first = await dead_letters(blocked.http, "?limit=2")
        assert [d["update_id"] for d in first["dead_letters"]] == ids[:0:-1]
        assert first["total"] == 3 and first["next_cursor"] is not None
        rest = await dead_letters(blocked.http, f"?limit=2&cursor={first['next_cursor']}")
        assert [d["update_id"] for d in rest["dead_letters"]] == ids[:1]
        assert rest["next_cursor"] is None
        answered = await dead_letters(blocked.http, "?reason=answerCallbackQuery")
        assert [d["update_id"] for d in answered["dead_letters"]] == ids[:1]
        assert answered["total"] == 1


async def test_a_redrive_sends_the_replies_once_the_chats_take_them_and_only_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="botvisor.admin")
    async with blocked_bot(tmp_path / "d.db") as blocked:
        three_kinds(blocked)
        await trio.sleep(30)
        bot_id = blocked.fleet.bot_id(1)
        assert blocked.api.report().bot(bot_id).answered == 0
        # Long after: the delivery deadline (900 s) of each update has passed.
        await trio.sleep(2_000)

        blocked.refusing.active = False
        response = await blocked.http.post(BASE + "/redrive", json={"all": True})
        assert response.status_code == 200, response.text
        assert response.json() == {"redriven": 3, "refused": []}
        await trio.sleep(30)

        report = blocked.api.report().bot(bot_id)
        assert report.callbacks_answered == 1
        assert report.answered == 2 and report.misplaced == 0 and report.duplicates == 0
        sent = blocked.api.bot(blocked.token).sent
        assert sent is not None
        places = {(m.chat_id, m.message_thread_id, m.business_connection_id) for m in sent}
        assert places == {(FORUM, 77, None), (BUSINESS_CUSTOMER, None, CONNECTION)}
        listing = await dead_letters(blocked.http)
        assert all(d["redriven_at"] is not None for d in listing["dead_letters"])
        assert await blocked.fleet.handle.store.inbox_pending(1) == []

        # Handled again: a second redrive is refused, with the reason.
        ids = [d["id"] for d in listing["dead_letters"]]
        again = await blocked.http.post(BASE + "/redrive", json={"ids": ids})
        assert again.status_code == 200
        assert again.json()["redriven"] == 0
        refused = again.json()["refused"]
        assert [r["id"] for r in refused] == sorted(ids)
        assert all(r["reason"].endswith("and handled again") for r in refused)
        # "all" now finds nothing left to redrive.
        none = await blocked.http.post(BASE + "/redrive", json={"all": True})
        assert none.json() == {"redriven": 0, "refused": []}
        await trio.sleep(30)
        assert blocked.api.report().bot(bot_id).duplicates == 0

        scrape = (await blocked.http.get("/metrics")).text
        assert 'botvisor_dead_letter_actions_total{action="redrive"} 3.0' in scrape
        assert 'botvisor_dead_letters_acted_on_total{outcome="redriven"} 3.0' in scrape
        assert 'botvisor_dead_letters_acted_on_total{outcome="refused"} 3.0' in scrape
    logged = [r.getMessage() for r in caplog.records if "dead letters redriven" in r.getMessage()]
    assert logged == [
        "bot 1: dead letters redriven: 3, refused: 0 (all)",
        "bot 1: dead letters redriven: 0, refused: 3 (3 id(s))",
        "bot 1: dead letters redriven: 0, refused: 0 (all)",
    ]


async def test_an_update_that_fails_again_is_dead_lettered_again_and_redrivable(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with blocked_bot(tmp_path / "d.db") as blocked:
        update_id = blocked.api.send_update(blocked.token, payloads.message(chat_id=111))
        await trio.sleep(30)
        (first,) = (await dead_letters(blocked.http))["dead_letters"]
        # Still blocked: the redriven update is handled, refused again, dead-lettered again.
        response = await blocked.http.post(BASE + "/redrive", json={"ids": [first["id"]]})
        assert response.json() == {"redriven": 1, "refused": []}
        await trio.sleep(30)
        newer, older = (await dead_letters(blocked.http))["dead_letters"]
        assert newer["update_id"] == older["update_id"] == update_id
        assert older["redriven_at"] is not None and newer["redriven_at"] is None
        refused = await blocked.http.post(BASE + "/redrive", json={"ids": [older["id"]]})
        assert refused.json()["refused"][0]["reason"].endswith(
            f"dead-lettered again: redrive dead letter {newer['id']} instead"
        )
        blocked.refusing.active = False
        again = await blocked.http.post(BASE + "/redrive", json={"reason_contains": "BLOCKED"})
        assert again.json() == {"redriven": 1, "refused": []}
        await trio.sleep(30)
        assert blocked.api.report().bot(blocked.fleet.bot_id(1)).answered == 1


async def test_a_suspended_bot_handles_a_redrive_after_it_is_resumed(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with blocked_bot(tmp_path / "d.db") as blocked:
        blocked.api.send_update(blocked.token, payloads.message(chat_id=111, text="still here?"))
        await trio.sleep(30)
        blocked.refusing.active = False
        assert (await blocked.http.post("/admin/bots/1/suspend", json={})).status_code == 200
        await trio.sleep(10)
        response = await blocked.http.post(BASE + "/redrive", json={"all": True})
        assert response.json() == {"redriven": 1, "refused": []}
        await trio.sleep(30)
        bot_id = blocked.fleet.bot_id(1)
        assert blocked.api.report().bot(bot_id).answered == 0
        assert (await blocked.http.post("/admin/bots/1/resume")).status_code == 200
        await trio.sleep(30)
        assert blocked.api.report().bot(bot_id).answered == 1


async def test_a_bot_suspended_since_the_start_handles_a_redrive_once_resumed(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    api = SimulatedBotApi(rng=random.Random(15), record=True)
    db = tmp_path / "d.db"
    async with blocked_bot(db, api=api) as blocked:
        blocked.api.send_update(blocked.token, payloads.callback_query(chat_id=111))
        await trio.sleep(30)
        assert (await blocked.http.post("/admin/bots/1/suspend", json={})).status_code == 200
    # The next daemon loads the bot suspended (its undone inbox read in bulk at load); the
    # redrive comes after that read.
    async with blocked_bot(db, api=api) as blocked:
        blocked.refusing.active = False
        response = await blocked.http.post(BASE + "/redrive", json={"all": True})
        assert response.json() == {"redriven": 1, "refused": []}
        assert (await blocked.http.post("/admin/bots/1/resume")).status_code == 200
        await trio.sleep(30)
        assert blocked.api.report().bot(blocked.fleet.bot_id(1)).callbacks_answered == 1


async def test_a_dead_letter_stored_before_payloads_is_listed_but_refused(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with blocked_bot(tmp_path / "d.db") as blocked:
        store = blocked.fleet.handle.store
        await store.dead_letter(1, 41, 111, "delivery deadline passed; last error: 502", 1.0)
        (legacy,) = (await dead_letters(blocked.http))["dead_letters"]
        assert legacy["payload"] is None and legacy["update_type"] is None
        assert legacy["recorded_at"] == "1970-01-01T00:00:01Z"
        response = await blocked.http.post(BASE + "/redrive", json={"ids": [legacy["id"], 9]})
        assert response.status_code == 200
        assert response.json() == {
            "redriven": 0,
            "refused": [
                {
                    "id": legacy["id"],
                    "update_id": 41,
                    "reason": "stored without its update (before botvisor kept payloads): it "
                    "cannot be redriven; discard it",
                },
                {"id": 9, "update_id": None, "reason": "bot 1 has no dead letter 9"},
            ],
        }


async def test_discard_deletes_the_selected_dead_letters(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with blocked_bot(tmp_path / "d.db", (1, 2)) as blocked:
        three_kinds(blocked)
        blocked.api.send_update(blocked.fleet.tokens[2], payloads.message(chat_id=111))
        await trio.sleep(30)
        letters = (await dead_letters(blocked.http))["dead_letters"]
        one = await blocked.http.post(BASE + "/discard", json={"ids": [letters[0]["id"]]})
        assert one.json() == {"discarded": 1}
        by_reason = await blocked.http.post(
            BASE + "/discard", json={"reason_contains": "answerCallbackQuery"}
        )
        assert by_reason.json() == {"discarded": 1}
        left = await dead_letters(blocked.http)
        assert [d["update_id"] for d in left["dead_letters"]] == [letters[1]["update_id"]]
        every = await blocked.http.post(BASE + "/discard", json={"all": True})
        assert every.json() == {"discarded": 1}
        assert (await dead_letters(blocked.http))["total"] == 0
        # Bot 2's dead letter is its own.
        other = await blocked.http.get("/admin/bots/2/dead-letters")
        assert other.json()["total"] == 1
        scrape = (await blocked.http.get("/metrics")).text
        assert 'botvisor_dead_letter_actions_total{action="discard"} 3.0' in scrape
        assert 'botvisor_dead_letters_acted_on_total{outcome="discarded"} 3.0' in scrape


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({}, "exactly one of 'ids', 'reason_contains' and 'all'; got none"),
        ({"ids": [1], "all": True}, "got 'ids', 'all'"),
        ({"ids": []}, "ids"),
        ({"ids": ["1"]}, "ids[0]"),
        ({"ids": [0]}, "ids[0]"),
        ({"ids": [True]}, "ids[0]"),
        ({"all": False}, "all"),
        ({"reason_contains": ""}, "reason_contains"),
        ({"reason_contains": "x" * 201}, "reason_contains"),
        ({"ids": [1], "colour": "red"}, "colour"),
    ],
)
async def test_a_bad_body_is_a_422_naming_the_field_and_changes_nothing(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, body: dict[str, Any], named: str
) -> None:
    async with blocked_bot(tmp_path / "d.db") as blocked:
        blocked.api.send_update(blocked.token, payloads.message(chat_id=111))
        await trio.sleep(30)
        for action in ("redrive", "discard"):
            response = await blocked.http.post(f"{BASE}/{action}", json=body)
            assert response.status_code == 422, response.text
            error = response.json()["error"]
            assert error["code"] == "invalid_request"
            assert named in error["message"]
        listing = await dead_letters(blocked.http)
        assert listing["total"] == 1 and listing["dead_letters"][0]["redriven_at"] is None


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?cursor=abc", "cursor"),
        ("?reason=", "reason"),
    ],
)
async def test_a_bad_query_is_a_422_naming_the_parameter(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, query: str, named: str
) -> None:
    async with blocked_bot(tmp_path / "d.db") as blocked:
        response = await blocked.http.get(BASE + query)
        assert response.status_code == 422, response.text
        assert named in response.json()["error"]["message"]


async def test_an_unknown_bot_is_a_404_and_a_bad_user_id_a_422(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with blocked_bot(tmp_path / "d.db") as blocked:
        http = blocked.http
        for method, path, body in [
            ("GET", "/admin/bots/99/dead-letters", None),
            ("POST", "/admin/bots/99/dead-letters/redrive", {"all": True}),
            ("POST", "/admin/bots/99/dead-letters/discard", {"all": True}),
        ]:
            response = await http.request(method, path, json=body)
            assert response.status_code == 404, response.text
            assert "99" in response.json()["error"]["message"]
        bad = await http.get("/admin/bots/zero/dead-letters")
        assert bad.status_code == 422 and "user_id" in bad.json()["error"]["message"]
        # Behind the admin token like every /admin route.
        async with client(blocked.app) as anonymous:
            assert (await anonymous.get(BASE)).status_code == 401
            assert (await anonymous.post(BASE + "/redrive", json={"all": True})).status_code == 401
