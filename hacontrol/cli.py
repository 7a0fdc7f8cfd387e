"""The `hacontrol` command line."""

from __future__ import annotations

import click

from hacontrol import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hacontrol")
def main() -> None:
    """hacontrol: keeps a PostgreSQL streaming-replication cluster writable."""
