"""Durable event history: one JSON object per line, fsync'd on every append.

Reading is bounded by what is asked: :meth:`Journal.read` walks the files from
their end backwards and stops after ``limit`` matching records (or at the first
record older than ``since``), so the last few events cost a few kilobytes of I/O
whatever the journal's size.

Rotation. When the current file reaches ``rotate_bytes`` (default 64 MiB), or its
first record is older than ``rotate_age_s`` (default: no age limit), it becomes
``<name>.1``; older files shift to ``.2`` ... ``.<keep>`` and the one beyond
``keep`` (default 3) is deleted. The new file starts with one snapshot record
holding every fact :meth:`Journal.recover` derives from the records before it, so
a restart never needs the old files::

    {"seq": 200001, "ts": 1764625212.51, "kind": "journal_snapshot",
     "message": "journal rotated at 67108912 bytes; older records in journal.jsonl.1",
     "snapshot": {"format": 1, "records": 200000, "primary": "pg2", "paused": false,
                  "maintenance": ["pg3"], "fenced": ["pg1"],
                  "last_failover_wall": 1764620000.1, "unresolved_failover": null,
                  "system_identifier": 7301234567890123456}}

``unresolved_failover`` has the shape of :attr:`RecoveredState.unresolved_failover`;
``records`` counts the records the snapshot stands for. :meth:`Journal.recover`
starts from the last snapshot of the current file and replays what follows it.
:meth:`Journal.read` skips snapshot records unless their kind is asked for, and
continues into the kept old files when the current one holds too few records.

A rotation is crash-safe: the new file is written and fsync'd under a temporary
name (``<name>.rotating``) before the current file is renamed away; a journal
opened after a crash between the two renames completes the rotation.

The facts and their snapshot form are the decision core's
(:mod:`hacontrol.core.recovery`); reading lines and filtering records are in
:mod:`hacontrol.io.journal_lines`.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from hacontrol.core.recovery import SNAPSHOT_KIND, RecoveredState, fold, to_snapshot
from hacontrol.io.journal_lines import lines_backwards, matches, parse_record, record_ts
from hacontrol.redact import redact_value

__all__ = ["DEFAULT_KEEP", "DEFAULT_ROTATE_BYTES", "SNAPSHOT_KIND", "Journal", "RecoveredState"]

DEFAULT_ROTATE_BYTES = 64 * 1024 * 1024
DEFAULT_KEEP = 3


class Journal:
    """Append-only JSON-lines journal with size/age rotation. Safe to share between
    threads: appends (and rotations) are serialised; reads take no lock."""

    def __init__(
        self,
        path: str | Path,
        *,
        rotate_bytes: int | None = DEFAULT_ROTATE_BYTES,
        keep: int = DEFAULT_KEEP,
        rotate_age_s: float | None = None,
    ) -> None:
        if rotate_bytes is not None and rotate_bytes < 1:
            raise ValueError("rotate_bytes must be positive (or None: no size limit)")
        if keep < 0:
            raise ValueError("keep must be 0 or more")
        if rotate_age_s is not None and rotate_age_s <= 0:
            raise ValueError("rotate_age_s must be positive (or None: no age limit)")
        self.path = Path(path)
        self.rotate_bytes = rotate_bytes
        self.keep = keep
        self.rotate_age_s = rotate_age_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._lock:
            # A reader without write permission (the CLI as another user) still reads
            # what is there; the controller itself completes the rotation.
            with contextlib.suppress(PermissionError):
                self._finish_rotation()
            # Checked before the first append, so that merely reading never writes.
            self._tail_checked = False
            self._seq = self._last_seq()
            self._file_started = self._first_ts()
            # What recover() derives, kept current by append() from the moment it is
            # first computed, so a rotation never has to re-read the whole file.
            self._facts: RecoveredState | None = None
            # Where in which file (inode; None: no file yet) self._facts stands: another
            # writer's records after this point are read before the next snapshot.
            self._facts_at: tuple[int, int | None] = (0, None)
            self._appended_here = 0

    # -- writing

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Write one record durably and return it (secrets redacted). Rotates the
        file first when it is due."""
        with self._lock:
            if not self._tail_checked:
                self._end_torn_line()
                self._tail_checked = True
                if self._facts is not None:
                    self._current_facts()  # past the torn line and its new newline
            self._seq += 1
            record: dict[str, Any] = {
                "seq": self._seq,
                "ts": time.time(),
                "kind": kind,
                **redact_value(fields),
            }
            data = (json.dumps(record, default=str, separators=(",", ":")) + "\n").encode()
            size, inode = self._write(self.path, data, os.O_APPEND)
            if self._file_started is None:
                self._file_started = float(record["ts"])
            self._appended_here += 1
            if self._facts is not None:
                offset, known = self._facts_at
                same_file = known == inode or (known is None and offset == 0)
                if same_file and offset + len(data) == size:
                    self._facts = fold((record,), self._facts)
                    self._facts_at = (size, inode)
            if self._rotation_due(size, float(record["ts"])):
                self._rotate(size)
            return record

    @staticmethod
    def _write(path: Path, data: bytes, mode: int) -> tuple[int, int]:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | mode, 0o640)
        try:
            os.write(fd, data)
            os.fsync(fd)
            stat = os.fstat(fd)
            return stat.st_size, stat.st_ino
        finally:
            os.close(fd)

    def _rotation_due(self, size: int, now: float) -> bool:
        # A file holding nothing but its snapshot is never rotated again.
        if self._appended_here == 0:
            return False
        if self.rotate_bytes is not None and size >= self.rotate_bytes:
            return True
        return (
            self.rotate_age_s is not None
            and self._file_started is not None
            and now - self._file_started >= self.rotate_age_s
        )

    def _old(self, number: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{number}")

    @property
    def _rotating(self) -> Path:
        return self.path.with_name(f"{self.path.name}.rotating")

    def _rotate(self, size: int) -> None:
        facts = self._current_facts()
        self._seq += 1
        now = time.time()
        where = self._old(1).name if self.keep else "none kept"
        snapshot = {
            "seq": self._seq,
            "ts": now,
            "kind": SNAPSHOT_KIND,
            "message": f"journal rotated at {size} bytes; older records in {where}",
            "snapshot": redact_value(to_snapshot(facts)),
        }
        data = (json.dumps(snapshot, default=str, separators=(",", ":")) + "\n").encode()
        self._rotating.unlink(missing_ok=True)
        new_size, inode = self._write(self._rotating, data, os.O_EXCL)
        if self.keep:
            self._old(self.keep).unlink(missing_ok=True)
            for number in range(self.keep - 1, 0, -1):
                if self._old(number).exists():
                    os.replace(self._old(number), self._old(number + 1))
            os.replace(self.path, self._old(1))
        os.replace(self._rotating, self.path)
        self._sync_directory()
        # Files beyond ``keep`` (left by a larger ``keep`` earlier) go as well.
        number = self.keep + 1
        while self._old(number).exists():
            self._old(number).unlink()
            number += 1
        self._facts_at = (new_size, inode)
        self._file_started = now
        self._appended_here = 0

    def _sync_directory(self) -> None:
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _finish_rotation(self) -> None:
        """Complete or undo a rotation a crash interrupted."""
        if not self._rotating.exists():
            return
        if self.path.exists():
            # The current file was never renamed away: the rotation had not begun.
            self._rotating.unlink()
        else:
            os.replace(self._rotating, self.path)
            self._sync_directory()

    def _end_torn_line(self) -> None:
        """A crash mid-write leaves a line without its newline: end it, so the next
        record starts a line of its own instead of joining the torn one."""
        try:
            with self.path.open("rb") as handle:
                if handle.seek(0, os.SEEK_END) == 0:
                    return
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) == b"\n":
                    return
        except FileNotFoundError:
            return
        self._write(self.path, b"\n", os.O_APPEND)

    def _last_seq(self) -> int:
        for path in self._files():
            for line in lines_backwards(path):
                record = parse_record(line)
                if record is not None and isinstance(record.get("seq"), int):
                    return int(record["seq"])
        return 0

    def _first_ts(self) -> float | None:
        try:
            with self.path.open("rb") as handle:
                for line in handle:
                    record = parse_record(line)
                    if record is not None:
                        return float(record.get("ts") or 0.0)
        except (FileNotFoundError, ValueError, TypeError):
            return None
        return None

    # -- recovering

    def _current_facts(self) -> RecoveredState:
        """The facts up to the end of the current file (caller holds the lock)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            if self._facts is None:
                self._facts, self._facts_at = RecoveredState(), (0, None)
            return self._facts
        offset, inode = self._facts_at
        if self._facts is None or inode != stat.st_ino:
            self._facts, offset = RecoveredState(), 0
        if offset < stat.st_size:
            with self.path.open("rb") as handle:
                handle.seek(offset)

                def records() -> Iterator[dict[str, Any]]:
                    nonlocal offset
                    for line in handle:
                        if not line.endswith(b"\n"):
                            return  # torn: not part of the journal (yet)
                        offset += len(line)
                        record = parse_record(line)
                        if record is not None:
                            yield record

                self._facts = fold(records(), self._facts)
        self._facts_at = (offset, stat.st_ino)
        return self._facts

    def recover(self) -> RecoveredState:
        """The facts a restarted controller must keep: the last snapshot of the current
        file and every record after it (older files are not needed)."""
        with self._lock:
            return self._current_facts()

    # -- reading

    def _files(self) -> list[Path]:
        """The current file and the kept old ones, newest first (those that exist)."""
        files = [self.path, *(self._old(n) for n in range(1, self.keep + 1))]
        return [p for p in files if p.exists()]

    def records_backwards(
        self,
        kinds: Collection[str] | None = None,
        nodes: Collection[str] | None = None,
        since: float | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Matching records, newest first, through the kept old files; stops at the
        first record older than ``since``. Snapshot records only when asked for by kind."""
        wanted = frozenset(kinds) if kinds is not None else None
        names = frozenset(nodes) if nodes is not None else None
        # Cheap byte tests first: a line that does not even contain a wanted kind or
        # node name is not parsed.
        kind_needles = [k.encode() for k in wanted] if wanted is not None else None
        node_needles = [n.encode() for n in names] if names is not None else None
        lowest: int | None = None
        for path in self._files():
            for line in lines_backwards(path):
                if since is not None:
                    ts = record_ts(line)
                    if ts is not None and ts < since:
                        return
                if kind_needles is not None and not any(k in line for k in kind_needles):
                    continue
                if node_needles is not None and not any(n in line for n in node_needles):
                    continue
                record = parse_record(line)
                if record is None:
                    continue
                seq = record.get("seq")
                if isinstance(seq, int):
                    # A rotation while reading shows the same records again in ".1".
                    if lowest is not None and seq >= lowest:
                        continue
                    lowest = seq
                kind = record.get("kind")
                if kind == SNAPSHOT_KIND and (wanted is None or SNAPSHOT_KIND not in wanted):
                    continue
                if not matches(record, wanted, names):
                    continue
                yield record

    def read(
        self,
        limit: int | None = None,
        kinds: Collection[str] | None = None,
        nodes: Collection[str] | None = None,
        since: float | None = None,
    ) -> list[dict[str, Any]]:
        """Records in order, oldest first: the last ``limit`` of those that match
        (all of them without a limit); a torn last line is skipped. Reads from the
        end and only as far back as needed."""
        found: list[dict[str, Any]] = []
        for record in self.records_backwards(kinds, nodes, since):
            found.append(record)
            if limit and len(found) >= limit:
                break
        found.reverse()
        return found
