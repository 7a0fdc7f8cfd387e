"""Which node a data directory belongs to, read from its files.

A node is known to the controller by its DSN, to a driver by a data directory.
A typo, or two nodes' ``data_dir`` swapped, would make a stop, start, rewind or
re-clone hit another node's server, possibly the primary. So before such a step
a driver proves the directory is the node's:

* its server runs, or would run, on the port of the node's DSN: line 4 of
  ``postmaster.pid`` while its postmaster lives; otherwise ``port`` as PostgreSQL
  resolves it: ``postgresql.conf`` (or the ``config_file`` the server last ran
  with, from ``postmaster.opts``) with its includes, then
  ``postgresql.auto.conf``, the last setting winning, and a port given on the
  command line it last ran with (``postmaster.opts``) over both;
* once the cluster's system identifier is known, the directory's control file
  (``pg_controldata``) names the same one.

Nothing here starts a program; the drivers run ``pg_controldata`` themselves.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DEFAULT_PORT = 5432
UINT64_MASK = (1 << 64) - 1
# PostgreSQL's own limit on nested configuration includes (CONF_FILE_MAX_DEPTH).
MAX_INCLUDE_DEPTH = 10
PIDFILE = "postmaster.pid"
OPTSFILE = "postmaster.opts"
CONF = "postgresql.conf"
AUTO_CONF = "postgresql.auto.conf"

DirState = Literal["missing", "not_a_directory", "unreadable", "empty", "not_pgdata", "pgdata"]


@dataclass(frozen=True, slots=True)
class PortReading:
    """The port a data directory's server runs or would run on, and where it was read."""

    port: int | None
    source: str
    # True when a live postmaster reported it (postmaster.pid).
    running: bool = False
    # Why the port cannot be told (``port`` is None).
    problem: str = ""

    def describe(self) -> str:
        """'runs on port 5433 (postmaster.pid)' or 'would run on port ...'."""
        verb = "runs" if self.running else "would run"
        return f"its server {verb} on port {self.port} ({self.source})"


def directory_state(data_dir: Path) -> DirState:
    """What is at ``data_dir``: nothing, an empty directory, a data directory, ..."""
    try:
        if not data_dir.exists():
            return "missing"
        if not data_dir.is_dir():
            return "not_a_directory"
        if not any(data_dir.iterdir()):
            return "empty"
        return "pgdata" if (data_dir / "PG_VERSION").is_file() else "not_pgdata"
    except OSError:
        return "unreadable"


