"""How configuration models state their rules, and how pydantic's errors become sentences.

Every configuration section is a frozen pydantic model. A field states its rule through its type
and bounds (:data:`Positive`, :data:`WholeNumber`, ``Field(ge=1)``); a rule that these cannot say
well is written out once as ``json_schema_extra={"x-rule": "..."}``; a rule between fields is a
validator raising :func:`rule_error`. :func:`describe_problems` then turns a
``ValidationError`` into one :class:`Problem` per broken rule, naming the key path the way
``botvisor.toml`` spells it::

    limits.global_rps must be > 0, got 0
    bots[1].user_id must be a whole number from 1 to 9223372036854775807, got 'x'
    storage.nope: unknown key (known: path, persist_interval, ...)
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import annotated_types
from pydantic import BaseModel, Field, Strict, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError

from actors.secrets import redact
from actors.text import surrogate_locations

__all__ = [
    "CONFIG_RULE",
    "Flag",
    "Fraction",
    "Loc",
    "NonNegative",
    "Number",
    "Positive",
    "Problem",
    "WholeNumber",
    "describe_problems",
    "format_loc",
    "rule_error",
    "text_problems",
]

# A number from the file: an int is accepted for a float, a bool or a string is not, and
# neither is inf or nan (TOML allows both; no setting means them).
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Positive = Annotated[Number, Field(gt=0)]
NonNegative = Annotated[Number, Field(ge=0)]
Fraction = Annotated[Number, Field(gt=0, le=1)]
# A whole number: TOML's 5.0 and true are not whole numbers.
WholeNumber = Annotated[int, Strict()]
# TOML's true/false only; pydantic's lax mode would also take 1, "yes" or "on".
Flag = Annotated[bool, Strict()]

# The pydantic error type of a rule stated by a validator (see rule_error).
CONFIG_RULE = "config_rule"

Loc = tuple[str | int, ...]


def rule_error(field: str, text: str) -> PydanticCustomError:
    """An error for a validator to raise: ``<field> <text>``, ``field`` relative to the model.

    ``field`` is ``""`` for the value being validated itself, ``"max_delay"`` for a field of
    the model (from a model validator), or ``"[1].user_id"`` for a part of a list. ``text`` is
    ``"must <rule>, got <value>"`` or, when it starts with ``:``, a sentence of its own.
    """
    template = "{text}" if not field else ("{field}{text}" if text[:1] == ":" else "{field} {text}")
    return PydanticCustomError(CONFIG_RULE, template, {"field": field, "text": text})


@dataclass(frozen=True)
class Problem:
    """One broken rule: where it is (``("bots", 0, "user_id")``) and the sentence to show."""

    loc: Loc
    message: str

    def __str__(self) -> str:
        return self.message


def format_loc(loc: Loc) -> str:
    """``("bots", 0, "user_id")`` -> ``bots[0].user_id``, as the TOML file names it."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def describe_problems(
    error: ValidationError,
    model: type[BaseModel],
    *,
    prefix: Loc = (),
    known_keys: Mapping[type[BaseModel], Collection[str]] | None = None,
    unknown: tuple[str, str] = ("unknown section", "unknown key"),
) -> list[Problem]:
    """One :class:`Problem` per error in ``error``, raised validating ``model``.

    ``prefix`` is where ``model`` sits (``("body",)``); ``known_keys`` replaces the keys an
    unknown-key message lists for a model whose file keys are not its fields (a bot's
    ``token_env``). ``unknown`` names an unknown top-level key and a nested one (a config
    file's sections and keys; a request's fields).
    """
    problems: list[Problem] = []
    seen: set[str] = set()
    for details in error.errors(include_url=False):
        problem = _problem(details, model, prefix, known_keys or {}, unknown)
        # A value a validator quotes may hold a token pasted in the wrong place.
        problem = Problem(problem.loc, redact(problem.message))
        if problem.message not in seen:
            seen.add(problem.message)
            problems.append(problem)
    return problems


