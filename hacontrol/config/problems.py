"""Validation errors rendered for people: one ``FILE: key.path: message`` line per
problem, naming what is wrong and what is allowed, and the ``HACONTROL_*``
variable that set the value when one did. No line shows a secret."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from hacontrol.config.errors import CrossFieldProblems, key_path
from hacontrol.config.schema import ENV_DELIMITER, ENV_PREFIX, Config
from hacontrol.core.settings import FailoverMode
from hacontrol.io.drivers.config import CommandDriverConfig, LocalDriverConfig
from hacontrol.redact import redact_text


def _env_name(loc: Sequence[str | int], env_data: Mapping[str, Any]) -> str | None:
    """The HACONTROL_* variable that set the value at ``loc``, if one did."""
    node: Any = env_data
    names: list[str] = []
    for part in loc:
        if isinstance(node, Mapping) and isinstance(part, str) and part in node:
            names.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            # A list comes whole from one variable holding JSON.
            return ENV_PREFIX + ENV_DELIMITER.join(names).upper()
        else:
            return None
    if not names or isinstance(node, Mapping):
        # A whole section: its keys may come from several places.
        return None
    return ENV_PREFIX + ENV_DELIMITER.join(names).upper()


def model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class whose keys live at ``loc`` (for 'allowed keys' lists)."""
    model: type[BaseModel] = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation: Any = field.annotation
        candidates = [annotation, *get_args(annotation)]
        found = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if found is None:
            return None
        model = found
    return model


_SECRET_FIELDS = {"dsn", "replication_dsn", "token"}


def _describe(value: Any) -> str:
    """A short, secret-free rendering of a bad input for 'got ...'."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, str):
        text = redact_text(value)
        return repr(text if len(text) <= 60 else text[:57] + "...")
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


_TYPE_WORDS = {
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "path_type": "must be a path (a string)",
    "list_type": "must be an array of tables ([[nodes]] ...)",
    "model_type": "must be a table ([section])",
    "model_attributes_type": "must be a table ([section])",
    "dict_type": "must be a table ([section])",
    "finite_number": "must be a finite number",
    "int_parsing_size": "must be a whole number of a sensible size",
}


def too_few_nodes(count: object) -> str:
    """Why fewer than two ``[[nodes]]`` tables will not do."""
    return f"at least 2 nodes are required, a primary and a replica (got {count})"


_DRIVER_MODELS: dict[str, type[BaseModel]] = {
    "local": LocalDriverConfig,
    "command": CommandDriverConfig,
}


def _untag(loc: tuple[str | int, ...]) -> tuple[tuple[str | int, ...], type[BaseModel] | None]:
    """pydantic puts a driver table's ``kind`` into the location
    (``nodes.0.driver.local.data_dir``): drop it, and say which model it chose."""
    for i, part in enumerate(loc[:-1]):
        tag = loc[i + 1]
        if part == "driver" and isinstance(tag, str) and tag in _DRIVER_MODELS:
            return loc[: i + 1] + loc[i + 2 :], _DRIVER_MODELS[tag]
    return loc, None


def _problem_text(
    error: Mapping[str, Any],
    loc: tuple[str | int, ...],
    tagged: type[BaseModel] | None = None,
) -> str:
    kind = str(error["type"])
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    value = error.get("input")
    field = next((p for p in reversed(loc) if isinstance(p, str)), "")
    got = "" if field in _SECRET_FIELDS else f" (got {_describe(value)})"
    kinds = ", ".join(_DRIVER_MODELS)
    if kind == "union_tag_not_found":
        return f"the table needs a kind: one of {kinds} (docs/drivers.md)"
    if kind == "union_tag_invalid":
        return f"kind must be one of: {kinds} (got {_describe(ctx.get('tag'))})"
    if kind == "extra_forbidden":
        model = tagged or model_at(loc[:-1])
        allowed = ", ".join(model.model_fields) if model is not None else "none"
        return f"unknown key; allowed keys: {allowed}"
    if kind == "missing":
        if loc == ("nodes",):
            return "missing; at least 2 [[nodes]] tables (name, dsn) are required"
        return "required key is missing"
    if kind == "too_short" and loc == ("nodes",):
        return too_few_nodes(ctx.get("actual_length", "?"))
    if kind == "greater_than":
        return f"must be greater than {_describe(ctx['gt'])}{got}"
    if kind == "greater_than_equal":
        return f"must be at least {_describe(ctx['ge'])}{got}"
    if kind == "less_than":
        return f"must be less than {_describe(ctx['lt'])}{got}"
    if kind == "less_than_equal":
        return f"must be at most {_describe(ctx['le'])}{got}"
    if kind == "enum" and field == "mode":
        allowed = ", ".join(m.value for m in FailoverMode)
        return f"must be one of: {allowed}{got}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"must be one of: {expected}{got}"
    if kind in _TYPE_WORDS:
        return _TYPE_WORDS[kind] + got
    if kind == "value_error":
        reason = str(ctx.get("error", error.get("msg", "")))
        return redact_text(reason)
    return redact_text(str(error.get("msg", kind))) + got


def validation_problems(
    exc: ValidationError, label: str, env_data: Mapping[str, Any]
) -> list[str]:
    """One line per problem ``exc`` holds, each starting with ``label`` (the file);
    ``env_data`` is what the environment set, to name the variable behind a value."""
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        cross = (error.get("ctx") or {}).get("error")
        render: Callable[[tuple[str | int, ...]], str] = key_path
        if isinstance(cross, CrossFieldProblems):
            entries = [(loc, msg) for loc, msg in cross.problems]
            render = cross.where
        else:
            loc, tagged = _untag(tuple(error["loc"]))
            entries = [(loc, _problem_text(error, loc, tagged))]
        for loc, message in entries:
            source = _env_name(loc, env_data)
            where = render(loc) + (f" (set by {source})" if source else "")
            lines.append(f"{label}: {where}: {message}")
    return lines
