"""``botvisor.toml``: the exact sentences a bad file produces, and what a good one becomes.

The messages are a product contract (operators and their scripts read them), so each is pinned
here word for word.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from actors import (
    DEFAULT_ALLOWED_UPDATES,
    UPDATE_TYPES,
    AutoreplyRule,
    BackoffKind,
    BotToken,
    JitterKind,
    LimitsConfig,
    RetryPolicyConfig,
    TelegramConfig,
)
from admin import AdminConfig
from storage import StorageConfig
from supervisor import Config, ConfigError, load_config, parse_config
from supervisor.cli import main

TOKEN = "123456:" + "A" * 30
OTHER_TOKEN = "654321:" + "B" * 30
ADMIN_TOKEN = "admin-token-of-twenty-chars"
ENV = {"BOT_TOKEN": TOKEN, "SHORT": "too-short"}

MAX = "9223372036854775807"
BOT = f'[[bots]]\nuser_id = 1\ntoken = "{TOKEN}"\n'
BOT_KEYS = (
    "allowed_updates, autoreply, autoreply_default, handler, mode, rps, token, token_env, user_id"
)
SECTIONS = (
    "admin, bots, breaker, cluster, handlers, health, limits, retry, storage, supervisor, "
    "telegram, webhook"
)

# (a TOML document, the problems it produces in order)
BAD_FILES: list[tuple[str, list[str]]] = [
    # unknown sections and keys
    ("[nope]\n", [f"nope: unknown section (known: {SECTIONS})"]),
    (
        "[storage]\nnope = 1\n",
        [
            "storage.nope: unknown key (known: path, persist_interval, "
            "retention_check_interval, retention_days, usage_hour_retention_days, "
            "usage_retention_days)"
        ],
    ),
    (
        "[retry.rate_limit]\nretries = 5\n",
        [
            "retry.rate_limit.retries: unknown key "
            "(known: backoff, base_delay, jitter, max_delay, max_retries)"
        ],
    ),
    (f'{BOT}nope = "x"\n', [f"bots[0].nope: unknown key (known: {BOT_KEYS})"]),
    ("storage = 5\n", ["storage must be a table, got 5"]),
    # [telegram]
    (
        "[telegram]\npoll_timeout = 60\n",
        ["telegram.poll_timeout must be a whole number of seconds from 0 to 50, got 60"],
    ),
    (
        "[telegram]\npoll_timeout = 5.0\n",
        ["telegram.poll_timeout must be a whole number of seconds from 0 to 50, got 5.0"],
    ),
    (
        "[telegram]\nmin_poll_interval = 0\n",
        ["telegram.min_poll_interval must be from 0.1 to 60, got 0"],
    ),
    (
        "[telegram]\nmin_poll_interval = 61\n",
        ["telegram.min_poll_interval must be from 0.1 to 60, got 61"],
    ),
    (
        '[telegram]\napi_base = "ftp://example.com"\n',
        ["telegram.api_base must start with http:// or https://, got 'ftp://example.com'"],
    ),
    (
        "[telegram]\nrequest_timeout = inf\n",
        ["telegram.request_timeout must be from 0.1 to 600, got inf"],
    ),
    # [limits]: numbers, whole numbers, and bools that are neither
    ("[limits]\nglobal_rps = 0\n", ["limits.global_rps must be from 0.01 to 100000, got 0"]),
    ("[limits]\nbot_rps = nan\n", ["limits.bot_rps must be from 0.01 to 100000, got nan"]),
    ("[limits]\nglobal_rps = true\n", ["limits.global_rps must be a number, got True"]),
    ('[limits]\nbot_rps = "30"\n', ["limits.bot_rps must be a number, got '30'"]),
    (
        "[limits]\nglobal_burst = 0\n",
        ["limits.global_burst must be a whole number from 1 to 100000, got 0"],
    ),
    (
        "[limits]\nmax_concurrent_chats = 2.5\n",
        ["limits.max_concurrent_chats must be a whole number from 1 to 10000, got 2.5"],
    ),
    # [breaker], [health]
    ("[breaker]\nopen_seconds = -1\n", ["breaker.open_seconds must be from 0.01 to 86400, got -1"]),
    ("[breaker]\nfailure_rate = 1.5\n", ["breaker.failure_rate must be in (0, 1], got 1.5"]),
    (
        "[health]\ndegraded_error_rate = 0.6\n",
        ["health.degraded_error_rate must be <= unhealthy_error_rate (0.5), got 0.6"],
    ),
    (
        "[health]\ndegraded_consecutive_failures = 6\n",
        [
            "health.unhealthy_consecutive_failures must be a whole number >= "
            "degraded_consecutive_failures (6), got 5"
        ],
    ),
    # [storage]
    (
        "[storage]\npersist_interval = 59\n",
        ["storage.persist_interval must be from 60 to 3600 seconds, got 59"],
    ),
    ('[storage]\npath = ""\n', ["storage.path must be a file path, got ''"]),
    # [supervisor]
    (
        "[supervisor]\nrestart_backoff_min = 1.0\nrestart_backoff_max = 0.5\n",
        ["supervisor.restart_backoff_max must be >= restart_backoff_min (1.0), got 0.5"],
    ),
    (
        "[supervisor]\nmax_restarts = -1\n",
        ["supervisor.max_restarts must be a whole number from 0 to 10000, got -1"],
    ),
    (
        "[supervisor]\nrestart_jitter = 2\n",
        ["supervisor.restart_jitter must be from 0 to 1, got 2"],
    ),
    # [retry]
    (
        "[retry.permanent]\nmax_retries = 1\n[retry.chat]\nmax_retries = 1\n",
        [
            "retry.permanent: permanent errors are never retried; remove this table",
            "retry.chat: chat errors are never retried; remove this table",
        ],
    ),
    (
        '[retry.transient_network]\nbackoff = "quadratic"\n',
        [
            "retry.transient_network.backoff must be one of 'exponential', 'linear', 'fixed', "
            "'fibonacci', got 'quadratic'"
        ],
    ),
    (
        "[retry.unknown]\nbase_delay = 40\n",
        ["retry.unknown.base_delay must be <= max_delay (30.0), got 40.0"],
    ),
    (
        "[retry.rate_limit]\nmax_retries = 101\n",
        ["retry.rate_limit.max_retries must be a whole number from 0 to 100, got 101"],
    ),
    (
        "[retry]\nretry_uncertain_sends = 1\n",
        ["retry.retry_uncertain_sends must be true or false, got 1"],
    ),
    # [admin]
    (
        '[admin]\nlisten = "0.0.0.0:8080"\n',
        [
            "admin.listen is '0.0.0.0:8080', but no admin token is set: set the environment "
            "variable BOTVISOR_ADMIN_TOKEN or listen on 127.0.0.1"
        ],
    ),
    (
        '[admin]\nlisten = "localhost"\n',
        ["admin.listen must be 'host:port' with a port from 0 to 65535, got 'localhost'"],
    ),
    (
        '[webhook]\nlisten = "0.0.0.0:99999"\n',
        ["webhook.listen must be 'host:port' with a port from 0 to 65535, got '0.0.0.0:99999'"],
    ),
    (
        '[webhook]\ntls_cert = "c.pem"\n',
        ["webhook.tls_key must be set with tls_cert (HTTPS needs both), got None"],
    ),
    (
        '[webhook]\npublic_url = "ftp://bots.example.com/tg"\n',
        [
            "webhook.public_url must be an https:// (or http://) URL with a host, no query or "
            "fragment, got 'ftp://bots.example.com/tg'"
        ],
    ),
    (
        '[webhook]\nsecret = "in-the-file"\n',
        [
            "webhook.secret: the webhook secret is never written in the file; set "
            "webhook.secret_env to the name of an environment variable"
        ],
    ),
    (
        f'{BOT}mode = "webhook"\n',
        [
            'webhook.public_url must be set: bots[0] (user_id 1) has mode = "webhook"; set it '
            "to the URL Telegram reaches the listener at"
        ],
    ),
    (
        '[admin]\ntoken = "in-the-file-0123456789"\n',
        [
            "admin.token: the admin token is never written in the file; "
            "set admin.token_env to the name of an environment variable"
        ],
    ),
    (
        '[admin]\ntoken_env = "SHORT"\n',
        ["admin.token_env: the admin token in $SHORT must be at least 16 characters long"],
    ),
    (
        '[admin]\nip_rate_limit = "5/day"\n',
        [
            "admin.ip_rate_limit must be 'N/second', 'N/minute' or 'N/hour' with N from 1 "
            "to 1000000, or 'off', got '5/day'"
        ],
    ),
    (
        '[admin]\ntrusted_proxies = ["10.0.0.0/8", "proxy.local"]\n',
        ["admin.trusted_proxies[1] must be an IP address or network, got 'proxy.local'"],
    ),
    (
        '[admin]\ntrusted_proxies = "10.0.0.0/8"\n',
        [
            'admin.trusted_proxies must be a list of addresses or networks such as "10.0.0.0/8", '
            "got '10.0.0.0/8'"
        ],
    ),
    # [[bots]]
    (
        f'[[bots]]\nuser_id = 1\ntoken = "{TOKEN}"\n[[bots]]\nuser_id = "x"\ntoken = "{TOKEN}"\n',
        [f"bots[1].user_id must be a whole number from 1 to {MAX}, got 'x'"],
    ),
    (
        f'[[bots]]\nuser_id = 0\ntoken = "{TOKEN}"\n',
        [f"bots[0].user_id must be a whole number from 1 to {MAX}, got 0"],
    ),
    (
        f'[[bots]]\nuser_id = true\ntoken = "{TOKEN}"\n',
        [f"bots[0].user_id must be a whole number from 1 to {MAX}, got True"],
    ),
    (f'[[bots]]\ntoken = "{TOKEN}"\n', ["bots[0].user_id is required"]),
    (
        f'{BOT}[[bots]]\nuser_id = 1\ntoken = "{OTHER_TOKEN}"\n',
        ["bots[1].user_id must be unique among [[bots]], got 1"],
    ),
    (
        f'{BOT}[[bots]]\nuser_id = 2\ntoken = "{OTHER_TOKEN}"\n'
        f'[[bots]]\nuser_id = 3\ntoken = "{TOKEN}"\n',
        [
            "bots[2].token: the same bot (123456:…) as bots[0].token (user_id 1); one token "
            "serves one tenant: remove one of the two [[bots]] entries"
        ],
    ),
    (
        # Another token of the same bot (an old one and a regenerated one) is the same bot.
        f'{BOT}[[bots]]\nuser_id = 2\ntoken = "123456:{"C" * 30}"\n',
        [
            "bots[1].token: the same bot (123456:…) as bots[0].token (user_id 1); one token "
            "serves one tenant: remove one of the two [[bots]] entries"
        ],
    ),
    (
        f'{BOT}allowed_updates = ["message", "mesage", "chat_members"]\n',
        [
            "bots[0].allowed_updates must name Bot API update types (known: message, "
            "edited_message, channel_post, edited_channel_post, business_connection, "
            "business_message, edited_business_message, deleted_business_messages, "
            "message_reaction, message_reaction_count, inline_query, chosen_inline_result, "
            "callback_query, shipping_query, pre_checkout_query, purchased_paid_media, poll, "
            "poll_answer, my_chat_member, chat_member, chat_join_request, chat_boost, "
            "removed_chat_boost), got unknown 'mesage', 'chat_members'"
        ],
    ),
    (
        f"{BOT}allowed_updates = []\n",
        [
            "bots[0].allowed_updates must name at least one update type (leave the key out for "
            "the default: every type except chat_member, message_reaction and "
            "message_reaction_count), got []"
        ],
    ),
    (
        f'{BOT}allowed_updates = "message"\n',
        ["bots[0].allowed_updates must be a list of Bot API update type names, got 'message'"],
    ),
    (f"{BOT}allowed_updates = [1]\n", ["bots[0].allowed_updates[0] must be a string, got 1"]),
    ("[[bots]]\nuser_id = 1\n", ["bots[0]: a bot needs token_env (recommended) or token"]),
    (
        f'{BOT}token_env = "BOT_TOKEN"\n',
        ["bots[0]: give either token or token_env, not both"],
    ),
    (
        '[[bots]]\nuser_id = 1\ntoken_env = "NOPE_X"\n',
        ["bots[0].token_env: the environment variable NOPE_X is not set"],
    ),
    (
        '[[bots]]\nuser_id = 1\ntoken = "abc"\n',
        [
            "bots[0].token: a bot token must look like '<digits>:<at least 20 letters, digits, "
            "- or _>', got a 3-character string with no ':'"
        ],
    ),
    (
        '[[bots]]\nuser_id = 1\ntoken_env = "SHORT"\n',
        [
            "$SHORT: a bot token must look like '<digits>:<at least 20 letters, digits, "
            "- or _>', got a 9-character string with no ':'"
        ],
    ),
    ("[[bots]]\nuser_id = 1\ntoken = 5\n", ["bots[0].token must be a string"]),
    (
        f'{BOT}handler = "nope"\n',
        [
            "bots[0].handler must be 'echo', 'autoreply' or an absolute "
            "'package.module:function' path, got 'nope'"
        ],
    ),
    (f"{BOT}rps = -1\n", ["bots[0].rps must be from 0.01 to 100000, got -1"]),
    (
        f'{BOT}[[bots.autoreply]]\ncontains = ""\nreply = "x"\n',
        ["bots[0].autoreply[0] must be a table with non-empty strings 'contains' and 'reply'"],
    ),
    (
        f'{BOT}autoreply = ["hi"]\n',
        [
            "bots[0].autoreply[0] must be a table with non-empty strings 'contains' and "
            "'reply', got 'hi'"
        ],
    ),
    (
        f'{BOT}handler = "mycompany.bots:handle"\n',
        [
            "bots[0].handler: module 'mycompany.bots' is not allowed; a handler's module must "
            "equal or be below an entry of handlers.allowed_modules (now: none); add it there, "
            "or use 'echo' or 'autoreply'"
        ],
    ),
    (
        f'[handlers]\nallowed_modules = ["mycompany"]\n{BOT}handler = ".bots:handle"\n',
        [
            "bots[0].handler must be 'echo', 'autoreply' or an absolute "
            "'package.module:function' path, got '.bots:handle'"
        ],
    ),
    (
        '[handlers]\nallowed_modules = ["mycompany", ".rel", ""]\n',
        [
            "handlers.allowed_modules must list absolute module names such as "
            "'mycompany.bots', got '.rel', ''"
        ],
    ),
    (
        "[bots]\nuser_id = 1\n",
        ["bots must be an array of tables ([[bots]] for each bot), got {'user_id': 1}"],
    ),
]


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(tomllib.loads(text), ENV, source="botvisor.toml")
    return caught.value.problems


@pytest.mark.parametrize(("text", "expected"), BAD_FILES, ids=[e[0] for _, e in BAD_FILES])
def test_a_bad_file_names_the_key_and_the_rule(text: str, expected: list[str]) -> None:
    assert problems_of(text) == expected


def test_every_problem_of_every_section_and_bot_is_reported_in_one_pass() -> None:
    text = (
        "[nope]\n"
        "[telegram]\npoll_timeout = 60\n"
        "[limits]\nglobal_rps = 0\nbot_burst = 0\n"
        "[retry.chat]\nmax_retries = 1\n"
        "[supervisor]\nrestart_backoff_min = 2.0\nrestart_backoff_max = 1.0\n"
        "[[bots]]\nuser_id = 1\n"
        f'[[bots]]\nuser_id = "x"\ntoken = "{TOKEN}"\nhandler = "nope"\n'
    )
    assert problems_of(text) == [
        f"nope: unknown section (known: {SECTIONS})",
        "telegram.poll_timeout must be a whole number of seconds from 0 to 50, got 60",
        "limits.global_rps must be from 0.01 to 100000, got 0",
        "limits.bot_burst must be a whole number from 1 to 100000, got 0",
        "retry.chat: chat errors are never retried; remove this table",
        "supervisor.restart_backoff_max must be >= restart_backoff_min (2.0), got 1.0",
        "bots[0]: a bot needs token_env (recommended) or token",
        f"bots[1].user_id must be a whole number from 1 to {MAX}, got 'x'",
        "bots[1].handler must be 'echo', 'autoreply' or an absolute "
        "'package.module:function' path, got 'nope'",
    ]


def test_the_error_says_how_many_problems_and_lists_each() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"limits": {"global_rps": 0, "bot_rps": -1}}, {}, source="botvisor.toml")
    assert str(caught.value) == (
        "botvisor.toml: 2 problem(s):\n"
        "  - limits.global_rps must be from 0.01 to 100000, got 0\n"
        "  - limits.bot_rps must be from 0.01 to 100000, got -1"
    )


GOOD_FILE = f"""
[telegram]
api_base = "http://127.0.0.1:8081"
poll_timeout = 25

