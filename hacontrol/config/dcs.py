"""``[dcs]``: the etcd cluster that lets several controllers watch one PostgreSQL
cluster with one leader among them (docs/ha.md). Absent: one controller, no etcd.

The password and the key file's contents never reach a message: a problem names
the key and the fix, not the value.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from hacontrol.config.sections import MINUTE, Section

# A scope and a controller name go into etcd keys and application_name.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# Below 3 s a keepalive every ttl/3 leaves no room for one slow etcd round trip.
MIN_TTL_S = 3.0
MAX_TTL_S = 5 * MINUTE
DEFAULT_ETCD_PORT = 2379


def default_name() -> str:
    """This machine's host name, cut to a valid controller name."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname().split(".")[0])[:63]
    return host if _NAME_RE.match(host) else "hacontrol"


def parse_endpoint(value: str) -> tuple[str, str, int]:
    """``http[s]://host[:port]`` as (scheme, host, port); ValueError naming the fix."""
    text = value.strip()
    parts = urlsplit(text if "://" in text else f"http://{text}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or port == -1
        or parts.path not in ("", "/")
        or parts.query
        or parts.username is not None
    ):
        raise ValueError(
            f"{value!r} is not an etcd client URL; write http://host:2379 or "
            "https://host:2379 (user and password go in dcs.username and dcs.password)"
        )
    return parts.scheme, parts.hostname, port or DEFAULT_ETCD_PORT


class DcsConfig(Section):
    """``[dcs]``: where the controllers keep their leader key, intents and state."""

    # NoDecode: HACONTROL_DCS__ENDPOINTS is a comma-separated list, not JSON.
    endpoints: Annotated[list[str], NoDecode]
    # Every key lives under /hacontrol/<scope>/: one etcd may serve several clusters.
    scope: str = "main"
    # This controller's id among the controllers of the scope.
    name: str = Field(default_factory=default_name)
    # The leader lease: a leader that cannot renew it for this long is replaced.
    ttl: float = Field(default=10.0, ge=MIN_TTL_S, le=MAX_TTL_S, allow_inf_nan=False)
    username: str = ""
    password: SecretStr = SecretStr("")
    # TLS, like libpq's sslrootcert/sslcert/sslkey: PEM files, relative to the
    # configuration file's directory.
    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    @field_validator("endpoints", mode="before")
    @classmethod
    def _endpoint_list(cls, value: Any) -> Any:
        # One string may list several, comma-separated (as etcdctl --endpoints does,
        # and as HACONTROL_DCS__ENDPOINTS is easiest to write).
        if isinstance(value, str):
            return [e for e in value.split(",") if e.strip()]
        return value

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("names no etcd member; list at least one, e.g. "
                             "[\"http://10.0.0.1:2379\"] (three or five for an etcd that "
                             "survives the loss of a member)")
        schemes = {parse_endpoint(e)[0] for e in value}
        if len(schemes) > 1:
            raise ValueError("mixes http:// and https:// endpoints; use one scheme for all")
        if len({parse_endpoint(e)[1:] for e in value}) != len(value):
            raise ValueError("names the same etcd member twice")
        return [e.strip() for e in value]

    @field_validator("scope", "name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(
                f"invalid {value!r}; allowed: 1-63 letters, digits, '_', '-', '.', "
                "starting with a letter or digit"
            )
        return value

    @field_validator("cacert", "cert", "key", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        # An empty string reads as "not set", like an omitted key.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @model_validator(mode="after")
    def _pairs(self) -> DcsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("set cert and key together (a client certificate "
                             "and its private key), or neither")
        if self.password.get_secret_value() and not self.username:
            raise ValueError("password is set without username; set both, or neither")
        if self.tls_files() and self.scheme() != "https":
            raise ValueError("cacert/cert/key are set but the endpoints are http://; "
                             "use https:// endpoints for TLS")
        return self

    def scheme(self) -> str:
        """``http`` or ``https`` (all endpoints share one)."""
        return parse_endpoint(self.endpoints[0])[0]

    def addresses(self) -> list[tuple[str, int]]:
        """Each endpoint's (host, port)."""
        return [parse_endpoint(e)[1:] for e in self.endpoints]

    def tls_files(self) -> dict[str, Path]:
        """The TLS keys that are set, by key name."""
        files = {"cacert": self.cacert, "cert": self.cert, "key": self.key}
        return {k: v for k, v in files.items() if v is not None}

    def prefix(self) -> str:
        """The key prefix of this scope, ending in '/'."""
        return f"/hacontrol/{self.scope}/"

    def margin_s(self) -> float:
        """How long before its lease could expire a leader stops acting: one client
        timeout plus slack for the two clocks' rates."""
        return min(2.0, self.ttl / 4)

    def keepalive_s(self) -> float:
        """The lease keepalive interval."""
        return self.ttl / 3

    def request_timeout_s(self) -> float:
        """The timeout of one etcd request: a keepalive that took longer is late."""
        return min(2.0, self.ttl / 6)
