"""Settings of a bot actor and its request pipeline, as frozen pydantic models.

Each section is declared once here, with its defaults and rules; the loader in ``supervisor``
validates ``botvisor.toml`` against these models in one pass, and tests build them directly.
A broken rule names its key (``breaker.open_seconds must be from 0.01 to 86400, got -1``):
see :mod:`actors.validation`. Every number has a finite ``[ge, le]`` range stated on its field
(docs/OPERATIONS.md lists them; ``tests/supervisor/test_ranges.py`` checks that none is
missing): ``rps = 1e308`` or ``5e-324`` is a typo, not a setting.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, ClassVar
from urllib.parse import SplitResult, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from actors.addresses import ListenAddress, check_tls_pair, split_listen
from actors.ids import UserId
from actors.secrets import BotToken
from actors.validation import (
    Flag,
    Fraction,
    Number,
    WholeNumber,
    rule_error,
)

__all__ = [
    "DEFAULT_ALLOWED_UPDATES",
    "UPDATE_TYPES",
    "AutoreplyRule",
    "BackoffKind",
    "BotConfig",
    "BotMode",
    "BreakerConfig",
    "HandlersConfig",
    "HealthConfig",
    "JitterKind",
    "LimitsConfig",
    "RetryConfig",
    "RetryPolicyConfig",
    "TelegramConfig",
    "WebhookConfig",
    "handler_module_problem",
    "handler_syntax_problem",
]

# Configuration is immutable (hashable, safe to share between actors) and a key the model does
# not know is a mistake in the file, not something to ignore.
FROZEN = ConfigDict(frozen=True, extra="forbid")


def _url_parts(value: str) -> SplitResult:
    """``value`` split, with the rule for a port out of range or not a number."""
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 (raises for a port out of range or not a number)
    except ValueError:
        raise rule_error(
            "", f"must have a port from 1 to 65535 if it has one, got {value!r}"
        ) from None
    return parts


class TelegramConfig(BaseModel):
    """``[telegram]``: where the Bot API is and how to long-poll it."""

    model_config = FROZEN

    api_base: str = "https://api.telegram.org"
    # getUpdates long-poll timeout in seconds; Telegram caps it at 50. 0 is accepted, with a
    # warning (see ``warnings``): it short-polls.
    poll_timeout: Annotated[
        WholeNumber,
        Field(
            ge=0, le=50, json_schema_extra={"x-rule": "be a whole number of seconds from 0 to 50"}
        ),
    ] = 30
    # An empty poll that comes back early (poll_timeout = 0, or a server that ignores the
    # timeout) is followed by the next getUpdates no sooner than this many seconds after it
    # started, so such a server is not asked hundreds of times a second. Polls that bring
    # updates are never held back.
    min_poll_interval: Annotated[Number, Field(ge=0.1, le=60)] = 1.0
    # The HTTP read timeout of getUpdates is poll_timeout + this margin.
    poll_http_margin: Annotated[Number, Field(ge=0.1, le=600)] = 10.0
    # HTTP timeout of every other call.
    request_timeout: Annotated[Number, Field(ge=0.1, le=600)] = 30.0
    connect_timeout: Annotated[Number, Field(ge=0.1, le=600)] = 10.0

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise rule_error("", f"must start with http:// or https://, got {value!r}")
        parts = _url_parts(value)
        if not parts.hostname:
            raise rule_error("", f"must name a host (https://api.telegram.org), got {value!r}")
        return value

    def warnings(self) -> tuple[str, ...]:
        """Accepted settings an operator should hear about: logged when the daemon starts and
        printed by ``check-config``."""
        if self.poll_timeout == 0:
            return (
                "telegram.poll_timeout = 0 short-polls: getUpdates returns at once, so each "
                f"bot asks for updates every {self.min_poll_interval:g} s "
                "(telegram.min_poll_interval) and an update waits up to that long; set "
                "poll_timeout to 1..50 (30 is usual) to long-poll",
            )
        return ()


class LimitsConfig(BaseModel):
    """``[limits]``: Telegram's rate limits, per chat, per bot and for the whole process."""

    model_config = FROZEN

    # A token bucket grants at most rate × T + burst in any T seconds, but Telegram counts
    # arrivals, and the HTTP stack's jitter bunches them: grants from a stretch of 1 + d
    # seconds can land in one second (d: the spread of the grant-to-arrival delay). The
    # busiest second at the server is then at most rate × (1 + d) + burst. The old 25 rps and
    # burst 5 made exactly 30 at d = 0, so any jitter went over Telegram's ~30 messages/s
    # (31–32 were seen on loopback). 22 rps and burst 3: 25 at d = 0, and still ≤ 30 for
    # d up to (30 − 3) / 22 − 1 ≈ 0.23 s. `make bench` measures it ("Global limit at the
    # receiving server"). A burst equal to the rate would allow twice the rate at first.
    global_rps: Annotated[Number, Field(ge=0.01, le=100_000)] = 22.0
    global_burst: Annotated[WholeNumber, Field(ge=1, le=100_000)] = 3
    bot_rps: Annotated[Number, Field(ge=0.01, le=100_000)] = 30.0
    bot_burst: Annotated[WholeNumber, Field(ge=1, le=100_000)] = 5
    private_chat_per_second: Annotated[Number, Field(ge=0.01, le=1000)] = 1.0
    group_chat_per_minute: Annotated[Number, Field(ge=0.1, le=60_000)] = 20.0
    # Chats of one bot handled concurrently; updates of one chat are always in order.
    max_concurrent_chats: Annotated[WholeNumber, Field(ge=1, le=10_000)] = 16
    # A chat lane with nothing to do for this long is reaped.
    lane_idle_seconds: Annotated[Number, Field(ge=0.1, le=86_400)] = 60.0


