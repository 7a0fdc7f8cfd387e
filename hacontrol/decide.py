"""The pure decision core: one probe round in, the next state and actions out.

No I/O, no clocks, no logging: time comes from ``ClusterView.at`` and
``Observation.at``. The rules (see docs/detection.md):

* the primary is failed only on sustained failure (``failure_threshold`` consecutive
  failed probes spanning ``detection_window_s``) and, holistically, only when every
  reachable replica confirms it lost the primary too;
* the candidate is the eligible replica with the most WAL, then priority, then name;
* never two writable primaries: a second writable primary is fenced every round it
  is seen, and no Promote is sent while any writable primary is seen;
* one failover in flight, a cool-down between failovers, paused means no actions
  but fences;
* events are emitted on transitions only.

Operator requests (pause, maintenance, manual failover, switchover, rejoin) go
through :func:`handle_request`, and failback is started by ``decide`` itself; see
docs/operations.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from psycopg import Error as PsycopgError
from psycopg.conninfo import conninfo_to_dict

from hacontrol.actions import (
    Action,
    ActionOutcome,
    CancelPromote,
    CandidateInfo,
    ConfigureSync,
    Decision,
    Event,
    Fence,
    ManualFailover,
    NodeRejoined,
    OutcomeStatus,
    Pause,
    Promote,
    Refusal,
    Rejoin,
    RejoinRequest,
    Repoint,
    Request,
    Resume,
    RunHook,
    SetMaintenance,
    Severity,
    Switchover,
    Unfence,
)
from hacontrol.model import (
    ClusterView,
    DecisionSettings,
    FailoverMode,
    NodeSpec,
    Observation,
    Role,
    WalReceiver,
    format_lsn,
)
from hacontrol.state import (
    REJOIN_ATTEMPTS,
    REJOIN_BACKOFF_S,
    REJOIN_MAX_WAIT_S,
    BlockReason,
    ControllerState,
    FailoverBlock,
    FailoverInFlight,
    NodeHealth,
    Operation,
    SyncQuorum,
    initial_state,
)
from hacontrol.syncrep import (
    desired_standbys,
    failover_quorum,
    parse_standby_names,
    post_failover_standbys,
    quorum_mode,
    requested,
    same_set,
    track_in_force,
)

__all__ = [
    "ControllerState",
    "Decision",
    "Endpoint",
    "apply_outcome",
    "confirm_failure",
    "decide",
    "endpoints",
    "handle_request",
    "initial_state",
    "preferred_node",
    "rank_candidates",
]

ROLE_CHANGE_HOOK = "on_role_change"
# Condition kinds that mean a needed failover is held back (see FailoverBlock).
_BLOCKING_KINDS = frozenset({
    "failure_not_confirmed", "failover_blocked", "manual_failover_needed",
    "quorum_not_reachable", "no_candidate", "no_primary",
})
# What an operator can do about each reason (the primary's name is filled in).
_WAY_OUT = {
    BlockReason.NOT_CONFIRMED: "if {primary} is really down (the replicas may be cut off from"
    " it too), fail over by hand: hacontrol failover --to NODE --force",
    BlockReason.NO_REPLICA: "make a replica reachable, or, if {primary} is really down:"
    " hacontrol failover --to NODE --force",
    BlockReason.PAUSED: "hacontrol resume",
    BlockReason.MAINTENANCE: "hacontrol maintenance {primary} off, or hacontrol failover"
    " --to NODE",
    BlockReason.MANUAL: "hacontrol failover --to NODE",
    BlockReason.ABANDONED_CANDIDATE: "let the abandoned candidate finish its promote, or stop"
    " it and remove its promote.signal, then hacontrol failover --to NODE --force",
    BlockReason.FENCE_FAILED: "fix the fence hook, or make sure {primary} is down and run"
    " hacontrol failover --to NODE --force",
    BlockReason.COOLDOWN: "wait for the cool-down to end, or hacontrol failover --to NODE",
    BlockReason.WRITABLE: "rejoin or stop the other primary (hacontrol rejoin NODE)",
    BlockReason.QUORUM_NOT_REACHABLE: "bring the missing synchronous replicas back; forcing a"
    " failover (hacontrol failover --to NODE --force) may lose acknowledged commits",
    BlockReason.NO_MAJORITY: "if {primary} is really down: hacontrol failover --to NODE --force",
    BlockReason.NO_CANDIDATE: "fix a candidate (lag, maintenance, priority, health), or"
    " hacontrol failover --to NODE --force",
    BlockReason.NO_PRIMARY: "hacontrol failover --to NODE (--force if it is refused)",
}
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_MIB = 1024 * 1024


def _size(n: int) -> str:
    """Bytes for people: ``40 MiB``, ``512 KiB``, ``100 B``."""
    if abs(n) >= _MIB:
        return f"{round(n / _MIB, 1):g} MiB"
    if abs(n) >= 1024:
        return f"{round(n / 1024, 1):g} KiB"
    return f"{n} B"


# --------------------------------------------------------------------------- endpoints


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One host/port a node can be reached at (host None: libpq's default socket)."""

    host: str | None
    port: int


def _norm_host(host: str | None) -> str | None:
    if host is None or host == "":
        return None
    text = host.strip().lower()
    return "loopback" if text in _LOOPBACK else text


def endpoints(dsn: str) -> tuple[Endpoint, ...]:
    """Every host/port pair of a libpq key/value string or URI (empty if unparsable)."""
    try:
        params = conninfo_to_dict(dsn)
    except (PsycopgError, ValueError):
        return ()

    def split(key: str) -> list[str]:
        value = params.get(key)
        return [part.strip() for part in str(value).split(",")] if value else []

    hosts, addrs, ports = split("host"), split("hostaddr"), split("port")
    result: list[Endpoint] = []
    for i in range(max(len(hosts), len(addrs), 1)):
        # libpq: one port applies to every host, otherwise one port per host.
        port_text = ports[0] if len(ports) == 1 else (ports[i] if i < len(ports) else "")
        try:
            port = int(port_text) if port_text else 5432
        except ValueError:
            continue
        names = [src[i] for src in (hosts, addrs) if i < len(src) and src[i]]
        result.extend(Endpoint(_norm_host(name), port) for name in names or [""])
    return tuple(dict.fromkeys(result))


def _node_endpoints(spec: NodeSpec) -> tuple[Endpoint, ...]:
    """Where replicas connect to ``spec``: its replication DSN, else its DSN (as
    resolved from a service file, when it names one)."""
    return endpoints(spec.address or spec.replication_dsn or spec.dsn)


def _receiver_matches(receiver: WalReceiver, targets: Iterable[Endpoint]) -> bool:
    """True when the receiver's upstream is one of ``targets`` (unknown parts match)."""
    host = _norm_host(receiver.sender_host)
    for target in targets:
        host_ok = host is None or target.host is None or host == target.host
        port_ok = receiver.sender_port is None or receiver.sender_port == target.port
        if host_ok and port_ok:
            return True
    return False


def _receiver_positively_at(receiver: WalReceiver, targets: Iterable[Endpoint]) -> bool:
    """True only when both host and port are known and equal to one of ``targets``."""
    host = _norm_host(receiver.sender_host)
    if host is None or receiver.sender_port is None:
        return False
    return any(t.host == host and t.port == receiver.sender_port for t in targets)


# --------------------------------------------------------------------------- helpers


def _reachable(obs: Observation | None) -> bool:
    return obs is not None and obs.reachable


def _is_primary(obs: Observation | None) -> bool:
    return obs is not None and obs.reachable and obs.role is Role.PRIMARY


def _writable(obs: Observation | None) -> bool:
    """A reachable primary that does not say it is read-only (unknown counts as writable)."""
    return _is_primary(obs) and obs is not None and obs.read_only is not True


def _is_replica(obs: Observation | None) -> bool:
    return obs is not None and obs.reachable and obs.role is Role.REPLICA


def _streaming(receiver: WalReceiver | None) -> bool:
    return receiver is not None and receiver.status == "streaming"


# --------------------------------------------------------------------------- confirmation


@dataclass(frozen=True, slots=True)
class Confirmation:
    """Whether the reachable replicas agree that the primary is gone."""

    # "confirmed", "not_confirmed" (a replica still hears it) or "no_replica".
    status: str
    # Per reachable replica: node -> "confirms: ...", "still hears ..." or "neutral: ...".
    replicas: Mapping[str, str]
    # The replicas that confirm, the configured nodes the controller cannot reach
    # (the primary aside), and how many confirmations a strict majority of the
    # configured nodes needs (floor(N/2) + 1).
    confirming: tuple[str, ...] = ()
    unreachable: tuple[str, ...] = ()
    needed: int = 1

    @property
    def majority(self) -> bool:
        """True when enough replicas confirm that the controller is on the majority
        side of any partition: the old primary's side cannot hold a majority too."""
        return len(self.confirming) >= self.needed

    def shortfall(self, primary: str, total: int) -> str:
        """Why the confirmations are not a majority, for events and refusals."""
        text = (
            f"only {len(self.confirming)} of the {total} configured nodes confirm that"
            f" {primary} is down (a strict majority needs {self.needed} confirming replicas)"
        )
        if self.unreachable:
            text += f"; unreachable: {', '.join(self.unreachable)}"
        quiet = sorted(n for n in self.replicas if n not in self.confirming)
        if quiet:
            text += f"; not confirming: {', '.join(quiet)}"
        return text


def confirm_failure(
    primary: str,
    view: ClusterView,
    specs: Mapping[str, NodeSpec],
    settings: DecisionSettings,
    history: Mapping[str, NodeHealth] | None = None,
) -> Confirmation:
    """Ask every reachable replica whether it lost ``primary`` too.

    A replica confirms when its WAL receiver is gone or not streaming, or when it
    has heard nothing from its upstream for longer than ``replica_silence_s``. A
    replica that streams from another configured node (cascading) neither confirms
    nor vetoes. Any other streaming, recently-heard replica vetoes.

    ``status`` says whether the reachable replicas agree; ``majority`` whether the
    confirming ones are a strict majority of the configured nodes, which an
    automatic failover needs as well (a controller cut off together with a
    minority must not promote on that minority's word).

    With ``history`` (the nodes' health), a replica confirms only if it was seen
    streaming from the primary within ``replica_silence_s`` before the primary's
    first failed probe of the current run: a replica that was already broken says
    nothing about the primary, so it neither confirms nor vetoes. A controller that
    never saw the primary healthy (it started while the primary was down) has no
    such history and judges from the current view alone.
    """
    own = history.get(primary) if history is not None else None
    failed_since = own.first_failure_at if own is not None else None
    if own is None or own.last_ok_at is None:
        history = None
    primary_spec = specs.get(primary)
    primary_eps = _node_endpoints(primary_spec) if primary_spec else ()
    verdicts: dict[str, str] = {}
    confirming: list[str] = []
    unreachable: list[str] = []
    vetoes = 0
    for name in sorted(specs):
        obs = view.get(name)
        if name != primary and not _reachable(obs):
            unreachable.append(name)
        if name == primary or not _is_replica(obs) or obs is None:
            continue
        receiver = obs.wal_receiver
        lost = receiver is None or receiver.status != "streaming" or (
            receiver.last_msg_age_s is not None
            and receiver.last_msg_age_s > settings.replica_silence_s
        )
        if lost and history is not None and not _was_streaming(
            history.get(name), primary, failed_since, settings
        ):
            verdicts[name] = "neutral: was not streaming from the primary before it failed"
        elif receiver is None:
            verdicts[name] = "confirms: no WAL receiver"
            confirming.append(name)
        elif receiver.status != "streaming":
            verdicts[name] = f"confirms: WAL receiver {receiver.status}"
            confirming.append(name)
        elif receiver.last_msg_age_s is not None and (
            receiver.last_msg_age_s > settings.replica_silence_s
        ):
            verdicts[name] = f"confirms: silent for {receiver.last_msg_age_s:.1f} s"
            confirming.append(name)
        elif not _receiver_positively_at(receiver, primary_eps) and any(
            _receiver_positively_at(receiver, _node_endpoints(spec))
            for other, spec in specs.items()
            if other != primary
        ):
            verdicts[name] = (
                f"neutral: streams from {receiver.sender_host}:{receiver.sender_port},"
                " not from the primary"
            )
        else:
            age = receiver.last_msg_age_s
            heard = "unknown" if age is None else f"{age:.1f} s ago"
            verdicts[name] = f"still hears the primary (last message {heard})"
            vetoes += 1
    if vetoes:
        status = "not_confirmed"
    elif confirming:
        status = "confirmed"
    else:
        status = "no_replica"
    return Confirmation(
        status, verdicts, tuple(confirming), tuple(unreachable), len(specs) // 2 + 1
    )


