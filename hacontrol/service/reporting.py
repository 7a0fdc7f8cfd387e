"""Journaling and logging what the controller decides and does."""

from __future__ import annotations

import logging
from typing import Any

import structlog

from hacontrol.core.actions import Action, ActionOutcome
from hacontrol.core.events import Event, Severity
from hacontrol.core.results import OutcomeStatus
from hacontrol.io.journal import Journal

log = structlog.get_logger("hacontrol")

_LEVELS = {
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_SEVERITY_LEVEL = {
    Severity.INFO: "info",
    Severity.WARNING: "warning",
    Severity.CRITICAL: "critical",
}


def level(name: str) -> int:
    """The logging level called ``name`` (info, warning, error, critical)."""
    return _LEVELS[name]


def record_events(journal: Journal, events: tuple[Event, ...]) -> None:
    """Journal and log the core's events, in order."""
    for event in events:
        journal.append(
            event.kind,
            node=event.node,
            severity=str(event.severity),
            message=event.message,
            details=dict(event.details),
        )
        log.log(
            level(_SEVERITY_LEVEL[event.severity]),
            event.kind,
            node=event.node,
            message=event.message,
            **{k: v for k, v in event.details.items() if k not in ("node", "message")},
        )


def record_step(journal: Journal, kind: str, fields: dict[str, Any]) -> None:
    """Journal and log one step of a procedure (its output only in the journal)."""
    journal.append(kind, **fields)
    failed = fields.get("ok") is False
    log.log(level("warning" if failed else "info"), kind,
            **{k: v for k, v in fields.items() if k != "output"})


def report_broken_invariants(
    journal: Journal, broken: list[str], already: tuple[str, ...]
) -> tuple[str, ...]:
    """Journal (critical) and log what the decision broke, once each time the set of
    broken invariants changes; the set broken now. A broken invariant is a bug of the
    decision core, never an operator's mistake: the record is there to report it."""
    now = tuple(broken)
    if now and now != already:
        message = "decision core invariant broken: " + "; ".join(now)
        journal.append("invariant_broken", severity="critical", message=message,
                       broken=list(now))
        log.critical("invariant_broken", message=message)
    return now


def record_action_started(journal: Journal, action: Action) -> None:
    """Journal and log that ``action`` is being carried out, and why."""
    name = type(action).__name__
    journal.append("action_started", action=name, node=action.node, reason=action.reason)
    log.info("action_started", action=name, node=action.node, reason=action.reason)


def record_action_finished(journal: Journal, action: Action, outcome: ActionOutcome) -> None:
    """Journal and log how ``action`` ended (an error unless it succeeded)."""
    name, node = type(action).__name__, action.node
    journal.append("action_finished", action=name, node=node, status=str(outcome.status),
                   detail=outcome.detail)
    failed = outcome.status is not OutcomeStatus.SUCCEEDED
    log.log(level("error" if failed else "info"), "action_finished", action=name, node=node,
            status=str(outcome.status), detail=outcome.detail)
