"""``hacontrol cluster``: start, inspect and stop a local test cluster from the shell.

``up`` leaves the servers running after the command exits and records their
ports, data directories and postmaster PIDs in DIR/cluster.json; ``down`` stops
exactly those servers (found by PID, checked against their data directory).
"""

from __future__ import annotations

import signal
import tempfile
import time
from pathlib import Path

import click
import psycopg

from hacontrol.io.host.pgbin import PgBinError
from hacontrol.io.host.runas import RunError
from hacontrol.testing import processes
from hacontrol.testing.cluster_queries import ClusterError
from hacontrol.testing.local_cluster import STATE_FILE, LocalCluster
from hacontrol.testing.local_node import Node

CONFIG_FILE = "hacontrol.toml"


def _fail(message: str) -> click.ClickException:
    return click.ClickException(message)


def _role(node: Node) -> str:
    if not node.is_running():
        return "stopped"
    try:
        return "primary" if node.is_primary() else "replica"
    except psycopg.Error:
        return "not answering"


def _attach(directory: Path) -> LocalCluster:
    if not directory.exists():
        raise _fail(f"{directory} does not exist")
    if not directory.is_dir():
        raise _fail(f"{directory} is not a directory")
    try:
        return LocalCluster.attach(directory)
    except ClusterError as exc:
        raise _fail(str(exc)) from None


cluster_dir_option = click.option(
    "--dir", "directory", type=click.Path(path_type=Path), required=True,
    help="The directory given to (or printed by) `cluster up`.",
)


@click.group("cluster")
def cluster() -> None:
    """A local PostgreSQL streaming-replication cluster on 127.0.0.1, for trying
    hacontrol (trusts every local connection: never for real data)."""


@cluster.command("up")
@click.option("--nodes", "size", type=click.IntRange(1, 16), default=3, show_default=True,
              help="Number of nodes: pg1 is the primary, the others replicas.")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=None,
              help="Empty or new directory for data, logs and sockets [default: a new temp dir].")
@click.option("--base-port", type=click.IntRange(1024, 65535 - 16), default=None,
              help="Port of pg1; the others follow [default: free ports].")
@click.option("--sync", is_flag=True, help="Synchronous replication (ANY 1 of the other nodes).")
def up(size: int, directory: Path | None, base_port: int | None, sync: bool) -> None:
    """Start a cluster and leave it running."""
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="hacontrol-cluster-"))
        directory.rmdir()  # LocalCluster creates it, and then owns it
    directory = directory.resolve()
    if (directory / STATE_FILE).exists():
        try:
            running = LocalCluster.attach(directory).running()
        except ClusterError:
            running = {}
        if running:
            pids = ", ".join(f"{n} pid {p}" for n, p in running.items())
            raise _fail(
                f"a cluster is already running in {directory} ({pids}); "
                f"stop it with: hacontrol cluster down --dir {directory}"
            )
    started = time.monotonic()
    lc = LocalCluster(size, base_port=base_port, sync=sync, base_dir=directory, keep=True)
    try:
        lc.start()
    except (ClusterError, PgBinError, RunError, OSError) as exc:
        hint = ""
        if (directory / STATE_FILE).exists():
            hint = f"; it holds a stopped cluster: hacontrol cluster down --dir {directory}"
        raise _fail(f"cannot start the cluster: {exc}{hint}") from None
    lc.detach()
    config = directory / CONFIG_FILE
    config.write_text(
        "# Controller configuration for this test cluster: hacontrol run --config "
        f"{config}\n" + lc.config_toml(drivers=True)
    )
    click.echo(f"cluster of {size} node(s) up in {time.monotonic() - started:.2f} s: {directory}")
    for node in lc.nodes:
        role = "primary" if node is lc.nodes[0] else "replica"
        click.echo(f"  {node.name}  {role:<8} pid {node.pid()}  {node.dsn}")
    click.echo(f"multi-host DSN:  {lc.multi_host_dsn()}")
    click.echo(f"controller config: {config}")
    click.echo(f"stop it with:    hacontrol cluster down --dir {directory}")


@cluster.command("status")
@cluster_dir_option
def status(directory: Path) -> None:
    """Show each node's PID and role."""
    lc = _attach(directory.resolve())
    for node in lc.nodes:
        pid = node.pid()
        click.echo(f"{node.name}  {_role(node):<13} pid {pid or '-'}  {node.dsn}")


@cluster.command("down")
@cluster_dir_option
@click.option("--keep-data", is_flag=True, help="Leave data directories and logs in place.")
def down(directory: Path, keep_data: bool) -> None:
    """Stop the cluster's servers by PID and remove its data."""
    directory = directory.resolve()
    lc = _attach(directory)
    for node in lc.nodes:
        pid = node.pid()
        if pid is None:
            click.echo(f"{node.name}: not running")
            continue
        try:
            node.stop("fast", timeout=30)
            click.echo(f"{node.name}: stopped pid {pid} (fast shutdown)")
        except ClusterError:
            killed = node.kill()
            click.echo(f"{node.name}: pid {pid} ignored a fast shutdown; killed {len(killed)} "
                       "process(es)")
    stray = processes.postgres_under(directory)
    if stray:
        processes.send(stray, signal.SIGKILL)
        processes.wait_gone(stray, 10)
        click.echo(f"killed {len(stray)} leftover postgres process(es): {stray}")
    if keep_data:
        click.echo(f"data kept in {directory}")
        return
    lc.keep = False
    lc._remove_dir()
    click.echo(f"removed {directory}" if lc._owns_dir else f"emptied {directory}")
