"""The node driver interface: host-level steps the SQL connection cannot do.

A driver stops, starts, rewinds and re-clones one node's PostgreSQL server.
Every step returns a :class:`DriverResult` (never raises for node trouble), is
bounded by a timeout, and scrubs secrets out of what it reports. A driver that
cannot do a step says so (``possible=False``) instead of pretending; the
controller turns that into "not possible without a driver" for the operator.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from hacontrol.io.drivers.identity import UINT64_MASK


class Step(StrEnum):
    """The host-level steps a driver may support (its ``capabilities``)."""

    STOP = "stop"
    START = "start"
    STATUS = "status"
    REWIND = "rewind"
    BASEBACKUP = "basebackup"
    STANDBY_CONFIG = "standby_config"
    FENCE = "fence"
    # Withdraw a pending promote request (remove promote.signal) of a stopped node.
    DISCARD_PROMOTE = "discard_promote"
    # Not a host step: the proof that the data directory is the node's (docs/drivers.md).
    IDENTITY = "identity"


STOP_MODES = ("smart", "fast", "immediate")


@dataclass(frozen=True, slots=True)
class DriverResult:
    """What one driver step did. ``output`` is captured program output, redacted."""

    step: str
    ok: bool
    detail: str
    output: str = ""
    duration_s: float = 0.0
    # False when this driver cannot do the step at all (nothing was attempted).
    possible: bool = True
    timed_out: bool = False
    # status(): True/False when known, None when the status could not be read.
    running: bool | None = None
    returncode: int | None = None
    # The step was not attempted: the data directory was not proven to be the node's.
    refused: bool = False

    def fields(self) -> dict[str, Any]:
        """JSON-friendly fields for the journal."""
        out: dict[str, Any] = {
            "step": self.step,
            "ok": self.ok,
            "detail": self.detail,
            "duration_s": round(self.duration_s, 3),
        }
        if self.output:
            out["output"] = self.output
        if not self.possible:
            out["possible"] = False
        if self.timed_out:
            out["timed_out"] = True
        if self.running is not None:
            out["running"] = self.running
        if self.returncode is not None:
            out["returncode"] = self.returncode
        if self.refused:
            out["refused"] = True
        return out


def not_possible(step: Step | str, why: str = "not possible without a driver") -> DriverResult:
    """The result of a step this driver cannot do."""
    return DriverResult(str(step), False, why, possible=False)


_VERBS = {
    "basebackup": "re-clone",
    "standby_config": "write the standby configuration of",
    "identity": "act on",
    "discard_promote": "discard the promote request of",
}


def refusal(step: Step | str, node: str, reason: str, duration_s: float = 0.0) -> DriverResult:
    """The result of a step refused because the data directory is not proven to be
    ``node``'s: nothing was attempted."""
    verb = _VERBS.get(str(step), str(step))
    return DriverResult(str(step), False, f"refused to {verb} {node}: {reason}",
                        duration_s=duration_s, refused=True)