[storage]
path = "fleet.db"
persist_interval = 120

[admin]
listen = "0.0.0.0:9000"
token_env = "MY_ADMIN_TOKEN"
trusted_proxies = ["10.0.0.0/8"]

[limits]
global_rps = 20
bot_burst = 3

[breaker]
failure_rate = 0.5

[retry]
delivery_deadline = 600
[retry.rate_limit]
max_retries = 5
[retry.unknown]
backoff = "linear"

[health]
ema_alpha = 0.5

[supervisor]
max_restarts = 2

[[bots]]
user_id = 1001
token_env = "BOT_TOKEN"
handler = "autoreply"
autoreply_default = "?"
rps = 2
allowed_updates = ["message", "chat_member", "message_reaction"]
[[bots.autoreply]]
contains = "hi"
reply = "hello"

[[bots]]
user_id = 1002
token = "{OTHER_TOKEN}"
"""


def test_a_valid_file_becomes_the_values_it_says_and_defaults_for_the_rest() -> None:
    config = parse_config(tomllib.loads(GOOD_FILE), {**ENV, "MY_ADMIN_TOKEN": ADMIN_TOKEN})
    assert (config.telegram.api_base, config.telegram.poll_timeout) == ("http://127.0.0.1:8081", 25)
    assert config.telegram.request_timeout == 30.0
    assert (config.storage.path, config.storage.persist_interval) == ("fleet.db", 120.0)
    assert config.storage.retention_days == 30.0
    assert (config.admin.host, config.admin.port, config.admin.token) == (
        "0.0.0.0",
        9000,
        ADMIN_TOKEN,
    )
    assert config.admin.trusted_proxies == ("10.0.0.0/8",)
    # ints in the file are floats in the config: the code computes with them as such
    assert config.limits.global_rps == 20.0 and isinstance(config.limits.global_rps, float)
    assert (config.limits.bot_burst, config.limits.bot_rps) == (3, 30.0)
    assert config.breaker.failure_rate == 0.5
    assert config.retry.delivery_deadline == 600.0
    # A [retry.<category>] table changes only what it names: the rest stays that category's.
    assert config.retry.rate_limit == RetryPolicyConfig(
        max_retries=5, backoff=BackoffKind.FIXED, jitter=JitterKind.NONE, base_delay=1.0
    )
    assert config.retry.unknown == RetryPolicyConfig(
        max_retries=2, backoff=BackoffKind.LINEAR, jitter=JitterKind.EQUAL, base_delay=2.0
    )
    assert config.retry.transient_network == RetryPolicyConfig(max_retries=2)
    assert config.health.ema_alpha == 0.5 and config.supervisor.max_restarts == 2
    first, second = config.bots
    assert (first.user_id, first.token, first.handler) == (1001, BotToken(TOKEN), "autoreply")
    assert first.autoreply == (AutoreplyRule(contains="hi", reply="hello"),)
    assert (first.autoreply_default, first.rps) == ("?", 2.0)
    assert (second.user_id, second.token, second.handler) == (1002, BotToken(OTHER_TOKEN), "echo")
    assert first.allowed_updates == ("message", "chat_member", "message_reaction")
    # The default is Telegram's default set, written out: every type but the three a bot
    # must ask for.
    assert second.allowed_updates == DEFAULT_ALLOWED_UPDATES
    assert set(UPDATE_TYPES) - set(DEFAULT_ALLOWED_UPDATES) == {
        "chat_member",
        "message_reaction",
        "message_reaction_count",
    }


def test_an_empty_file_is_the_defaults_and_reads_the_admin_token_from_its_variable() -> None:
    assert parse_config({}, {}) == Config()
    assert parse_config({}, {"BOTVISOR_ADMIN_TOKEN": ADMIN_TOKEN}).admin.token == ADMIN_TOKEN
    # an empty variable is no token: the loopback-only rule applies
    assert parse_config({}, {"BOTVISOR_ADMIN_TOKEN": ""}).admin.token is None


def test_configuration_is_immutable_and_hashable() -> None:
    config = parse_config(tomllib.loads(GOOD_FILE), {**ENV, "MY_ADMIN_TOKEN": ADMIN_TOKEN})
    with pytest.raises(ValidationError):
        config.limits.bot_rps = 1.0
    with pytest.raises(ValidationError):
        config.bots = ()
    with pytest.raises(ValidationError):
        config.bots[0].autoreply[0].reply = "changed"
    assert isinstance(config.bots, tuple) and isinstance(config.bots[0].autoreply, tuple)
    assert hash(config) == hash(
        parse_config(tomllib.loads(GOOD_FILE), {**ENV, "MY_ADMIN_TOKEN": ADMIN_TOKEN})
    )


def test_built_in_code_the_same_rules_apply() -> None:
    with pytest.raises(ValidationError, match="global_rps"):
        LimitsConfig(global_rps=0)
    with pytest.raises(ValidationError, match="persist_interval"):
        StorageConfig(persist_interval=10)
    with pytest.raises(ValidationError, match="no admin token is set"):
        AdminConfig(listen="0.0.0.0:8080")


def test_secrets_never_appear_in_the_problems() -> None:
    secret = "not-a-token-but-a-secret-nonetheless"
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {"admin": {"token_env": "A"}, "bots": [{"user_id": 1, "token_env": "B"}]},
            {"A": "short", "B": secret},
        )
    assert "short" not in str(caught.value) and secret not in str(caught.value)
    # a token pasted where it does not belong is not printed back
    with pytest.raises(ConfigError) as pasted:
        parse_config({"telegram": {"api_base": f"api.telegram.org/bot{TOKEN}"}}, {})
    assert TOKEN not in str(pasted.value) and "123456:…" in str(pasted.value)
    # an admin token of the wrong length shows up nowhere either, not even in a direct build
    with pytest.raises(ValidationError) as direct:
        AdminConfig(token="tiny-secret")
    assert "tiny-secret" not in str(direct.value)


# --- the file and the command line --------------------------------------------------------------


def test_a_file_that_is_not_utf8_is_one_clear_problem(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[telegram]\napi_base = "http://caf\xe9"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert caught.value.problems == [
        "is not UTF-8 text (byte 0xe9 at offset 33): TOML files are UTF-8; save it as UTF-8"
    ]


def test_a_missing_file_and_bad_toml_are_one_problem_each(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as missing:
        load_config(tmp_path / "absent.toml", {})
    assert missing.value.problems == ["the file does not exist"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits\n")
    with pytest.raises(ConfigError) as caught:
        load_config(bad, {})
    assert caught.value.problems[0].startswith("is not valid TOML: ")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The CLI configures the root logger for a process; give the next test its own back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_check_config_prints_every_problem_and_exits_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOPE_X", raising=False)
    path = tmp_path / "bad.toml"
    path.write_text(
        "[limits]\nglobal_rps = 0\n[storage]\nnope = 1\n"
        "[[bots]]\nuser_id = 1\ntoken_env = 'NOPE_X'\n"
    )
    assert main(["check-config", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"botvisor: {path}: 3 problem(s):\n"
        "  - storage.nope: unknown key (known: path, persist_interval, "
        "retention_check_interval, retention_days, usage_hour_retention_days, "
        "usage_retention_days)\n"
        "  - limits.global_rps must be from 0.01 to 100000, got 0\n"
        "  - bots[0].token_env: the environment variable NOPE_X is not set\n"
    )


@pytest.mark.usefixtures("restore_logging")
def test_check_config_summarises_a_good_file_and_exits_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BOTVISOR_ADMIN_TOKEN", raising=False)
    path = tmp_path / "good.toml"
    path.write_text(f"[limits]\nglobal_rps = 20\n{BOT}")
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines() == [
        f"ok: {path}",
        "  bots: 1 (1)",
        "  api_base: https://api.telegram.org, poll_timeout: 30 s",
        "  storage: botvisor.db (snapshot every 300 s, kept 30 days)",
        "  admin: http://127.0.0.1:8080, token NOT set (loopback only)",
        "  limits: global 20 rps, per bot 30 rps",
    ]


@pytest.mark.usefixtures("restore_logging")
def test_check_config_accepts_poll_timeout_0_and_warns_that_it_short_polls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BOTVISOR_ADMIN_TOKEN", raising=False)
    path = tmp_path / "short.toml"
    path.write_text(f"[telegram]\npoll_timeout = 0\nmin_poll_interval = 2\n{BOT}")
    assert main(["check-config", str(path)]) == 0
    out, _err = capsys.readouterr()
    warnings = [line for line in out.splitlines() if line.startswith("  warning:")]
    assert warnings == [
        "  warning: telegram.poll_timeout = 0 short-polls: getUpdates returns at once, so each "
        "bot asks for updates every 2 s (telegram.min_poll_interval) and an update waits up to "
        "that long; set poll_timeout to 1..50 (30 is usual) to long-poll"
    ]


def test_min_poll_interval_defaults_to_one_second_and_takes_whole_numbers() -> None:
    assert TelegramConfig().min_poll_interval == 1.0
    assert TelegramConfig().warnings() == ()
    assert parse_config(tomllib.loads("[telegram]\nmin_poll_interval = 5\n"), {}).telegram == (
        TelegramConfig(min_poll_interval=5.0)
    )