def text_problems(data: Any, *, prefix: Loc = ()) -> list[Problem]:
    """One :class:`Problem` per string (or key) of decoded JSON ``data`` that is not valid
    Unicode text (a lone surrogate such as ``"\\ud800"``, which UTF-8 cannot encode)."""
    return [
        Problem(
            (*prefix, *loc),
            f"{format_loc((*prefix, *loc)) or 'the value'} must be valid UTF-8 text, got a lone "
            f"surrogate U+{point:04X} (send the character itself, or a surrogate pair)",
        )
        for loc, point in surrogate_locations(data)
    ]


# --- translating one error -------------------------------------------------------------------

_TYPE_NOUNS = {
    "bool_type": "be true or false",
    "bool_parsing": "be true or false",
    "string_type": "be a string",
    "float_type": "be a number",
    "float_parsing": "be a number",
}
# pydantic's bound markers (annotated_types), found in a field's metadata.
_BOUNDS = (annotated_types.Gt, annotated_types.Ge, annotated_types.Lt, annotated_types.Le)
_TABLE_TYPES = {"model_type", "model_attributes_type", "dict_type"}
_LIST_TYPES = {"tuple_type", "list_type", "iterable_type"}


@dataclass(frozen=True)
class _Target:
    """What a location points at: the model around it, the field, and the field's type."""

    loc: Loc
    owner: type[BaseModel] | None
    field: FieldInfo | None
    annotation: Any


def _problem(
    details: ErrorDetails,
    root: type[BaseModel],
    prefix: Loc,
    known_keys: Mapping[type[BaseModel], Collection[str]],
    unknown: tuple[str, str],
) -> Problem:
    kind = details["type"]
    target = _walk(root, tuple(details["loc"]))
    loc = prefix + target.loc
    path = format_loc(loc)
    ctx = details.get("ctx") or {}
    table_rule = _table_rule(target.annotation)
    if table_rule is not None and target.loc != tuple(details["loc"]):
        # An error inside a small table (an autoreply rule) is stated as that table's rule.
        return Problem(loc, f"{path} must {table_rule}")
    if kind == CONFIG_RULE:
        field = str(ctx.get("field", ""))
        text = str(ctx.get("text", ""))
        if field:
            loc = loc + _parse_suffix(field)
            path = format_loc(loc)
        return Problem(loc, f"{path}{'' if text[:1] == ':' else ' '}{text}")
    if kind == "extra_forbidden":
        owner = target.owner or root
        known = ", ".join(sorted(known_keys.get(owner, owner.model_fields)))
        what = unknown[0] if len(loc) == 1 and owner is root else unknown[1]
        return Problem(loc, f"{path}: {what} (known: {known})")
    if kind == "missing":
        return Problem(loc, f"{path} is required")
    got = "" if target.field is not None and not target.field.repr else f", got {_show(details)}"
    if table_rule is not None or kind in _TABLE_TYPES:
        return Problem(loc, f"{path} must {table_rule or 'be a table'}{got}")
    if kind == "value_error":
        return Problem(loc, f"{path}: {ctx.get('error', details['msg'])}")
    return Problem(loc, f"{path} must {_rule(kind, target)}{got}")


def _show(details: ErrorDetails) -> str:
    """The wrong value, short, and with any bot token in it redacted (an api_base URL with a
    token pasted into it must not be printed back)."""
    text = redact(repr(details.get("input")))
    return text if len(text) <= 60 else text[:60] + "…"


def _rule(kind: str, target: _Target) -> str:
    """The sentence after "must": the field's own rule, else one built from its type and bounds."""
    inner = _unwrap(target.annotation)
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        return f"be one of {', '.join(repr(m.value) for m in inner)}"
    if kind in _LIST_TYPES:
        return _stated(target) or "be a list"
    stated = _stated(target)
    if kind in _TYPE_NOUNS and not (kind.startswith("float") and stated):
        return _TYPE_NOUNS[kind]
    if stated:
        return stated
    bounds = _bounds(target)
    if inner is int:
        return f"be a whole number{' ' + bounds if bounds else ''}"
    if inner is str:
        return "be a non-empty string" if kind == "string_too_short" else "be a valid string"
    if inner is bool:
        return "be true or false"
    if kind == "is_instance_of" and isinstance(inner, type):
        return f"be a {inner.__name__}"
    return f"be {bounds}" if bounds else "be a number"