def _was_streaming(
    health: NodeHealth | None,
    primary: str,
    failed_since: float | None,
    settings: DecisionSettings,
) -> bool:
    """True when the replica streamed from ``primary`` shortly before it failed."""
    if health is None or health.streaming_from != primary or health.last_streaming_at is None:
        return False
    if failed_since is None:
        return True
    return health.last_streaming_at >= failed_since - settings.replica_silence_s


# --------------------------------------------------------------------------- candidates


def rank_candidates(
    state: ControllerState,
    view: ClusterView,
    specs: Sequence[NodeSpec] | Mapping[str, NodeSpec],
    settings: DecisionSettings,
    *,
    old_primary: str | None = None,
) -> tuple[CandidateInfo, ...]:
    """Every node other than ``old_primary`` with its figures, eligible ones first in
    promotion order (most WAL; then replay not paused and least WAL left to replay;
    then priority, then name), then the excluded by name."""
    by_name = specs if isinstance(specs, Mapping) else {s.name: s for s in specs}
    old = state.primary if old_primary is None else old_primary
    at = view.at
    positions = [
        obs.wal_position
        for name in by_name
        if name != old
        for obs in [view.get(name)]
        if _is_replica(obs) and obs is not None and obs.wal_position is not None
    ]
    reference_parts = [
        p for p in (state.primary_lsn, max(positions, default=None)) if p is not None
    ]
    reference = max(reference_parts) if reference_parts else None
    infos: list[CandidateInfo] = []
    for name in sorted(by_name):
        if name == old:
            continue
        spec = by_name[name]
        obs = view.get(name)
        health = state.health(name)
        position = obs.wal_position if _is_replica(obs) and obs is not None else None
        lag = reference - position if reference is not None and position is not None else None
        excluded: str | None = None
        if not _reachable(obs):
            excluded = "unreachable"
        elif obs is not None and obs.role is not Role.REPLICA:
            excluded = f"role {obs.role}"
        elif spec.priority <= 0:
            excluded = "priority 0 (never promoted)"
        elif name in state.maintenance:
            excluded = "in maintenance"
        elif name in state.fenced:
            excluded = "fenced (needs rejoin)"
        elif health.backoff_until is not None and at < health.backoff_until:
            excluded = f"backed off after a failed promote for {health.backoff_until - at:.1f} s"
        elif health.consecutive_successes < settings.recovery_threshold:
            excluded = (
                f"not healthy yet ({health.consecutive_successes}/"
                f"{settings.recovery_threshold} healthy probes)"
            )
        elif position is None:
            excluded = "WAL position unknown"
        elif lag is not None and lag > settings.max_lag_bytes:
            excluded = f"lag {lag} B > max_lag_bytes {settings.max_lag_bytes}"
        infos.append(
            CandidateInfo(
                node=name,
                priority=spec.priority,
                reachable=_reachable(obs),
                role=obs.role if obs is not None and obs.reachable else Role.UNKNOWN,
                wal_position=position,
                lag_bytes=lag,
                excluded=excluded,
                unreplayed_bytes=obs.unreplayed_bytes if position is not None and obs else None,
                replay_paused=obs.replay_paused if position is not None and obs else None,
            )
        )
    # Most WAL first; among equals, the one that can finish recovery soonest (replay
    # not paused, least WAL left to replay: a reporting query holding back replay
    # would hold back the promote too), then priority, then name.
    eligible = sorted(
        (i for i in infos if i.eligible),
        key=lambda i: (
            -(i.wal_position or 0),
            bool(i.replay_paused),
            i.unreplayed_bytes or 0,
            -i.priority,
            i.node,
        ),
    )
    return (*eligible, *(i for i in infos if not i.eligible))


def _promote_reason(chosen: CandidateInfo, ranking: Sequence[CandidateInfo], old: str) -> str:
    eligible = [c for c in ranking if c.eligible]
    others = "; ".join(c.describe() for c in ranking if c is not chosen)
    return (
        f"primary {old} failed and the replicas confirm it; {chosen.node} has the most WAL"
        f" ({format_lsn(chosen.wal_position)}, prio {chosen.priority}) of {len(eligible)}"
        f" candidate(s)" + (f"; others: {others}" if others else "")
    )


# --------------------------------------------------------------------------- identity


def learn_identity(view: ClusterView, names: Iterable[str]) -> int | None:
    """The system identifier a strict majority of the configured nodes report (None:
    no majority yet). One mistyped DSN pointing at another cluster cannot outvote it."""
    configured = set(names)
    counts = Counter(
        obs.system_identifier
        for name, obs in view.observations.items()
        if name in configured and obs.reachable and obs.system_identifier is not None
    )
    for identifier, count in counts.most_common(1):
        if count >= len(configured) // 2 + 1:
            return identifier
    return None


def screen_foreign(view: ClusterView, identity: int | None) -> tuple[ClusterView, dict[str, int]]:
    """``view`` with every node of another cluster shown as unreachable (so no rule
    adopts, promotes, fences, repoints or rejoins it), and those nodes' identifiers."""
    if identity is None:
        return view, {}
    foreign: dict[str, int] = {}
    observations = dict(view.observations)
    for name, obs in view.observations.items():
        if obs.reachable and obs.system_identifier not in (None, identity):
            assert obs.system_identifier is not None
            foreign[name] = obs.system_identifier
            observations[name] = Observation(
                name,
                obs.at,
                False,
                error=(
                    f"foreign server: system identifier {obs.system_identifier}, the"
                    f" cluster's is {identity}"
                ),
                system_identifier=obs.system_identifier,
                latency_s=obs.latency_s,
            )
    if not foreign:
        return view, {}
    return ClusterView(view.at, observations), foreign


def _identity(state: ControllerState, settings: DecisionSettings) -> int | None:
    return settings.system_identifier or state.system_identifier


# --------------------------------------------------------------------------- the round


