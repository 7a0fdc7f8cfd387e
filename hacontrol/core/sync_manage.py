"""Keeping the primary's synchronous set: the round's step, and a failed ConfigureSync."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hacontrol.core.actions import ActionOutcome, ConfigureSync
from hacontrol.core.draft import Round
from hacontrol.core.events import EventKind, Severity
from hacontrol.core.model import Observation
from hacontrol.core.results import OutcomeStatus
from hacontrol.core.settings import DecisionSettings
from hacontrol.core.standby_names import parse_standby_names, same_set
from hacontrol.core.state import ControllerState, SyncQuorum
from hacontrol.core.sync import SyncTarget, desired_standbys, quorum_mode, requested
from hacontrol.core.topology import writable

__all__ = ["manage_sync", "sync_outcome"]



def _report_sync(r: Round, primary: str, target: SyncTarget, active_before: list[str]) -> None:
    details: dict[str, Any] = {
        "value": target.value,
        "members": list(target.members),
        "quorum": r.settings.sync_quorum,
    }
    if target.blocked:
        r.condition(
            f"sync_blocked:{primary}",
            EventKind.SYNC_WRITES_BLOCKED,
            primary,
            f"writes on {primary} are blocked: {target.reason}",
            Severity.CRITICAL,
            **details,
        )
    elif target.degraded:
        r.condition(
            f"sync_degraded:{primary}:{len(target.members)}",
            EventKind.SYNC_DEGRADED,
            primary,
            f"synchronous replication on {primary} degraded: {target.reason}",
            Severity.CRITICAL if not target.members else Severity.WARNING,
            **details,
        )
    elif active_before:
        r.emit(
            EventKind.SYNC_RESTORED,
            primary,
            f"synchronous replication on {primary} restored: {target.reason}",
            Severity.WARNING,
            **details,
        )


def _request_sync(r: Round, primary: str, obs: Observation, target: SyncTarget) -> None:
    """Ask the primary for ``target`` unless it uses it or was asked just now."""
    seen = parse_standby_names(obs.synchronous_standby_names, primary, r.names)
    wanted = SyncQuorum(target.quorum.members, target.quorum.k, target.quorum.method)
    draft = r.draft
    if same_set(seen, wanted) and seen is not None:
        r.draft = replace(draft, sync_requested=None, sync_requested_at=None)
        return
    if (
        draft.sync_requested == target.value
        and draft.sync_requested_at is not None
        and r.at - draft.sync_requested_at < r.settings.repoint_retry_s
    ):
        return
    now = obs.synchronous_standby_names or "''"
    if r.act(ConfigureSync(primary, target.value, f"{target.reason} (was {now})")):
        r.draft = replace(
            draft,
            sync_requested=target.value,
            sync_requested_at=r.at,
            sync_pending=requested(draft.sync_pending, wanted),
        )


def manage_sync(r: Round) -> None:
    """Quorum mode: keep the primary's synchronous set on the fit replicas, with an
    event when it degrades (or, strict, blocks writes) and when it is restored."""
    primary = r.primary
    obs = r.obs(primary)
    prefix = f"sync_degraded:{primary}:", f"sync_blocked:{primary}"
    active_before = [k for k in r.old.conditions if k.startswith(prefix)]
    if (
        not quorum_mode(r.settings)
        or primary is None
        or r.in_flight is not None
        or obs is None
        or not writable(obs)
        or obs.synchronous_standby_names is None
    ):
        if primary is not None and not r.primary_changed:
            r.kept_conditions.update(active_before)
        return
    target = desired_standbys(primary, r.view, r.state(), r.names, r.settings)
    _report_sync(r, primary, target, active_before)
    _request_sync(r, primary, obs, target)


def sync_outcome(
    state: ControllerState, outcome: ActionOutcome, at: float, settings: DecisionSettings
) -> ControllerState:
    """A ConfigureSync that failed is asked again after the retry delay. Only when it
    certainly changed nothing (not attempted) is its set no longer consulted."""
    action = outcome.action
    assert isinstance(action, ConfigureSync)
    if outcome.status is OutcomeStatus.SUCCEEDED or outcome.attempted:
        return state
    wanted = parse_standby_names(action.value, action.node, state.nodes)
    pending = state.sync_pending
    if (
        wanted is not None
        and pending
        and pending[0].until_lsn is None
        and same_set(pending[0], wanted)
    ):
        pending = pending[1:]
    return replace(state, sync_pending=pending, sync_requested=None, sync_requested_at=None)