class BreakerConfig(BaseModel):
    """``[breaker]``: each bot's circuit breaker."""

    model_config = FROZEN

    failure_threshold: Annotated[WholeNumber, Field(ge=1, le=10_000)] = 5
    open_seconds: Annotated[Number, Field(ge=0.01, le=86_400)] = 60.0
    half_open_successes: Annotated[WholeNumber, Field(ge=1, le=10_000)] = 2
    # Optional failure-rate rule: OPEN when, over the last ``rate_window_seconds``, at least
    # ``rate_minimum_calls`` calls were made and the failed share reached ``failure_rate``.
    failure_rate: Fraction | None = None
    rate_window_seconds: Annotated[Number, Field(ge=0.01, le=86_400)] = 60.0
    rate_minimum_calls: Annotated[WholeNumber, Field(ge=1, le=1_000_000)] = 20


class BackoffKind(enum.Enum):
    """How the delay between retries grows."""

    # base × 2^(attempt - 1), up to max_delay
    EXPONENTIAL = "exponential"
    # base × attempt, up to max_delay
    LINEAR = "linear"
    # base every time
    FIXED = "fixed"
    # base × 1, 1, 2, 3, 5, 8, …, up to max_delay: gentler than exponential
    FIBONACCI = "fibonacci"


class JitterKind(enum.Enum):
    """How a computed delay is randomised, so many bots do not retry in lockstep."""

    # the delay as computed
    NONE = "none"
    # uniform from 0 to the delay
    FULL = "full"
    # half the delay plus uniform up to the other half
    EQUAL = "equal"
    # uniform from base to three times the previous delay, ignoring the backoff
    DECORRELATED = "decorrelated"


class RetryPolicyConfig(BaseModel):
    """One error category's retry policy: ``[retry.<category>]``."""

    model_config = FROZEN

    max_retries: Annotated[WholeNumber, Field(ge=0, le=100)]
    backoff: BackoffKind = BackoffKind.EXPONENTIAL
    jitter: JitterKind = JitterKind.FULL
    base_delay: Annotated[Number, Field(ge=0, le=3600)] = 0.5
    max_delay: Annotated[Number, Field(ge=0.001, le=3600)] = 30.0

    @model_validator(mode="after")
    def _base_within_max(self) -> RetryPolicyConfig:
        if self.base_delay > self.max_delay:
            raise rule_error(
                "base_delay",
                f"must be <= max_delay ({self.max_delay}), got {self.base_delay!r}",
            )
        return self


