"""The command line's exit codes (docs/cli.md) and the one way to leave with one.

* 0 — done;
* 1 — refused or failed (a request the controller refused, an action that
  failed, no node reachable, the service stopped on a failure, a confirmation
  answered no);
* 2 — bad usage or an invalid configuration file (also a missing or wrong API
  token, and a request the API rejects as malformed);
* 3 — the controller's API is not reachable (commands that need it).
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def exit_with(code: int, message: str | None = None) -> NoReturn:
    """Exit ``code``, saying ``message`` first (on stderr unless the code is 0)."""
    if message:
        click.echo(message, err=code != EXIT_OK)
    sys.exit(code)