class _Round:
    """Mutable scratch space for computing one Decision; never escapes ``decide``."""

    def __init__(
        self,
        state: ControllerState,
        view: ClusterView,
        specs: Sequence[NodeSpec],
        settings: DecisionSettings,
    ) -> None:
        self.old = state
        self.at = view.at
        self.specs = {s.name: s for s in sorted(specs, key=lambda s: s.name)}
        self.names = list(self.specs)
        self.settings = settings
        self.identity = _identity(state, settings)
        self.learnt_identity = False
        if self.identity is None:
            self.identity = learn_identity(view, self.names)
            self.learnt_identity = self.identity is not None
        self.view, self.foreign = screen_foreign(view, self.identity)
        self.nodes: dict[str, NodeHealth] = {n: state.health(n) for n in self.names}
        primary = state.primary if state.primary in self.specs else None
        self.primary = primary
        self.primary_timeline = state.primary_timeline if primary else None
        self.primary_lsn = state.primary_lsn if primary else None
        self.fenced = {n for n in state.fenced if n in self.specs}
        self.in_flight = state.in_flight
        if self.in_flight and self.in_flight.candidate not in self.specs:
            self.in_flight = None
        self.last_failover_at = state.last_failover_at
        self.failback_since = state.failback_since
        self.rejoining = {n for n in state.rejoining if n in self.specs}
        self.rejoin_tried = {n for n in state.rejoin_tried if n in self.specs}
        self.sync_in_force = state.sync_in_force if primary else None
        self.sync_pending = state.sync_pending if primary else ()
        self.sync_requested = state.sync_requested if primary else None
        self.sync_requested_at = state.sync_requested_at if primary else None
        # Condition keys carried over unchanged from the last round (a step that
        # could not be evaluated this round keeps its conditions quiet).
        self.kept_conditions: set[str] = set()
        # An operator's own operation keeps its follow-up steps (fencing its old
        # primary, repointing, the hook) even while the controller is paused.
        flight = self.in_flight
        self.operator_flight = flight if flight is not None and flight.by_operator else None
        self.actions: list[Action] = []
        self.events: list[Event] = []
        # Every event in the order the round produced it; a condition's key rides
        # along so it can be dropped when it was already active last round.
        self._ordered: list[tuple[str | None, Event]] = []
        self.conditions: dict[str, Event] = {}
        self.primary_changed = False
        self.blocked: FailoverBlock | None = None

    # -- small utilities

    def obs(self, name: str) -> Observation | None:
        return self.view.get(name)

    def emit(
        self,
        kind: str,
        node: str | None,
        message: str,
        severity: Severity = Severity.INFO,
        **details: Any,
    ) -> None:
        event = Event(kind, node, message, details, severity)
        self.events.append(event)
        self._ordered.append((None, event))

    def condition(
        self,
        key: str,
        kind: str,
        node: str | None,
        message: str,
        severity: Severity = Severity.INFO,
        **details: Any,
    ) -> None:
        """An ongoing condition: reported once, when it starts."""
        event = Event(kind, node, message, details, severity)
        if key not in self.conditions:
            self._ordered.append((key, event))
        self.conditions[key] = event
        if kind in _BLOCKING_KINDS:
            reason = BlockReason(key.split(":", 1)[0])
            way_out = _WAY_OUT[reason].format(primary=node or "the primary")
            self.blocked = FailoverBlock(reason, message, way_out)

    def act(self, action: Action, *, operator: bool = False) -> bool:
        """Queue ``action`` unless paused (``operator``: a step of an operator's own
        request, allowed while paused); True when queued."""
        if self.old.paused and not operator:
            return False
        self.actions.append(action)
        return True

    def mark_fenced(self, name: str, why: str) -> None:
        """Put ``name`` in the fenced set; the Fence action itself comes from
        ``arbitrate``, every round the node is seen writable."""
        if name not in self.fenced:
            self.fenced.add(name)
            self.emit(
                "node_fenced",
                name,
                f"{name} fenced — needs rejoin: {why}",
                Severity.CRITICAL,
                reason=why,
            )

    def set_primary(self, name: str | None) -> None:
        self.primary = name
        obs = self.obs(name) if name else None
        self.primary_timeline = obs.timeline if obs is not None else None
        self.primary_lsn = obs.current_lsn if obs is not None else None
        self.primary_changed = True
        # The synchronous sets belong to the old primary's commits; the new primary's
        # set is learnt from its next probe.
        self.sync_in_force = None
        self.sync_pending = ()
        self.sync_requested = None
        self.sync_requested_at = None
        if obs is not None and _is_primary(obs):
            self.track_sync(obs)

    # -- steps

    def run(self) -> Decision:
        self.report_identity()
        self.update_health()
        self.track_primary()
        if self.in_flight is not None:
            self.follow_in_flight()
        self.arbitrate()
        # After arbitrate: a primary adopted this round already counts.
        self.track_streaming()
        # A round that began with a failover in flight never starts another, even if
        # that one was abandoned just now: its promote may still land.
        if self.old.in_flight is None and self.primary is not None and not self.primary_changed:
            self.consider_failover()
        self.consider_failback()
        self.repoint()
        self.consider_rejoin()
        self.manage_sync()
        self.report_read_only_primary()
        if self.primary is None and self.in_flight is None:
            self.condition(
                "no_primary",
                "no_primary",
                None,
                "no known writable primary: a manual failover is needed",
                Severity.CRITICAL,
            )
        return self.finish()

    def report_read_only_primary(self) -> None:
        """A followed primary that refuses writes with nothing in flight is a write
        outage: say so, and how to end it, every time it starts."""
        primary = self.primary
        obs = self.obs(primary) if primary else None
        if primary is None or self.in_flight is not None or obs is None:
            return
        if any(isinstance(a, Unfence) and a.node == primary for a in self.actions):
            return  # being lifted this round
        if _is_primary(obs) and obs.read_only:
            self.condition(
                f"primary_read_only:{primary}",
                "primary_read_only",
                primary,
                f"primary {primary} is read-only (default_transaction_read_only = on): no"
                " node accepts writes. If nobody meant that, lift it on the node:"
                " ALTER SYSTEM RESET default_transaction_read_only; SELECT pg_reload_conf();",
                Severity.CRITICAL,
            )

    def report_identity(self) -> None:
        if self.learnt_identity:
            self.emit(
                "cluster_identified",
                None,
                f"cluster system identifier {self.identity} (reported by a majority of the"
                " nodes): a node reporting another one is treated as foreign",
                system_identifier=self.identity,
            )
        for name, identifier in sorted(self.foreign.items()):
            self.condition(
                f"foreign_node:{name}:{identifier}",
                "foreign_node",
                name,
                f"{name} answers with system identifier {identifier}, not this cluster's"
                f" {self.identity}: its DSN points at another cluster's server; it is never"
                f" adopted, promoted, fenced, repointed or rejoined. Fix {name}'s dsn and"
                " reload",
                Severity.CRITICAL,
                system_identifier=identifier,
                cluster_system_identifier=self.identity,
            )

    def update_health(self) -> None:
        threshold = self.settings.failure_threshold
        window = self.settings.detection_window_s
        for name in self.names:
            obs = self.obs(name)
            health = self.nodes[name]
            if name == self.primary:
                ok = _is_primary(obs)
            else:
                ok = obs is not None and obs.reachable and obs.role is not Role.UNKNOWN
            when = obs.at if obs is not None else self.at
            if ok:
                successes = health.consecutive_successes + 1
                down = health.down
                if down and successes >= self.settings.recovery_threshold:
                    down = False
                    self.emit(
                        "node_recovered",
                        name,
                        f"{name} is healthy again ({successes} healthy probes)",
                    )
                health = replace(
                    health,
                    consecutive_failures=0,
                    first_failure_at=None,
                    last_failure_at=None,
                    consecutive_successes=successes,
                    down=down,
                    fence_failed_at=None,
                    last_ok_at=when,
                )
            else:
                health = replace(
                    health,
                    consecutive_failures=health.consecutive_failures + 1,
                    first_failure_at=(
                        health.first_failure_at if health.first_failure_at is not None else when
                    ),
                    last_failure_at=when,
                    consecutive_successes=0,
                )
                if not health.down and health.sustained_failure(threshold, window):
                    health = replace(health, down=True)
                    if name != self.primary:
                        error = obs.error if obs is not None else "not probed"
                        self.emit(
                            "node_unreachable",
                            name,
                            f"{name} failed {health.consecutive_failures} probes in a row",
                            Severity.WARNING,
                            error=error,
                        )
            if health.maybe_promoted and _promote_dropped(health, obs):
                health = replace(health, maybe_promoted=False)
            self.nodes[name] = health

    def track_streaming(self) -> None:
        """Remember when each replica was last seen streaming live from the primary."""
        primary = self.primary
        if primary is None:
            return
        targets = _node_endpoints(self.specs[primary])
        for name in self.names:
            obs = self.obs(name)
            receiver = obs.wal_receiver if _is_replica(obs) and obs is not None else None
            if (
                name == primary
                or obs is None
                or receiver is None
                or not _streaming(receiver)
                or not _receiver_matches(receiver, targets)
                or (
                    receiver.last_msg_age_s is not None
                    and receiver.last_msg_age_s > self.settings.replica_silence_s
                )
            ):
                continue
            self.nodes[name] = replace(
                self.nodes[name], streaming_from=primary, last_streaming_at=obs.at
            )

    def track_primary(self) -> None:
        obs = self.obs(self.primary) if self.primary else None
        if obs is None or not _is_primary(obs):
            return
        if obs.timeline is not None:
            self.primary_timeline = obs.timeline
        if obs.current_lsn is not None:
            self.primary_lsn = max(self.primary_lsn or 0, obs.current_lsn)
        self.track_sync(obs)

    def track_sync(self, obs: Observation) -> None:
        """Remember the synchronous set the primary is seen using (and what it replaced)."""
        seen = parse_standby_names(obs.synchronous_standby_names, obs.node, self.names)
        if seen is None:
            return
        self.sync_in_force, self.sync_pending = track_in_force(
            self.sync_in_force, self.sync_pending, seen, obs
        )

    def follow_in_flight(self) -> None:
        flight = self.in_flight
        assert flight is not None
        obs = self.obs(flight.candidate)
        promoted = (
            _is_primary(obs)
            and obs is not None
            and obs.timeline is not None
            and (flight.old_timeline is None or obs.timeline > flight.old_timeline)
        )
        if flight.planned:
            if flight.resumed:
                self.settle_switchover(flight, obs if promoted else None)
            else:
                self.follow_switchover(flight, obs if promoted else None)
            return
        if promoted and obs is not None:
            self.complete(flight, obs)
            return
        old = self.obs(flight.old_primary)
        if _writable(old):
            # Once the promote is sent the old primary must not take writes: the
            # candidate will soon be writable on a higher timeline.
            if self.primary == flight.old_primary:
                self.primary = None
            self.mark_fenced(flight.old_primary, "returned while a failover away from it runs")
        if flight.resumed:
            # Promoting the same candidate again is safe (the shell re-reads its role);
            # waiting out the promote timeout is only needed before choosing another.
            self.redrive(flight, "the previous controller stopped before this failover finished")
        elif self.at - flight.started_at > self.settings.promote_timeout_s:
            why = (
                f"{flight.candidate} not seen as primary on a higher timeline within"
                f" {self.settings.promote_timeout_s:g} s"
            )
            if flight.redriven or not self.redrive(flight, why + ": promoting it again"):
                self.abandon(flight, why)

    def redrive(self, flight: FailoverInFlight, why: str) -> bool:
        """Send the in-flight failover's Promote to the same candidate again, if it is
        still a fit replica and nothing else accepts writes; True when sent. The
        shell's promote also ends the sessions that hold back the candidate's replay."""
        candidate = flight.candidate
        obs = self.obs(candidate)
        spec = self.specs[candidate]
        fit = (
            _is_replica(obs)
            and candidate not in self.fenced
            and (flight.forced or (candidate not in self.old.maintenance and spec.priority > 0))
        )
        others = [n for n in self.names if n != candidate and _writable(self.obs(n))]
        if not fit or others:
            return False
        old = flight.old_primary
        sync_standbys: str | None = None
        if quorum_mode(self.settings) and old:
            sync_standbys = post_failover_standbys(
                candidate, old, self.view, self.current_state(), self.names, self.settings
            ).value
        promote = Promote(candidate, f"{flight.kind} to {candidate}: {why}", old,
                          sync_standbys=sync_standbys)
        # Not while paused, even for an operator's failover: paused means no promotes.
        if not self.act(_fence_first(promote, old, self.view, self.settings)):
            return False
        self.in_flight = replace(flight, resumed=False, redriven=True, started_at=self.at)
        self.emit(
            "failover_redriven",
            candidate,
            f"{flight.kind} to {candidate} re-driven: {why}",
            Severity.WARNING,
            old_primary=old or None,
        )
        return True

    def settle_switchover(self, flight: FailoverInFlight, promoted: Observation | None) -> None:
        """A switchover the previous controller left unfinished (its procedure died with
        it). The target seen promoted: it stands. The target seen still a replica: the
        old primary's fence is lifted (it stays the primary). Otherwise wait, up to the
        usual switchover limit."""
        target, old = flight.candidate, flight.old_primary
        operator = flight.by_operator
        if promoted is not None:
            self.in_flight = None
            self.set_primary(target)
            self.fenced.discard(target)
            if old in self.specs and old != target:
                self.mark_fenced(old, f"switched over to {target} (settled after a restart)")
            self.emit(
                "switchover_settled",
                target,
                f"the {flight.kind} from {old} to {target}, left unfinished by the previous"
                f" controller, stands: {target} is the primary on timeline {promoted.timeline}",
                Severity.CRITICAL,
                old_primary=old,
                outcome="promoted",
                operation=str(flight.kind),
            )
            self.repoint_to(target, f"{flight.kind} settled: {target} replaced {old}", operator)
            self.role_change_hook(target, old, promoted.timeline, str(flight.kind),
                                  operator=operator)
            return
        if _is_replica(self.obs(target)):
            self.in_flight = None
            old_obs = self.obs(old)
            if _is_primary(old_obs) and old_obs is not None and old_obs.read_only:
                self.act(
                    Unfence(old, f"the {flight.kind} to {target} never promoted it: lift the"
                                 f" fence the previous controller put on {old}"),
                    operator=True,
                )
                outcome = f"{target} was not promoted: the fence on {old} is lifted"
            elif _is_primary(old_obs):
                outcome = f"{target} was not promoted: {old} stays the primary"
            else:
                outcome = (
                    f"{target} was not promoted and {old} is not reachable as a primary: the"
                    " failover rules take over"
                )
            self.emit(
                "switchover_settled",
                target,
                f"the {flight.kind} from {old} to {target}, left unfinished by the previous"
                f" controller: {outcome}",
                Severity.CRITICAL,
                old_primary=old,
                outcome="not_promoted",
                operation=str(flight.kind),
            )
            return
        self.follow_switchover(flight, None)

    def follow_switchover(self, flight: FailoverInFlight, promoted: Observation | None) -> None:
        """A planned switchover runs in the shell, which reports its outcome; here the
        state only follows what is seen. The deliberately fenced (read-only) old primary
        still counts as the primary until the target is seen promoted, so nothing is
        failed over or fenced meanwhile; once the target is writable on a higher
        timeline it is the primary, and a writable old primary gets fenced."""
        target = flight.candidate
        operator = flight.by_operator
        if promoted is not None and self.primary != target:
            self.set_primary(target)
            self.fenced.discard(target)
            self.emit(
                "switchover_promoted",
                target,
                f"{target} is the primary on timeline {promoted.timeline}; the switchover"
                f" from {flight.old_primary} is finishing",
                old_primary=flight.old_primary,
                timeline=promoted.timeline,
                operation=str(flight.kind),
            )
            self.role_change_hook(
                target, flight.old_primary, promoted.timeline, str(flight.kind), operator=operator
            )
        elapsed = self.at - flight.started_at
        limit = self.settings.switchover_timeout_s
        if elapsed > 2 * limit:
            self.abandon(flight, f"no outcome from the switchover procedure within {2 * limit:g} s")
        elif elapsed > limit and not flight.overdue_reported:
            self.in_flight = replace(flight, overdue_reported=True)
            self.emit(
                "switchover_overdue",
                target,
                f"switchover from {flight.old_primary} to {target} is still running after"
                f" {elapsed:.1f} s (limit {limit:g} s)",
                Severity.CRITICAL,
                old_primary=flight.old_primary,
                elapsed_s=round(elapsed, 3),
            )

    def complete(self, flight: FailoverInFlight, obs: Observation) -> None:
        new = flight.candidate
        operator = flight.by_operator
        self.in_flight = None
        self.set_primary(new)
        # A forced manual failover may promote a fenced node: as the primary it is not.
        self.fenced.discard(new)
        old = flight.old_primary
        self.emit(
            "failover_completed",
            new,
            f"{new} is the primary on timeline {obs.timeline} (was {old or 'unknown'})",
            Severity.CRITICAL,
            old_primary=old or None,
            timeline=obs.timeline,
            duration_s=round(self.at - flight.started_at, 3),
            operation=str(flight.kind),
        )
        if old in self.specs and old != new:
            self.mark_fenced(old, f"failed over to {new}")
        self.repoint_to(new, f"{flight.kind}: {new} replaced {old or '-'} as primary", operator)
        self.role_change_hook(new, old or None, obs.timeline, str(flight.kind), operator=operator)

    def repoint_to(self, new: str, reason: str, operator: bool) -> None:
        """Repoint every other fit replica to the new primary ``new``."""
        for name in self.names:
            other = self.obs(name)
            if name == new or name in self.fenced or name in self.old.maintenance:
                continue
            if _is_replica(other) and self.act(Repoint(name, new, reason), operator=operator):
                self.nodes[name] = replace(
                    self.nodes[name], last_repoint_at=self.at, misrouted_since=None
                )

    def role_change_hook(
        self,
        new: str,
        old: str | None,
        timeline: int | None,
        why: str,
        *,
        operator: bool = False,
    ) -> None:
        env = {
            "HACONTROL_EVENT": ROLE_CHANGE_HOOK,
            "HACONTROL_NEW_PRIMARY": new,
            "HACONTROL_OLD_PRIMARY": old or "",
            "HACONTROL_TIMELINE": "" if timeline is None else str(timeline),
            "HACONTROL_REASON": why,
        }
        self.act(
            RunHook(ROLE_CHANGE_HOOK, new, f"{why}: {old or '-'} -> {new}", env), operator=operator
        )

    def abandon(self, flight: FailoverInFlight, why: str) -> None:
        self.in_flight = None
        candidate = flight.candidate
        # Unless it is seen as a primary now, its promote may still land: out of
        # sight, or later on a replica whose replay is held back (a pending promote
        # completes once replay catches up). A later failover must not make two
        # primaries, whatever the cool-down: none until it is proven unable to (seen
        # restarted, or stopped by its driver).
        seen = self.obs(candidate)
        if flight.planned:
            # The switchover procedure owns its promote; only an unseen target may
            # have been promoted out of sight.
            pending = False
            maybe = not (_reachable(seen) and seen is not None and seen.role is not Role.UNKNOWN)
        else:
            pending = maybe = not _is_primary(seen)
        self.nodes[candidate] = replace(
            self.nodes[candidate],
            backoff_until=self.at + self.settings.candidate_backoff_s,
            maybe_promoted=maybe,
        )
        if pending and candidate in self.settings.rejoin_nodes and _reachable(seen):
            # Its driver can withdraw the request (stop, remove it, start as a replica):
            # then the next candidate may be tried, and the node still confirms.
            self.act(
                CancelPromote(
                    candidate,
                    f"the abandoned promote of {candidate} may still land: withdraw it so"
                    " that another candidate can be promoted safely",
                )
            )
        if self.primary in self.fenced:
            self.primary = None
        if flight.planned:
            kind = "switchover_abandoned"
            why += (
                f"; if {flight.old_primary} was fenced by it and {flight.candidate} not promoted,"
                " no node may accept writes: check both"
            )
        else:
            kind = "failover_abandoned"
        self.emit(
            kind,
            flight.candidate,
            f"{flight.kind} to {flight.candidate} abandoned: {why}",
            Severity.CRITICAL,
            old_primary=flight.old_primary or None,
            started_at=flight.started_at,
        )

    def arbitrate(self) -> None:
        """Keep exactly one writable primary: adopt, outrank by timeline, or fence."""
        candidate = self.in_flight.candidate if self.in_flight else None
        writable = [n for n in self.names if _writable(self.obs(n))]
        contenders = [n for n in writable if n not in self.fenced and n != candidate]

        def timeline(name: str) -> int:
            obs = self.obs(name)
            return obs.timeline if obs is not None and obs.timeline is not None else -1

        if self.primary is None:
            if contenders:
                top = max(timeline(n) for n in contenders)
                winners = [n for n in contenders if timeline(n) == top]
                if len(winners) == 1:
                    self.adopt(
                        winners[0],
                        None,
                        f"the only writable primary with the highest timeline ({top})",
                    )
                else:
                    self.condition(
                        "split_brain:" + ",".join(winners),
                        "split_brain",
                        None,
                        f"writable primaries {', '.join(winners)} on the same timeline {top}:"
                        " all fenced, an operator must decide",
                        Severity.CRITICAL,
                        nodes=winners,
                        timeline=top,
                    )
        else:
            obs = self.obs(self.primary)
            own = (
                obs.timeline
                if _is_primary(obs) and obs is not None and obs.timeline is not None
                else self.primary_timeline
            )
            outranking = [
                n
                for n in contenders
                if n != self.primary and timeline(n) >= 0 and (own is None or timeline(n) > own)
            ]
            if outranking:
                top = max(timeline(n) for n in outranking)
                winners = [n for n in outranking if timeline(n) == top]
                problem = self.adoption_problem(winners[0]) if len(winners) == 1 else None
                if problem is not None:
                    stray = winners[0]
                    self.mark_fenced(
                        stray,
                        f"a stray promotion (timeline {top}) not adopted over {self.primary}:"
                        f" {problem}",
                    )
                    self.emit(
                        "stray_primary",
                        stray,
                        f"{stray} became writable on timeline {top} without this controller,"
                        f" but {problem}: it is fenced and {self.primary} stays the primary;"
                        f" rejoin {stray} ('hacontrol rejoin {stray}') to bring it back as a"
                        " replica",
                        Severity.CRITICAL,
                        timeline=top,
                        primary=self.primary,
                        reason=problem,
                    )
                elif len(winners) == 1:
                    old = self.primary
                    self.adopt(winners[0], old, f"writable on a higher timeline ({top} > {own})")
                    self.mark_fenced(old, f"{winners[0]} is primary on a higher timeline")
                    if self.in_flight is not None:
                        self.abandon(self.in_flight, f"{winners[0]} became primary instead")
                else:
                    self.condition(
                        "split_brain:" + ",".join(winners),
                        "split_brain",
                        None,
                        f"writable primaries {', '.join(winners)} on the same timeline {top}"
                        f" above {self.primary}'s: fenced, an operator must decide",
                        Severity.CRITICAL,
                        nodes=winners,
                        timeline=top,
                    )
        for name in writable:
            if name == self.primary or name == candidate:
                continue
            why = (
                "fenced earlier and still accepts writes"
                if name in self.fenced
                else f"a second writable primary (timeline {timeline(name)}); the primary is"
                f" {self.primary or 'undecided'}"
            )
            self.mark_fenced(name, why)
            # Safety before liveness: a fence goes out even while paused (paused stops
            # the controller changing the cluster, not it keeping two primaries apart).
            self.act(Fence(name, f"{name} accepts writes but must not: {why}"), operator=True)

    def adoption_problem(self, name: str) -> str | None:
        """Why the newcomer ``name`` (writable on a higher timeline) must not replace
        the followed primary, if anything forbids it.

        While the followed primary is healthy the newcomer must provably hold the
        primary's history up to its last known position and must not be in
        maintenance; in quorum mode it must also pass the failover quorum rule, even
        with the primary down. Otherwise adopting it would throw away writes the
        primary acknowledged. With the primary down in asynchronous mode it is
        adopted (as a failover would have been).
        """
        primary = self.primary
        assert primary is not None
        settings = self.settings
        healthy = _is_primary(self.obs(primary)) and not self.nodes[primary].down
        quorum = quorum_mode(settings)
        obs = self.obs(name)
        assert obs is not None
        if not healthy:
            return self.quorum_adoption_problem(name, obs) if quorum else None
        if name in self.old.maintenance:
            return f"{name} is in maintenance"
        timeline, known = self.primary_timeline, self.primary_lsn
        if timeline is not None and known is not None:
            if obs.history is None:
                return (
                    f"its timeline history cannot be read (the controller's role needs to read"
                    f" pg_wal), so it is not proven to hold {primary}'s WAL up to"
                    f" {format_lsn(known)}"
                )
            fork = obs.fork_lsn(timeline)
            if fork is None:
                return f"its timeline history does not include {primary}'s timeline {timeline}"
            if fork < known:
                return (
                    f"it left timeline {timeline} at {format_lsn(fork)}, before {primary}'s last"
                    f" known position {format_lsn(known)}: writes {primary} acknowledged after"
                    " that are not on it"
                )
        if quorum:
            return self.quorum_adoption_problem(name, obs)
        return None

    def quorum_adoption_problem(self, name: str, obs: Observation) -> str | None:
        """Quorum mode: a newcomer stands in for a failover's candidate, so the same rule
        applies: a member of the set in force, with enough of that set reachable, and at
        least the WAL of the most advanced reachable member."""
        quorum = self.sync_in_force
        if quorum is None or not quorum.synchronous:
            return None
        if name not in quorum.members:
            members = ", ".join(sorted(quorum.members))
            return f"it is not a member of the synchronous set ({members})"
        here = [m for m in quorum.members if m == name or _is_replica(self.obs(m))]
        need = max(1, len(quorum.members) - quorum.k + 1)
        if len(here) < need:
            return (
                f"only {len(here)} of the synchronous set are reachable ({need} needed to prove"
                " it holds every acknowledged commit)"
            )
        primary_timeline = self.primary_timeline
        fork = obs.fork_lsn(primary_timeline) if primary_timeline is not None else None
        positions = [
            o.wal_position
            for m in quorum.members
            if m != name
            for o in [self.obs(m)]
            if _is_replica(o) and o is not None and o.wal_position is not None
        ]
        if positions and (fork is None or fork < max(positions)):
            return (
                f"a reachable synchronous member holds WAL up to {format_lsn(max(positions))},"
                f" past where it left timeline {primary_timeline}"
                f" ({format_lsn(fork)})"
            )
        return None

    def adopt(self, name: str, old: str | None, why: str) -> None:
        self.set_primary(name)
        self.emit(
            "primary_adopted",
            name,
            f"{name} adopted as primary: {why}",
            Severity.WARNING if old else Severity.INFO,
            old_primary=old,
            timeline=self.primary_timeline,
        )
        if old is not None:
            self.role_change_hook(name, old, self.primary_timeline, "primary changed")

    def consider_failover(self) -> None:
        primary = self.primary
        assert primary is not None
        settings = self.settings
        health = self.nodes[primary]
        if not health.sustained_failure(settings.failure_threshold, settings.detection_window_s):
            if f"primary_failed:{primary}" in self.old.conditions and _is_primary(
                self.obs(primary)
            ):
                self.emit("primary_recovered", primary, f"primary {primary} answers again")
            return
        obs = self.obs(primary)
        span = (health.last_failure_at or 0.0) - (health.first_failure_at or 0.0)
        self.condition(
            f"primary_failed:{primary}",
            "primary_failed",
            primary,
            f"primary {primary} failed {health.consecutive_failures} probes over {span:.2f} s",
            Severity.CRITICAL,
            failures=health.consecutive_failures,
            span_s=round(span, 3),
            error=obs.error if obs is not None else "not probed",
        )
        confirmation = confirm_failure(primary, self.view, self.specs, settings, self.nodes)
        replicas = dict(confirmation.replicas)
        if confirmation.status == "not_confirmed":
            self.condition(
                f"not_confirmed:{primary}",
                "failure_not_confirmed",
                primary,
                f"controller cut off from the primary? replicas still hear {primary}: no failover",
                Severity.WARNING,
                replicas=replicas,
            )
            return
        if confirmation.status == "no_replica":
            self.condition(
                f"no_replica:{primary}",
                "failure_not_confirmed",
                primary,
                f"no reachable replica can confirm that {primary} is down: no failover",
                Severity.CRITICAL,
                replicas=replicas,
            )
            return
        self.condition(
            f"confirmed:{primary}",
            "failure_confirmed",
            primary,
            f"replicas confirm that {primary} is down",
            Severity.CRITICAL,
            replicas=replicas,
        )
        ranking = rank_candidates(self.current_state(), self.view, self.specs, settings)
        figures = [c.as_dict() for c in ranking]
        eligible = [c for c in ranking if c.eligible]
        best = eligible[0].node if eligible else None
        blocked = self.blocked_by(primary)
        if blocked is not None:
            key, message = blocked
            self.condition(
                f"{key}:{primary}",
                "manual_failover_needed" if key == "manual" else "failover_blocked",
                primary,
                message,
                Severity.CRITICAL,
                blocked_by=key,
                best_candidate=best,
                candidates=figures,
            )
            return
        quorum_note: dict[str, Any] = {}
        sync_standbys: str | None = None
        quorum_verdict = None
        if quorum_mode(settings):
            verdict = failover_quorum(self.current_state(), self.view, self.names, primary)
            quorum_verdict = verdict
            quorum_note = {
                "quorum": verdict.reason,
                "quorum_members": sorted(verdict.members),
                "quorum_reachable": list(verdict.reachable),
            }
            if not verdict.ok:
                self.condition(
                    f"quorum_not_reachable:{primary}:{','.join(verdict.missing)}",
                    "quorum_not_reachable",
                    primary,
                    f"primary {primary} is down, but not enough of its synchronous set is"
                    f" reachable: {verdict.reason}; waiting (no failover) until"
                    f" {', '.join(verdict.missing)} can be reached",
                    Severity.CRITICAL,
                    missing=list(verdict.missing),
                    reachable=list(verdict.reachable),
                    candidates=figures,
                )
                return
            if not verdict.unrestricted:
                for info in eligible:
                    if not verdict.allows(info.node, info.wal_position):
                        why = (
                            "not a member of the synchronous set"
                            if info.node not in verdict.members
                            else "behind the most advanced reachable synchronous member"
                        )
                        ranking = tuple(
                            replace(c, excluded=why) if c.node == info.node else c
                            for c in ranking
                        )
                ranking = (
                    *(c for c in ranking if c.eligible),
                    *(c for c in ranking if not c.eligible),
                )
                figures = [c.as_dict() for c in ranking]
                eligible = [c for c in ranking if c.eligible]
        # A strict majority of confirmations, unless quorum mode's synchronous set
        # already keeps the old primary from acknowledging a commit on its own.
        quorum_holds = quorum_verdict is not None and quorum_verdict.ok and (
            not quorum_verdict.unrestricted
        )
        if not confirmation.majority and not quorum_holds:
            shortfall = confirmation.shortfall(primary, len(self.names))
            self.condition(
                f"no_majority:{primary}",
                "failover_blocked",
                primary,
                f"primary {primary} looks down, but {shortfall}: the controller may be on"
                " the minority side of a partition, no automatic failover; if"
                f" {primary} is really down, an operator can run"
                " 'hacontrol failover --to NODE --force'",
                Severity.CRITICAL,
                blocked_by="no_majority",
                unreachable=list(confirmation.unreachable),
                confirming=list(confirmation.confirming),
                needed=confirmation.needed,
                replicas=replicas,
            )
            return
        if not eligible:
            self.condition(
                f"no_candidate:{primary}",
                "no_candidate",
                primary,
                f"no replica can be promoted in place of {primary}: "
                + "; ".join(c.describe() for c in ranking),
                Severity.CRITICAL,
                candidates=figures,
                **quorum_note,
            )
            return
        chosen = eligible[0]
        reason = _promote_reason(chosen, ranking, primary)
        if quorum_mode(settings):
            target = post_failover_standbys(
                chosen.node, primary, self.view, self.current_state(), self.names, settings
            )
            sync_standbys = target.value
            reason += f"; {quorum_note.get('quorum', '')}; its synchronous set: {target.reason}"
        promote = Promote(chosen.node, reason, primary, ranking, sync_standbys=sync_standbys)
        if not self.act(_fence_first(promote, primary, self.view, settings)):
            return
        self.in_flight = FailoverInFlight(
            candidate=chosen.node,
            old_primary=primary,
            started_at=self.at,
            old_timeline=self.primary_timeline,
            previous_failover_at=self.last_failover_at,
        )
        self.last_failover_at = self.at
        self.emit(
            "failover_started",
            chosen.node,
            reason,
            Severity.CRITICAL,
            old_primary=primary,
            old_timeline=self.primary_timeline,
            operation=str(Operation.FAILOVER),
            candidates=figures,
            replicas=replicas,
            **quorum_note,
        )

    def blocked_by(self, primary: str) -> tuple[str, str] | None:
        """Why no automatic failover may start now, if anything forbids it."""
        settings = self.settings
        if self.old.paused:
            return "paused", f"primary {primary} is down, but the controller is paused"
        if primary in self.old.maintenance:
            return "maintenance", f"primary {primary} is in maintenance: no failover"
        if settings.mode is FailoverMode.MANUAL:
            return "manual", f"primary {primary} is down; manual mode: an operator must fail over"
        unseen = [n for n in self.names if self.nodes[n].maybe_promoted]
        if unseen:
            return "abandoned_candidate", (
                f"primary {primary} is down, but the abandoned promote of"
                f" {', '.join(unseen)} may still land (a pending promote completes once"
                " replay catches up, even after a restart, or it landed out of sight): no"
                " automatic failover to another node until it is seen as a primary or"
                " stopped by its driver; let it finish (end what holds back its replay),"
                " or stop it and remove its promote.signal, then run 'hacontrol failover"
                " --to NODE --force'"
            )
        fence_failed = self.nodes[primary].fence_failed_at
        if fence_failed is not None and self.at - fence_failed < settings.candidate_backoff_s:
            left = settings.candidate_backoff_s - (self.at - fence_failed)
            return "fence_failed", (
                f"primary {primary} is down, but fencing it before the promote failed:"
                f" retrying in {left:.0f} s"
            )
        if self.last_failover_at is not None and (
            self.at - self.last_failover_at < settings.cooldown_s
        ):
            left = settings.cooldown_s - (self.at - self.last_failover_at)
            return "cooldown", f"primary {primary} is down, but in cool-down for {left:.0f} s"
        writable = [n for n in self.names if _writable(self.obs(n))]
        if writable:
            return "writable", (
                f"primary {primary} is down, but {', '.join(writable)} still accept writes:"
                " waiting for the fence"
            )
        # A read-only (fenced) primary is only softly fenced: a session can still turn
        # read-write and write. Until it is rejoined or stopped it blocks a promotion.
        others = [n for n in self.names if n != primary and _is_primary(self.obs(n))]
        if others:
            return "writable", (
                f"primary {primary} is down, but {', '.join(others)} still run as a primary"
                " (read-only, which a session can undo): rejoin or stop"
                f" {'it' if len(others) == 1 else 'them'} first"
            )
        return None

    def consider_failback(self) -> None:
        """Automatic mode with failback on: switch back to the preferred node once it has
        been ready (a healthy streaming replica within lag) for ``failback_delay_s``."""
        settings = self.settings
        preferred = preferred_node(self.specs.values())
        primary = self.primary
        plan: _SwitchoverPlan | Refusal = Refusal("no_candidate", "failback off")
        if (
            settings.failback
            and settings.mode is FailoverMode.AUTOMATIC
            and preferred is not None
            and primary is not None
            and preferred != primary
            and self.specs[primary].priority < self.specs[preferred].priority
        ):
            plan = _plan_switchover(
                self.current_state(), self.view, self.specs, settings, preferred
            )
        if isinstance(plan, Refusal) or preferred is None or primary is None:
            self.failback_since = None
            return
        since = self.failback_since if self.failback_since is not None else self.at
        self.failback_since = since
        waited = self.at - since
        self.condition(
            f"failback_pending:{preferred}",
            "failback_pending",
            preferred,
            f"{preferred} (priority {self.specs[preferred].priority}) is ready to take over from"
            f" {primary} again; failback after {settings.failback_delay_s:g} s of readiness",
            delay_s=settings.failback_delay_s,
        )
        if (
            waited < settings.failback_delay_s
            or self.old.paused
            or self.old.in_flight is not None
            or self.in_flight is not None
            or self.primary_changed
            # A node being rejoined would be repointed by the switchover mid-procedure.
            or self.rejoining
            or (
                self.last_failover_at is not None
                and self.at - self.last_failover_at < settings.cooldown_s
            )
        ):
            return
        reason = (
            f"failback: {preferred} is the preferred node (priority"
            f" {self.specs[preferred].priority} > {self.specs[primary].priority} of {primary})"
            f" and has been a healthy streaming replica within lag for {waited:.1f} s"
            f" (failback_delay_s {settings.failback_delay_s:g})"
        )
        self.start_switchover(plan, reason, Operation.FAILBACK)
        self.failback_since = None

    def start_switchover(self, plan: _SwitchoverPlan, reason: str, kind: Operation) -> None:
        action = Switchover(plan.primary, plan.target.node, reason, plan.ranking)
        self.actions.append(action)
        self.in_flight = _switchover_flight(plan, self.at, self.last_failover_at, kind)
        self.emit(
            "switchover_started",
            plan.target.node,
            reason,
            Severity.WARNING,
            old_primary=plan.primary,
            old_timeline=plan.primary_timeline,
            operation=str(kind),
            candidates=[c.as_dict() for c in plan.ranking],
        )

    def repoint(self) -> None:
        primary = self.primary
        primary_obs = self.obs(primary) if primary else None
        ready = primary is not None and self.in_flight is None and _is_primary(primary_obs)
        targets = _node_endpoints(self.specs[primary]) if primary is not None else ()
        for name in self.names:
            health = self.nodes[name]
            obs = self.obs(name)
            if (
                not ready
                or name == primary
                or name in self.fenced
                or name in self.old.maintenance
                or not _is_replica(obs)
                or obs is None
            ):
                if health.misrouted_since is not None:
                    self.nodes[name] = replace(health, misrouted_since=None)
                continue
            receiver = obs.wal_receiver
            if (
                receiver is not None
                and _streaming(receiver)
                and _receiver_matches(receiver, targets)
            ):
                if health.misrouted_since is not None:
                    self.nodes[name] = replace(health, misrouted_since=None)
                continue
            since = health.misrouted_since if health.misrouted_since is not None else obs.at
            health = replace(health, misrouted_since=since)
            due = health.last_repoint_at is None or (
                self.at - health.last_repoint_at >= self.settings.repoint_retry_s
            )
            if self.at - since >= self.settings.detection_window_s and due:
                if receiver is None:
                    now = "has no WAL receiver"
                elif receiver.status != "streaming":
                    now = f"WAL receiver is {receiver.status}"
                else:
                    now = f"streams from {receiver.sender_host}:{receiver.sender_port}"
                assert primary is not None
                if self.act(
                    Repoint(
                        name,
                        primary,
                        f"{name} {now} for {self.at - since:.1f} s, not from primary {primary}",
                    )
                ):
                    health = replace(health, last_repoint_at=self.at)
            self.nodes[name] = health

    def consider_rejoin(self) -> None:
        """Automatic rejoin: a fenced node whose driver can rejoin it is brought back as
        a replica of the primary (a failed attempt again after a back-off, at most
        REJOIN_ATTEMPTS in a row), when the primary is settled (no
        change of primary in flight or just made) and reachable. Not while paused,
        nor for a node in maintenance (an operator is working on it)."""
        settings = self.settings
        primary = self.primary
        if (
            not settings.rejoin_automatic
            or self.old.paused
            or primary is None
            or primary in self.fenced
            or self.in_flight is not None
            or self.old.in_flight is not None
            or self.primary_changed
            or not _is_primary(self.obs(primary))
        ):
            return
        for name in sorted(self.fenced):
            if (
                name == primary
                or name not in settings.rejoin_nodes
                or name in self.old.maintenance
                or name in self.rejoining
                or name in self.rejoin_tried
                or ((retry_at := self.nodes[name].rejoin_retry_at) is not None
                and self.at < retry_at)
            ):
                continue
            reason = (
                f"{name} is fenced (needs rejoin) and its driver can rejoin it: rejoining it"
                f" as a replica of {primary} automatically"
            )
            attempt = self.nodes[name].rejoin_failures + 1
            if attempt > 1:
                reason += f" (attempt {attempt} of {REJOIN_ATTEMPTS})"
            if self.act(Rejoin(name, primary, reason, automatic=True)):
                self.rejoining.add(name)
                self.emit("rejoin_scheduled", name, reason, Severity.WARNING, primary=primary,
                          automatic=True, attempt=attempt)

    def manage_sync(self) -> None:
        """Quorum mode: keep the primary's synchronous set on the fit replicas, with an
        event when it degrades (or, strict, blocks writes) and when it is restored."""
        primary = self.primary
        obs = self.obs(primary) if primary else None
        prefix = f"sync_degraded:{primary}:", f"sync_blocked:{primary}"
        active_before = [k for k in self.old.conditions if k.startswith(prefix)]
        if (
            not quorum_mode(self.settings)
            or primary is None
            or self.in_flight is not None
            or obs is None
            or not _writable(obs)
            or obs.synchronous_standby_names is None
        ):
            if primary is not None and not self.primary_changed:
                self.kept_conditions.update(active_before)
            return
        target = desired_standbys(primary, self.view, self.current_state(), self.names,
                                  self.settings)
        details: dict[str, Any] = {
            "value": target.value,
            "members": list(target.members),
            "quorum": self.settings.sync_quorum,
        }
        if target.blocked:
            self.condition(
                f"sync_blocked:{primary}",
                "sync_writes_blocked",
                primary,
                f"writes on {primary} are blocked: {target.reason}",
                Severity.CRITICAL,
                **details,
            )
        elif target.degraded:
            self.condition(
                f"sync_degraded:{primary}:{len(target.members)}",
                "sync_degraded",
                primary,
                f"synchronous replication on {primary} degraded: {target.reason}",
                Severity.CRITICAL if not target.members else Severity.WARNING,
                **details,
            )
        elif active_before:
            self.emit(
                "sync_restored",
                primary,
                f"synchronous replication on {primary} restored: {target.reason}",
                Severity.WARNING,
                **details,
            )
        seen = parse_standby_names(obs.synchronous_standby_names, primary, self.names)
        wanted = SyncQuorum(target.quorum.members, target.quorum.k, target.quorum.method)
        if same_set(seen, wanted) and seen is not None:
            self.sync_requested = self.sync_requested_at = None
            return
        if (
            self.sync_requested == target.value
            and self.sync_requested_at is not None
            and self.at - self.sync_requested_at < self.settings.repoint_retry_s
        ):
            return
        now = obs.synchronous_standby_names or "''"
        if self.act(ConfigureSync(primary, target.value, f"{target.reason} (was {now})")):
            self.sync_requested = target.value
            self.sync_requested_at = self.at
            self.sync_pending = requested(self.sync_pending, wanted)

    def current_state(self) -> ControllerState:
        # A node out of the fenced set starts afresh the next time it is fenced.
        nodes = {
            name: health if name in self.fenced or not health.rejoin_failures
            else replace(health, rejoin_failures=0, rejoin_retry_at=None)
            for name, health in self.nodes.items()
        }
        return ControllerState(
            primary=self.primary,
            primary_timeline=self.primary_timeline,
            primary_lsn=self.primary_lsn,
            nodes=nodes,
            paused=self.old.paused,
            maintenance=self.old.maintenance,
            fenced=frozenset(self.fenced),
            last_failover_at=self.last_failover_at,
            in_flight=self.in_flight,
            conditions=self.old.conditions,
            failback_since=self.failback_since,
            sync_in_force=self.sync_in_force,
            sync_pending=self.sync_pending,
            sync_requested=self.sync_requested,
            sync_requested_at=self.sync_requested_at,
            rejoining=frozenset(self.rejoining),
            # A node that left the fenced set gets a fresh automatic attempt the
            # next time it is fenced.
            rejoin_tried=frozenset(self.rejoin_tried & self.fenced),
            system_identifier=self.identity,
            failover_blocked=self.blocked,
        )

    def finish(self) -> Decision:
        if self.in_flight is not None and not self.primary_changed:
            # While a failover runs, keep what was reported so nothing repeats after it.
            keys = set(self.old.conditions) | set(self.conditions)
        else:
            keys = set(self.conditions)
        keys |= self.kept_conditions
        # Chronological: a condition's event stands where it first arose this round.
        ordered = [
            self.conditions[key] if key is not None else event
            for key, event in self._ordered
            if key is None or (key in self.conditions and key not in self.old.conditions)
        ]
        if self.primary in self.fenced:  # never both; fenced wins
            self.primary = None
        state = replace(self.current_state(), conditions=frozenset(keys))
        return Decision(state, tuple(self.actions), tuple(ordered))


