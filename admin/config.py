"""``[admin]``: the admin HTTP API's settings, and the address rules they rely on.

:func:`is_loopback` is also the admin server's guard: it refuses to serve a non-loopback address
without a token, whoever built the settings.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from actors import (
    Flag,
    ListenAddress,
    Number,
    WholeNumber,
    check_tls_pair,
    is_loopback,
    rule_error,
    split_listen,
)

__all__ = ["AdminConfig", "GatewayConfig", "is_loopback", "parse_rate_limit", "split_listen"]

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


# A gateway's shards: at most as many as a fleet may have (actors.shard's bound).
MAX_GATEWAY_SHARDS = 4096
_SHARD_URL_RULE = (
    "be an http:// or https:// URL of a shard's admin API, such as http://10.0.0.5:8080"
)
_TEMPLATE_RULE = (
    "be an http:// or https:// URL with {i} where the shard index goes, such as "
    '"http://botvisor-{i}.botvisor-shards:8080"'
)


def _shard_url(url: str) -> str:
    """A shard's admin API base: http(s), a host, no credentials, query or fragment (the
    token goes in a header, never in a URL)."""
    parsed = urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise rule_error("", f"must {_SHARD_URL_RULE}, got {url!r}")
    if "@" in parsed.netloc or parsed.query or parsed.fragment:
        raise rule_error(
            "", f"must {_SHARD_URL_RULE}, without credentials, query or fragment, got a URL with"
        )
    return url.rstrip("/")


class GatewayConfig(BaseModel):
    """``[gateway]``: ``botvisor gateway``, the fleet admin API over the shards. Name the
    shards either as a list (``shard_urls``) or as a template and a count (``shard_url`` with
    ``{i}``, ``shards``); shard ``i`` of the list is the shard started with ``--shard i/N``."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    listen: ListenAddress = "127.0.0.1:8090"
    shard_urls: Annotated[
        tuple[Annotated[str, AfterValidator(_shard_url)], ...],
        Field(max_length=MAX_GATEWAY_SHARDS, json_schema_extra={"x-rule": _SHARD_URL_RULE}),
    ] = ()
    shard_url: str | None = Field(default=None, json_schema_extra={"x-rule": _TEMPLATE_RULE})
    shards: Annotated[WholeNumber, Field(ge=1, le=MAX_GATEWAY_SHARDS)] | None = None
    # Seconds one shard may take to answer a read; a fleet read answers within about this long.
    shard_timeout: Annotated[Number, Field(gt=0, le=300)] = 2.0
    # Seconds for a write (POST, DELETE): adding or resuming a bot waits for getMe.
    write_timeout: Annotated[Number, Field(gt=0, le=600)] = 30.0
    # Seconds between attempts to reopen a shard's live-event stream that failed.
    events_reconnect: Annotated[Number, Field(gt=0, le=3600)] = 5.0
    token_env: str = "BOTVISOR_ADMIN_TOKEN"
    # The admin token, read from ``token_env`` by the loader: the gateway checks it and sends
    # it to the shards (the same token as theirs). Never printed.
    token: str | None = Field(default=None, repr=False)
    ip_rate_limit: str = "600/minute"
    trusted_proxies: Annotated[
        tuple[Annotated[str, AfterValidator(_network)], ...],
        Field(json_schema_extra={"x-rule": _PROXIES_RULE}),
    ] = ()

    @field_validator("ip_rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        try:
            parse_rate_limit(value)
        except ValueError:
            raise rule_error("", f"must {_RATE_RULE}, got {value!r}") from None
        return value

    @model_validator(mode="after")
    def _shards_named_once(self) -> GatewayConfig:
        if self.shard_urls and (self.shard_url is not None or self.shards is not None):
            raise rule_error(
                "shard_urls",
                ": give either shard_urls or shard_url with shards, not both",
            )
        if not self.shard_urls:
            if self.shard_url is None or self.shards is None:
                missing = "shards" if self.shard_url is not None else "shard_url"
                raise rule_error(
                    missing,
                    ": name the shards, with shard_urls = [...] or with shard_url "
                    '(a template such as "http://botvisor-{i}.botvisor-shards:8080") and '
                    "shards = N",
                )
            if "{i}" not in self.shard_url:
                raise rule_error("shard_url", f"must {_TEMPLATE_RULE}, got {self.shard_url!r}")
            try:
                _shard_url(self.shard_url.replace("{i}", "0"))
            except PydanticCustomError:
                raise rule_error(
                    "shard_url", f"must {_TEMPLATE_RULE}, got {self.shard_url!r}"
                ) from None
        return self

    @model_validator(mode="after")
    def _token_guards_the_listener(self) -> GatewayConfig:
        if self.token is not None and len(self.token) < MIN_TOKEN_LENGTH:
            raise rule_error(
                "token_env",
                f": the admin token in ${self.token_env} must be at least "
                f"{MIN_TOKEN_LENGTH} characters long",
            )
        if self.token is None and not is_loopback(self.host):
            raise rule_error(
                "listen",
                f"is {self.listen!r}, but no admin token is set: set the environment "
                f"variable {self.token_env} or listen on 127.0.0.1",
            )
        return self

    @property
    def urls(self) -> list[str]:
        """Shard ``i``'s admin API base URL at index ``i``."""
        if self.shard_urls:
            return list(self.shard_urls)
        assert self.shard_url is not None and self.shards is not None
        return [self.shard_url.replace("{i}", str(i)).rstrip("/") for i in range(self.shards)]

    @property
    def rate_limit(self) -> tuple[int, float] | None:
        return parse_rate_limit(self.ip_rate_limit)

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]
