"""What only the controller's host can tell: whether the journal's path can be
used, and whether each local driver's data directory is its node's (proven by the
port its server runs or would run on, and the pinned system identifier).
``hacontrol check-config`` reports these; nothing here creates anything."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hacontrol.config.errors import os_reason
from hacontrol.config.schema import Config
from hacontrol.config.sections import NodeConfig
from hacontrol.io.drivers.config import LocalDriverConfig
from hacontrol.io.drivers.identity import (
    PortReading,
    configured_setting,
    control_file_identifier,
    directory_port,
    directory_state,
    identifier_problem,
)
from hacontrol.io.dsn import dsn_port, endpoint


def journal_problem(path: Path) -> str | None:
    """Why the controller could not keep its journal at ``path``, checked without
    creating anything: an existing path must be a file this user can read and
    append to; otherwise the nearest existing directory above it must let this user
    create entries (the journal creates missing directories). os.access asks the
    kernel, so a read-only filesystem counts even for root, but for root most
    permission bits do not."""
    try:
        if path.exists():
            if path.is_dir():
                return "is a directory; journal must name a file in it"
            if not os.access(path, os.R_OK | os.W_OK):
                return f"cannot be read and appended to by this user (uid {os.geteuid()})"
            return None
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            return f"cannot be created: {parent} is not a directory"
        if not os.access(parent, os.W_OK | os.X_OK):
            return (
                f"cannot be created: this user (uid {os.geteuid()}) may not create "
                f"entries in {parent}"
            )
    except OSError as exc:
        return f"cannot be checked: {os_reason(exc)}"
    return None


@dataclass(frozen=True, slots=True)
class _LocalDir:
    index: int
    node: NodeConfig
    data_dir: Path
    expected: int | None
    reading: PortReading


def data_dir_findings(config: Config) -> tuple[list[str], list[str]]:
    """(problems, warnings) about the local drivers' data directories as this host
    shows them: a directory that is not a data directory, or whose server runs (or
    would run) on another port than its node's DSN, is a problem (two nodes' swapped
    data_dir is one problem naming both); a missing one, or one whose port cannot be
    told, a warning. Each line starts with the key path."""
    problems: list[tuple[int, str]] = []
    warnings: list[str] = []
    dirs: list[_LocalDir] = []
    for i, node in enumerate(config.nodes):
        driver = node.driver
        if not isinstance(driver, LocalDriverConfig):
            continue
        where = f"nodes[{i}].driver.data_dir"
        path = driver.data_dir
        state = directory_state(path)
        if state in ("missing", "empty"):
            what = "does not exist on this host" if state == "missing" else "is empty"
            warnings.append(
                f"{where} ({node.name}): {path} {what}; a local driver runs pg_ctl here, next "
                f"to the data directory, and until one is there it can only re-clone "
                f"{node.name} (rejoin.allow_basebackup)"
            )
            continue
        if state == "unreadable":
            warnings.append(f"{where} ({node.name}): cannot look into {path}; run check-config "
                            "as the controller's user to check it")
            continue
        if state != "pgdata":
            what = "is not a directory" if state == "not_a_directory" else (
                "is not a PostgreSQL data directory (no PG_VERSION)"
            )
            problems.append((i, f"{where}: {path} {what}; {node.name}'s data_dir must be its "
                                "PostgreSQL data directory"))
            continue
        pinned = config.system_identifier
        found = control_file_identifier(path) if pinned is not None else None
        if pinned is not None and found is not None and found != pinned:
            problem = identifier_problem(node.name, path, found, pinned,
                                         "pinned by system_identifier")
            problems.append((i, f"{where}: {problem}"))
            continue
        reading = directory_port(path)
        if reading.port is None:
            warnings.append(
                f"{where} ({node.name}): cannot tell which port {path}'s server would run on "
                f"({reading.problem}); the driver refuses to stop, start, rewind or re-clone "
                f"{node.name} until it can"
            )
            continue
        dirs.append(_LocalDir(i, node, path, dsn_port(node.dsn), reading))
        warning = _slot_wal_unlimited(config, node.name, path)
        if warning:
            warnings.append(f"{where} ({node.name}): {warning}")
    problems += _port_mismatches(config, dirs)
    return [text for _, text in sorted(problems, key=lambda p: p[0])], warnings


def _port_mismatches(config: Config, dirs: list[_LocalDir]) -> list[tuple[int, str]]:
    """One problem per data directory on another node's port; one per swapped pair."""
    wrong = {d.index: d for d in dirs if d.expected is not None and d.reading.port != d.expected}
    by_index = {d.index: d for d in dirs}
    problems: list[tuple[int, str]] = []
    done: set[int] = set()
    for i, d in sorted(wrong.items()):
        if i in done:
            continue
        owner = _port_owner(config, d, by_index)
        where = f"nodes[{i}].driver.data_dir"
        name = d.node.name
        other = wrong.get(owner) if owner is not None else None
        if other is not None and other.reading.port == d.expected and owner not in done:
            done |= {i, other.index}
            b = other.node.name
            problems.append((i, (
                f"{where}: {name} and {b} have their data directories swapped: {name}'s "
                f"data_dir {d.data_dir}: {d.reading.describe()}, the port of {b}'s dsn; "
                f"{b}'s data_dir {other.data_dir}: {other.reading.describe()}, the port of "
                f"{name}'s dsn; exchange the two data_dir values"
            )))
        elif owner is not None:
            b = config.nodes[owner].name
            problems.append((i, (
                f"{where}: {d.data_dir} is {b}'s data directory, not {name}'s: "
                f"{d.reading.describe()}, the port of {b}'s dsn, but {name}'s dsn names port "
                f"{d.expected}; fix {name}'s data_dir"
            )))
        else:
            problems.append((i, (
                f"{where}: {d.data_dir} is not {name}'s data directory: "
                f"{d.reading.describe()}, but {name}'s dsn names port {d.expected}; fix "
                f"{name}'s data_dir (or its dsn) so both name the same server"
            )))
    return problems


def _port_owner(config: Config, d: _LocalDir, local: Mapping[int, _LocalDir]) -> int | None:
    """The other node whose DSN names the port ``d``'s directory shows: one with a local
    driver first (the same host), else one on the same DSN host."""
    host = endpoint(d.node.dsn)[0]
    same_port = [
        j for j, n in enumerate(config.nodes)
        if j != d.index and dsn_port(n.dsn) == d.reading.port
    ]
    for j in same_port:
        if j in local or isinstance(config.nodes[j].driver, LocalDriverConfig):
            return j
    for j in same_port:
        if endpoint(config.nodes[j].dsn)[0] == host:
            return j
    return None


def _slot_wal_unlimited(config: Config, node: str, data_dir: Path) -> str | None:
    """A warning when replication slots are in use and ``data_dir``'s configuration
    leaves ``max_slot_wal_keep_size`` unlimited (its default)."""
    if not config.replication.slots and not config.slots:
        return None
    found = configured_setting(data_dir, "max_slot_wal_keep_size")
    if found is not None and found[0].strip() not in ("-1", ""):
        return None
    where = f"{found[1]} sets -1" if found is not None else "it is not set (default -1)"
    return (
        f"max_slot_wal_keep_size is unlimited for {node} ({where}): a slot whose replica or"
        " consumer stays away keeps WAL until pg_wal fills the disk; set a limit, e.g."
        " max_slot_wal_keep_size = '20GB' (docs/slots.md)"
    )
