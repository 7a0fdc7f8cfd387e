"""Asking before a change of primary: what it is about to do, and the question."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import click

from hacontrol.cli.client import status_row
from hacontrol.cli.exit_codes import EXIT_FAILED, exit_with
from hacontrol.cli.render import human_bytes, terminal_width, wrap


def _interactive() -> bool:
    """Whether a person can see a question and answer it: stdin and stderr (where
    the question goes) are terminals. Scripts, pipes and captured runs are not."""
    try:
        return sys.stdin.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def change_plan(kind: str, before: Mapping[str, Any] | None, body: Mapping[str, Any]) -> list[str]:
    """What a switchover or failover is about to do, for the confirmation prompt."""
    old = before.get("primary") if before else None
    old_text = str(old) if old else "the current primary (unknown: the controller did not say)"
    target = body.get("to")
    if kind == "switchover":
        new = str(target) if target else "the best candidate (the controller picks it)"
        return [
            f"switchover: the primary moves from {old_text} to {new}.",
            "Writes pause briefly (usually a few seconds): the old primary stops taking"
            " writes, the new one catches up with it and is promoted, and clients reconnect"
            " to the new primary. No acknowledged write is lost.",
        ]
    old_row = status_row(before, old)
    if old and old_row:
        state = "writable" if old_row.get("health") == "ok" else str(old_row.get("health"))
        old_text = f"{old} ({state})"
    lag = status_row(before, target).get("lag_bytes")
    behind = f" ({target} was {human_bytes(int(lag))} behind at the last look)" if isinstance(
        lag, int) else ""
    lines = [
        f"failover: promote {target} now; the primary is {old_text}.",
        f"A failover can lose writes: what {old or 'the old primary'} acknowledged but"
        f" {target} had not received is gone once {target} is promoted{behind}. The old"
        " primary is fenced if it comes back.",
    ]
    if body.get("force"):
        lines.append("--force: the candidate checks (lag, health, priority, maintenance) are"
                     " overridden.")
    return lines


def confirm(plan: Sequence[str], yes: bool) -> None:
    """Ask before acting, on a terminal only: scripts (stdin not a terminal) and --yes
    go ahead without a question, as before."""
    if yes or not _interactive():
        return
    for line in plan:
        for part in wrap(line, terminal_width(), indent=""):
            click.echo(part, err=True)
    try:
        go = click.confirm("Proceed?", default=False, err=True)
    except click.Abort:
        go = False
    if not go:
        exit_with(EXIT_FAILED, "not done: nothing was changed")
