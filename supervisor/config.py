"""The daemon's configuration: ``[supervisor]``, and ``Config``, every section of the file.

Each section is declared once, in the layer that uses it (``actors``, ``storage``, ``admin``);
this module adds the supervisor's own section and puts them together. Reading a file and the
environment is :mod:`supervisor.loading`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from actors import (
    BotConfig,
    BotMode,
    BreakerConfig,
    HandlersConfig,
    HealthConfig,
    LimitsConfig,
    Number,
    RetryConfig,
    TelegramConfig,
    WebhookConfig,
    WholeNumber,
    rule_error,
)
from admin import AdminConfig
from storage import StorageConfig
from supervisor.cluster import ClusterConfig

__all__ = ["Config", "SupervisorConfig"]


class SupervisorConfig(BaseModel):
    """``[supervisor]``: OTP-style restart rules for bots, and shutdown."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # More than max_restarts crashes within restart_period seconds suspend the bot.
    max_restarts: Annotated[WholeNumber, Field(ge=0, le=10_000)] = 5
    restart_period: Annotated[Number, Field(ge=0.01, le=86_400)] = 60.0
    restart_backoff_min: Annotated[Number, Field(ge=0.001, le=3600)] = 1.0
    restart_backoff_max: Annotated[Number, Field(ge=0.001, le=86_400)] = 60.0
    # Each backoff is scaled by a random factor in [1 - jitter, 1 + jitter].
    restart_jitter: Annotated[Number, Field(ge=0, le=1)] = 0.2
    # The backoff resets after a child ran restart_backoff_min × this without crashing.
    backoff_reset_factor: Annotated[Number, Field(ge=1, le=1000)] = 10.0
    # Seconds in-flight handlers get at shutdown.
    graceful_timeout: Annotated[Number, Field(ge=0, le=3600)] = 10.0
    # How often each bot re-checks its own status, to announce what time alone changes
    # (failures ageing out of the health window).
    report_interval: Annotated[Number, Field(ge=0.01, le=3600)] = 5.0

    @model_validator(mode="after")
    def _backoff_range(self) -> SupervisorConfig:
        if self.restart_backoff_max < self.restart_backoff_min:
            raise rule_error(
                "restart_backoff_max",
                f"must be >= restart_backoff_min ({self.restart_backoff_min}), "
                f"got {self.restart_backoff_max!r}",
            )
        return self


class Config(BaseModel):
    """The whole daemon configuration: one field per section of ``botvisor.toml``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    telegram: TelegramConfig = TelegramConfig()
    storage: StorageConfig = StorageConfig()
    admin: AdminConfig = AdminConfig()
    limits: LimitsConfig = LimitsConfig()
    breaker: BreakerConfig = BreakerConfig()
    retry: RetryConfig = RetryConfig()
    health: HealthConfig = HealthConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    handlers: HandlersConfig = HandlersConfig()
    webhook: WebhookConfig = WebhookConfig()
    # None: no [cluster] table, one process (or shards without fencing) as before.
    cluster: ClusterConfig | None = None
    bots: Annotated[
        tuple[BotConfig, ...],
        Field(json_schema_extra={"x-rule": "be an array of tables ([[bots]] for each bot)"}),
    ] = ()

    @field_validator("bots")
    @classmethod
    def _unique_user_ids(cls, bots: tuple[BotConfig, ...]) -> tuple[BotConfig, ...]:
        seen: set[int] = set()
        for index, bot in enumerate(bots):
            if bot.user_id in seen:
                raise rule_error(
                    f"[{index}].user_id", f"must be unique among [[bots]], got {bot.user_id!r}"
                )
            seen.add(bot.user_id)
        return bots

    @model_validator(mode="after")
    def _webhook_bots_have_a_listener(self) -> Config:
        webhook_bots = [index for index, bot in enumerate(self.bots) if bot.mode is BotMode.WEBHOOK]
        if not webhook_bots:
            return self
        first = webhook_bots[0]
        if self.webhook.public_url is None:
            raise rule_error(
                "webhook.public_url",
                f"must be set: bots[{first}] (user_id {self.bots[first].user_id}) has "
                f'mode = "webhook"; set it to the URL Telegram reaches the listener at',
            )
        if self.webhook.secret is None:
            raise rule_error(
                "webhook.secret_env",
                f": the master webhook secret in ${self.webhook.secret_env} is not set, and "
                f'bots[{first}] (user_id {self.bots[first].user_id}) has mode = "webhook"',
            )
        return self

    @field_validator("bots")
    @classmethod
    def _one_tenant_per_token(cls, bots: tuple[BotConfig, ...]) -> tuple[BotConfig, ...]:
        # By the token's bot id: two tokens of one bot (an old and a regenerated one) are still
        # one bot, whose updates two pollers would split. The token itself is never shown.
        first: dict[int, int] = {}
        for index, bot in enumerate(bots):
            earlier = first.setdefault(bot.token.bot_id, index)
            if earlier != index:
                raise rule_error(
                    f"[{index}].token",
                    f": the same bot ({bot.token.redacted}) as bots[{earlier}].token "
                    f"(user_id {bots[earlier].user_id}); one token serves one tenant: "
                    f"remove one of the two [[bots]] entries",
                )
        return bots