def postmaster_alive(pidfile: Path) -> bool:
    """True while the PID in ``pidfile`` names a live (not zombie) process; True when
    it cannot be told (the lock file is being written or read fails)."""
    try:
        pid = int(pidfile.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return pidfile.exists()
    return process_alive(pid)


def process_alive(pid: int) -> bool:
    """True while ``pid`` is a live process, not a zombie; True when it cannot be told."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    # The state follows the command name, which is in parentheses and may hold spaces.
    state = stat.rsplit(")", 1)[-1].split()[:1]
    return state != ["Z"]


def running_port(data_dir: Path) -> PortReading | None:
    """The port in ``postmaster.pid`` while its postmaster lives; None otherwise
    (also while a starting server has not written the port yet)."""
    pidfile = data_dir / PIDFILE
    try:
        lines = pidfile.read_text().splitlines()
    except OSError:
        return None
    if len(lines) < 4 or not postmaster_alive(pidfile):
        return None
    port = parse_int(lines[3])
    if port is None:
        return None
    return PortReading(port, f"{pidfile}, line 4", running=True)


def directory_port(data_dir: Path) -> PortReading:
    """The port ``data_dir``'s server runs on, or else would run on."""
    return running_port(data_dir) or configured_port(data_dir)


def _walk(data_dir: Path, setting: str) -> tuple[dict[str, str], _Resolver]:
    """The command line ``data_dir``'s server last ran with, and ``setting`` as its
    configuration files resolve it."""
    opts = read_postmaster_opts(data_dir / OPTSFILE)
    conf = Path(opts.get("config_file") or CONF)
    if not conf.is_absolute():
        conf = data_dir / conf
    resolver = _Resolver(setting)
    resolver.read(conf, 0, required=True)
    resolver.read(data_dir / AUTO_CONF, 0, required=False)
    return opts, resolver


def configured_port(data_dir: Path) -> PortReading:
    """``port`` as PostgreSQL would resolve it when starting ``data_dir``."""
    opts, resolver = _walk(data_dir, "port")
    if "port" in opts:
        # Command-line options beat every configuration file.
        return _reading(opts["port"], f"{data_dir / OPTSFILE}, the command line it last ran with")
    if resolver.unknown:
        return PortReading(None, "", problem=resolver.unknown)
    if resolver.port is None:
        return PortReading(DEFAULT_PORT, "PostgreSQL's default: no port setting found")
    value, where = resolver.port
    return _reading(value, where)


def configured_setting(data_dir: Path, setting: str) -> tuple[str, str] | None:
    """The value of ``setting`` in ``data_dir``'s configuration files and where it is
    set (None: not set, or a file could not be read)."""
    opts, resolver = _walk(data_dir, setting)
    if setting in opts:
        return opts[setting], f"{data_dir / OPTSFILE}, the command line it last ran with"
    return None if resolver.unknown else resolver.port


def _reading(value: str, where: str) -> PortReading:
    port = parse_int(value)
    if port is None or not 1 <= port <= 65535:
        return PortReading(None, "", problem=f"port = {value!r} in {where} is not a valid port")
    return PortReading(port, where)


def read_postmaster_opts(path: Path) -> dict[str, str]:
    """Settings on the command line recorded in ``postmaster.opts`` (``-p``,
    ``-c name=value``, ``--name=value``), by lower-case name; the last one wins."""
    try:
        tokens = shlex.split(path.read_text(errors="replace"))
    except (OSError, ValueError):
        return {}
    found: dict[str, str] = {}
    args = tokens[1:]
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if eq:
                found[name.replace("-", "_").lower()] = value
            continue
        if len(arg) < 2 or arg[0] != "-" or arg[1] not in _OPTS_WITH_VALUE:
            continue
        value = arg[2:]
        if not value and i < len(args):
            value = args[i]
            i += 1
        if arg[1] == "p":
            found["port"] = value
        elif arg[1] == "c":
            name, eq, setting = value.partition("=")
            if eq:
                found[name.replace("-", "_").lower()] = setting
    return found


# The postgres options that take a value (getopt "B:bC:c:D:d:EeFf:h:ijk:lN:nOPp:r:S:sTt:W:").
_OPTS_WITH_VALUE = frozenset("BCcDdfhkNprStW")


class _Resolver:
    """Walks configuration files the way PostgreSQL does, keeping the last value of
    ``setting`` (``port`` unless told) and where it was set."""

    def __init__(self, setting: str = "port") -> None:
        self.setting = setting
        self.port: tuple[str, str] | None = None
        # Why a file that might set the port could not be read; a later setting clears it.
        self.unknown = ""

    def read(self, path: Path, depth: int, *, required: bool) -> None:
        if depth > MAX_INCLUDE_DEPTH:
            self.unknown = f"includes nested deeper than {MAX_INCLUDE_DEPTH} levels at {path}"
            return
        try:
            text = path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            if required:
                self.unknown = f"{path} does not exist"
            return
        except OSError as exc:
            self.unknown = f"cannot read {path}: {exc.strerror or type(exc).__name__}"
            return
        for number, line in enumerate(text.splitlines(), 1):
            entry = parse_conf_line(line)
            if entry is None:
                continue
            name, value = entry
            where = f"{path}, line {number}"
            if name == self.setting:
                self.port = (value, where)
                self.unknown = ""
            elif name in ("include", "include_if_exists"):
                if not value:
                    self.unknown = f"an empty {name} at {where}"
                    continue
                self.read(_relative(path, value), depth + 1, required=name == "include")
            elif name == "include_dir":
                self.read_dir(_relative(path, value), depth + 1, where)

    def read_dir(self, directory: Path, depth: int, where: str) -> None:
        try:
            names = sorted(
                entry.name for entry in os.scandir(directory)
                if entry.name.endswith(".conf") and not entry.name.startswith(".")
                and entry.is_file()
            )
        except OSError as exc:
            self.unknown = (
                f"include_dir {str(directory)!r} at {where} cannot be read: "
                f"{exc.strerror or type(exc).__name__}"
            )
            return
        for name in names:
            self.read(directory / name, depth, required=True)


def _relative(calling_file: Path, location: str) -> Path:
    # PostgreSQL resolves an include against the directory of the file naming it.
    path = Path(location)
    return path if path.is_absolute() else calling_file.parent / path


_NAME_RE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_$]*(?:\.[A-Za-z_][A-Za-z0-9_$]*)?)\s*=?\s*")


