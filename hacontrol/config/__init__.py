"""Configuration: a TOML file plus ``HACONTROL_*`` environment overrides.

The file is parsed with :mod:`tomllib`; the environment is read by a
pydantic-settings :class:`EnvSettingsSource` (nested keys joined by ``__``,
e.g. ``HACONTROL_TIMING__PROBE_INTERVAL``) and wins over the file. Every
problem becomes one line naming the file, the key path, what is wrong and
what is allowed (:class:`ConfigError`); nothing here prints a password.

* :mod:`~hacontrol.config.sections`: the ``[section]`` models, every number
  finite and bounded;
* :mod:`~hacontrol.config.schema`: :class:`Config`, the rules between keys (node
  DSNs resolved as libpq would, :mod:`hacontrol.io.dsn`), and the conversion to the
  core's types;
* :mod:`~hacontrol.config.load`: the file, the environment, the token file,
  :func:`load_config` and :func:`check_config` (``hacontrol check-config``);
* :mod:`~hacontrol.config.problems`: validation errors rendered for people;
* :mod:`~hacontrol.config.host_checks`: what only this host can tell (the local
  drivers' data directories, the journal's path);
* :mod:`~hacontrol.config.explain`: :func:`explain` and :func:`config_warnings`,
  what is allowed but probably unintended, misspelt ``HACONTROL_*`` variables
  included.

Adding a section (say ``[api]``): define a :class:`Section` subclass with
defaulted fields, add it to :class:`Config` with a default instance, and
describe it in :func:`explain` and docs/configuration.md. Environment
overrides, unknown-key errors and the allowed-keys lists follow by themselves.
"""

from hacontrol.config.errors import ConfigError
from hacontrol.config.explain import config_warnings, detection_delay, explain
from hacontrol.config.load import (
    check_config,
    config_from_mapping,
    env_warnings,
    load_config,
    setting_env_names,
)
from hacontrol.config.schema import Config
from hacontrol.config.sections import NodeConfig, Section, parse_listen

__all__ = [
    "Config",
    "ConfigError",
    "NodeConfig",
    "Section",
    "check_config",
    "config_from_mapping",
    "config_warnings",
    "detection_delay",
    "env_warnings",
    "explain",
    "load_config",
    "parse_listen",
    "setting_env_names",
]
