"""Running PostgreSQL programs as the owner of the data directory.

PostgreSQL refuses to run as root. When we are root, programs run as the
``postgres`` OS user (created when missing): the child switches uid/gid itself
after fork (``subprocess`` ``user=``/``group=``), which costs nothing compared
with ``runuser``/``su`` and keeps the PID we get the PID of the program.
Otherwise they run as the current user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

DEFAULT_OS_USER = "postgres"


@dataclass(frozen=True, slots=True)
class Owner:
    """The OS user PostgreSQL processes and files belong to."""

    name: str
    uid: int
    gid: int
    home: str

    @property
    def is_current(self) -> bool:
        """True when no uid switch is needed."""
        return self.uid == os.geteuid()

    def chown(self, path: str | Path) -> None:
        """Give ``path`` (not recursively) to this owner, when we are allowed to."""
        if not self.is_current:
            os.chown(path, self.uid, self.gid)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """An environment for a program run as this owner: our own, with HOME/USER
        pointing at the owner and libpq variables that could redirect it removed."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(HOME=self.home, USER=self.name, LOGNAME=self.name, LC_ALL="C")
        if "PG_BINDIR" in os.environ:
            env["PG_BINDIR"] = os.environ["PG_BINDIR"]
        if extra:
            env.update(extra)
        return env

    def popen_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`subprocess.Popen` that run the child as this owner."""
        if self.is_current:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def popen(
        self,
        argv: Sequence[str],
        *,
        cwd: str | Path | None = None,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        new_session: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` as this owner."""
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=self.env(env),
            start_new_session=new_session,
            **self.popen_kwargs(),
        )

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as this owner to completion; output captured; raises
        :class:`RunError` with the program's output on a non-zero exit."""
        try:
            proc = subprocess.run(
                list(argv),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=self.env(env),
                check=False,
                **self.popen_kwargs(),
            )
        except subprocess.TimeoutExpired as exc:
            raise RunError(f"{Path(argv[0]).name} did not finish within {timeout:g} s") from exc
        if proc.returncode != 0:
            out = (proc.stderr or proc.stdout or "").strip()
            raise RunError(f"{Path(argv[0]).name} exited with {proc.returncode}: {out[-2000:]}")
        return proc


class RunError(RuntimeError):
    """A PostgreSQL program failed."""


def _owner_of(entry: pwd.struct_passwd) -> Owner:
    return Owner(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def data_owner(os_user: str = DEFAULT_OS_USER, *, create: bool = True) -> Owner:
    """Who PostgreSQL runs as: ``os_user`` when we are root (created if missing and
    ``create``), else the current user."""
    if os.geteuid() != 0:
        return _owner_of(pwd.getpwuid(os.geteuid()))
    try:
        return _owner_of(pwd.getpwnam(os_user))
    except KeyError:
        if not create:
            raise
    useradd = shutil.which("useradd")
    if useradd is None:
        raise RunError(f"OS user {os_user!r} is missing and useradd is not available")
    subprocess.run(
        [useradd, "--system", "--user-group", "--home-dir", "/var/lib/postgresql",
         "--shell", "/bin/bash", os_user],
        check=True, capture_output=True, timeout=30,
    )
    return _owner_of(pwd.getpwnam(os_user))
