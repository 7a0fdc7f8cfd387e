"""``[dcs]``: clear errors for bad endpoints, names, ttl and TLS files; secrets never
shown; check-config explains it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hacontrol.cli.main import main
from hacontrol.config import ConfigError, config_from_mapping, explain, load_config

NODES = [
    {"name": "a", "dsn": "host=127.0.0.1 port=5432"},
    {"name": "b", "dsn": "host=127.0.0.1 port=5433"},
    {"name": "c", "dsn": "host=127.0.0.1 port=5434"},
]
SECRET = "s3cret-etcd-pass"


def _problems(dcs: dict[str, Any], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        config_from_mapping({"nodes": NODES, "dcs": dcs}, env=env)
    return str(err.value)


def test_defaults_and_derived_timings() -> None:
    dcs = config_from_mapping({"nodes": NODES, "dcs": {"endpoints": ["10.0.0.1"]}}).dcs
    assert dcs is not None
    assert dcs.addresses() == [("10.0.0.1", 2379)] and dcs.scheme() == "http"
    assert dcs.scope == "main" and dcs.prefix() == "/hacontrol/main/" and dcs.ttl == 10.0
    assert dcs.keepalive_s() < dcs.ttl - dcs.margin_s()
    assert dcs.request_timeout_s() < dcs.margin_s()
    assert dcs.name  # the host name


@pytest.mark.parametrize(
    ("dcs", "expected"),
    [
        ({"endpoints": []}, "dcs.endpoints: names no etcd member"),
        ({"endpoints": ["ftp://x:1"]}, "not an etcd client URL; write http://host:2379"),
        ({"endpoints": ["http://a:1", "https://b:1"]}, "mixes http:// and https://"),
        ({"endpoints": ["http://a:1", "a:1"]}, "names the same etcd member twice"),
        ({"endpoints": ["http://a"], "ttl": 1}, "dcs.ttl: must be at least 3"),
        ({"endpoints": ["http://a"], "scope": "a b"}, "dcs.scope: invalid 'a b'"),
        ({"endpoints": ["http://a"], "cert": "c.pem"}, "set cert and key together"),
        ({"endpoints": ["http://a"], "cacert": "ca.pem"}, "use https:// endpoints for TLS"),
        ({"endpoints": ["http://a"], "bogus": 1}, "dcs.bogus"),
    ],
)
def test_each_mistake_names_the_key_and_the_fix(dcs: dict[str, Any], expected: str) -> None:
    assert expected in _problems(dcs)


def test_the_password_is_never_shown() -> None:
    text = _problems({"endpoints": [f"http://root:{SECRET}@a:1"]})
    assert SECRET not in text and "dcs.username and dcs.password" in text
    text = _problems({"endpoints": ["http://a"], "password": SECRET})
    assert SECRET not in text and "password is set without username" in text
    ok = config_from_mapping(
        {"nodes": NODES, "dcs": {"endpoints": ["http://a"], "username": "u", "password": SECRET}}
    )
    assert SECRET not in explain(ok) and SECRET not in repr(ok.dcs)
    assert "in clear text" in explain(ok)


def test_endpoints_from_the_environment_are_comma_separated() -> None:
    config = config_from_mapping(
        {"nodes": NODES},
        env={"HACONTROL_DCS__ENDPOINTS": "http://a:1, http://b:2", "HACONTROL_DCS__TTL": "5"},
    )
    assert config.dcs is not None
    assert config.dcs.endpoints == ["http://a:1", "http://b:2"] and config.dcs.ttl == 5.0


def _toml(tmp_path: Path, dcs: str) -> Path:
    nodes = "".join(f'[[nodes]]\nname = "{n["name"]}"\ndsn = "{n["dsn"]}"\n' for n in NODES)
    path = tmp_path / "hacontrol.toml"
    path.write_text(f'journal = "{tmp_path / "j.jsonl"}"\n{nodes}\n[dcs]\n{dcs}\n')
    return path


def test_tls_files_are_resolved_next_to_the_file_and_checked(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n")
    (tmp_path / "key.pem").write_text("not a pem\n")
    path = _toml(tmp_path, 'endpoints = ["https://e1:2379"]\ncacert = "ca.pem"\n')
    dcs = load_config(path, {}).dcs
    assert dcs is not None and dcs.cacert == tmp_path / "ca.pem"
    path = _toml(tmp_path, 'endpoints = ["https://e1:2379"]\ncert = "nope.pem"\nkey = "key.pem"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    text = str(err.value)
    assert "dcs.cert" in text and "file not found" in text
    assert "dcs.key" in text and "not a PEM file" in text and "not a pem" not in text


def test_check_config_explains_the_controllers(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'endpoints = ["http://127.0.0.1:2379", "http://127.0.0.2:2379"]\n'
                           'name = "ctl-a"\nttl = 6\n')
    checked = CliRunner().invoke(main, ["check-config", str(path)])
    assert checked.exit_code == 0, checked.output
    assert "controllers: several, meeting in etcd as 'ctl-a' under /hacontrol/main/" in (
        checked.output)
    assert "leader lease 6 s, renewed every 2 s; a leader stops acting 1.5 s before" in (
        checked.output)
    assert "Traceback" not in checked.output
