"""What a configuration makes the controller do, in words: :func:`explain` (what
``hacontrol check-config`` prints for a valid file) and :func:`config_warnings`,
what is allowed but probably unintended (also logged by the service at start and
after every reload). Nothing here shows a secret."""

from __future__ import annotations

import ipaddress
import math

from psycopg.conninfo import conninfo_to_dict

from hacontrol.config.host_checks import data_dir_findings
from hacontrol.config.schema import SILENCE_MARGIN_S, Config
from hacontrol.config.sections import ApiConfig
from hacontrol.core.settings import FailoverMode
from hacontrol.io.drivers.config import CommandDriverConfig, LocalDriverConfig
from hacontrol.redact import dsn_password, redact_dsn, redact_text


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _bytes(value: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size and value % size == 0:
            return f"{value // size} {unit}"
    return f"{value} bytes"


def detection_delay(config: Config) -> float:
    """Seconds from a crashed primary's first failed probe to it being declared failed.

    N consecutive failures spanning at least the window: the first failure at
    t0, then one per interval until both the count and the span are met.
    """
    t = config.timing
    rounds = max(t.failure_threshold - 1, math.ceil(t.detection_window / t.probe_interval - 1e-9))
    return rounds * t.probe_interval




def config_warnings(config: Config) -> list[str]:
    """Things that are allowed but probably not what the operator wants, one line
    each and free of secrets: what ``check-config`` prints under "warnings:", and what
    the service logs when it starts and after every reload. Includes the misspelt
    ``HACONTROL_*`` variables of the environment the configuration was loaded from."""
    warnings: list[str] = list(config._env_warnings)
    for i, node in enumerate(config.nodes):
        for key in ("dsn", "replication_dsn"):
            dsn = getattr(node, key)
            if dsn and dsn_password(dsn):
                warnings.append(
                    f"nodes[{i}].{key} ({node.name}): a password is written in the DSN; "
                    "use a libpq passfile (~/.pgpass or passfile=...), PGPASSWORD, or a "
                    "service file instead"
                )
        service = conninfo_to_dict(node.dsn).get("service")
        if service and not node.replication_dsn:
            warnings.append(
                f"nodes[{i}].dsn ({node.name}): names service {service!r} and there is no "
                f"replication_dsn, so replicas get primary_conninfo 'service={service} ...', "
                "which each replica's server resolves in its own service file, as its own OS "
                "user; set replication_dsn (host=... port=...) or define the service there"
            )
    warnings += data_dir_findings(config)[1]
    for i, node in enumerate(config.nodes):
        driver = node.driver
        acts = isinstance(driver, CommandDriverConfig) and any(
            (driver.stop, driver.start, driver.rewind, driver.basebackup, driver.standby_config)
        )
        if isinstance(driver, CommandDriverConfig) and acts and driver.identity is None:
            warnings.append(
                f"nodes[{i}].driver ({node.name}): a command driver without an identity "
                f"command cannot check that its commands act on {node.name}'s data "
                "directory; add identity = \"...\" (docs/drivers.md)"
            )
    promotable = [n for n in config.nodes if n.priority > 0]
    if not promotable:
        warnings.append("every node has priority 0: no node can ever be promoted")
    elif len(promotable) == 1:
        warnings.append(
            f"only {promotable[0].name} has priority > 0: if it is the primary that fails, "
            "there is no candidate"
        )
    if not config.postgres.manage_settings:
        warnings.append(
            "postgres.manage_settings is off: the nodes keep their own wal_receiver_timeout "
            "(PostgreSQL default 60 s); a replica of an idle primary may hear nothing for up "
            f"to half of it, so it must be below 2 × (timing.replica_silence − "
            f"{SILENCE_MARGIN_S:g} s) = "
            f"{_seconds(2 * (config.timing.replica_silence - SILENCE_MARGIN_S))}, or a hung "
            "primary is only confirmed by its replicas after their own timeout"
        )
    if not config.postgres.heartbeat:
        warnings.append(
            "postgres.heartbeat is off: on an idle primary, replica lag and liveness are "
            "measured less precisely"
        )
    if (
        config.mode is not FailoverMode.MANUAL
        and not config.hooks.fence
        and not config.hooks.pre_promote
        and config.replication.synchronous == "off"
    ):
        warnings.append(
            "no hooks.fence, no hooks.pre_promote and replication.synchronous is off: a hung "
            "old primary that wakes up after a failover can take writes for up to one probe "
            f"round ({_seconds(config.timing.probe_interval)} + probe time) before it is "
            "fenced; set a fence or pre_promote hook (e.g. STONITH), or use "
            'replication.synchronous = "quorum"'
        )
    if (
        len(config.nodes) == 2
        and config.mode is not FailoverMode.MANUAL
        and config.replication.synchronous == "off"
    ):
        warnings.append(
            "2 nodes: an automatic failover needs a strict majority of the nodes to confirm "
            "(2 replicas), which 2 nodes cannot give, so every failover is manual; add a "
            'third node, or use replication.synchronous = "quorum"'
        )
    if config.failover.failback and config.mode is not FailoverMode.AUTOMATIC:
        warnings.append(f"failover.failback has no effect in {config.mode.value} mode")
    warnings += _replication_warnings(config) + _slot_warnings(config)
    warnings += _api_warnings(config.api)
    warnings += _dcs_warnings(config)
    return warnings


def _replication_warnings(config: Config) -> list[str]:
    rep = config.replication
    if rep.synchronous != "quorum":
        return (
            ["replication.strict has no effect while replication.synchronous is off"]
            if rep.strict
            else []
        )
    warnings: list[str] = []
    replicas = len(config.nodes) - 1
    if rep.strict and rep.quorum == replicas:
        warnings.append(
            f"replication.strict with quorum {rep.quorum} of {replicas} replicas: writes block"
            " whenever any single replica is down"
        )
    never = [n.name for n in config.nodes if n.priority == 0]
    if never:
        warnings.append(
            f"{', '.join(never)} (priority 0) acknowledge commits but are never promoted: when"
            " one of them holds the most WAL after a failure, the failover waits"
        )
    return warnings


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _api_warnings(api: ApiConfig) -> list[str]:
    if not api.enabled:
        return []
    warnings: list[str] = []
    host, port = api.address()
    if not _is_loopback(host):
        warnings.append(
            f"api.listen ({host}:{port}) is not a loopback address: status, health and "
            "metrics endpoints answer anyone who can reach it (only commands need the "
            "token); restrict access with a firewall"
        )
    if api.token_file is not None:
        try:
            mode = api.token_file.stat().st_mode
        except OSError:
            mode = 0
        if mode & 0o077:
            warnings.append(
                f"api.token_file ({api.token_file}) is readable by other users "
                f"(mode {mode & 0o777:o}); make it chmod 600"
            )
    return warnings


_MODE_TEXT = {
    FailoverMode.AUTOMATIC: "automatic: fails over by itself",
    FailoverMode.SEMI_AUTOMATIC: (
        "semi-automatic: fails over by itself, never fails back on its own"
    ),
    FailoverMode.MANUAL: "manual: detects and alerts only; an operator decides",
}


def _api_line(api: ApiConfig) -> str:
    if not api.enabled:
        return "api: disabled"
    host, port = api.address()
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if api.token_file is not None:
        token = f"the bearer token from {api.token_file}"
    elif api.bearer_token():
        token = "the configured bearer token"
    else:
        token = (
            "a bearer token; none configured, so they are refused: set api.token_file or "
            "HACONTROL_API__TOKEN"
        )
    return f"api: http://{where} (status, health checks and metrics open; commands need {token})"


def _replication_lines(config: Config) -> list[str]:
    rep = config.replication
    if rep.synchronous != "quorum":
        return [
            "replication: asynchronous as far as the controller is concerned "
            "(synchronous_standby_names is left alone); a failover may lose commits the "
            "primary acknowledged but no replica had received"
        ]
    replicas = len(config.nodes) - 1
    lines = [
        f"replication: synchronous quorum, ANY {rep.quorum} of the healthy replicas "
        "(synchronous_standby_names managed on the primary)",
        f"  each commit waits until {rep.quorum} replica(s) flushed it; a failover promotes "
        "only a member of the set, once N - k + 1 members are reachable, the one with the "
        "most WAL: no acknowledged commit is lost",
        f"  with all {replicas} replicas in the set, a failover needs "
        f"{replicas - rep.quorum + 1} of them reachable; a replica that fails is dropped "
        "from the set, so a later failover needs one fewer",
    ]
    if rep.strict:
        lines.append(
            f"  strict: with fewer than {rep.quorum} healthy replica(s) the set keeps "
            f"{rep.quorum} names over all {replicas} replicas and writes block until they return"
        )
    else:
        lines.append(
            f"  not strict: with fewer than {rep.quorum} healthy replica(s) it degrades to "
            "fewer names, or asynchronous (event sync_degraded), and is restored when they "
            "return (event sync_restored)"
        )
    return lines


def _slot_lines(config: Config) -> list[str]:
    rep = config.replication
    lines = [
        f"replication slots: one member slot per node on the primary (hacontrol_<node>),"
        f" dropped after {_seconds(rep.slot_retention)} away"
        if rep.slots else "replication slots: none for the members (replicas stream without)"
    ]
    for slot in config.slots:
        lines.append(f"  logical slot {slot.name}: database {slot.database}, plugin"
                     f" {slot.plugin}; a failover slot on PostgreSQL 17+, re-created after a"
                     " failover before 17")
    if config.slots:
        lines.append(
            "  a failover to a candidate without the synced slots "
            + ("waits (require_logical_slots)" if config.failover.require_logical_slots
               else "goes ahead with a logical_slots_lost event")
        )
    return lines


def _slot_warnings(config: Config) -> list[str]:
    warnings: list[str] = []
    if config.failover.require_logical_slots and not config.slots:
        warnings.append("failover.require_logical_slots has no effect without [[slots]]")
    if config.slots and not config.replication.slots:
        warnings.append(
            "[[slots]] with replication.slots = false: PostgreSQL 17+ syncs failover slots only"
            " to replicas that stream through a slot, so every failover loses them"
        )
    return warnings


def _driver_text(driver: LocalDriverConfig | CommandDriverConfig | None) -> str:
    if driver is None:
        return "none (SQL only: rejoin by hand)"
    if isinstance(driver, LocalDriverConfig):
        return f"local: pg_ctl/pg_rewind/pg_basebackup on this host, data in {driver.data_dir}"
    steps = [name for name in ("stop", "start", "status", "rewind", "basebackup",
                               "standby_config", "fence", "identity") if getattr(driver, name)]
    return f"command: {', '.join(steps) or 'no steps'}"


def rejoin_capable(config: Config) -> list[str]:
    """Nodes whose driver can run the rejoin procedure (in file order)."""
    # Imported here: the procedures bring asyncpg, which reading a configuration
    # does not need.
    from hacontrol.io.procedures.rejoin import missing_steps

    allow = config.rejoin.allow_basebackup
    drivers = config.build_drivers()
    return [
        n.name
        for n in config.nodes
        if n.driver is not None and not missing_steps(drivers[n.name], allow_basebackup=allow)
    ]


def _rejoin_lines(config: Config) -> list[str]:
    rj, sw = config.rejoin, config.switchover
    capable = rejoin_capable(config)
    others = [n.name for n in config.nodes if n.name not in capable]
    lines = ["rejoin (a fenced old primary back as a replica):"]
    if capable:
        how = "rewind" + (", then a base backup if that fails" if rj.allow_basebackup else "")
        when = (
            "automatically after a failover (a failed attempt retried up to 5 times, after"
            " 5, 10, 20 and 40 s), and on 'hacontrol rejoin NODE'"
            if rj.automatic
            else "on 'hacontrol rejoin NODE' (automatic rejoin is off)"
        )
        lines.append(f"  {', '.join(capable)}: by the driver ({how}), {when}; it must stream "
                     f"within {_seconds(rj.timeout)} of each start, or it is stopped and stays "
                     "fenced")
    if others:
        lines.append(f"  {', '.join(others)}: no driver that can: rejoin by hand, then report it "
                     "with 'hacontrol rejoin NODE' (docs/runbook.md)")
    lines += [
        "switchover (planned, no acknowledged write lost):",
        f"  fence the old primary, the target must replay its last WAL within "
        f"{_seconds(sw.catchup_timeout)} (else rolled back), promote it, repoint the others, "
        "and rejoin the old primary when its driver can stop and start it (without one it "
        "stays a fenced, read-only primary that needs a rejoin)",
        f"  reported overdue after {_seconds(sw.timeout)}, abandoned after "
        f"{_seconds(2 * sw.timeout)}; a failed candidate is not tried again for "
        f"{_seconds(config.failover.candidate_backoff)}",
    ]
    return lines


def _identity_line(config: Config) -> str:
    checks = (
        "drivers act only on a data directory that shows its node's dsn port and, once "
        "known, the cluster's system identifier"
    )
    if config.system_identifier is not None:
        return (f"identity: system identifier {config.system_identifier} (pinned): a node or "
                f"data directory reporting another is never acted on; {checks}")
    return f"identity: the system identifier is learned from the nodes (not pinned); {checks}"


def explain(config: Config) -> str:
    """A human summary of what this configuration makes the controller do."""
    t, f, pg, h = config.timing, config.failover, config.postgres, config.hooks
    lines = [f"mode: {_MODE_TEXT[config.mode]}", _identity_line(config), "nodes:"]
    width = max(len(n.name) for n in config.nodes)
    for node in config.nodes:
        note = "never promoted" if node.priority == 0 else f"priority {node.priority}"
        lines.append(f"  {node.name:<{width}}  {note:<16} {redact_dsn(node.dsn)}")
        if node.replication_dsn:
            lines.append(f"  {'':<{width}}  {'replication':<16} {redact_dsn(node.replication_dsn)}")
        lines.append(f"  {'':<{width}}  {'driver':<16} {_driver_text(node.driver)}")
    delay = detection_delay(config)
    probes = round(delay / t.probe_interval) + 1
    lines += [
        "detection:",
        f"  every node is probed every {_seconds(t.probe_interval)} "
        f"(one probe may take up to {_seconds(t.probe_timeout)})",
        f"  a crashed primary is declared failed after {t.failure_threshold} failed probes "
        f"spanning >= {_seconds(t.detection_window)}, "
        f"about {round(delay, 3):g} s ({probes} probes) at a {_seconds(t.probe_interval)} "
        "interval, then confirmed by the replicas "
        "(WAL receiver not streaming)",
        f"  a hung primary is confirmed once every reachable replica has heard nothing from it "
        f"for {_seconds(t.replica_silence)}",
        "  if the replicas still hear from the primary, only the controller is cut off: "
        "no failover, a warning",
        f"  an automatic failover needs {len(config.nodes) // 2 + 1} of the "
        f"{len(config.nodes)} nodes' replicas confirming (a strict majority), so a "
        "controller cut off with a minority never promotes",
        f"  a failed node counts as healthy again after {t.recovery_threshold} "
        "consecutive healthy probes",
        "candidates:",
        f"  reachable replicas with priority > 0, at most {_bytes(f.max_lag_bytes)} behind; "
        "most WAL first, then the least WAL left to replay, then priority, then name",
        f"  at most one failover in flight; {_seconds(t.cooldown)} cool-down between automatic "
        f"failovers; a promotion not complete after {_seconds(t.promote_timeout)} is sent once"
        " more, then abandoned (no other node is promoted while it may still land)",
    ]
    if f.failback and config.mode is FailoverMode.AUTOMATIC:
        lines.append(
            f"  fails back to the highest-priority node {_seconds(f.failback_delay)} after it "
            "is healthy again"
        )
    else:
        lines.append("  no automatic failback")
    lines.append("postgres settings:")
    if pg.manage_settings:
        managed = ", ".join(f"{k} = {v}ms" for k, v in config.managed_settings_ms().items())
        lines.append(f"  managed on every node (ALTER SYSTEM + reload): {managed}")
    else:
        lines.append("  not managed (the nodes keep their own)")
    lines.append(
        "  heartbeat: a tiny WAL record on the primary every probe round"
        if pg.heartbeat
        else "  heartbeat: off"
    )
    lines += _replication_lines(config) + _slot_lines(config)
    lines += _rejoin_lines(config)
    lines.append(f"hooks (timeout {_seconds(h.timeout)}):")
    for name in ("pre_promote", "fence", "on_role_change"):
        command = getattr(h, name)
        lines.append(f"  {name}: {redact_text(command) if command else '(none)'}")
    if h.fence:
        lines.append(
            "  an unreachable old primary is fenced (fence hook) before a promote; "
            "a failed fence aborts the promote"
        )
    lines.append(f"journal: {config.journal}")
    lines.append(_api_line(config.api))
    lines += _controllers_lines(config)
    warnings = config_warnings(config)
    if warnings:
        lines.append("warnings:")
        lines += [f"  - {w}" for w in warnings]
    return "\n".join(lines)


def _controllers_lines(config: Config) -> list[str]:
    dcs = config.dcs
    if dcs is None:
        return [
            "controllers: this one alone; a second controller started on the same cluster "
            "finds the cluster's lock held on the nodes and stays passive"
        ]
    auth = f", user {dcs.username!r}" if dcs.username else ""
    tls = f", TLS ({', '.join(dcs.tls_files())})" if dcs.tls_files() else ""
    return [
        f"controllers: several, meeting in etcd as {dcs.name!r} under {dcs.prefix()}{auth}{tls}",
        f"  etcd: {', '.join(dcs.endpoints)}",
        f"  leader lease {_seconds(dcs.ttl)}, renewed every "
        f"{_seconds(round(dcs.keepalive_s(), 2))}; a leader stops acting "
        f"{_seconds(dcs.margin_s())} before its lease could expire",
    ]


def _dcs_warnings(config: Config) -> list[str]:
    dcs = config.dcs
    if dcs is None:
        return []
    warnings: list[str] = []
    if len(dcs.endpoints) == 1:
        warnings.append("dcs.endpoints names one etcd member: list every member, so that "
                        "a request goes to another when one is down")
    if dcs.password.get_secret_value() and dcs.scheme() == "http":
        warnings.append("dcs.password is sent to etcd over http://, in clear text; use "
                        "https:// endpoints")
    return warnings

