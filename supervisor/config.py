"""``botvisor.toml``: loading and validating the daemon's configuration.

Every problem in a file is collected and reported at once, each naming its key
(``limits.global_rps must be > 0, got 0``). Secrets come from environment variables named in
the file; the caller passes the environment in, so only the CLI reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from actors.config import (
    AutoreplyRule,
    BotConfig,
    BreakerConfig,
    HealthConfig,
    LimitsConfig,
    RetryConfig,
    RetryPolicyConfig,
    TelegramConfig,
    check,
)
from actors.secrets import BotToken

__all__ = [
    "AdminConfig",
    "Config",
    "ConfigError",
    "StorageConfig",
    "SupervisorConfig",
    "load_config",
    "parse_config",
    "parse_rate_limit",
]

T = TypeVar("T")


class ConfigError(Exception):
    """The configuration has problems; ``problems`` lists each, naming its key."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n{lines}")


@dataclass(frozen=True)
class StorageConfig:
    """``[storage]``: the SQLite file and what is kept in it."""

    path: str = "botvisor.db"
    # One health snapshot of every bot this often (seconds, 60..3600).
    persist_interval: float = 300.0
    retention_days: float = 30.0
    # How often old rows are looked for.
    retention_check_interval: float = 3600.0

    def __post_init__(self) -> None:
        check(bool(self.path), "storage.path", "be a file path", self.path)
        check(
            60 <= self.persist_interval <= 3600,
            "storage.persist_interval",
            "be from 60 to 3600 seconds",
            self.persist_interval,
        )
        check(self.retention_days > 0, "storage.retention_days", "be > 0", self.retention_days)
        check(
            self.retention_check_interval > 0,
            "storage.retention_check_interval",
            "be > 0",
            self.retention_check_interval,
        )


@dataclass(frozen=True)
class AdminConfig:
    """``[admin]``: the admin HTTP API."""

    listen: str = "127.0.0.1:8080"
    token_env: str = "BOTVISOR_ADMIN_TOKEN"
    # The admin bearer token, read from ``token_env`` by the loader. Never printed.
    token: str | None = field(default=None, repr=False)
    enabled: bool = True
    # Requests per client address: "N/second", "N/minute" or "N/hour" (a bucket of N
    # requests refilled over the period), or "off".
    ip_rate_limit: str = "600/minute"
    # At most this many client addresses are tracked; idle ones are forgotten first.
    ip_rate_limit_clients: int = 10_000
    # Addresses or networks of reverse proxies whose X-Forwarded-For header is believed.
    trusted_proxies: tuple[str, ...] = ()
    # Serve /metrics without the admin token (a Prometheus on a private network).
    metrics_public: bool = False
    # Per-bot series on /metrics (9 per bot); false keeps only fleet totals (large fleets).
    metrics_per_bot: bool = True

    def __post_init__(self) -> None:
        host, _port = split_listen(self.listen)
        if self.enabled and self.token is None and not is_loopback(host):
            raise ValueError(
                f"admin.listen is {self.listen!r}, but no admin token is set: set the "
                f"environment variable {self.token_env} or listen on 127.0.0.1"
            )
        parse_rate_limit(self.ip_rate_limit)
        check(
            isinstance(self.ip_rate_limit_clients, int) and self.ip_rate_limit_clients >= 1,
            "admin.ip_rate_limit_clients",
            "be a whole number >= 1",
            self.ip_rate_limit_clients,
        )
        proxies = self.trusted_proxies
        check(
            isinstance(proxies, (list, tuple)) and all(isinstance(p, str) for p in proxies),
            "admin.trusted_proxies",
            'be a list of addresses or networks such as "10.0.0.0/8"',
            proxies,
        )
        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"admin.trusted_proxies must list IP addresses or networks, got {proxy!r}"
                ) from None
        # TOML gives a list; keep the frozen config hashable.
        object.__setattr__(self, "trusted_proxies", tuple(proxies))

    @property
    def rate_limit(self) -> tuple[int, float] | None:
        """``(requests, per_seconds)`` of ``ip_rate_limit``, or None when it is off."""
        return parse_rate_limit(self.ip_rate_limit)

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


_PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}


def parse_rate_limit(text: str) -> tuple[int, float] | None:
    """``"120/minute"`` -> ``(120, 60.0)``; ``"off"`` -> None."""
    if text == "off":
        return None
    count, sep, period = text.partition("/") if isinstance(text, str) else ("", "", "")
    check(
        bool(sep) and count.isdigit() and int(count) >= 1 and period in _PERIODS,
        "admin.ip_rate_limit",
        "be 'N/second', 'N/minute' or 'N/hour' with N >= 1, or 'off'",
        text,
    )
    return int(count), _PERIODS[period]


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port_text = listen.rpartition(":")
    check(
        bool(sep) and bool(host) and port_text.isdigit() and 0 <= int(port_text) <= 65535,
        "admin.listen",
        "be 'host:port' with a port from 0 to 65535",
        listen,
    )
    return host.strip("[]"), int(port_text)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name, an address, or ``[ipv6]``) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class SupervisorConfig:
    """``[supervisor]``: OTP-style restart rules for bots, and shutdown."""

    # More than max_restarts crashes within restart_period seconds suspend the bot.
    max_restarts: int = 5
    restart_period: float = 60.0
    restart_backoff_min: float = 1.0
    restart_backoff_max: float = 60.0
    # Each backoff is scaled by a random factor in [1 - jitter, 1 + jitter].
    restart_jitter: float = 0.2
    # The backoff resets after a child ran restart_backoff_min × this without crashing.
    backoff_reset_factor: float = 10.0
    # Seconds in-flight handlers get at shutdown.
    graceful_timeout: float = 10.0
    # How often each bot reports its health to the metrics actor.
    report_interval: float = 5.0

    def __post_init__(self) -> None:
        check(
            isinstance(self.max_restarts, int) and self.max_restarts >= 0,
            "supervisor.max_restarts",
            "be a whole number >= 0",
            self.max_restarts,
        )
        check(self.restart_period > 0, "supervisor.restart_period", "be > 0", self.restart_period)
        check(
            self.restart_backoff_min > 0,
            "supervisor.restart_backoff_min",
            "be > 0",
            self.restart_backoff_min,
        )
        check(
            self.restart_backoff_max >= self.restart_backoff_min,
            "supervisor.restart_backoff_max",
            f"be >= restart_backoff_min ({self.restart_backoff_min})",
            self.restart_backoff_max,
        )
        check(
            0 <= self.restart_jitter <= 1,
            "supervisor.restart_jitter",
            "be from 0 to 1",
            self.restart_jitter,
        )
        check(
            self.backoff_reset_factor >= 1,
            "supervisor.backoff_reset_factor",
            "be >= 1",
            self.backoff_reset_factor,
        )
        check(
            self.graceful_timeout >= 0,
            "supervisor.graceful_timeout",
            "be >= 0",
            self.graceful_timeout,
        )
        check(
            self.report_interval > 0, "supervisor.report_interval", "be > 0", self.report_interval
        )


