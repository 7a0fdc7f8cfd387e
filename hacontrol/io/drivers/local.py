"""The ``local`` driver: a data directory and PostgreSQL binaries on this host.

Programs (pg_ctl, pg_rewind, pg_basebackup, pg_controldata) run as the data
directory's owner; when we are root the child switches uid itself
(:mod:`hacontrol.io.host.runas`). Passwords never go on a command line: a DSN's
password travels in PGPASSWORD.

pg_rewind and pg_basebackup copy the source's configuration files over the
node's own; the node's top-level ``*.conf`` files (port, pg_hba, auto.conf ...)
are put back afterwards unless ``keep_config`` is off.

Before a stop, start, rewind, re-clone or standby configuration the driver
proves the data directory is the node's (:mod:`hacontrol.io.drivers.identity`):
its port must be the one of the node's DSN and, once the cluster's system
identifier is known, its control file must name that one. Otherwise the step is
refused and nothing runs. The file work is in :mod:`hacontrol.io.drivers.datadir`.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import time
from collections.abc import Sequence
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from hacontrol.io.drivers.base import STOP_MODES, DriverResult, NodeDriver, Step, refusal
from hacontrol.io.drivers.config import LocalDriverConfig
from hacontrol.io.drivers.datadir import (
    PROMOTE_SIGNAL,
    clean_shutdown_lsn,
    free_name,
    log_since,
    read_config,
    remove_tree,
    stale_lock_users,
    write_config,
    write_standby_files,
)
from hacontrol.io.drivers.identity import (
    controldata_identifier,
    directory_port,
    directory_state,
    identifier_problem,
    port_problem,
    postmaster_alive,
    state_problem,
)
from hacontrol.io.host.runas import Owner, data_owner
from hacontrol.io.proc import last_line, run_program, scrub, wait_or_kill

# pg_ctl status: 0 running, 3 not running, 4 no data directory.
_PG_CTL_STOPPED = (3, 4)


def default_bindir() -> Path:
    """$PG_BINDIR, ``pg_config --bindir``, then the newest /usr/lib/postgresql/*/bin."""
    from hacontrol.io.host.pgbin import find_pgbin

    return find_pgbin().bindir


def split_password(dsn: str) -> tuple[str, dict[str, str]]:
    """``dsn`` without its password, and the environment that carries it instead."""
    params = conninfo_to_dict(dsn)
    password = params.pop("password", None)
    if not password:
        return dsn, {}
    clean = make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})
    return clean, {"PGPASSWORD": str(password)}


class LocalDriver(NodeDriver):
    """pg_ctl / pg_rewind / pg_basebackup on this host, as the data directory's owner."""

    capabilities = frozenset(
        {Step.STOP, Step.START, Step.STATUS, Step.REWIND, Step.BASEBACKUP, Step.STANDBY_CONFIG,
         Step.DISCARD_PROMOTE, Step.IDENTITY}
    )

    def __init__(
        self,
        node: str,
        data_dir: str | Path,
        *,
        bindir: str | Path | None = None,
        os_user: str | None = None,
        log_file: str | Path | None = None,
        restore_target_wal: bool | None = None,
        keep_config: bool = True,
        timeout: float = 60.0,
        basebackup_timeout: float = 3600.0,
        basebackup_args: Sequence[str] = (),
        expected_port: int | None = None,
        system_identifier: int | None = None,
    ) -> None:
        self.node = node
        # None only for callers that know the directory is right (tests, drills): the
        # configuration always gives the port of the node's DSN.
        self.expected_port = expected_port
        self.pinned_system_identifier = system_identifier
        self.data_dir = Path(data_dir)
        self._bindir = Path(bindir) if bindir is not None else None
        self.os_user = os_user
        self.log_file = Path(log_file) if log_file else Path(f"{self.data_dir}.log")
        self.restore_target_wal = restore_target_wal
        self.keep_config = keep_config
        self.timeout = timeout
        self.basebackup_timeout = basebackup_timeout
        # Extra pg_basebackup arguments (e.g. --no-sync for throwaway test clusters).
        self.basebackup_args = tuple(basebackup_args)

    @classmethod
    def from_config(
        cls,
        cfg: LocalDriverConfig,
        node: str,
        *,
        expected_port: int | None = None,
        system_identifier: int | None = None,
    ) -> LocalDriver:
        """A driver built from a ``[nodes.driver]`` table with ``kind = "local"``;
        ``expected_port``: the port of the node's DSN."""
        return cls(
            node,
            cfg.data_dir,
            bindir=cfg.bindir,
            os_user=cfg.os_user,
            log_file=cfg.log_file,
            restore_target_wal=cfg.restore_target_wal,
            keep_config=cfg.keep_config,
            timeout=cfg.timeout,
            basebackup_timeout=cfg.basebackup_timeout,
            expected_port=expected_port,
            system_identifier=system_identifier,
        )

    def describe(self) -> str:
        return f"local driver ({self.data_dir})"

    # -- plumbing

    @property
    def bindir(self) -> Path:
        """The PostgreSQL ``bin`` directory (found once, on first use)."""
        if self._bindir is None:
            self._bindir = default_bindir()
        return self._bindir

    def owner(self) -> Owner:
        """Who runs the programs: ``os_user``, else the data directory's owner (as root),
        else the current user."""
        if os.geteuid() != 0:
            return data_owner()
        if self.os_user:
            return data_owner(self.os_user, create=False)
        where = self.data_dir if self.data_dir.exists() else self.data_dir.parent
        entry = pwd.getpwuid(where.stat().st_uid)
        return Owner(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)

    async def _pg(
        self,
        step: Step | str,
        program: str,
        *args: str,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
        secrets: Sequence[str] = (),
    ) -> DriverResult:
        limit = timeout or self.timeout
        try:
            owner = self.owner()
            if owner.uid == 0:
                return DriverResult(str(step), False, f"{self.data_dir} is owned by root; "
                                    "PostgreSQL refuses to run as root")
            argv = [str(self.bindir / program), *args]
        except Exception as exc:  # no binaries, unknown user, no data directory
            return DriverResult(str(step), False, f"cannot run {program}: {exc}")
        proc = await run_program(
            argv,
            timeout=limit,
            env=owner.env(env),
            cwd=self._cwd(owner),
            popen_kwargs=owner.popen_kwargs(),
            secrets=secrets,
        )
        if proc.timed_out:
            return DriverResult(str(step), False, f"{program} did not finish within {limit:g} s",
                                proc.output, proc.duration_s, timed_out=True)
        if proc.returncode is None:
            return DriverResult(str(step), False, f"{program}: {proc.output}",
                                duration_s=proc.duration_s)
        ok = proc.returncode == 0
        detail = f"{program} exited with {proc.returncode}"
        if not ok and last_line(proc.output):
            detail += f": {last_line(proc.output)}"
        return DriverResult(str(step), ok, detail, proc.output, proc.duration_s,
                            returncode=proc.returncode)

    def _cwd(self, owner: Owner) -> str | None:
        # Our own working directory may be closed to the server's user.
        parent = self.data_dir.parent
        return str(parent) if parent.is_dir() else None

    # -- identity

    async def verify_identity(
        self, step: Step | str = Step.IDENTITY, *, absent_ok: bool = False
    ) -> DriverResult:
        """Prove ``data_dir`` is this node's: a data directory whose server runs (or
        would run) on ``expected_port`` and, once known, whose control file names the
        cluster's system identifier. ``absent_ok``: a missing or empty directory
        passes (a base backup into it replaces nothing)."""
        started = time.monotonic()
        state = directory_state(self.data_dir)
        if absent_ok and state in ("missing", "empty"):
            what = "does not exist" if state == "missing" else "is empty"
            return DriverResult(str(Step.IDENTITY), True, f"nothing to prove: {self.data_dir} "
                                f"{what}")
        problem = state_problem(self.node, self.data_dir, state, self.expected_port)
        if problem:
            return refusal(step, self.node, problem)
        shown: list[str] = []
        if self.expected_port is not None:
            reading = directory_port(self.data_dir)
            problem = port_problem(self.node, self.data_dir, reading, self.expected_port)
            if problem:
                return refusal(step, self.node, problem)
            shown.append(reading.describe())
        expected, how, conflict = self.expected_system_identifier()
        if conflict:
            return refusal(step, self.node, conflict)
        if expected is not None:
            found, why = await self._system_identifier()
            problem = identifier_problem(self.node, self.data_dir, found, expected, how, why)
            if problem:
                return refusal(step, self.node, problem, time.monotonic() - started)
            shown.append(f"its system identifier is {found}")
        proven = "; ".join(shown) if shown else "a data directory (nothing more to check)"
        return DriverResult(str(Step.IDENTITY), True, f"{self.data_dir} is {self.node}'s: "
                            f"{proven}", duration_s=time.monotonic() - started)

    async def _system_identifier(self) -> tuple[int | None, str]:
        """The directory's system identifier by pg_controldata, or (None, why not)."""
        result = await self._pg(Step.IDENTITY, "pg_controldata", "-D", str(self.data_dir),
                                timeout=min(self.timeout, 30.0))
        if not result.ok:
            return None, result.detail
        found = controldata_identifier(result.output)
        return found, "" if found is not None else "no 'Database system identifier' line"

    async def _checked_status(self, step: Step) -> tuple[DriverResult, DriverResult]:
        # Both only read: side by side, the proof costs a stop no extra time.
        state, proof = await asyncio.gather(self.status(), self.verify_identity(step))
        return state, proof

    # -- steps

    async def status(self) -> DriverResult:
        # One notion of "stopped" for every step: no lock file, or one whose postmaster
        # is gone or a zombie (a SIGKILLed postmaster nobody reaped yet, which pg_ctl
        # status still counts as running).
        pidfile = self.data_dir / "postmaster.pid"
        if not pidfile.exists() or not postmaster_alive(pidfile):
            detail = "stopped" if not pidfile.exists() else (
                "stopped (the postmaster in postmaster.pid is gone or a zombie)"
            )
            return DriverResult("status", True, detail, running=False)
        result = await self._pg(Step.STATUS, "pg_ctl", "status", "-D", str(self.data_dir))
        if result.returncode == 0:
            return DriverResult("status", True, "running", result.output, result.duration_s,
                                running=True, returncode=0)
        if result.returncode in _PG_CTL_STOPPED:
            return DriverResult("status", True, "stopped", result.output, result.duration_s,
                                running=False, returncode=result.returncode)
        return result

    def _clear_stale_lock(self) -> DriverResult | None:
        """Remove the lock file of a postmaster that is a zombie (the server refuses to
        start while its PID exists), unless a process still works in the directory (an
        orphaned backend); None when the start may go on."""
        found = stale_lock_users(self.data_dir)
        if found is None or not found[1]:
            return None
        pid, users = found
        return DriverResult("start", False, f"not started: the postmaster {pid} is a zombie"
                            f" but process(es) {', '.join(map(str, users))} still work in"
                            f" {self.data_dir}; wait for them to exit")

    async def stop(self, mode: str = "fast") -> DriverResult:
        if mode not in STOP_MODES:
            return DriverResult("stop", False, f"unknown stop mode {mode!r}")
        state, proof = await self._checked_status(Step.STOP)
        if not proof.ok:
            return proof
        if state.running is False:
            return DriverResult("stop", True, "already stopped", duration_s=state.duration_s)
        started = time.monotonic()
        # pg_ctl's own wait polls every 100 ms; a switchover's write-unavailability
        # window includes this stop, so signal with pg_ctl and watch the lock file,
        # which the postmaster removes as it exits.
        result = await self._pg(
            Step.STOP, "pg_ctl", "stop", "-D", str(self.data_dir), "-m", mode, "-W",
        )
        if not result.ok:
            return result
        pidfile = self.data_dir / "postmaster.pid"
        deadline = started + self.timeout
        # A postmaster that was SIGKILLed never removes its lock file: its PID
        # being gone (or a zombie) counts as stopped too.
        while pidfile.exists() and postmaster_alive(pidfile):
            if time.monotonic() >= deadline:
                return DriverResult("stop", False, f"still running {self.timeout:g} s after "
                                    f"the {mode} shutdown request", result.output,
                                    time.monotonic() - started, timed_out=True)
            await asyncio.sleep(0.005)
        return DriverResult("stop", True, f"stopped ({mode})", result.output,
                            time.monotonic() - started, returncode=0)

    async def start(self) -> DriverResult:
        state, proof = await self._checked_status(Step.START)
        if not proof.ok:
            return proof
        if state.running:
            return DriverResult("start", True, "already running", duration_s=state.duration_s)
        cleared = self._clear_stale_lock()
        if cleared is not None:
            return cleared
        started = time.monotonic()
        try:
            owner = self.owner()
            argv = [str(self.bindir / "pg_ctl"), "start", "-D", str(self.data_dir), "-w",
                    "-t", str(max(1, int(self.timeout)))]
            log = self.log_file.open("ab")
        except Exception as exc:
            return DriverResult("start", False, f"cannot start: {exc}")
        # The server's output goes to the log file, opened here: the file then need
        # not be writable by the server's user, and no pipe is held open by it.
        with log:
            offset = log.tell()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    env=owner.env(),
                    cwd=self._cwd(owner),
                    start_new_session=True,
                    **owner.popen_kwargs(),
                )
            except OSError as exc:
                return DriverResult("start", False, f"cannot run pg_ctl: {exc}")
            code = await wait_or_kill(proc, self.timeout + 5)
            if code is None:
                return DriverResult("start", False, f"pg_ctl start did not finish within "
                                    f"{self.timeout + 5:g} s", log_since(self.log_file, offset),
                                    time.monotonic() - started, timed_out=True)
        output = log_since(self.log_file, offset)
        elapsed = time.monotonic() - started
        if code == 0:
            return DriverResult("start", True, "started", output, elapsed, returncode=0)
        detail = f"pg_ctl start exited with {code}"
        if last_line(output):
            detail += f": {last_line(output)}"
        return DriverResult("start", False, detail, output, elapsed, returncode=code)

    async def rewind(self, source_dsn: str) -> DriverResult:
        state, proof = await self._checked_status(Step.REWIND)
        if not proof.ok:
            return proof
        if state.running is not False:
            why = "the server is running" if state.running else state.detail
            return DriverResult("rewind", False, f"not rewinding: {why}; stop it first")
        dsn, env = split_password(source_dsn)
        args = ["-D", str(self.data_dir), f"--source-server={dsn}"]
        use_restore = self.restore_target_wal
        if use_restore is None:
            use_restore = await self._has_restore_command()
        if use_restore:
            args.append("--restore-target-wal")
        kept = self._read_config()
        result = await self._pg(
            Step.REWIND, "pg_rewind", *args, env=env, secrets=list(env.values())
        )
        self._write_config(self.data_dir, kept)
        if result.ok:
            summary = "no rewind required" if "no rewind required" in result.output else "rewound"
            extra = " (with --restore-target-wal)" if use_restore else ""
            return DriverResult("rewind", True, f"{summary}{extra}", result.output,
                                result.duration_s, returncode=0)
        return result

    async def _has_restore_command(self) -> bool:
        result = await self._pg(
            Step.REWIND, "postgres", "-C", "restore_command", "-D", str(self.data_dir),
            timeout=min(self.timeout, 30.0),
        )
        return result.ok and bool(result.output.strip())

    async def basebackup(self, source_dsn: str) -> DriverResult:
        # The old directory is renamed away, never deleted; still, only the node's own
        # may be replaced. A missing or empty one has nothing to prove.
        state, proof = await asyncio.gather(
            self.status(), self.verify_identity(Step.BASEBACKUP, absent_ok=True)
        )
        if not proof.ok:
            return proof
        if state.running is not False:
            why = "the server is running" if state.running else state.detail
            return DriverResult("basebackup", False, f"not cloning: {why}; stop it first")
        stamp = time.strftime("%Y%m%dT%H%M%S")
        new = free_name(self.data_dir, f".new-{stamp}")
        old = free_name(self.data_dir, f".old-{stamp}")
        try:
            owner = self.owner()
            new.mkdir(mode=0o700)
            owner.chown(new)
        except Exception as exc:
            return DriverResult("basebackup", False, f"cannot create {new}: {exc}")
        dsn, env = split_password(source_dsn)
        result = await self._pg(
            Step.BASEBACKUP, "pg_basebackup", "-D", str(new), "-d", dsn, "-X", "stream",
            "-c", "fast", *self.basebackup_args,
            timeout=self.basebackup_timeout, env=env, secrets=list(env.values()),
        )
        if not result.ok:
            # Only the half-written new copy goes; the node's data stays where it was.
            remove_tree(new)
            return result
        try:
            if self.keep_config and self.data_dir.exists():
                self._write_config(new, self._read_config())
            if self.data_dir.exists():
                self.data_dir.rename(old)
            new.rename(self.data_dir)
        except OSError as exc:
            return DriverResult("basebackup", False, f"base backup in {new}, but swapping it in "
                                f"failed: {exc}", result.output, result.duration_s)
        return DriverResult("basebackup", True, f"fresh base backup; old data directory kept "
                            f"as {old}", result.output, result.duration_s, returncode=0)

    def _read_config(self) -> dict[str, bytes]:
        return read_config(self.data_dir) if self.keep_config else {}

    def _write_config(self, target: Path, kept: dict[str, bytes]) -> None:
        write_config(target, kept, self.owner() if kept else None)

    async def write_standby_config(
        self, primary_conninfo: str, primary_slot_name: str = ""
    ) -> DriverResult:
        started = time.monotonic()
        # standby.signal and a read-only default in the new primary's directory would
        # demote it at its next restart or reload.
        proof = await self.verify_identity(Step.STANDBY_CONFIG)
        if not proof.ok:
            return proof
        try:
            write_standby_files(self.data_dir, primary_conninfo, self.owner(),
                                primary_slot_name)
        except Exception as exc:
            return DriverResult("standby_config", False, scrub(f"cannot write standby "
                                f"configuration: {exc}"), duration_s=time.monotonic() - started)
        return DriverResult("standby_config", True, "standby.signal and primary_conninfo written",
                            duration_s=time.monotonic() - started)

    async def discard_promote(self) -> DriverResult:
        started = time.monotonic()
        state, proof = await asyncio.gather(self.status(), self.verify_identity(
            Step.DISCARD_PROMOTE))
        if not proof.ok:
            return proof
        if state.running is not False:
            return DriverResult(str(Step.DISCARD_PROMOTE), False, "the server is not known to"
                                " be stopped; stop it first", duration_s=time.monotonic() - started)
        signal_file = self.data_dir / PROMOTE_SIGNAL
        try:
            present = signal_file.exists()
            signal_file.unlink(missing_ok=True)
        except OSError as exc:
            return DriverResult(str(Step.DISCARD_PROMOTE), False, scrub(f"cannot remove"
                                f" {signal_file}: {exc}"), duration_s=time.monotonic() - started)
        detail = f"{PROMOTE_SIGNAL} removed" if present else f"no {PROMOTE_SIGNAL} left"
        return DriverResult(str(Step.DISCARD_PROMOTE), True, detail,
                            duration_s=time.monotonic() - started)

    async def final_lsn(self) -> int | None:
        """The end of WAL of a cleanly shut down node (its shutdown checkpoint), else None
        (also when the directory is not proven to be the node's)."""
        if self.expected_port is not None:
            reading = directory_port(self.data_dir)
            if port_problem(self.node, self.data_dir, reading, self.expected_port):
                return None
        result = await self._pg("controldata", "pg_controldata", "-D", str(self.data_dir))
        if not result.ok:
            return None
        expected, _, conflict = self.expected_system_identifier()
        if conflict or (
            expected is not None and controldata_identifier(result.output) != expected
        ):
            return None
        return clean_shutdown_lsn(result.output)