def _promote_dropped(health: NodeHealth, obs: Observation | None) -> bool:
    """True when an abandoned candidate's promote is settled by what is seen: it is a
    primary now (then the writable-primary rules decide). A replica is no proof: a
    pending promote survives even a restart of its server."""
    return health.maybe_promoted and _is_primary(obs)


def _fence_first(
    promote: Promote, old: str, view: ClusterView, settings: DecisionSettings
) -> Action:
    """The Promote, or — with a fence hook configured and the old primary unreachable
    (dead, or only hung and able to wake up) — a Fence of the old primary that the
    Promote follows only once the fence succeeded."""
    if not settings.fence_before_promote or not old or _reachable(view.get(old)):
        return promote
    return Fence(
        old,
        f"{old} is unreachable and may only be hung: fence it before promoting {promote.node}",
        then=promote,
    )


def decide(
    state: ControllerState,
    view: ClusterView,
    specs: Sequence[NodeSpec],
    settings: DecisionSettings,
) -> Decision:
    """One round: fold ``view`` into ``state`` and say what to do and why. Pure."""
    return _Round(state, view, specs, settings).run()


# --------------------------------------------------------------------------- switchover


def preferred_node(specs: Iterable[NodeSpec]) -> str | None:
    """The node failback returns to: the unique highest priority (> 0); a tie: none."""
    ordered = sorted(specs, key=lambda s: -s.priority)
    if not ordered or ordered[0].priority <= 0:
        return None
    if len(ordered) > 1 and ordered[1].priority == ordered[0].priority:
        return None
    return ordered[0].name


