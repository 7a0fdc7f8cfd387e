"""Loading a configuration: the TOML file, the ``HACONTROL_*`` environment (which
wins over the file; a misspelt variable is warned about, not silently ignored), the
API token file, and ``hacontrol check-config`` (:func:`check_config`)."""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings.exceptions import SettingsError

from hacontrol.config.errors import ConfigError, os_reason
from hacontrol.config.explain import explain
from hacontrol.config.host_checks import data_dir_findings, journal_problem
from hacontrol.config.problems import model_at, too_few_nodes, validation_problems
from hacontrol.config.schema import (
    ENV_DELIMITER,
    ENV_PREFIX,
    LOADING,
    Config,
    LoadContext,
    MappingEnvSource,
)
from hacontrol.config.sections import check_token
from hacontrol.redact import redact_text


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (TOML) with ``HACONTROL_*`` overrides from ``env`` (default: the
    process environment); raise :class:`ConfigError` listing every problem found.

    A relative ``journal`` path is resolved against the file's directory.
    """
    path = Path(path)
    data = _read_toml(path, str(path))
    return config_from_mapping(
        data,
        env=os.environ if env is None else env,
        source=str(path),
        base_dir=path.resolve().parent,
    )


def config_from_mapping(
    data: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    source: str = "<config>",
    base_dir: Path | None = None,
) -> Config:
    """Validate already-parsed configuration data (``env``: overrides, none by default).

    ``source`` names the origin in messages; a relative journal path is resolved
    against ``base_dir`` when given.
    """
    environ = dict(env or {})
    env_data = _env_values(environ, source)
    # TOML keys are case-sensitive; the settings sources are not (for the
    # environment's sake), so a misspelt top-level key is caught here.
    allowed = ", ".join(Config.model_fields)
    early = [
        f"{source}: {key}: unknown key; allowed keys: {allowed}"
        for key in data
        if key not in Config.model_fields
    ]
    nodes = data.get("nodes")
    if "nodes" not in env_data and isinstance(nodes, list) and len(nodes) < 2:
        # pydantic skips the length rule when a node itself is invalid; say it anyway.
        early.append(f"{source}: nodes: {too_few_nodes(len(nodes))}")
    known = {k: v for k, v in data.items() if k in Config.model_fields}
    token = LOADING.set(LoadContext(known, environ))
    try:
        config = Config()  # type: ignore[call-arg]  # values come from the sources
    except ValidationError as exc:
        later = [p for p in validation_problems(exc, source, env_data) if p not in early]
        raise ConfigError(early + later) from None
    except SettingsError as exc:
        raise ConfigError([f"{source}: {_settings_error(exc)}"]) from None
    finally:
        LOADING.reset(token)
    if early:
        raise ConfigError(early)
    config._env_warnings = tuple(env_warnings(environ))
    if base_dir is not None and not config.journal.is_absolute():
        config = config.model_copy(update={"journal": base_dir / config.journal})
    config = _with_token_from_file(config, source, base_dir)
    return _with_dcs_files(config, source, base_dir)


# HACONTROL_* variables that are no configuration keys and are not warned about: the
# CLI's own, those hooks and command drivers receive (present when hacontrol runs
# inside one), and the build and test tooling's. HACONTROL_API_TOKEN, the compose
# file's host-side variable, is left out on purpose: in the controller's environment
# it is the classic misspelling of HACONTROL_API__TOKEN.
OTHER_ENV_NAMES = frozenset({
    "HACONTROL_CONFIG", "HACONTROL_API_ADDRESS",
    "HACONTROL_EVENT", "HACONTROL_NODE", "HACONTROL_OLD_PRIMARY", "HACONTROL_NEW_PRIMARY",
    "HACONTROL_TIMELINE", "HACONTROL_REASON", "HACONTROL_STEP", "HACONTROL_DATA_DIR",
    "HACONTROL_SOURCE_DSN", "HACONTROL_PRIMARY_CONNINFO", "HACONTROL_PRIMARY_SLOT_NAME",
    "HACONTROL_STOP_MODE", "HACONTROL_PG_BINDIR",
    "HACONTROL_DOCKER_TESTS", "HACONTROL_DOCKER_REQUIRED", "HACONTROL_DOCKER_CACHE",
    "HACONTROL_IMAGE", "HACONTROL_NODE_IMAGE", "HACONTROL_API_PORT",
})


def setting_env_names() -> list[str]:
    """Every environment variable that sets a key: HACONTROL_KEY for top-level keys and
    whole sections (JSON), HACONTROL_SECTION__KEY for a section's keys."""
    names: list[str] = []
    for name in Config.model_fields:
        names.append(f"{ENV_PREFIX}{name}".upper())
        model = model_at((name,))
        if model is not None and name != "nodes":
            names += [f"{ENV_PREFIX}{name}{ENV_DELIMITER}{key}".upper()
                      for key in model.model_fields]
    return names


def env_warnings(environ: Mapping[str, str]) -> list[str]:
    """One line per ``HACONTROL_*`` variable in ``environ`` that sets nothing (a
    misspelt name is otherwise ignored without a word), naming the nearest valid
    name. Values are never shown: the variable may hold a secret. A misspelt key
    under a section (HACONTROL_TIMING__PROBE_INTERVALL) is an error instead."""
    valid = setting_env_names()
    known = set(valid) | OTHER_ENV_NAMES
    lines: list[str] = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        rest = upper[len(ENV_PREFIX):]
        top, nested, _ = rest.partition(ENV_DELIMITER)
        section = model_at((top.lower(),)) if top.lower() in Config.model_fields else None
        if nested and section is not None:
            continue
        # Compared without the prefix, which every candidate shares.
        near = difflib.get_close_matches(
            rest, sorted(k[len(ENV_PREFIX):] for k in known), n=1, cutoff=0.6
        )
        hint = (
            f"did you mean {ENV_PREFIX}{near[0]}?" if near else
            f"settings are {ENV_PREFIX}KEY or {ENV_PREFIX}SECTION{ENV_DELIMITER}KEY "
            "(docs/configuration.md)"
        )
        lines.append(f"environment: {name} is not a hacontrol setting and is ignored; {hint}")
    return lines

