"""Loading ``botvisor.toml``: the file, the secrets it names, and every problem in one pass.

The sections' shapes and rules are the models of :mod:`supervisor.config`; this module adds what
only the file has: secrets come from environment variables it names (the caller passes the
environment in, so only the CLI reads ``os.environ``), ``[[bots]]`` take ``token`` or
``token_env``, and tables that would be mistakes (``admin.token``, ``[retry.chat]``) are
refused with a sentence saying what to do instead. Every problem names its key::

    botvisor.toml: 2 problem(s):
      - limits.global_rps must be > 0, got 0
      - bots[1].user_id must be a whole number from 1 to 9223372036854775807, got 'x'
"""

from __future__ import annotations

import ssl
import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from actors import (
    BotConfig,
    BotToken,
    HandlersConfig,
    Problem,
    WebhookCertificate,
    WebhookConfig,
    describe_problems,
    handler_module_problem,
    handler_syntax_problem,
    import_handler,
)
from admin import AdminConfig
from storage import StorageConfig, storage_path_problem
from supervisor.cluster import ClusterConfig, database_url_problem
from supervisor.config import Config
from supervisor.sealing import MAKE_KEY, registry_key_problem

__all__ = ["ConfigError", "load_config", "parse_config"]

Loc = tuple[str | int, ...]

# The keys a table of the file may hold, where they differ from its model's fields: the admin
# token and the webhook secret never come from the file; a bot's token may come from the
# environment.
_FILE_KEYS: Mapping[type[BaseModel], Collection[str]] = {
    AdminConfig: frozenset(AdminConfig.model_fields) - {"token"},
    BotConfig: frozenset(BotConfig.model_fields) | {"token_env"},
    WebhookConfig: frozenset(WebhookConfig.model_fields) - {"secret"},
    ClusterConfig: frozenset(ClusterConfig.model_fields) - {"database_url", "registry_key"},
}
# Problems are listed in the order of the file's sections (unknown sections first).
_SECTION_ORDER = {name: index for index, name in enumerate(Config.model_fields)}


class ConfigError(Exception):
    """The configuration has problems; ``problems`` lists each, naming its key."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n{lines}")


def load_config(
    path: str | Path, env: Mapping[str, str], *, check_environment: bool = False
) -> Config:
    """Read and validate a ``botvisor.toml``; raise ConfigError listing every problem.

    ``check_environment`` adds what ``run`` needs of this machine before it touches Telegram
    (the storage path usable, every ``[[bots]]`` handler importable): ``run`` and
    ``check-config`` ask for it, so a file check-config passes does not fail at start."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(path), ["the file does not exist"]) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot be read: {exc.strerror}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem = (
            f"is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}): "
            "TOML files are UTF-8; save it as UTF-8"
        )
        raise ConfigError(str(path), [problem]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"is not valid TOML: {exc}"]) from None
    return parse_config(data, env, source=str(path), check_environment=check_environment)


def parse_config(
    data: Mapping[str, Any],
    env: Mapping[str, str],
    *,
    source: str = "config",
    check_environment: bool = False,
) -> Config:
    """Validate a parsed TOML document in one pass; raise ConfigError listing every problem
    (with ``check_environment``, also the machine's: see :func:`load_config`)."""
    problems: list[Problem] = []
    # Keys whose problem was already stated here: pydantic's "is required" would repeat it.
    stated: list[Loc] = []
    document = dict(data)
    _admin_token(document, env, problems)
    _webhook_secret(document, env, problems)
    _cluster_database(document, env, problems)
    _refused_retry_tables(document, problems)
    _bot_tokens(document, env, problems, stated)
    _handler_modules(document, problems)
    if check_environment:
        _listener_tls(document, "admin", problems)
        _listener_tls(document, "webhook", problems)
        _storage_path(document, problems)
        _handler_imports(document, problems)
    try:
        config = Config.model_validate(document)
    except ValidationError as exc:
        problems.extend(
            problem
            for problem in describe_problems(exc, Config, known_keys=_FILE_KEYS)
            if not any(problem.loc[: len(loc)] == loc for loc in stated)
        )
    else:
        if not problems:
            return config
    problems.sort(key=_section_index)
    raise ConfigError(source, [problem.message for problem in problems])


def _section_index(problem: Problem) -> int:
    section = problem.loc[0] if problem.loc else ""
    return _SECTION_ORDER.get(section, -1) if isinstance(section, str) else -1