@dataclass(frozen=True, slots=True)
class _SwitchoverPlan:
    primary: str
    primary_timeline: int | None
    target: CandidateInfo
    ranking: tuple[CandidateInfo, ...]


def _streaming_problem(
    name: str,
    primary: str,
    view: ClusterView,
    specs: Mapping[str, NodeSpec],
    settings: DecisionSettings,
) -> str | None:
    """Why replica ``name`` is not streaming live from ``primary`` (None: it is)."""
    obs = view.get(name)
    receiver = obs.wal_receiver if obs is not None else None
    if receiver is None:
        return f"{name} has no WAL receiver"
    if receiver.status != "streaming":
        return f"{name}'s WAL receiver is {receiver.status}"
    if not _receiver_matches(receiver, _node_endpoints(specs[primary])):
        return (
            f"{name} streams from {receiver.sender_host}:{receiver.sender_port}, not from {primary}"
        )
    age = receiver.last_msg_age_s
    if age is not None and age > settings.replica_silence_s:
        return f"{name} has heard nothing from {primary} for {age:.1f} s"
    return None


def _plan_switchover(
    state: ControllerState,
    view: ClusterView,
    specs: Mapping[str, NodeSpec],
    settings: DecisionSettings,
    to: str | None,
) -> _SwitchoverPlan | Refusal:
    """Check a planned switchover to ``to`` (None: the best candidate). In flight and
    paused are the caller's checks."""
    primary = state.primary
    if primary is None or primary not in specs:
        return Refusal(
            "no_primary",
            "no known primary to switch over from; if the primary is down use a manual"
            " failover (failover --to NODE)",
        )
    obs = view.get(primary)
    health = state.health(primary)
    if not _reachable(obs):
        problem = "unreachable"
    elif not _is_primary(obs):
        problem = "not a primary any more"
    elif not _writable(obs):
        problem = "read-only"
    elif health.consecutive_failures or health.down:
        problem = "failing probes"
    else:
        problem = ""
    if problem:
        return Refusal(
            "no_primary",
            f"primary {primary} is {problem}: a switchover needs a healthy writable primary;"
            " if it is down use a manual failover (failover --to NODE)",
        )
    if to == primary:
        return Refusal("not_eligible", f"{to} is already the primary")
    if to is not None and to not in specs:
        return Refusal("unknown_node", f"{to} is not a configured node ({', '.join(specs)})")
    ranking = rank_candidates(state, view, specs, settings, old_primary=primary)
    timeline = obs.timeline if obs is not None else None
    if to is not None:
        info = next(c for c in ranking if c.node == to)
        lag = info.lag_bytes
        if lag is not None and info.excluded and lag > settings.max_lag_bytes:
            why = (
                f"{to} is {_size(lag)} behind (max {_size(settings.max_lag_bytes)});"
                " wait until it catches up"
            )
        elif info.excluded:
            why = (
                f"{to} cannot take over: {info.excluded}; a switchover needs a healthy"
                f" replica streaming from {primary}, priority > 0, not in maintenance or"
                " fenced, within max lag"
            )
        else:
            streaming = _streaming_problem(to, primary, view, specs, settings)
            why = f"{streaming}; wait until it streams from {primary}" if streaming else ""
        if why:
            return Refusal("not_eligible", why)
        return _SwitchoverPlan(primary, timeline, info, ranking)
    for info in ranking:
        if info.eligible and _streaming_problem(info.node, primary, view, specs, settings) is None:
            return _SwitchoverPlan(primary, timeline, info, ranking)
    figures = "; ".join(
        c.describe()
        if not c.eligible
        else f"{c.describe()} ({_streaming_problem(c.node, primary, view, specs, settings)})"
        for c in ranking
    )
    return Refusal("no_candidate", f"no replica can take over from {primary}: {figures}")


