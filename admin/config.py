"""``[admin]``: the admin HTTP API's settings, and the address rules they rely on.

:func:`is_loopback` is also the admin server's guard: it refuses to serve a non-loopback address
without a token, whoever built the settings.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from actors import (
    Flag,
    ListenAddress,
    WholeNumber,
    check_tls_pair,
    is_loopback,
    rule_error,
    split_listen,
)

__all__ = ["AdminConfig", "is_loopback", "parse_rate_limit", "split_listen"]

_PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}
_PROXIES_RULE = 'be a list of addresses or networks such as "10.0.0.0/8"'
_RATE_MAX = 1_000_000
_RATE_RULE = f"be 'N/second', 'N/minute' or 'N/hour' with N from 1 to {_RATE_MAX}, or 'off'"
# Shorter bearer tokens are guessable by anyone who can reach the port.
MIN_TOKEN_LENGTH = 16


def parse_rate_limit(text: str) -> tuple[int, float] | None:
    """``"120/minute"`` -> ``(120, 60.0)``; ``"off"`` -> None; anything else: ValueError."""
    if text == "off":
        return None
    count, sep, period = text.partition("/")
    if not (
        sep
        and count.isascii()
        and count.isdigit()
        and len(count) <= len(str(_RATE_MAX))
        and 1 <= int(count) <= _RATE_MAX
        and period in _PERIODS
    ):
        raise ValueError(f"a rate limit must {_RATE_RULE}, got {text!r}")
    return int(count), _PERIODS[period]


def _network(proxy: str) -> str:
    try:
        ipaddress.ip_network(proxy, strict=False)
    except ValueError:
        raise rule_error("", f"must be an IP address or network, got {proxy!r}") from None
    return proxy


class AdminConfig(BaseModel):
    """``[admin]``: the admin HTTP API."""

    # hide_input_in_errors: an error's str never shows the token.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    listen: ListenAddress = "127.0.0.1:8080"
    token_env: str = "BOTVISOR_ADMIN_TOKEN"
    # The admin bearer token, read from ``token_env`` by the loader. Never printed.
    token: str | None = Field(default=None, repr=False)
    enabled: Flag = True
    # Requests per client address: "N/second", "N/minute" or "N/hour" (a bucket of N
    # requests refilled over the period), or "off".
    ip_rate_limit: str = "600/minute"
    # At most this many client addresses are tracked; idle ones are forgotten first.
    ip_rate_limit_clients: Annotated[WholeNumber, Field(ge=1, le=10_000_000)] = 10_000
    # Addresses or networks of reverse proxies whose X-Forwarded-For header is believed.
    trusted_proxies: Annotated[
        tuple[Annotated[str, AfterValidator(_network)], ...],
        Field(json_schema_extra={"x-rule": _PROXIES_RULE}),
    ] = ()
    # Serve /metrics without the admin token (a Prometheus on a private network).
    metrics_public: Flag = False
    # Per-bot series on /metrics (9 per bot); false keeps only fleet totals (large fleets).
    metrics_per_bot: Flag = True
    # Serve HTTPS with this certificate chain and private key (PEM files; both or neither):
    # the bearer token then never crosses the network in clear.
    tls_cert: str | None = None
    tls_key: str | None = None

    @field_validator("ip_rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        try:
            parse_rate_limit(value)
        except ValueError:
            raise rule_error("", f"must {_RATE_RULE}, got {value!r}") from None
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> AdminConfig:
        check_tls_pair(self.tls_cert, self.tls_key)
        return self

    @property
    def tls(self) -> bool:
        """Whether the admin API serves HTTPS."""
        return self.tls_cert is not None

    @model_validator(mode="after")
    def _token_guards_the_listener(self) -> AdminConfig:
        if self.token is not None and len(self.token) < MIN_TOKEN_LENGTH:
            raise rule_error(
                "token_env",
                f": the admin token in ${self.token_env} must be at least "
                f"{MIN_TOKEN_LENGTH} characters long",
            )
        if self.enabled and self.token is None and not is_loopback(self.host):
            raise rule_error(
                "listen",
                f"is {self.listen!r}, but no admin token is set: set the environment "
                f"variable {self.token_env} or listen on 127.0.0.1",
            )
        return self

    @property
    def rate_limit(self) -> tuple[int, float] | None:
        """``(requests, per_seconds)`` of ``ip_rate_limit``, or None when it is off."""
        return parse_rate_limit(self.ip_rate_limit)

    @property
    def host(self) -> str:
        """The host part of ``listen``, without IPv6 brackets."""
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        """The port of ``listen`` (0: any free port)."""
        return split_listen(self.listen)[1]
