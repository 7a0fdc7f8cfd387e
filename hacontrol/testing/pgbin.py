"""Finding the machine's PostgreSQL server binaries."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

APT_HINT = "install the server binaries, e.g. `apt-get install -y postgresql` (Debian/Ubuntu)"
REQUIRED = ("initdb", "postgres", "pg_basebackup")
MIN_MAJOR = 13


class PgBinError(RuntimeError):
    """No usable PostgreSQL server binaries."""


@dataclass(frozen=True, slots=True)
class PgBin:
    """One PostgreSQL installation's ``bin`` directory."""

    bindir: Path
    major: int

    def path(self, program: str) -> str:
        """Absolute path of ``program`` (``initdb``, ``postgres``, ``pg_rewind`` ...)."""
        return str(self.bindir / program)


def _major_of(bindir: Path) -> int:
    out = subprocess.run(
        [str(bindir / "postgres"), "--version"],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    if match is None:
        raise PgBinError(f"cannot read the version of {bindir / 'postgres'}: {out.strip()!r}")
    return int(match.group(1))


def _has_server(bindir: Path) -> bool:
    return all(os.access(bindir / p, os.X_OK) for p in REQUIRED)


def candidate_bindirs() -> list[Path]:
    """Where to look, best first: $PG_BINDIR, ``pg_config --bindir``, then the newest
    ``/usr/lib/postgresql/*/bin``."""
    found: list[Path] = []
    env = os.environ.get("PG_BINDIR")
    if env:
        found.append(Path(env))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out:
            found.append(Path(out))

    def version_key(p: str) -> int:
        m = re.search(r"/postgresql/(\d+)/", p)
        return int(m.group(1)) if m else 0

    for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version_key, reverse=True):
        found.append(Path(p))
    return found


def find_pgbin() -> PgBin:
    """The PostgreSQL server binaries to use; :class:`PgBinError` naming the package
    to install when there are none."""
    for bindir in candidate_bindirs():
        if _has_server(bindir):
            major = _major_of(bindir)
            if major < MIN_MAJOR:
                continue
            return PgBin(bindir, major)
    raise PgBinError(
        f"no PostgreSQL >= {MIN_MAJOR} server binaries (initdb, postgres, pg_basebackup) found "
        f"via $PG_BINDIR, pg_config --bindir or /usr/lib/postgresql/*/bin; {APT_HINT}"
    )