@dataclass(frozen=True)
class Config:
    """The whole daemon configuration."""

    telegram: TelegramConfig = field(default_factory=TelegramConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    bots: tuple[BotConfig, ...] = ()

    def __post_init__(self) -> None:
        seen: set[int] = set()
        for bot in self.bots:
            check(
                bot.user_id not in seen,
                f"{bot.key}.user_id",
                "be unique among [[bots]]",
                bot.user_id,
            )
            seen.add(bot.user_id)


# --- loading ------------------------------------------------------------------------------


def load_config(path: str | Path, env: Mapping[str, str]) -> Config:
    """Read and validate a ``botvisor.toml``; raise ConfigError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), ["the file does not exist"]) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot be read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"is not valid TOML: {exc}"]) from None
    return parse_config(data, env, source=str(path))


def parse_config(
    data: Mapping[str, Any], env: Mapping[str, str], *, source: str = "config"
) -> Config:
    """Validate a parsed TOML document (also used by tests)."""
    problems: list[str] = []
    sections: dict[str, Any] = {}
    known = {f.name for f in dataclasses.fields(Config)}
    for key in data:
        if key not in known:
            problems.append(f"{key}: unknown section (known: {', '.join(sorted(known))})")

    simple: dict[str, type[Any]] = {
        "telegram": TelegramConfig,
        "storage": StorageConfig,
        "limits": LimitsConfig,
        "breaker": BreakerConfig,
        "health": HealthConfig,
        "supervisor": SupervisorConfig,
    }
    for name, cls in simple.items():
        built = _build(cls, name, data.get(name, {}), problems)
        if built is not None:
            sections[name] = built

    admin = _admin(data.get("admin", {}), env, problems)
    if admin is not None:
        sections["admin"] = admin
    retry = _retry(data.get("retry", {}), problems)
    if retry is not None:
        sections["retry"] = retry
    sections["bots"] = _bots(data.get("bots", []), env, problems)

    if not problems:
        try:
            return Config(**sections)
        except ValueError as exc:
            problems.append(str(exc))
    raise ConfigError(source, problems)


def _build(
    cls: type[T],
    key: str,
    table: Any,
    problems: list[str],
    extra: Mapping[str, Any] | None = None,
    skip: frozenset[str] = frozenset(),
) -> T | None:
    """Build a config dataclass from a TOML table, recording problems instead of raising."""
    if not isinstance(table, dict):
        problems.append(f"{key} must be a table, got {type(table).__name__}")
        return None
    hints = typing.get_type_hints(cls)
    names = {
        f.name
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.init and f.name not in skip and f.name != "key"
    }
    kwargs: dict[str, Any] = dict(extra or {})
    ok = True
    for name, value in table.items():
        if name not in names:
            problems.append(f"{key}.{name}: unknown key (known: {', '.join(sorted(names))})")
            ok = False
            continue
        converted = _convert(value, hints[name], f"{key}.{name}", problems)
        if converted is _INVALID:
            ok = False
        else:
            kwargs[name] = converted
    if not ok:
        return None
    try:
        return cls(**kwargs)
    except ValueError as exc:
        problems.append(str(exc))
        return None


_INVALID = object()


def _convert(value: Any, hint: Any, key: str, problems: list[str]) -> Any:
    """Check a TOML value against a dataclass field's type; ints are accepted for floats."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _convert(value, options[0], key, problems)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        allowed = [m.value for m in hint]
        if isinstance(value, hint):
            return value
        if value in allowed:
            return hint(value)
        problems.append(f"{key} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return _INVALID
    expected: tuple[type, ...]
    if hint is float:
        expected = (int, float)
    elif hint is int:
        expected = (int,)
    elif hint is bool:
        expected = (bool,)
    elif hint is str:
        expected = (str,)
    else:
        return value
    if (isinstance(value, bool) and hint is not bool) or not isinstance(value, expected):
        problems.append(f"{key} must be {_type_name(hint)}, got {value!r}")
        return _INVALID
    return value


def _type_name(hint: Any) -> str:
    return {float: "a number", int: "a whole number", bool: "true or false", str: "a string"}.get(
        hint, str(hint)
    )


def _admin(table: Any, env: Mapping[str, str], problems: list[str]) -> AdminConfig | None:
    if not isinstance(table, dict):
        problems.append("admin must be a table")
        return None
    if "token" in table:
        problems.append(
            "admin.token: the admin token is never written in the file; "
            "set admin.token_env to the name of an environment variable"
        )
        return None
    token_env = table.get("token_env", AdminConfig.token_env)
    token = env.get(token_env) if isinstance(token_env, str) else None
    if token is not None and len(token) < 16:
        problems.append(f"the admin token in ${token_env} must be at least 16 characters long")
        return None
    return _build(
        AdminConfig,
        "admin",
        table,
        problems,
        extra={"token": token or None},
        skip=frozenset({"token"}),
    )


def _retry(table: Any, problems: list[str]) -> RetryConfig | None:
    if not isinstance(table, dict):
        problems.append("retry must be a table")
        return None
    defaults = RetryConfig()
    kwargs: dict[str, Any] = {}
    policies = {"rate_limit", "transient_network", "unknown"}
    rest: dict[str, Any] = {}
    for name, value in table.items():
        if name in policies:
            base: RetryPolicyConfig = getattr(defaults, name)
            merged = {
                f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.name != "key"
            }
            if not isinstance(value, dict):
                problems.append(f"retry.{name} must be a table")
                continue
            merged.update(value)
            built = _build(
                RetryPolicyConfig, f"retry.{name}", merged, problems, extra={"key": f"retry.{name}"}
            )
            if built is not None:
                kwargs[name] = built
        elif name in ("permanent", "chat"):
            problems.append(f"retry.{name}: {name} errors are never retried; remove this table")
        else:
            rest[name] = value
    return _build(RetryConfig, "retry", rest, problems, extra=kwargs, skip=frozenset(policies))


def _bots(items: Any, env: Mapping[str, str], problems: list[str]) -> tuple[BotConfig, ...]:
    if not isinstance(items, list):
        problems.append("bots must be an array of tables: write [[bots]] for each bot")
        return ()
    bots: list[BotConfig] = []
    for index, item in enumerate(items):
        key = f"bots[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{key} must be a table")
            continue
        bot = _bot(item, key, env, problems)
        if bot is not None:
            bots.append(bot)
    return tuple(bots)


def _bot(
    item: dict[str, Any], key: str, env: Mapping[str, str], problems: list[str]
) -> BotConfig | None:
    item = dict(item)
    before = len(problems)
    token = _bot_token(item, key, env, problems)
    rules: list[AutoreplyRule] = []
    for i, rule in enumerate(item.pop("autoreply", [])):
        if (
            not isinstance(rule, dict)
            or set(rule) != {"contains", "reply"}
            or not all(isinstance(v, str) and v for v in rule.values())
        ):
            problems.append(
                f"{key}.autoreply[{i}] must be a table with non-empty strings "
                f"'contains' and 'reply'"
            )
            continue
        rules.append(AutoreplyRule(contains=rule["contains"], reply=rule["reply"]))
    if len(problems) > before or token is None:
        return None
    return _build(
        BotConfig,
        key,
        item,
        problems,
        extra={"token": token, "autoreply": tuple(rules), "key": key},
        skip=frozenset({"token", "autoreply"}),
    )


def _bot_token(
    item: dict[str, Any], key: str, env: Mapping[str, str], problems: list[str]
) -> BotToken | None:
    raw = item.pop("token", None)
    token_env = item.pop("token_env", None)
    if raw is not None and token_env is not None:
        problems.append(f"{key}: give either token or token_env, not both")
        return None
    if token_env is not None:
        if not isinstance(token_env, str) or not token_env:
            problems.append(f"{key}.token_env must be the name of an environment variable")
            return None
        raw = env.get(token_env)
        if raw is None:
            problems.append(f"{key}.token_env: the environment variable {token_env} is not set")
            return None
        where = f"${token_env}"
    elif raw is None:
        problems.append(f"{key}: a bot needs token_env (recommended) or token")
        return None
    else:
        where = f"{key}.token"
    if not isinstance(raw, str):
        problems.append(f"{where} must be a string")
        return None
    try:
        return BotToken(raw.strip())
    except ValueError as exc:
        problems.append(f"{where}: {exc}")
        return None
