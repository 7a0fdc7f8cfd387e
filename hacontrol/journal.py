"""Durable event history: one JSON object per line, fsync'd on every append."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hacontrol.redact import redact_value


@dataclass(frozen=True, slots=True)
class RecoveredState:
    """What a restarted controller learns from its journal."""

    primary: str | None = None
    paused: bool = False
    maintenance: frozenset[str] = frozenset()
    fenced: frozenset[str] = frozenset()
    # Wall-clock time of the last failover (started, completed or not); used only
    # to carry the cool-down across a restart.
    last_failover_wall: float | None = None
    # A failover or switchover that was started and never seen to complete, fail or
    # be abandoned: its promote may still land. {"node": candidate, "old_primary": ...,
    # "started": wall time, "operation": "failover" | "switchover" | ..., "old_timeline"}
    unresolved_failover: Mapping[str, Any] | None = None
    # The cluster's system identifier, from the last cluster_identified record.
    system_identifier: int | None = None
    records: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)


# Journal record kinds that change what a restart must remember.
PRIMARY_KINDS = frozenset({"primary_adopted", "failover_completed", "switchover_completed"})
# How a started failover or switchover ends (as the decision core reports it).
FAILOVER_ENDS = frozenset({
    "failover_completed", "failover_abandoned", "failover_failed",
    "switchover_completed", "switchover_aborted", "switchover_abandoned", "switchover_settled",
})


class Journal:
    """Append-only JSON-lines journal. Safe to share between threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._seq = sum(1 for _ in self._lines()) if self.path.exists() else 0

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Write one record durably and return it (secrets redacted)."""
        with self._lock:
            self._seq += 1
            record: dict[str, Any] = {
                "seq": self._seq,
                "ts": time.time(),
                "kind": kind,
                **redact_value(fields),
            }
            line = json.dumps(record, default=str, separators=(",", ":")) + "\n"
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            return record

    def _lines(self) -> Iterator[str]:
        with self.path.open(encoding="utf-8") as handle:
            yield from handle

    def read(
        self, limit: int | None = None, kinds: frozenset[str] | None = None
    ) -> list[dict[str, Any]]:
        """Records in order (the last ``limit`` of them); a torn last line is skipped."""
        if not self.path.exists():
            return []
        records: list[dict[str, Any]] = []
        for line in self._lines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a crash mid-write leaves at most one torn line
            if kinds is None or record.get("kind") in kinds:
                records.append(record)
        return records[-limit:] if limit else records

    def recover(self) -> RecoveredState:
        """Replay the journal into the facts a restarted controller must keep."""
        primary: str | None = None
        paused = False
        maintenance: set[str] = set()
        fenced: set[str] = set()
        last_failover: float | None = None
        unresolved: dict[str, Any] | None = None
        identifier: int | None = None
        count = 0
        for record in self.read():
            count += 1
            kind = record.get("kind")
            node = record.get("node")
            # The decision core's event (with details), not the procedure's own record.
            started = kind in ("failover_started", "switchover_started") and "details" in record
            if started:
                details = record.get("details") or {}
                unresolved = {
                    "node": node,
                    "old_primary": details.get("old_primary"),
                    "old_timeline": details.get("old_timeline"),
                    "operation": details.get("operation")
                    or ("failover" if kind == "failover_started" else "switchover"),
                    "started": float(record.get("ts", 0.0)),
                    # The cool-down to fall back to if it turns out nothing was promoted.
                    "previous_failover": last_failover,
                }
                if kind == "failover_started":
                    last_failover = float(record.get("ts", 0.0))
            elif kind in FAILOVER_ENDS:
                unresolved = None
            if kind == "cluster_identified":
                value = (record.get("details") or {}).get("system_identifier")
                identifier = int(value) if value is not None else identifier
            if kind in PRIMARY_KINDS and isinstance(node, str):
                primary = node
                fenced.discard(node)
                if kind == "failover_completed":
                    last_failover = max(last_failover or 0.0, float(record.get("ts", 0.0)))
            elif kind == "node_fenced" and isinstance(node, str):
                fenced.add(node)
            elif kind == "node_rejoined" and isinstance(node, str):
                fenced.discard(node)
            elif kind == "paused":
                paused = True
            elif kind == "resumed":
                paused = False
            elif kind == "maintenance_on" and isinstance(node, str):
                maintenance.add(node)
            elif kind == "maintenance_off" and isinstance(node, str):
                maintenance.discard(node)
        return RecoveredState(
            primary=primary,
            paused=paused,
            maintenance=frozenset(maintenance),
            fenced=frozenset(fenced),
            last_failover_wall=last_failover,
            unresolved_failover=unresolved,
            system_identifier=identifier,
            records=count,
        )