class RetryConfig(BaseModel):
    """``[retry]``: the quick retries per error category, and delivery beyond them.

    RATE_LIMIT waits exactly the server's ``retry_after`` (its backoff applies only when the
    server gave none). PERMANENT and CHAT errors are never retried.
    """

    model_config = FROZEN

    # The categories' policies, in the order an operator reads them; a table in the file is
    # merged over its category's defaults (see _over_defaults).
    POLICIES: ClassVar[tuple[str, ...]] = ("rate_limit", "transient_network", "unknown")

    rate_limit: RetryPolicyConfig = RetryPolicyConfig(
        max_retries=3, jitter=JitterKind.NONE, backoff=BackoffKind.FIXED, base_delay=1.0
    )
    transient_network: RetryPolicyConfig = RetryPolicyConfig(max_retries=2)
    unknown: RetryPolicyConfig = RetryPolicyConfig(
        max_retries=2, base_delay=2.0, jitter=JitterKind.EQUAL
    )
    # Retry a non-idempotent call (sendMessage) whose request may have reached the server.
    # Off by default: such a retry could send a message twice.
    retry_uncertain_sends: Flag = False
    # A reply that exhausted its quick retries is parked and re-sent until this many seconds
    # after its update arrived; then it is dead-lettered.
    delivery_deadline: Annotated[Number, Field(ge=0.1, le=86_400)] = 900.0

    @field_validator(*POLICIES, mode="before")
    @classmethod
    def _over_defaults(cls, value: Any, info: ValidationInfo) -> Any:
        # ``[retry.rate_limit] max_retries = 5`` keeps rate_limit's fixed backoff and 1 s base:
        # the table changes only what it names.
        if isinstance(value, dict) and info.field_name is not None:
            default = cls.model_fields[info.field_name].default
            if isinstance(default, RetryPolicyConfig):
                return {**dict(default), **value}
        return value


class HealthConfig(BaseModel):
    """``[health]``: how outcomes turn into HEALTHY / DEGRADED / UNHEALTHY."""

    model_config = FROZEN

    window_seconds: Annotated[Number, Field(ge=0.1, le=86_400)] = 300.0
    degraded_error_rate: Fraction = 0.10
    unhealthy_error_rate: Fraction = 0.50
    # The error-rate rules apply only with at least this many calls in the window.
    minimum_volume: Annotated[WholeNumber, Field(ge=1, le=1_000_000)] = 10
    degraded_consecutive_failures: Annotated[WholeNumber, Field(ge=1, le=10_000)] = 3
    unhealthy_consecutive_failures: Annotated[WholeNumber, Field(ge=1, le=10_000)] = 5
    slow_response_ms: Annotated[Number, Field(ge=1, le=600_000)] = 2000.0
    ema_alpha: Fraction = 0.2

    @model_validator(mode="after")
    def _unhealthy_beyond_degraded(self) -> HealthConfig:
        if self.degraded_error_rate > self.unhealthy_error_rate:
            raise rule_error(
                "degraded_error_rate",
                f"must be <= unhealthy_error_rate ({self.unhealthy_error_rate}), "
                f"got {self.degraded_error_rate!r}",
            )
        if self.unhealthy_consecutive_failures < self.degraded_consecutive_failures:
            raise rule_error(
                "unhealthy_consecutive_failures",
                f"must be a whole number >= degraded_consecutive_failures "
                f"({self.degraded_consecutive_failures}), "
                f"got {self.unhealthy_consecutive_failures!r}",
            )
        return self


NonEmpty = Annotated[str, Field(strict=True, min_length=1)]

BUILTIN_HANDLERS = ("echo", "autoreply")


def _is_module_path(name: str) -> bool:
    """``package.module``: dotted Python identifiers, absolute (no leading dot)."""
    return bool(name) and all(part.isidentifier() for part in name.split("."))


def handler_syntax_problem(handler: str) -> str | None:
    """Why ``handler`` is not ``echo``, ``autoreply`` or an absolute ``package.module:function``
    path, or None. A relative path (``.x:y``) has no package to be relative to."""
    if handler in BUILTIN_HANDLERS:
        return None
    module, colon, function = handler.partition(":")
    if colon and _is_module_path(module) and function.isidentifier():
        return None
    return (
        "must be 'echo', 'autoreply' or an absolute 'package.module:function' path, "
        f"got {handler!r}"
    )