def _bounds(target: _Target) -> str:
    """``"> 0"``, ``">= 1"``, ``"from 0 to 100"`` or ``"in (0, 1]"`` from the field's bounds."""
    found: dict[str, Any] = {}
    for item in _metadata(target):
        if isinstance(item, _BOUNDS):
            name = type(item).__name__.lower()
            found[name] = getattr(item, name)
    low = ("(", found["gt"]) if "gt" in found else ("[", found["ge"]) if "ge" in found else None
    high = (")", found["lt"]) if "lt" in found else ("]", found["le"]) if "le" in found else None
    if low and high:
        if low[0] == "[" and high[0] == "]":
            return f"from {low[1]} to {high[1]}"
        return f"in {low[0]}{low[1]}, {high[1]}{high[0]}"
    if low:
        return f"{'>' if low[0] == '(' else '>='} {low[1]}"
    if high:
        return f"{'<' if high[0] == ')' else '<='} {high[1]}"
    return ""


def _stated(target: _Target) -> str | None:
    """The rule written out on the field (``json_schema_extra={"x-rule": ...}``), if any."""
    for extra in _extras(target):
        rule = extra.get("x-rule")
        if isinstance(rule, str):
            return rule
    return None


def _table_rule(annotation: Any) -> str | None:
    inner = _unwrap(annotation)
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        rule = inner.model_config.get("json_schema_extra")
        if isinstance(rule, dict) and isinstance(rule.get("x-rule"), str):
            return str(rule["x-rule"])
    return None


# --- walking a location through the models -----------------------------------------------------


def _walk(root: type[BaseModel], loc: Loc) -> _Target:
    """Follow ``loc`` through models, tuples and optionals to what it names.

    Stops early at a model that states a table rule, so its errors are reported at the table.
    """
    annotation: Any = root
    owner: type[BaseModel] | None = None
    field: FieldInfo | None = None
    for depth, part in enumerate(loc):
        inner = _unwrap(annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            if _table_rule(inner) is not None:
                return _Target(loc[:depth], owner, field, annotation)
            owner = inner
            if not isinstance(part, str) or part not in inner.model_fields:
                return _Target(loc[: depth + 1], inner, None, Any)
            field = inner.model_fields[part]
            annotation = field.annotation
        elif isinstance(part, int):
            args = [a for a in typing.get_args(inner) if a is not Ellipsis]
            annotation = args[0] if args else Any
            # An element's rule is its own (a proxy address), not its list's.
            field = None
        else:
            # A union member tag or the like: the location is complete before it.
            return _Target(loc[:depth], owner, field, annotation)
    return _Target(loc, owner, field, annotation)


def _unwrap(annotation: Any) -> Any:
    """The type under ``Annotated[...]`` and ``X | None``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _metadata_of(annotation: Any) -> Iterator[Any]:
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            base, *extra = typing.get_args(annotation)
            for item in extra:
                if isinstance(item, FieldInfo):
                    yield item
                    yield from item.metadata
                else:
                    yield item
            annotation = base
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return
            annotation = members[0]
        else:
            return


def _metadata(target: _Target) -> Iterator[Any]:
    if target.field is not None:
        yield from target.field.metadata
    yield from _metadata_of(target.annotation)


def _extras(target: _Target) -> Iterator[Mapping[str, Any]]:
    if target.field is not None and isinstance(target.field.json_schema_extra, dict):
        yield target.field.json_schema_extra
    for item in _metadata_of(target.annotation):
        if isinstance(item, FieldInfo) and isinstance(item.json_schema_extra, dict):
            yield item.json_schema_extra


def _parse_suffix(field: str) -> Loc:
    """``"[1].user_id"`` -> ``(1, "user_id")``; ``"max_delay"`` -> ``("max_delay",)``."""
    parts: list[str | int] = []
    for piece in field.replace("[", ".[").split("."):
        if not piece:
            continue
        if piece.startswith("[") and piece.endswith("]") and piece[1:-1].isdigit():
            parts.append(int(piece[1:-1]))
        else:
            parts.append(piece)
    return tuple(parts)