class NodeDriver(ABC):
    """How host-level steps run for one node. Subclasses override what they support."""

    #: Node name (for messages).
    node: str = ""
    #: The steps this driver can do.
    capabilities: frozenset[Step] = frozenset()
    #: The port of the node's DSN, which its data directory must show (None: not checked).
    expected_port: int | None = None
    #: ``system_identifier`` from the configuration; what the controller learns never
    #: replaces it.
    pinned_system_identifier: int | None = None
    #: The cluster's system identifier as the controller last learned it.
    learned_system_identifier: int | None = None

    def expect_system_identifier(self, value: int | None) -> None:
        """Tell the driver the cluster's system identifier (None: not known). From then
        on it acts only on a data directory whose control file names the same one."""
        # pg_control_system() returns it as a signed bigint, pg_controldata unsigned.
        self.learned_system_identifier = None if value is None else value & UINT64_MASK

    def expected_system_identifier(self) -> tuple[int | None, str, str]:
        """(the identifier a data directory must show, where it comes from, a conflict
        that makes every directory fail); (None, "", "") while none is known."""
        pinned, learned = self.pinned_system_identifier, self.learned_system_identifier
        if pinned is not None and learned is not None and pinned != learned:
            return pinned, "pinned by system_identifier", (
                f"the cluster reports system identifier {learned}, but system_identifier "
                f"in the configuration pins {pinned}; no data directory can be proven to be "
                f"{self.node}'s until they agree: fix system_identifier, or the nodes' dsn"
            )
        if pinned is not None:
            return pinned, "pinned by system_identifier", ""
        if learned is not None:
            return learned, "learned from the cluster", ""
        return None, "", ""

    async def verify_identity(
        self, step: Step | str = Step.IDENTITY, *, absent_ok: bool = False
    ) -> DriverResult:
        """Prove the data directory this driver acts on is the node's. ok: proven (or,
        with ``absent_ok``, nothing there to prove); else a refusal of ``step`` naming
        what was found, what was expected and the fix. ``possible=False``: this driver
        cannot check."""
        return not_possible(Step.IDENTITY, f"{self.describe()} cannot check its data directory")

    def can(self, *steps: Step) -> bool:
        """True when every one of ``steps`` is supported."""
        return all(s in self.capabilities for s in steps)

    def describe(self) -> str:
        """A one-line description for status output and the journal."""
        return type(self).__name__

    def timeout_hint(self) -> float:
        """How long one ordinary step may take with this driver (seconds)."""
        return float(getattr(self, "timeout", 60.0))

    @abstractmethod
    async def stop(self, mode: str = "fast") -> DriverResult:
        """Shut the server down (``smart``, ``fast`` or ``immediate``) and wait."""

    @abstractmethod
    async def start(self) -> DriverResult:
        """Start the server and wait until it accepts connections."""

    @abstractmethod
    async def status(self) -> DriverResult:
        """Whether the server runs (``result.running``)."""

    @abstractmethod
    async def rewind(self, source_dsn: str) -> DriverResult:
        """pg_rewind the stopped node against the server ``source_dsn`` reaches."""

    @abstractmethod
    async def basebackup(self, source_dsn: str) -> DriverResult:
        """Replace the data directory with a fresh base backup from ``source_dsn``,
        keeping the old one renamed, never deleted."""

    @abstractmethod
    async def write_standby_config(
        self, primary_conninfo: str, primary_slot_name: str = ""
    ) -> DriverResult:
        """standby.signal plus primary_conninfo (and primary_slot_name: "" streams
        without a slot), so the next start is a replica."""

    async def fence(self) -> DriverResult:
        """A host-level fence (e.g. STONITH); optional."""
        return not_possible(Step.FENCE, f"{self.describe()} has no fence step")

    async def discard_promote(self) -> DriverResult:
        """Remove a promote request (promote.signal) from the stopped node's data
        directory: it survives a restart, so only this keeps it from ever landing."""
        return not_possible(Step.DISCARD_PROMOTE, f"{self.describe()} cannot discard a promote")

    async def final_lsn(self) -> int | None:
        """The end of WAL of the cleanly stopped node (its shutdown checkpoint's
        location), when the driver can read it; None otherwise."""
        return None


class NullDriver(NodeDriver):
    """No driver configured: SQL only. Every host step reports it is not possible."""

    def __init__(self, node: str = "") -> None:
        self.node = node

    def describe(self) -> str:
        return "no driver (SQL only)"

    async def stop(self, mode: str = "fast") -> DriverResult:
        return not_possible(Step.STOP)

    async def start(self) -> DriverResult:
        return not_possible(Step.START)

    async def status(self) -> DriverResult:
        return not_possible(Step.STATUS)

    async def rewind(self, source_dsn: str) -> DriverResult:
        return not_possible(Step.REWIND)

    async def basebackup(self, source_dsn: str) -> DriverResult:
        return not_possible(Step.BASEBACKUP)

    async def write_standby_config(
        self, primary_conninfo: str, primary_slot_name: str = ""
    ) -> DriverResult:
        return not_possible(Step.STANDBY_CONFIG)

    async def fence(self) -> DriverResult:
        return not_possible(Step.FENCE)
