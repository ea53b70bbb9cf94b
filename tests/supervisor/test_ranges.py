"""Every numeric setting has a finite [min, max], stated once on its field, and the loader
refuses anything outside it (``rps = 1e308`` and ``5e-324`` included) naming the key."""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import annotated_types
import pytest
from pydantic import BaseModel

from admin import AdminConfig
from supervisor import Config, ConfigError, parse_config
from supervisor.cluster import ClusterConfig

_LOWER = (annotated_types.Ge, annotated_types.Gt)
_UPPER = (annotated_types.Le, annotated_types.Lt)


def _models(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, type[BaseModel]]]:
    yield prefix, model
    for name, field in model.model_fields.items():
        for inner in _flatten(field.annotation):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                yield from _models(inner, f"{prefix}.{name}" if prefix else name)


def _flatten(annotation: Any) -> Iterator[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        yield from _flatten(typing.get_args(annotation)[0])
    elif origin in (typing.Union, types.UnionType, tuple):
        for arg in typing.get_args(annotation):
            if arg is not Ellipsis:
                yield from _flatten(arg)
    else:
        yield annotation


def _metadata(annotation: Any) -> Iterator[Any]:
    """Constraints inside the annotation (``Annotated[...] | None`` keeps them in the union)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        for item in extra:
            yield from getattr(item, "metadata", [item])
        yield from _metadata(base)
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _metadata(arg)


def numeric_fields() -> Iterator[tuple[str, Any]]:
    for prefix, model in _models(Config, ""):
        for name, field in model.model_fields.items():
            kinds = set(_flatten(field.annotation))
            if kinds & {int, float} and bool not in kinds:
                yield f"{prefix}.{name}" if prefix else name, field


def test_every_numeric_setting_has_a_finite_range() -> None:
    missing = []
    checked = 0
    for path, field in numeric_fields():
        checked += 1
        metadata = [*field.metadata, *_metadata(field.annotation)]
        low = [m for m in metadata if isinstance(m, _LOWER)]
        high = [m for m in metadata if isinstance(m, _UPPER)]
        bounds = [getattr(m, type(m).__name__.lower()) for m in low + high]
        if not (low and high and all(math.isfinite(b) for b in bounds)):
            missing.append(path)
    assert checked >= 40
    assert not missing, f"numeric settings without a finite [min, max]: {missing}"


@pytest.mark.parametrize(
    ("section", "key", "value", "rule"),
    [
        ("limits", "global_rps", 1e308, "from 0.01 to 100000"),
        ("limits", "global_rps", 5e-324, "from 0.01 to 100000"),
        ("limits", "bot_rps", 1e308, "from 0.01 to 100000"),
        ("limits", "private_chat_per_second", 5e-324, "from 0.01 to 1000"),
        ("limits", "group_chat_per_minute", 1e9, "from 0.1 to 60000"),
        ("limits", "global_burst", 10**30, "be a whole number from 1 to 100000"),
        ("breaker", "open_seconds", 1e12, "from 0.01 to 86400"),
        ("health", "slow_response_ms", 1e-9, "from 1 to 600000"),
        ("retry", "delivery_deadline", 1e300, "from 0.1 to 86400"),
        ("storage", "retention_days", 1e308, "from 0.001 to 36500"),
        ("supervisor", "graceful_timeout", 1e9, "from 0 to 3600"),
        ("supervisor", "max_restarts", 10**18, "be a whole number from 0 to 10000"),
        ("telegram", "request_timeout", 1e9, "from 0.1 to 600"),
    ],
)
def test_a_value_outside_its_range_is_refused_naming_the_key(
    section: str, key: str, value: float, rule: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({section: {key: value}}, {}, source="botvisor.toml")
    assert f"{section}.{key} must " in str(caught.value)
    assert rule in str(caught.value)


@pytest.mark.parametrize("rps", [1e308, 5e-324, 0.0])
def test_a_bot_rps_outside_its_range_is_refused(rps: float) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"bots": [{"user_id": 1, "token": "123456:" + "A" * 35, "rps": rps}]}, {})
    assert f"bots[0].rps must be from 0.01 to 100000, got {rps!r}" in str(caught.value)


def test_the_edges_are_accepted() -> None:
    config = parse_config(
        {"limits": {"global_rps": 100_000, "bot_rps": 0.01, "private_chat_per_second": 1000}},
        {},
    )
    assert (config.limits.global_rps, config.limits.bot_rps) == (100_000, 0.01)


@pytest.mark.parametrize("limit", ["1000001/minute", "9" * 5000 + "/second", "0/hour"])
def test_the_admin_rate_limit_count_has_a_range(limit: str) -> None:
    with pytest.raises(ValueError, match="N from 1 to 1000000"):
        AdminConfig(ip_rate_limit=limit)


def _bounds(field: Any) -> tuple[float, float]:
    metadata = [*field.metadata, *_metadata(field.annotation)]
    low = next(getattr(m, type(m).__name__.lower()) for m in metadata if isinstance(m, _LOWER))
    high = next(getattr(m, type(m).__name__.lower()) for m in metadata if isinstance(m, _UPPER))
    return low, high


def test_the_documented_range_table_matches_the_declarations() -> None:
    # docs/OPERATIONS.md lists every numeric setting with its range and default; the models
    # are the declaration, so the table may not drift from them.
    doc = (Path(__file__).resolve().parents[2] / "docs" / "OPERATIONS.md").read_text("utf-8")
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            keys = cells[0].split("`")[1::2]
            values = cells[3].split(", ")
            for i, key in enumerate(keys):
                rows[key] = [
                    cells[1],
                    cells[2],
                    values[i] if len(values) == len(keys) else cells[3],
                ]
    # [cluster] is absent by default; its table's own defaults are the documented ones.
    defaults = Config(cluster=ClusterConfig())
    checked = []
    for path, field in numeric_fields():
        if path.startswith("bots.") or path not in rows:
            continue
        low, high, default = rows[path]
        value: Any = defaults
        for part in path.split("."):
            value = getattr(value, part)
        # "> 0" is an exclusive bound; "3600 (and ≤ max_delay)" adds a cross-field rule.
        shown = (float(low.lstrip("> ")), float(high.split()[0]))
        assert shown == _bounds(field), path
        first = default.split()[0].rstrip(",")
        assert (None if first == "off" else float(first)) == value, path
        checked.append(path)
    documented = {p for p, _ in numeric_fields() if not p.startswith("bots.")}
    assert documented - set(checked) <= {p for p in documented if p.startswith("retry.")}, sorted(
        documented - set(checked)
    )