def _admin_token(document: dict[str, Any], env: Mapping[str, str], problems: list[Problem]) -> None:
    """Put the admin token from ``$<admin.token_env>`` into ``[admin]``; refuse one in the file."""
    table = document.get("admin", {})
    if not isinstance(table, dict):
        return
    table = dict(table)
    if table.pop("token", None) is not None:
        problems.append(
            Problem(
                ("admin", "token"),
                "admin.token: the admin token is never written in the file; "
                "set admin.token_env to the name of an environment variable",
            )
        )
    token_env = table.get("token_env", AdminConfig.model_fields["token_env"].default)
    # An empty variable is no token (the loopback rule then applies).
    table["token"] = (env.get(token_env) if isinstance(token_env, str) else None) or None
    document["admin"] = table


def _webhook_secret(
    document: dict[str, Any], env: Mapping[str, str], problems: list[Problem]
) -> None:
    """Put the master secret from ``$<webhook.secret_env>`` into ``[webhook]``; refuse one in
    the file."""
    table = document.get("webhook", {})
    if not isinstance(table, dict):
        return
    table = dict(table)
    if table.pop("secret", None) is not None:
        problems.append(
            Problem(
                ("webhook", "secret"),
                "webhook.secret: the webhook secret is never written in the file; "
                "set webhook.secret_env to the name of an environment variable",
            )
        )
    secret_env = table.get("secret_env", WebhookConfig.model_fields["secret_env"].default)
    table["secret"] = (env.get(secret_env) if isinstance(secret_env, str) else None) or None
    document["webhook"] = table


def _cluster_database(
    document: dict[str, Any], env: Mapping[str, str], problems: list[Problem]
) -> None:
    """Put the Postgres URL from ``$<cluster.database_env>`` into ``[cluster]``, checked
    without connecting; refuse one in the file. Never quotes the URL (it holds a password)."""
    table = document.get("cluster")
    if not isinstance(table, dict):
        return
    table = dict(table)
    if table.pop("database_url", None) is not None:
        problems.append(
            Problem(
                ("cluster", "database_url"),
                "cluster.database_url: the database URL (with its password) is never written "
                "in the file; set cluster.database_env to the name of an environment variable",
            )
        )
    name = table.get("database_env", ClusterConfig.model_fields["database_env"].default)
    if isinstance(name, str) and name:
        url = env.get(name) or None
        if url is None:
            problems.append(
                Problem(
                    ("cluster", "database_env"),
                    f"cluster.database_env: the environment variable {name} is not set: set it "
                    "to the shards' Postgres URL (postgresql://user:password@host:5432/database)",
                )
            )
        elif (problem := database_url_problem(url)) is not None:
            problems.append(Problem(("cluster", "database_env"), f"${name} {problem}"))
        table["database_url"] = url
    if table.pop("registry_key", None) is not None:
        problems.append(
            Problem(
                ("cluster", "registry_key"),
                "cluster.registry_key: the registry key is never written in the file; set "
                "cluster.registry_key_env to the name of an environment variable",
            )
        )
    key_env = table.get("registry_key_env", ClusterConfig.model_fields["registry_key_env"].default)
    if isinstance(key_env, str) and key_env:
        key = env.get(key_env) or None
        if key is None:
            problems.append(
                Problem(
                    ("cluster", "registry_key_env"),
                    f"cluster.registry_key_env: the environment variable {key_env} is not set: "
                    "set it to the registry key (32 random bytes in base64, the same on every "
                    f"shard), made with: {MAKE_KEY}",
                )
            )
        elif (problem := registry_key_problem(key)) is not None:
            problems.append(Problem(("cluster", "registry_key_env"), f"${key_env} {problem}"))
        table["registry_key"] = key
    document["cluster"] = table


def _refused_retry_tables(document: dict[str, Any], problems: list[Problem]) -> None:
    table = document.get("retry")
    if not isinstance(table, dict):
        return
    table = dict(table)
    for name in ("permanent", "chat"):
        if name in table:
            del table[name]
            problems.append(
                Problem(
                    ("retry", name),
                    f"retry.{name}: {name} errors are never retried; remove this table",
                )
            )
    document["retry"] = table


