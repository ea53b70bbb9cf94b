"""Fixtures of the Bot API and simulator tests: a seeded simulator with one bot, and a client
talking to it."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from actors.botapi import BotApiClient, make_http_client
from actors.config import TelegramConfig
from actors.secrets import BotToken
from actors.simulator import SimulatedBotApi, SimulatedTransport

TELEGRAM = TelegramConfig(api_base="https://api.telegram.org")
BOT_ID = 123456


@pytest.fixture
def api() -> SimulatedBotApi:
    return SimulatedBotApi(rng=random.Random(7), record=True)


@pytest.fixture
def token(api: SimulatedBotApi) -> str:
    secret = SimulatedBotApi.make_token(BOT_ID, random.Random(1))
    api.add_bot(secret)
    return secret


@pytest.fixture
async def client(api: SimulatedBotApi, token: str) -> AsyncIterator[BotApiClient]:
    transport = SimulatedTransport(api)
    async with make_http_client(transport=transport, ssl_context=None, telegram=TELEGRAM) as http:
        yield BotApiClient(http, token=BotToken(token), telegram=TELEGRAM)