def _switchover_flight(
    plan: _SwitchoverPlan, at: float, last_failover_at: float | None, kind: Operation
) -> FailoverInFlight:
    return FailoverInFlight(
        candidate=plan.target.node,
        old_primary=plan.primary,
        started_at=at,
        old_timeline=plan.primary_timeline,
        previous_failover_at=last_failover_at,
        kind=kind,
    )


# --------------------------------------------------------------------------- requests


def _refuse(
    state: ControllerState, request: Request, node: str | None, code: str, message: str
) -> Decision:
    refusal = Refusal(code, message)
    event = Event(
        "request_refused",
        node,
        message,
        {"request": _request_details(request), "code": code},
        Severity.WARNING,
    )
    return Decision(state, (), (event,), refused=refusal)


def _request_details(request: Request) -> dict[str, Any]:
    return {"type": type(request).__name__} | {
        f.name: getattr(request, f.name) for f in fields(request)
    }


def _promotion_problems(
    name: str,
    state: ControllerState,
    view: ClusterView,
    specs: Mapping[str, NodeSpec],
    settings: DecisionSettings,
    info: CandidateInfo | None,
) -> list[str]:
    """Everything that keeps ``name`` from being a normal candidate (empty: nothing)."""
    obs = view.get(name)
    health = state.health(name)
    problems: list[str] = []
    if not _reachable(obs):
        problems.append(f"{name} is unreachable")
    elif obs is not None and obs.role is not Role.REPLICA:
        problems.append(f"{name}'s role is {obs.role}")
    if specs[name].priority <= 0:
        problems.append(f"{name} has priority 0 (never promoted)")
    if name in state.maintenance:
        problems.append(f"{name} is in maintenance")
    if name in state.fenced:
        problems.append(f"{name} is fenced (needs rejoin)")
    if health.backoff_until is not None and view.at < health.backoff_until:
        problems.append(
            f"{name} is backed off after a failed promote"
            f" for {health.backoff_until - view.at:.0f} s"
        )
    unseen = sorted(n for n in specs if n != name and state.health(n).maybe_promoted)
    if unseen:
        problems.append(
            f"the abandoned failover to {', '.join(unseen)} may have promoted it out of sight"
        )
    others = [
        n for n in specs if n not in (name, state.primary) and _is_primary(view.get(n))
    ]
    if others:
        problems.append(
            f"{', '.join(others)} still run as a (read-only) primary, which a session can"
            " turn read-write: rejoin or stop it first"
        )
    if _reachable(obs) and health.consecutive_successes < settings.recovery_threshold:
        problems.append(
            f"{name} is not healthy yet ({health.consecutive_successes}/"
            f"{settings.recovery_threshold} healthy probes)"
        )
    if _is_replica(obs) and obs is not None and obs.wal_position is None:
        problems.append(f"{name}'s WAL position is unknown")
    lag = info.lag_bytes if info is not None else None
    if lag is not None and lag > settings.max_lag_bytes:
        problems.append(f"{name} is {_size(lag)} behind (max {_size(settings.max_lag_bytes)})")
    return problems


