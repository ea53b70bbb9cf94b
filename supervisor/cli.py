"""The ``botvisor`` command line.

Exit codes: 0 done (or stopped by SIGINT/SIGTERM), 1 a bad configuration or database (or,
with ``[cluster]``, a shard another process holds), 2 bad command-line usage, 3 the daemon
failed while running (or lost its shard's lock), 130 a second signal.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from actors import (
    RedactingFilter,
    RegistryUnavailable,
    Shard,
    ShardError,
    find_exception,
    parse_shard,
    redact,
    shard_from_environment,
)
from storage import StorageError, migrate_file
from supervisor.cluster import redact_url
from supervisor.config import Config
from supervisor.daemon import Daemon, setup_error
from supervisor.fdlimit import OpenFilesLimit, raise_open_files_limit
from supervisor.fencing import FenceLost, FenceUnavailable, ShardHeld
from supervisor.loading import ConfigError, load_config
from supervisor.registry import Registry, RegistryError
from supervisor.sealing import TokenSealer, registry_key_problem
from supervisor.shard_registry import bot_digest

__all__ = ["main"]

log = logging.getLogger("botvisor")

EXIT_OK, EXIT_CONFIG, EXIT_USAGE, EXIT_FAILED, EXIT_SECOND_SIGNAL = 0, 1, 2, 3, 130
# sysexits' EX_TEMPFAIL: a start refused for a condition that passes (the shard's lock still
# held by an old session, Postgres not answering), so a supervisor should start it again;
# 1 is for what an operator must fix, which no restart cures.
EXIT_TRY_AGAIN = 75


def setup_logging(level: str) -> None:
    """Log to stderr; every record passes the token-redacting filter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at INFO (with the token in the URL, redacted above): too
    # much for a fleet.
    for noisy in ("httpx", "httpcore", "hpack"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="botvisor",
        description="Run many tenants' Telegram bots in one supervised process.",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("--config", required=True, type=Path, help="path to botvisor.toml")
    run.add_argument(
        "--prune-config-bots",
        action="store_true",
        help="when the file declares no [[bots]], unregister the stored bots an earlier file "
        "declared (without it such a start is refused)",
    )
    run.add_argument(
        "--shard",
        metavar="INDEX/COUNT",
        help="run as shard INDEX of COUNT (0-based, e.g. 0/3): only the bots the jump "
        "consistent hash of their user_id gives this shard; without it, "
        "$BOTVISOR_SHARD_INDEX and $BOTVISOR_SHARD_COUNT, else every bot",
    )

    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("path", type=Path)
    check.add_argument(
        "--shard",
        metavar="INDEX/COUNT",
        help="also list the bots shard INDEX of COUNT would run (see botvisor run --shard)",
    )

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.add_argument("--config", required=True, type=Path)

    registry = commands.add_parser("registry", help="the shards' registry in Postgres")
    registry_commands = registry.add_subparsers(dest="registry_command", required=True)
    rotate = registry_commands.add_parser(
        "rotate-key",
        help="seal every registered token with the key of $<cluster.registry_key_env>, "
        "opening it with the old key (every shard stopped)",
    )
    rotate.add_argument("--config", required=True, type=Path, help="a shard's botvisor.toml")
    rotate.add_argument(
        "--old-key-env",
        required=True,
        metavar="VARIABLE",
        help="the environment variable holding the key the registry was sealed with",
    )

    from supervisor.demo import add_demo_arguments, add_sim_server_arguments
    from supervisor.remote import (
        add_bots_arguments,
        add_dead_letters_arguments,
        add_usage_arguments,
        add_watch_arguments,
    )

    add_bots_arguments(
        commands.add_parser("bots", help="add, list, remove, suspend or resume bots of a daemon")
    )
    add_watch_arguments(
        commands.add_parser("watch", help="follow a daemon's live events (health, breakers)")
    )
    add_usage_arguments(
        commands.add_parser("usage", help="a daemon's usage per day (updates, sends, users)")
    )
    add_dead_letters_arguments(
        commands.add_parser(
            "dead-letters", help="list, redrive or discard a bot's dead letters on a daemon"
        )
    )

    add_demo_arguments(
        commands.add_parser("demo", help="run the whole system against a simulated Bot API")
    )
    add_sim_server_arguments(
        commands.add_parser("sim-server", help="serve the simulated Bot API over HTTP")
    )
    gateway = commands.add_parser(
        "gateway", help="serve one admin API (and the dashboard) over every shard of a fleet"
    )
    gateway.add_argument(
        "--config", required=True, type=Path, help="a TOML file with a [gateway] table"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        if args.command == "check-config":
            return check_config(args.path, shard=args.shard)
        if args.command == "migrate":
            return migrate_command(args.config)
        if args.command == "registry":
            return rotate_key_command(args.config, args.old_key_env)
        if args.command == "run":
            return run_command(
                args.config, prune_config_bots=args.prune_config_bots, shard=args.shard
            )
        if args.command in ("bots", "watch", "usage", "dead-letters"):
            from supervisor.remote import (
                bots_command,
                dead_letters_command,
                usage_command,
                watch_command,
            )

            if args.command == "usage":
                return usage_command(args)
            if args.command == "dead-letters":
                return dead_letters_command(args)
            return bots_command(args) if args.command == "bots" else watch_command(args)
        if args.command == "gateway":
            from supervisor.gateway import gateway_command

            return gateway_command(args.config)
        from supervisor.demo import demo_command, sim_server_command

        if args.command == "demo":
            return demo_command(args)
        if args.command == "sim-server":
            return sim_server_command(args)
    except KeyboardInterrupt:
        return EXIT_SECOND_SIGNAL
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


def _load(path: Path, *, check_environment: bool = False) -> Config | None:
    try:
        return load_config(path, os.environ, check_environment=check_environment)
    except ConfigError as exc:
        print(f"botvisor: {exc}", file=sys.stderr)
        return None


def check_config(path: Path, *, shard: str | None = None) -> int:
    """Every check ``run`` makes before it touches Telegram; exit 0 ok, 1 bad config, 2 a
    bad ``--shard``."""
    try:
        this_shard = _shard(shard)
    except ShardError as exc:
        print(f"botvisor check-config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    config = _load(path, check_environment=True)
    if config is None or not _cluster_has_shard(config, this_shard, path):
        return EXIT_CONFIG
    print(f"ok: {path}")
    print(f"  bots: {len(config.bots)} ({_user_ids([b.user_id for b in config.bots])})")
    if this_shard is not None:
        owned = [b.user_id for b in config.bots if this_shard.owns(b.user_id)]
        print(
            f"  shard {this_shard}: runs {len(owned)} of them ({_user_ids(owned)}); "
            f"webhook URLs {{public_url}}/s/{this_shard.index}/{{user_id}}"
        )
    if config.cluster is not None and config.cluster.database_url is not None:
        print(
            f"  cluster: Postgres at {redact_url(config.cluster.database_url)} "
            f"(${config.cluster.database_env}; not connected to by check-config), "
            f"lock checked every {config.cluster.lock_check_interval:g} s"
        )
    if config.cluster is not None and config.cluster.registry_key is not None:
        sealer = TokenSealer(config.cluster.registry_key, variable=config.cluster.registry_key_env)
        print(
            f"  registry: tokens sealed with key {sealer.key_id} "
            f"(${config.cluster.registry_key_env}; AES-256-GCM)"
        )
    print(f"  api_base: {config.telegram.api_base}, poll_timeout: {config.telegram.poll_timeout} s")
    print(
        f"  storage: {config.storage.path} (snapshot every {config.storage.persist_interval:g} s, "
        f"kept {config.storage.retention_days:g} days)"
    )
    print(
        f"  admin: {_admin_url(config) if config.admin.enabled else 'disabled'}, "
        f"token {'set' if config.admin.token else 'NOT set (loopback only)'}"
    )
    print(
        f"  limits: global {config.limits.global_rps:g} rps, per bot {config.limits.bot_rps:g} rps"
    )
    for warning in config.telegram.warnings():
        print(f"  warning: {warning}")
    return EXIT_OK


def _cluster_has_shard(config: Config, shard: Shard | None, path: Path) -> bool:
    """``[cluster]`` fences a shard by its index: without a shard it is a config error."""
    if config.cluster is None or shard is not None:
        return True
    print(
        f"botvisor: {path}: [cluster] needs a shard: give --shard INDEX/COUNT (or set "
        f"$BOTVISOR_SHARD_INDEX and $BOTVISOR_SHARD_COUNT), or remove [cluster] to run "
        f"one process",
        file=sys.stderr,
    )
    return False


def _user_ids(user_ids: list[int], most: int = 10) -> str:
    shown = ", ".join(str(uid) for uid in user_ids[:most])
    return shown + (", …" if len(user_ids) > most else "")


def _admin_url(config: Config) -> str:
    return f"{'https' if config.admin.tls else 'http'}://{config.admin.listen}"


def migrate_command(path: Path) -> int:
    config = _load(path)
    if config is None:
        return EXIT_CONFIG
    try:
        before, after = migrate_file(config.storage.path)
    except StorageError as exc:
        print(f"botvisor: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if before == after:
        print(f"{config.storage.path}: schema {after} is current")
    else:
        print(f"{config.storage.path}: migrated schema {before} -> {after}")
    return EXIT_OK


def rotate_key_command(path: Path, old_key_env: str) -> int:
    """``botvisor registry rotate-key``: reseal the registry's tokens with the new key."""
    config = _load(path)
    if config is None:
        return EXIT_CONFIG
    cluster = config.cluster
    if cluster is None or cluster.registry_key is None:
        print(f"botvisor: {path}: rotate-key needs a [cluster] table", file=sys.stderr)
        return EXIT_CONFIG
    old_text = os.environ.get(old_key_env) or ""
    problem = registry_key_problem(old_text) if old_text else "is not set"
    if problem is not None:
        print(f"botvisor registry rotate-key: ${old_key_env} {problem}", file=sys.stderr)
        return EXIT_CONFIG
    old = TokenSealer(old_text, variable=old_key_env)
    new = TokenSealer(cluster.registry_key, variable=cluster.registry_key_env)

    async def rotate() -> tuple[int, int]:
        from supervisor.clock import system_wall_clock

        # One transaction over every row: a shard's per-call bound does not fit it.
        registry = Registry(
            cluster.model_copy(update={"registry_timeout": 600.0}),
            wall_clock=system_wall_clock(),
        )
        try:
            return await registry.rotate_key(old, new, bot_digest)
        finally:
            await registry.close()

    try:
        rotated, already = trio.run(rotate)
    except (RegistryError, RegistryUnavailable) as exc:
        print(f"botvisor registry rotate-key: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(
        f"registry: {rotated} token(s) sealed again from key {old.key_id} to key "
        f"{new.key_id} (${cluster.registry_key_env}); {already} were on it already. Start "
        "the shards with the new key: each rewrites its cache from the registry"
    )
    return EXIT_OK


def _shard(text: str | None) -> Shard | None:
    """The shard of ``--shard``, else of the environment, else None; ShardError."""
    return parse_shard(text) if text is not None else shard_from_environment(os.environ)


def run_command(path: Path, *, prune_config_bots: bool = False, shard: str | None = None) -> int:
    try:
        this_shard = _shard(shard)
    except ShardError as exc:
        print(f"botvisor run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    config = _load(path, check_environment=True)
    if config is None or not _cluster_has_shard(config, this_shard, path):
        return EXIT_CONFIG
    # Before any socket is opened; the daemon checks the fleet fits once it knows the fleet.
    open_files = raise_open_files_limit()
    if open_files.soft != open_files.before:
        log.info("open-files limit raised from %d to %d", open_files.before, open_files.soft)
    try:
        trio.run(run_daemon, config, open_files, prune_config_bots, this_shard)
    except Exception as exc:
        setup = setup_error(exc, database=config.storage.path)
        if setup is not None:
            log.error("%s", setup)
            return (
                EXIT_TRY_AGAIN if isinstance(setup, ShardHeld | FenceUnavailable) else EXIT_CONFIG
            )
        lost = find_exception(exc, FenceLost)
        if lost is not None:
            log.error("botvisor stopped: %s", lost)
            return EXIT_FAILED
        log.error("botvisor failed: %s", redact(f"{type(exc).__name__}: {exc}"), exc_info=exc)
        return EXIT_FAILED
    return EXIT_OK


async def run_daemon(
    config: Config,
    open_files: OpenFilesLimit | None = None,
    prune_config_bots: bool = False,
    shard: Shard | None = None,
) -> None:
    """Run the daemon until SIGINT/SIGTERM; a second signal exits at once."""
    from supervisor.clock import system_wall_clock

    daemon = Daemon(
        config,
        wall_clock=system_wall_clock(),
        rng=random.Random(),
        open_files=open_files,
        prune_config_bots=prune_config_bots,
        freeze_after_load=True,
        shard=shard,
    )
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                count = 0
                async for signum in signals:
                    count += 1
                    name = signal.Signals(signum).name
                    if count == 1:
                        log.info(
                            "%s received: shutting down gracefully (send it again to exit at once)",
                            name,
                        )
                        daemon.request_shutdown()
                    else:
                        log.warning("%s received again: exiting now", name)
                        logging.shutdown()
                        os._exit(EXIT_SECOND_SIGNAL)

            nursery.start_soon(watch)
            await daemon.run()
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    sys.exit(main())