def handler_module_problem(handler: str, allowed_modules: tuple[str, ...]) -> str | None:
    """Why ``handler`` may not be imported under ``[handlers] allowed_modules``, or None. The
    built-ins are always allowed; a module is allowed if it equals an entry or is below it."""
    problem = handler_syntax_problem(handler)
    if problem is not None or handler in BUILTIN_HANDLERS:
        return problem
    module = handler.partition(":")[0]
    if any(module == entry or module.startswith(entry + ".") for entry in allowed_modules):
        return None
    listed = ", ".join(repr(entry) for entry in allowed_modules) or "none"
    return (
        f": module {module!r} is not allowed; a handler's module must equal or be below an "
        f"entry of handlers.allowed_modules (now: {listed}); add it there, "
        f"or use 'echo' or 'autoreply'"
    )


class BotMode(enum.Enum):
    """How a bot receives its updates."""

    POLLING = "polling"  # botvisor long-polls getUpdates
    WEBHOOK = "webhook"  # Telegram POSTs each update to the webhook listener


_WEBHOOK_PATH_RULE = "be an https:// (or http://) URL with a host, no query or fragment"


class WebhookConfig(BaseModel):
    """``[webhook]``: the public listener Telegram pushes updates to, for bots whose ``mode``
    is ``"webhook"``. A bot's URL is ``{public_url}/{user_id}`` (``{public_url}/s/{i}/{user_id}``
    on shard ``i``); the listener serves the path of ``public_url`` followed by those on
    ``listen``.

    Each bot's ``secret_token`` derives from the master secret read from ``$secret_env``
    (:mod:`actors.webhook.secret`), so no webhook secret is stored; rotating the master
    registers every webhook bot again."""

    model_config = FROZEN

    listen: ListenAddress = "127.0.0.1:8443"
    # Where Telegram reaches the listener (through a TLS proxy, or served directly with
    # tls_cert/tls_key). None: no bot may use webhooks.
    public_url: str | None = None
    secret_env: str = "BOTVISOR_WEBHOOK_SECRET"
    # The master secret, read from ``secret_env`` by the loader. Never printed.
    secret: str | None = Field(default=None, repr=False)
    # setWebhook's max_connections: how many deliveries Telegram keeps in flight per bot.
    max_connections: Annotated[WholeNumber, Field(ge=1, le=100)] = 40
    # Serve HTTPS directly and upload tls_cert with setWebhook (a self-signed certificate).
    tls_cert: str | None = None
    tls_key: str | None = None
    # A delivery's body above this answers 413 (Telegram's updates are a few KiB).
    max_body_bytes: Annotated[WholeNumber, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    # A webhook bot's getWebhookInfo (pending updates, Telegram's last delivery error) is read
    # about this often, the fleet's checks spread over the interval.
    info_interval: Annotated[Number, Field(ge=10, le=86_400)] = 3600.0
    # A webhook bot with nothing to do for this long goes dormant (no task, no connection);
    # the next delivery wakes it.
    idle_seconds: Annotated[Number, Field(ge=1, le=86_400)] = 300.0

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise rule_error("", f"must {_WEBHOOK_PATH_RULE}, got {value!r}")
        if parts.query or parts.fragment:
            raise rule_error("", f"must {_WEBHOOK_PATH_RULE}, got {value!r}")
        _url_parts(value)
        return value.rstrip("/")

    @model_validator(mode="after")
    def _tls_pair(self) -> WebhookConfig:
        check_tls_pair(self.tls_cert, self.tls_key)
        return self

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]

    @property
    def path(self) -> str:
        """The path prefix the listener serves (``/tg`` for ``https://host/tg``; "" for none)."""
        return "" if self.public_url is None else urlsplit(self.public_url).path.rstrip("/")

    def bot_url(self, user_id: int, *, shard: int | None = None) -> str:
        """The URL given to setWebhook for the bot ``user_id``: ``{public_url}/{user_id}``,
        or, run as shard ``shard``, ``{public_url}/s/{shard}/{user_id}``."""
        if self.public_url is None:
            raise ValueError("webhook.public_url is not set")
        if shard is not None:
            return f"{self.public_url}/s/{shard}/{user_id}"
        return f"{self.public_url}/{user_id}"


class HandlersConfig(BaseModel):
    """``[handlers]``: which Python modules a ``package.module:function`` handler may come
    from, for the config file's bots and the admin API's alike (so the admin token alone
    cannot import arbitrary code). The built-in echo and autoreply are always allowed."""

    model_config = FROZEN

    allowed_modules: Annotated[
        tuple[Annotated[str, Field(strict=True)], ...],
        Field(json_schema_extra={"x-rule": "be a list of absolute module names ('pkg.mod')"}),
    ] = ()

    @field_validator("allowed_modules")
    @classmethod
    def _module_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [name for name in value if not _is_module_path(name)]
        if bad:
            raise rule_error(
                "",
                "must list absolute module names such as 'mycompany.bots', "
                f"got {', '.join(repr(name) for name in bad)}",
            )
        return value