def _manual_failover(
    state: ControllerState,
    view: ClusterView,
    specs: Mapping[str, NodeSpec],
    settings: DecisionSettings,
    request: ManualFailover,
) -> Decision:
    to = request.to
    if to not in specs:
        return _refuse(
            state,
            request,
            None,
            "unknown_node",
            f"{to} is not a configured node ({', '.join(specs)})",
        )
    if state.in_flight is not None:
        flight = state.in_flight
        return _refuse(
            state,
            request,
            to,
            "in_flight",
            f"a {flight.kind} to {flight.candidate} is in flight; wait for it to finish",
        )
    writable = [n for n in specs if _writable(view.get(n))]
    if writable:
        return _refuse(
            state,
            request,
            to,
            "writable_primary",
            f"{', '.join(writable)} {'is' if len(writable) == 1 else 'are'} a writable primary:"
            " promoting another node would make two primaries; use a switchover"
            " (switchover --to NODE) to move the primary, or stop/fence the primary first",
        )
    obs = view.get(to)
    if to == state.primary:
        return _refuse(
            state,
            request,
            to,
            "not_eligible",
            f"{to} is the current primary; bring it back or fail over to another node",
        )
    if _is_primary(obs):
        return _refuse(
            state,
            request,
            to,
            "not_eligible",
            f"{to} is a read-only primary, not a replica: promoting cannot help; rejoin it"
            " as a replica, or fail over to another node",
        )
    ranking = rank_candidates(state, view, specs, settings)
    info = next((c for c in ranking if c.node == to), None)
    problems = _promotion_problems(to, state, view, specs, settings, info)
    old_primary = state.primary
    if old_primary is not None and old_primary in specs and not _reachable(view.get(old_primary)):
        # The controller may be cut off with a minority: promoting there makes a
        # second primary beside the one the majority still uses.
        confirmation = confirm_failure(old_primary, view, specs, settings)
        if not confirmation.majority:
            problems.append(
                confirmation.shortfall(old_primary, len(specs))
                + ": the controller may be on the minority side of a partition"
            )
    sync_standbys: str | None = None
    if quorum_mode(settings):
        names = sorted(specs)
        verdict = failover_quorum(state, view, names, state.primary or "")
        position = obs.wal_position if _is_replica(obs) and obs is not None else None
        if not verdict.ok:
            problems.append(f"the synchronous quorum is not reachable: {verdict.reason}")
        elif not verdict.allows(to, position):
            problems.append(
                f"{to} may lack acknowledged commits: it is not a synchronous member at the"
                f" most advanced reachable member's WAL ({format_lsn(verdict.required_lsn)})"
            )
        sync_standbys = post_failover_standbys(
            to, state.primary, view, state, names, settings
        ).value
    if problems and not request.force:
        return _refuse(
            state,
            request,
            to,
            "not_eligible",
            "; ".join(problems) + f"; use --force to promote {to} anyway",
        )
    old = state.primary or ""
    at = view.at
    forced = f" (forced over: {'; '.join(problems)})" if problems else ""
    figures = "; ".join(c.describe() for c in ranking)
    reason = f"operator requested a manual failover to {to}{forced}; candidates: {figures}"
    target_tl = obs.timeline if obs is not None else None
    flight = FailoverInFlight(
        candidate=to,
        old_primary=old,
        started_at=at,
        old_timeline=state.primary_timeline if state.primary_timeline is not None else target_tl,
        previous_failover_at=state.last_failover_at,
        kind=Operation.MANUAL_FAILOVER,
        forced=bool(problems),
    )
    event = Event(
        "failover_started",
        to,
        reason,
        {
            "old_primary": old or None,
            "old_timeline": flight.old_timeline,
            "operation": str(Operation.MANUAL_FAILOVER),
            "requested_by": "operator",
            "forced": bool(problems),
            "overrides": problems,
            "candidates": [c.as_dict() for c in ranking],
        },
        Severity.CRITICAL,
    )
    new_state = replace(state, in_flight=flight, last_failover_at=at, failback_since=None)
    promote = Promote(to, reason, old, ranking, sync_standbys=sync_standbys)
    first = _fence_first(promote, old, view, settings) if old in specs else promote
    return Decision(new_state, (first,), (event,))


def handle_request(
    state: ControllerState,
    view: ClusterView,
    specs: Sequence[NodeSpec],
    settings: DecisionSettings,
    request: Request,
) -> Decision:
    """Fold an operator request into the state. Pure.

    ``view`` is the latest probe round (``state`` must come from deciding on it);
    its time stamps what the request starts. A refused request changes nothing and
    returns ``Decision.refused`` plus a ``request_refused`` event saying why and
    what would allow it. See docs/operations.md for the semantics of each request.
    """
    by_name = {s.name: s for s in sorted(specs, key=lambda s: s.name)}
    # A node of another cluster is out of reach for every request too.
    view, _ = screen_foreign(view, _identity(state, settings))
    at = view.at
    if isinstance(request, Pause | Resume):
        paused = isinstance(request, Pause)
        kind = "paused" if paused else "resumed"
        if paused == state.paused:
            message = f"already {kind}"
        elif paused:
            message = "paused: observing and reporting only, no actions until resumed"
        else:
            message = "resumed: acting on failures again"
        event = Event(kind, None, message, {"changed": paused != state.paused})
        return Decision(replace(state, paused=paused), (), (event,))
    if isinstance(request, SetMaintenance):
        node = request.node
        if node not in by_name:
            return _refuse(
                state,
                request,
                None,
                "unknown_node",
                f"{node} is not a configured node ({', '.join(by_name)})",
            )
        kind = "maintenance_on" if request.on else "maintenance_off"
        changed = (node in state.maintenance) != request.on
        maintenance = state.maintenance | {node} if request.on else state.maintenance - {node}
        if not changed:
            message = f"{node} is already {'in' if request.on else 'out of'} maintenance"
        elif request.on:
            message = (
                f"{node} in maintenance: never a failover candidate, and its failure starts"
                " no failover"
            )
        else:
            message = f"{node} out of maintenance"
        event = Event(kind, node, message, {"changed": changed})
        return Decision(replace(state, maintenance=maintenance), (), (event,))
    if isinstance(request, RejoinRequest):
        return _rejoin_request(state, view, by_name, settings, request)
    if isinstance(request, NodeRejoined):
        node = request.node
        if node not in by_name:
            return _refuse(
                state,
                request,
                None,
                "unknown_node",
                f"{node} is not a configured node ({', '.join(by_name)})",
            )
        obs = view.get(node)
        if node != state.primary and _writable(obs):
            return _refuse(
                state,
                request,
                node,
                "not_fenced_writable",
                f"{node} still accepts writes as a primary: rejoin it as a replica of"
                f" {state.primary or 'the primary'} first",
            )
        if node in state.fenced and not _is_replica(obs):
            # Read-only is no proof: a fenced primary's sessions can turn read-write.
            seen = "unreachable" if not _reachable(obs) else f"seen as {obs.role if obs else '?'}"
            return _refuse(
                state,
                request,
                node,
                "not_a_replica",
                f"{node} is {seen}, not a replica: a fenced node is taken back only once it"
                f" runs as a replica of {state.primary or 'the primary'}",
            )
        changed = node in state.fenced
        message = f"{node} rejoined: no longer fenced" if changed else f"{node} was not fenced"
        event = Event("node_rejoined", node, message, {"changed": changed})
        fenced = state.fenced - {node}
        new_state = replace(state, fenced=fenced, rejoin_tried=state.rejoin_tried & fenced)
        return Decision(new_state, (), (event,))
    if isinstance(request, ManualFailover):
        return _manual_failover(state, view, by_name, settings, request)
    # SwitchoverRequest
    if request.to is not None and request.to not in by_name:
        return _refuse(
            state,
            request,
            None,
            "unknown_node",
            f"{request.to} is not a configured node ({', '.join(by_name)})",
        )
    if state.in_flight is not None:
        flight = state.in_flight
        return _refuse(
            state,
            request,
            request.to,
            "in_flight",
            f"a {flight.kind} to {flight.candidate} is in flight; wait for it to finish",
        )
    if state.paused:
        return _refuse(
            state,
            request,
            request.to,
            "paused",
            "the controller is paused; resume it first (a manual failover works while paused)",
        )
    if state.rejoining:
        return _refuse(
            state,
            request,
            request.to,
            "rejoining",
            f"a rejoin of {', '.join(sorted(state.rejoining))} is running; wait for it to"
            " finish (hacontrol status)",
        )
    plan = _plan_switchover(state, view, by_name, settings, request.to)
    if isinstance(plan, Refusal):
        return _refuse(state, request, request.to, plan.code, plan.message)
    target = plan.target
    chosen = "requested" if request.to else "best candidate"
    reason = (
        f"operator requested a switchover from {plan.primary} to {target.node} ({chosen}:"
        f" {target.describe()}); others: "
        + ("; ".join(c.describe() for c in plan.ranking if c is not target) or "none")
    )
    action = Switchover(plan.primary, target.node, reason, plan.ranking)
    flight = _switchover_flight(plan, at, state.last_failover_at, Operation.SWITCHOVER)
    event = Event(
        "switchover_started",
        target.node,
        reason,
        {
            "old_primary": plan.primary,
            "old_timeline": plan.primary_timeline,
            "operation": str(Operation.SWITCHOVER),
            "requested_by": "operator",
            "candidates": [c.as_dict() for c in plan.ranking],
        },
        Severity.WARNING,
    )
    new_state = replace(state, in_flight=flight, failback_since=None)
    return Decision(new_state, (action,), (event,))


def apply_outcome(
    state: ControllerState,
    outcome: ActionOutcome,
    at: float,
    settings: DecisionSettings | None = None,
) -> Decision:
    """Fold the shell's report on an action into the state. Pure.

    A Promote that FAILED (certainly did nothing) clears the in-flight failover,
    backs the candidate off and lifts the cool-down it started, so another
    candidate may be tried at once. An UNCERTAIN promote keeps the failover in
    flight until it is observed or times out. Other failures only produce events:
    fences and repoints are retried by the rules themselves.

    A Switchover outcome finishes the switchover (see ``_switchover_outcome``). The
    returned actions must be carried out like decide's: after a switchover whose
    promotion decide had not observed yet, they hold the role-change hook.
    """
    action = outcome.action
    detail = outcome.detail
    details: dict[str, Any] = {"status": str(outcome.status), "detail": detail}
    if isinstance(action, Promote):
        flight = state.in_flight
        if flight is None or flight.candidate != action.node:
            event = Event(
                "promote_outcome_ignored",
                action.node,
                f"outcome of a promote of {action.node} that is not in flight: {detail}",
                details,
                Severity.WARNING,
            )
            return Decision(state, (), (event,))
        if outcome.status is OutcomeStatus.SUCCEEDED:
            new_state = replace(state, in_flight=replace(flight, promote_reported=True))
            event = Event(
                "promote_succeeded",
                action.node,
                f"{action.node} promoted: {detail}; waiting to observe it as primary",
                details,
            )
            return Decision(new_state, (), (event,))
        if outcome.status is OutcomeStatus.UNCERTAIN:
            event = Event(
                "promote_uncertain",
                action.node,
                f"promote of {action.node} may not have taken effect: {detail}; waiting up to"
                " the promote timeout",
                details,
                Severity.WARNING,
            )
            return Decision(state, (), (event,))
        nodes = dict(state.nodes)
        health = nodes.get(action.node, NodeHealth())
        backoff = at + (settings or DecisionSettings()).candidate_backoff_s
        nodes[action.node] = replace(health, backoff_until=backoff)
        primary = state.primary if state.primary not in state.fenced else None
        new_state = replace(
            state,
            nodes=nodes,
            in_flight=None,
            primary=primary,
            last_failover_at=flight.previous_failover_at,
        )
        event = Event(
            "failover_failed",
            action.node,
            f"promote of {action.node} failed: {detail}; it is backed off, another candidate"
            " may be tried",
            {**details, "backoff_until": backoff},
            Severity.CRITICAL,
        )
        return Decision(new_state, (), (event,))
    if isinstance(action, Fence) and action.then is not None:
        return _fence_first_outcome(state, outcome, action.then, at,
                                    settings or DecisionSettings())
    if isinstance(action, Switchover):
        return _switchover_outcome(state, outcome, at, settings or DecisionSettings())
    if isinstance(action, Rejoin):
        return _rejoin_outcome(state, outcome, at)
    if isinstance(action, CancelPromote):
        return _cancel_promote_outcome(state, outcome)
    if outcome.status is OutcomeStatus.SUCCEEDED:
        return Decision(state)
    if isinstance(action, ConfigureSync):
        state = _sync_not_applied(state, action, detail)
    kind = {
        Repoint: "repoint_failed",
        Fence: "fence_failed",
        RunHook: "hook_failed",
        ConfigureSync: "sync_config_failed",
        Unfence: "unfence_failed",
    }[type(action)]
    severity = Severity.CRITICAL if isinstance(action, Fence | Unfence) else Severity.WARNING
    event = Event(
        kind, action.node, f"{kind.replace('_', ' ')} on {action.node}: {detail}", details, severity
    )
    return Decision(state, (), (event,))