def _handler_modules(document: dict[str, Any], problems: list[Problem]) -> None:
    """State each ``[[bots]]`` handler whose module ``[handlers] allowed_modules`` does not
    allow, in the same pass as every other problem (a path that is no handler path at all is
    the model's to state)."""
    bots = document.get("bots")
    try:
        allowed = HandlersConfig.model_validate(document.get("handlers", {})).allowed_modules
    except ValidationError:
        return  # the [handlers] table's own problem is stated by the model
    if not isinstance(bots, list):
        return
    for index, item in enumerate(bots):
        handler = item.get("handler") if isinstance(item, dict) else None
        if not isinstance(handler, str) or handler_syntax_problem(handler) is not None:
            continue
        problem = handler_module_problem(handler, allowed)
        if problem is not None:
            problems.append(Problem(("bots", index, "handler"), f"bots[{index}].handler{problem}"))


def _listener_tls(document: dict[str, Any], section: str, problems: list[Problem]) -> None:
    """A listener's ([admin] or [webhook]) certificate and key load together, as Hypercorn
    will load them; the webhook's certificate is also what setWebhook uploads, so it must be
    a PEM certificate."""
    table = document.get(section, {})
    cert = table.get("tls_cert") if isinstance(table, dict) else None
    key = table.get("tls_key") if isinstance(table, dict) else None
    if not (isinstance(cert, str) and isinstance(key, str)):
        return  # none, or the model states what is wrong
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
        if section == "webhook":
            WebhookCertificate.from_pem(Path(cert).read_bytes())
    except (OSError, ValueError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problems.append(
            Problem(
                (section, "tls_cert"),
                f"{section}.tls_cert / {section}.tls_key: cannot load {cert!r} with {key!r}: "
                f"{detail}",
            )
        )


def _storage_path(document: dict[str, Any], problems: list[Problem]) -> None:
    table = document.get("storage", {})
    path = (
        table.get("path", StorageConfig.model_fields["path"].default)
        if isinstance(table, dict)
        else None
    )
    if isinstance(path, str) and path:
        problem = storage_path_problem(path)
        if problem is not None:
            problems.append(Problem(("storage", "path"), f"storage.path: {problem}"))


def _handler_imports(document: dict[str, Any], problems: list[Problem]) -> None:
    """Import every allowed ``[[bots]]`` handler as ``run`` would, stating each that fails."""
    bots = document.get("bots")
    try:
        allowed = HandlersConfig.model_validate(document.get("handlers", {})).allowed_modules
    except ValidationError:
        return
    if not isinstance(bots, list):
        return
    for index, item in enumerate(bots):
        handler = item.get("handler") if isinstance(item, dict) else None
        if not isinstance(handler, str) or handler_module_problem(handler, allowed) is not None:
            continue  # the built-ins, and paths stated already
        if handler in ("echo", "autoreply"):
            continue
        imported = import_handler(handler)
        if isinstance(imported, str):
            problems.append(
                Problem(("bots", index, "handler"), f"bots[{index}].handler: {imported}")
            )


def _bot_tokens(
    document: dict[str, Any], env: Mapping[str, str], problems: list[Problem], stated: list[Loc]
) -> None:
    """Replace each bot's ``token`` / ``token_env`` by a BotToken, or state why there is none."""
    bots = document.get("bots")
    if not isinstance(bots, list):
        return
    prepared: list[Any] = []
    for index, item in enumerate(bots):
        if isinstance(item, dict):
            item = dict(item)
            loc: Loc = ("bots", index, "token")
            token = _bot_token(item, index, env)
            if isinstance(token, BotToken):
                item["token"] = token
            else:
                problems.append(Problem(loc, token))
                stated.append(loc)
        prepared.append(item)
    document["bots"] = prepared


def _bot_token(item: dict[str, Any], index: int, env: Mapping[str, str]) -> BotToken | str:
    """The bot's token, or the sentence saying what is wrong (never showing the token)."""
    key = f"bots[{index}]"
    raw = item.pop("token", None)
    token_env = item.pop("token_env", None)
    if raw is not None and token_env is not None:
        return f"{key}: give either token or token_env, not both"
    if token_env is not None:
        if not isinstance(token_env, str) or not token_env:
            return f"{key}.token_env must be the name of an environment variable"
        raw = env.get(token_env)
        if raw is None:
            return f"{key}.token_env: the environment variable {token_env} is not set"
        where = f"${token_env}"
    elif raw is None:
        return f"{key}: a bot needs token_env (recommended) or token"
    else:
        where = f"{key}.token"
    if not isinstance(raw, str):
        return f"{where} must be a string"
    try:
        return BotToken(raw.strip())
    except ValueError as exc:
        return f"{where}: {exc}"