def _with_token_from_file(config: Config, source: str, base_dir: Path | None) -> Config:
    """Read ``api.token_file`` (relative to ``base_dir``) into ``api.token``."""
    path = config.api.token_file
    if path is None:
        return config
    path = path.expanduser()
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    where = f"{source}: api.token_file"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{where}: {path}: file not found"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{where}: {path}: is a directory, not a file"]) from None
    except PermissionError:
        raise ConfigError([f"{where}: {path}: cannot read: permission denied"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{where}: {path}: not valid UTF-8 text"]) from None
    except OSError as exc:
        reason = os_reason(exc)
        raise ConfigError([f"{where}: {path}: cannot read: {reason}"]) from None
    token = text.strip()
    if not token:
        raise ConfigError([f"{where}: {path}: the file is empty; write the token in it"])
    try:
        secret = check_token(token)
    except ValueError as exc:
        raise ConfigError([f"{where}: {path}: the token: {exc}"]) from None
    api = config.api.model_copy(update={"token": secret, "token_file": path})
    return config.model_copy(update={"api": api})


def _with_dcs_files(config: Config, source: str, base_dir: Path | None) -> Config:
    """Resolve ``dcs.cacert/cert/key`` against ``base_dir`` and check each can be read
    (its contents are never shown: the key file is a secret)."""
    dcs = config.dcs
    if dcs is None or not dcs.tls_files():
        return config
    problems: list[str] = []
    resolved: dict[str, Path] = {}
    for key, path in dcs.tls_files().items():
        path = path.expanduser()
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        resolved[key] = path
        where = f"{source}: dcs.{key}: {path}"
        try:
            with path.open("rb") as f:
                head = f.read(64)
        except FileNotFoundError:
            problems.append(f"{where}: file not found")
            continue
        except IsADirectoryError:
            problems.append(f"{where}: is a directory, not a PEM file")
            continue
        except PermissionError:
            problems.append(f"{where}: cannot read: permission denied")
            continue
        except OSError as exc:
            problems.append(f"{where}: cannot read: {os_reason(exc)}")
            continue
        if b"-----BEGIN" not in head:
            problems.append(f"{where}: not a PEM file (no '-----BEGIN' line at its start)")
    if problems:
        raise ConfigError(problems)
    return config.model_copy(update={"dcs": dcs.model_copy(update=resolved)})


def _read_toml(path: Path, label: str) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{label}: configuration file not found"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{label}: is a directory, not a configuration file"]) from None
    except PermissionError:
        raise ConfigError(
            [f"{label}: cannot read the configuration file: permission denied"]
        ) from None
    except OSError as exc:
        reason = os_reason(exc)
        raise ConfigError([f"{label}: cannot read the configuration file: {reason}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{label}: line {line}: not valid UTF-8 text"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{label}: {_toml_error(str(exc))}"]) from None


def _toml_error(message: str) -> str:
    """'TOML syntax error at line L, column C: reason' from tomllib's message."""
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", message)
    if match:
        reason = message[: match.start()]
        return f"TOML syntax error at line {match[1]}, column {match[2]}: {reason}"
    match = re.search(r"\s*\(at end of document\)\s*$", message)
    if match:
        return f"TOML syntax error at the end of the file: {message[: match.start()]}"
    return f"TOML syntax error: {message}"


def _env_values(environ: Mapping[str, str], label: str) -> dict[str, Any]:
    """What the environment sets, as nested data (used to say where a bad value came from)."""
    try:
        return dict(MappingEnvSource(Config, environ)())
    except SettingsError as exc:
        raise ConfigError([f"{label}: {_settings_error(exc)}"]) from None


def _settings_error(exc: SettingsError) -> str:
    """A pydantic-settings parse failure (a table or array not given as JSON)."""
    match = re.search(r'field "(\w+)"', str(exc))
    if match is None:
        return f"environment: {redact_text(str(exc))}"
    field = match[1]
    return (
        f"{field} (set by {ENV_PREFIX}{field.upper()}): not valid JSON; a table or array "
        f"set from the environment must be JSON, or set single keys with "
        f"{ENV_PREFIX}SECTION{ENV_DELIMITER}KEY"
    )


def check_config(path: str | Path, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """What ``hacontrol check-config`` prints and its exit code (0 valid, 2 invalid).

    Beyond the file itself, the local drivers' data directories are checked on this
    host (:func:`data_dir_findings`)."""
    try:
        config = load_config(path, env)
    except ConfigError as exc:
        # A misspelt variable is often why a key is missing: say so next to it.
        hints = env_warnings(os.environ if env is None else env)
        return 2, "\n".join([*exc.problems, *(f"warning: {w}" for w in hints)])
    problems = data_dir_findings(config)[0]
    journal = journal_problem(config.journal)
    if journal is not None:
        problems.insert(0, f"journal: {config.journal}: {journal}")
    if problems:
        return 2, "\n".join(f"{path}: {p}" for p in problems)
    return 0, explain(config)