def _cancel_promote_outcome(state: ControllerState, outcome: ActionOutcome) -> Decision:
    """An abandoned candidate's promote request withdrawn: it can no longer land, so
    the next failover may go to another node."""
    node = outcome.action.node
    details: dict[str, Any] = {"status": str(outcome.status), "detail": outcome.detail}
    if outcome.status is not OutcomeStatus.SUCCEEDED:
        event = Event(
            "promote_cancel_failed",
            node,
            f"could not withdraw the abandoned promote of {node}: {outcome.detail}; no"
            f" failover to another node until {node} is seen as a primary, or stopped with"
            " its promote.signal removed",
            details,
            Severity.CRITICAL,
        )
        return Decision(state, (), (event,))
    nodes = dict(state.nodes)
    nodes[node] = replace(nodes.get(node, NodeHealth()), maybe_promoted=False)
    event = Event(
        "promote_cancelled",
        node,
        f"the abandoned promote of {node} is withdrawn ({outcome.detail}): it can no longer"
        " land; another candidate may be promoted",
        details,
        Severity.WARNING,
    )
    return Decision(replace(state, nodes=nodes), (), (event,))


def _fence_first_outcome(
    state: ControllerState,
    outcome: ActionOutcome,
    promote: Promote,
    at: float,
    settings: DecisionSettings,
) -> Decision:
    """The fence of an unreachable old primary before its failover: succeeded, the
    Promote follows; otherwise nothing is promoted and the failover is cleared (its
    cool-down lifted), to be tried again after ``candidate_backoff_s``."""
    old = outcome.action.node
    flight = state.in_flight
    details: dict[str, Any] = {"status": str(outcome.status), "detail": outcome.detail}
    if flight is None or flight.candidate != promote.node:
        event = Event(
            "promote_outcome_ignored",
            promote.node,
            f"fence of {old} for a promote of {promote.node} that is not in flight:"
            f" {outcome.detail}; not promoted",
            details,
            Severity.WARNING,
        )
        return Decision(state, (), (event,))
    if outcome.status is OutcomeStatus.SUCCEEDED:
        event = Event(
            "old_primary_fenced",
            old,
            f"{old} fenced before the promote of {promote.node}: {outcome.detail}",
            details,
            Severity.WARNING,
        )
        return Decision(state, (promote,), (event,))
    nodes = dict(state.nodes)
    nodes[old] = replace(nodes.get(old, NodeHealth()), fence_failed_at=at)
    new_state = replace(
        state, nodes=nodes, in_flight=None, last_failover_at=flight.previous_failover_at
    )
    event = Event(
        "failover_failed",
        promote.node,
        f"fencing {old} before the promote of {promote.node} failed: {outcome.detail};"
        f" nothing promoted (a hung {old} could wake up and take writes). Tried again in"
        f" {settings.candidate_backoff_s:g} s; fix the fence hook, or make sure {old} is"
        " down and fail over by hand",
        {**details, "old_primary": old},
        Severity.CRITICAL,
    )
    return Decision(new_state, (), (event,))


def _rejoin_request(
    state: ControllerState,
    view: ClusterView,
    specs: Mapping[str, NodeSpec],
    settings: DecisionSettings,
    request: RejoinRequest,
) -> Decision:
    """An operator's rejoin: the procedure when the node's driver can run it (allowed
    while paused: the operator asked), else a report that it was rejoined by hand."""
    node = request.node
    if node not in specs:
        return _refuse(
            state, request, None, "unknown_node",
            f"{node} is not a configured node ({', '.join(specs)})",
        )
    if node not in settings.rejoin_nodes:
        by_hand = handle_request(state, view, tuple(specs.values()), settings, NodeRejoined(node))
        if by_hand.refused is not None:
            return by_hand
        note = f" (no driver that can rejoin {node}: taken as rejoined by hand)"
        events = tuple(replace(e, message=e.message + note) for e in by_hand.events)
        return replace(by_hand, events=events)
    primary = state.primary
    if node == primary:
        return _refuse(
            state, request, node, "is_primary",
            f"{node} is the primary; a rejoin makes a node a replica of the primary (switch"
            " over first if it must become one)",
        )
    if node in state.rejoining:
        return _refuse(
            state, request, node, "rejoining",
            f"a rejoin of {node} is already running; its outcome is journaled (rejoin_finished)",
        )
    if state.in_flight is not None:
        flight = state.in_flight
        return _refuse(
            state, request, node, "in_flight",
            f"a {flight.kind} to {flight.candidate} is in flight; rejoin once it has finished",
        )
    if primary is None or not _is_primary(view.get(primary)):
        return _refuse(
            state, request, node, "no_primary",
            f"no reachable primary to rejoin {node} to"
            + (f" ({primary} is not seen as a primary)" if primary else "")
            + "; fail over first (failover --to NODE)",
        )
    streaming = _streaming_problem(node, primary, view, specs, settings) is None
    if node not in state.fenced and streaming:
        event = Event(
            "rejoin_not_needed", node,
            f"{node} is not fenced and streams from {primary}: nothing to rejoin",
            {"primary": primary},
        )
        return Decision(state, (), (event,))
    reason = (
        f"operator requested a rejoin of {node} as a replica of {primary}"
        + (" (fenced: needs rejoin)" if node in state.fenced else "")
    )
    action = Rejoin(node, primary, reason)
    event = Event(
        "rejoin_scheduled", node, reason,
        {"primary": primary, "automatic": False, "requested_by": "operator"},
        Severity.WARNING,
    )
    return Decision(replace(state, rejoining=state.rejoining | {node}), (action,), (event,))


def _rejoin_outcome(state: ControllerState, outcome: ActionOutcome, at: float) -> Decision:
    """SUCCEEDED: the node streams from the primary, its fence is lifted. Otherwise it
    stays fenced (the procedure left it stopped); an automatic rejoin is tried again
    after a back-off (a killed postmaster may not be gone yet), at most
    REJOIN_ATTEMPTS times in a row, then it waits for an operator."""
    action = outcome.action
    assert isinstance(action, Rejoin)
    node = action.node
    rejoining = state.rejoining - {node}
    details: dict[str, Any] = {
        "status": str(outcome.status),
        "detail": outcome.detail,
        "primary": action.primary,
        "automatic": action.automatic,
    }
    if outcome.status is OutcomeStatus.SUCCEEDED:
        fenced = state.fenced - {node}
        event = Event(
            "node_rejoined", node,
            f"{node} rejoined as a replica of {action.primary}; no longer fenced",
            {**details, "changed": node in state.fenced},
        )
        new_state = replace(
            state, rejoining=rejoining, fenced=fenced, rejoin_tried=state.rejoin_tried & fenced
        )
        return Decision(new_state, (), (event,))
    text = outcome.detail
    if not text.startswith(f"rejoin of {node}"):
        text = f"rejoin of {node} failed: {text}"
    if "fenced" not in text:
        text += "; it stays fenced" if node in state.fenced else "; it is not in service"
    health = state.health(node)
    failures = health.rejoin_failures + 1
    if action.automatic and node in state.fenced and failures < REJOIN_ATTEMPTS:
        wait = min(REJOIN_BACKOFF_S * 2 ** (failures - 1), REJOIN_MAX_WAIT_S)
        nodes = {**state.nodes, node: replace(health, rejoin_failures=failures,
                                              rejoin_retry_at=at + wait)}
        event = Event(
            "rejoin_failed", node,
            f"{text}; attempt {failures} of {REJOIN_ATTEMPTS}, trying again in {wait:g} s",
            {**details, "attempt": failures, "retry_in_s": wait},
            Severity.WARNING,
        )
        return Decision(replace(state, rejoining=rejoining, nodes=nodes), (), (event,))
    tried = state.rejoin_tried | ({node} if action.automatic and node in state.fenced else set())
    if action.automatic:
        text += f" (automatic attempt {failures} of {REJOIN_ATTEMPTS}: no more)"
    event = Event(
        "rejoin_failed", node,
        f"{text} — fix the cause, then 'hacontrol rejoin {node}'",
        {**details, "attempt": failures},
        Severity.CRITICAL,
    )
    nodes = {**state.nodes, node: replace(health, rejoin_failures=failures, rejoin_retry_at=None)}
    return Decision(replace(state, rejoining=rejoining, rejoin_tried=tried, nodes=nodes), (),
                    (event,))


def _sync_not_applied(
    state: ControllerState, action: ConfigureSync, detail: str
) -> ControllerState:
    """A ConfigureSync that failed is asked again after the retry delay. Only when it
    certainly changed nothing (no connection) is its set no longer consulted."""
    if not detail.startswith(("cannot connect", "not attempted")):
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


def _switchover_outcome(
    state: ControllerState, outcome: ActionOutcome, at: float, settings: DecisionSettings
) -> Decision:
    """SUCCEEDED: the target is the primary; the old primary is fenced unless the shell
    reports it in ``outcome.rejoined``. FAILED (rolled back): the old primary stays.
    UNCERTAIN: stays in flight until seen or overdue. A FAILED report after the target
    was already seen promoted counts as completed (what is seen wins)."""
    action = outcome.action
    assert isinstance(action, Switchover)
    flight = state.in_flight
    details: dict[str, Any] = {"status": str(outcome.status), "detail": outcome.detail}
    target, old = action.target, action.old_primary
    if flight is None or not flight.planned or flight.candidate != target:
        event = Event(
            "switchover_outcome_ignored",
            target,
            f"outcome of a switchover to {target} that is not in flight: {outcome.detail}",
            details,
            Severity.WARNING,
        )
        return Decision(state, (), (event,))
    if outcome.status is OutcomeStatus.UNCERTAIN and state.primary != target:
        event = Event(
            "switchover_uncertain",
            target,
            f"switchover to {target} may not have finished: {outcome.detail}; following"
            " what is observed",
            details,
            Severity.WARNING,
        )
        return Decision(state, (), (event,))
    if outcome.status is OutcomeStatus.FAILED and state.primary != target:
        nodes = dict(state.nodes)
        backoff = at + settings.candidate_backoff_s
        nodes[target] = replace(nodes.get(target, NodeHealth()), backoff_until=backoff)
        event = Event(
            "switchover_aborted",
            old,
            f"switchover to {target} aborted and rolled back: {old} stays the primary"
            f" ({outcome.detail}); {target} is backed off",
            {**details, "target": target, "backoff_until": backoff},
            Severity.WARNING,
        )
        new_state = replace(state, in_flight=None, nodes=nodes, failback_since=None)
        return Decision(new_state, (), (event,))
    actions: list[Action] = []
    if state.primary != target:
        # Not seen promoted yet: the role-change hook was not sent by decide either.
        env = {
            "HACONTROL_EVENT": ROLE_CHANGE_HOOK,
            "HACONTROL_NEW_PRIMARY": target,
            "HACONTROL_OLD_PRIMARY": old,
            "HACONTROL_TIMELINE": "",
            "HACONTROL_REASON": str(flight.kind),
        }
        actions.append(RunHook(ROLE_CHANGE_HOOK, target, f"{flight.kind}: {old} -> {target}", env))
        state = replace(state, primary=target, primary_timeline=None, primary_lsn=None)
    rejoined = outcome.rejoined & set(state.nodes)
    fenced = (state.fenced - rejoined) - {target}
    failed_late = outcome.status is not OutcomeStatus.SUCCEEDED
    message = f"{target} is the primary after a {flight.kind} from {old}"
    if failed_late:
        message += f" (the procedure reported {outcome.status} after the promote: {outcome.detail})"
    events = [
        Event(
            "switchover_completed",
            target,
            message,
            {
                **details,
                "old_primary": old,
                "operation": str(flight.kind),
                "rejoined": sorted(rejoined),
                "duration_s": round(at - flight.started_at, 3),
            },
            Severity.WARNING if failed_late else Severity.INFO,
        )
    ]
    if old not in rejoined and old != target and old in state.nodes:
        fenced |= {old}
        events.append(
            Event(
                "node_fenced",
                old,
                f"{old} fenced — needs rejoin: the {flight.kind} did not rejoin it as a replica",
                {"reason": "not rejoined by the switchover"},
                Severity.WARNING,
            )
        )
    for node in sorted(rejoined & state.fenced):
        events.append(Event("node_rejoined", node, f"{node} rejoined by the {flight.kind}", {}))
    new_state = replace(state, in_flight=None, fenced=fenced, failback_since=None)
    return Decision(new_state, tuple(actions), tuple(events))