# The update types of Bot API 9.x: the fields of ``Update`` besides ``update_id``, the names
# ``getUpdates`` takes in ``allowed_updates``.
UPDATE_TYPES: tuple[str, ...] = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_connection",
    "business_message",
    "edited_business_message",
    "deleted_business_messages",
    "message_reaction",
    "message_reaction_count",
    "inline_query",
    "chosen_inline_result",
    "callback_query",
    "shipping_query",
    "pre_checkout_query",
    "purchased_paid_media",
    "poll",
    "poll_answer",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "chat_boost",
    "removed_chat_boost",
)
# Telegram's own default set (every type but these three, which a bot must ask for), sent
# explicitly on every getUpdates: Telegram keeps the last list it was sent, so a bot that
# sent none would go on with whatever another deployment of the same token once asked for.
DEFAULT_ALLOWED_UPDATES: tuple[str, ...] = tuple(
    kind
    for kind in UPDATE_TYPES
    if kind not in ("chat_member", "message_reaction", "message_reaction_count")
)


class AutoreplyRule(BaseModel):
    """Reply ``reply`` to a message whose text contains ``contains`` (case-insensitive)."""

    # Any mistake inside a rule is reported as this one sentence about the rule's table.
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={"x-rule": "be a table with non-empty strings 'contains' and 'reply'"},
    )

    contains: NonEmpty
    reply: NonEmpty


class BotConfig(BaseModel):
    """One tenant bot: ``[[bots]]``."""

    # The same shape is the body of POST /admin/bots. hide_input_in_errors keeps the token's
    # text out of any error's str.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    user_id: UserId
    # repr=False: a value given for the token is never echoed in an error.
    token: BotToken = Field(repr=False)
    handler: str = Field(
        default="echo", description="'echo', 'autoreply' or 'package.module:function'"
    )
    autoreply: Annotated[
        tuple[AutoreplyRule, ...],
        Field(json_schema_extra={"x-rule": "be a list of tables with 'contains' and 'reply'"}),
    ] = ()
    autoreply_default: str | None = Field(
        default=None, description="the reply when no autoreply rule matches; null sends nothing"
    )
    rps: Annotated[Number, Field(ge=0.01, le=100_000)] | None = Field(
        default=None, description="this bot's requests per second; null means limits.bot_rps"
    )
    allowed_updates: Annotated[
        tuple[Annotated[str, Field(strict=True)], ...],
        Field(
            description=(
                "the update types getUpdates asks for, sent on every poll; by default every "
                "type except chat_member, message_reaction and message_reaction_count"
            ),
            json_schema_extra={"x-rule": "be a list of Bot API update type names"},
        ),
    ] = DEFAULT_ALLOWED_UPDATES
    mode: BotMode = Field(
        default=BotMode.POLLING,
        description="'polling' (getUpdates) or 'webhook' (Telegram pushes to [webhook])",
    )

    @field_validator("handler")
    @classmethod
    def _known_handler(cls, value: str) -> str:
        problem = handler_syntax_problem(value)
        if problem is not None:
            raise rule_error("", problem)
        return value

    @field_validator("allowed_updates")
    @classmethod
    def _known_update_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [kind for kind in value if kind not in UPDATE_TYPES]
        if unknown:
            raise rule_error(
                "",
                f"must name Bot API update types (known: {', '.join(UPDATE_TYPES)}), "
                f"got unknown {', '.join(repr(kind) for kind in unknown)}",
            )
        if not value:
            # Telegram reads an empty list as "the default set": say so instead.
            raise rule_error(
                "",
                "must name at least one update type (leave the key out for the default: "
                "every type except chat_member, message_reaction and message_reaction_count)"
                ", got []",
            )
        # Repeated names are harmless; keep the first of each, in the operator's order.
        kept = tuple(dict.fromkeys(value))
        # The usual list is the default's own tuple: 100,000 bots share one, not a copy each.
        return DEFAULT_ALLOWED_UPDATES if kept == DEFAULT_ALLOWED_UPDATES else kept