def parse_conf_line(line: str) -> tuple[str, str] | None:
    """(lower-case name, value) of one ``postgresql.conf`` line; None for a blank or
    comment line, or one PostgreSQL could not parse either."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    match = _NAME_RE.match(line)
    if match is None:
        return None
    name, rest = match[1].lower(), line[match.end():]
    if rest.startswith("'"):
        value, rest = _quoted(rest)
        if value is None:
            return None
    else:
        token = re.match(r"[^\s#']*", rest)
        value = token[0] if token else ""
        rest = rest[len(value):]
    rest = rest.strip()
    if rest and not rest.startswith("#"):
        return None
    return name, value


_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _quoted(text: str) -> tuple[str | None, str]:
    """A single-quoted value at the start of ``text`` (quotes doubled or
    backslash-escaped), and what follows it; (None, text) when unterminated."""
    out: list[str] = []
    i = 1
    while i < len(text):
        char = text[i]
        if char == "'":
            if text[i + 1 : i + 2] == "'":
                out.append("'")
                i += 2
                continue
            return "".join(out), text[i + 1 :]
        if char == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            octal = re.match(r"[0-7]{1,3}", text[i + 1 :])
            if octal:
                out.append(chr(int(octal[0], 8)))
                i += 1 + len(octal[0])
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(char)
        i += 1
    return None, text


def parse_int(text: str) -> int | None:
    """An integer setting as PostgreSQL reads it (``strtol`` base 0: ``0x`` hex, a
    leading 0 octal; else a number rounded to the nearest integer)."""
    value = text.strip()
    match = re.fullmatch(r"([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", value)
    if match:
        body = match[2]
        if body[:2].lower() == "0x":
            number = int(body, 16)
        elif body.startswith("0"):
            number = int(body, 8)
        else:
            number = int(body)
        return -number if match[1] == "-" else number
    try:
        real = float(value)
    except ValueError:
        return None
    return round(real) if math.isfinite(real) else None


def controldata_identifier(output: str) -> int | None:
    """'Database system identifier' from ``pg_controldata`` output."""
    for line in output.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Database system identifier":
            number = parse_int(value)
            return None if number is None else number & UINT64_MASK
    return None


def control_file_identifier(data_dir: Path) -> int | None:
    """The system identifier at the start of ``global/pg_control`` (what pg_controldata
    prints first), read without PostgreSQL's binaries; None when unreadable."""
    try:
        with (data_dir / "global" / "pg_control").open("rb") as f:
            head = f.read(8)
    except OSError:
        return None
    if len(head) < 8:
        return None
    # The control file is written in the server's native byte order.
    return int(struct.unpack("<Q" if sys.byteorder == "little" else ">Q", head)[0])


# ---------------------------------------------------------------- messages


def _fix(node: str) -> str:
    return f"fix data_dir in {node}'s [nodes.driver] table"


def state_problem(node: str, data_dir: Path, state: DirState, expected_port: int | None) -> str:
    """Why a directory in ``state`` cannot be proven to be ``node``'s ('' for a data
    directory, which the port and system identifier then have to prove)."""
    wanted = f"{node}'s data directory" + (
        f", its server on port {expected_port}" if expected_port is not None else ""
    )
    if state == "missing":
        return (f"{data_dir} does not exist (expected {wanted}); {_fix(node)}, or re-clone "
                f"{node} (a base backup into a missing directory needs no proof)")
    if state == "empty":
        return (f"{data_dir} is empty (expected {wanted}); {_fix(node)}, or re-clone {node} "
                "(a base backup into an empty directory needs no proof)")
    if state == "not_a_directory":
        return f"{data_dir} is not a directory (expected {wanted}); {_fix(node)}"
    if state == "unreadable":
        return (f"cannot look into {data_dir} (expected {wanted}); check its owner and "
                "mode, or " + _fix(node))
    if state == "not_pgdata":
        return (f"{data_dir} is not a PostgreSQL data directory, it has no PG_VERSION "
                f"(expected {wanted}); {_fix(node)}")
    return ""


def port_problem(node: str, data_dir: Path, reading: PortReading, expected: int) -> str:
    """'' when ``reading`` shows ``expected`` (the port of the node's DSN); else what
    was found, what was expected and the fix."""
    if reading.port is None:
        return (f"cannot prove {data_dir} is {node}'s data directory: the port its server "
                f"would run on cannot be told ({reading.problem}); {node}'s dsn names port "
                f"{expected}; fix the configuration file named, or set port = {expected} "
                f"in {data_dir / AUTO_CONF}")
    if reading.port != expected:
        return (f"{data_dir} is not {node}'s data directory: {reading.describe()}, but "
                f"{node}'s dsn names port {expected}; {_fix(node)} (or its dsn) so both "
                "name the same server")
    return ""


def identifier_problem(
    node: str, data_dir: Path | str, found: int | None, expected: int, how: str, why: str = ""
) -> str:
    """'' when ``found`` (the directory's system identifier) is ``expected``; else what
    was found, what was expected and the fix."""
    if found is None:
        return (f"cannot prove {data_dir} is {node}'s data directory: its system identifier "
                f"cannot be read ({why or 'unknown'}); the cluster's is {expected} ({how}); "
                f"fix: make sure `pg_controldata -D {data_dir}` works")
    if found != expected:
        return (f"{data_dir} is not {node}'s data directory: its control file names system "
                f"identifier {found}, but the cluster's is {expected} ({how}); {_fix(node)}, "
                f"or re-clone {node} if its data belongs to another cluster")
    return ""
