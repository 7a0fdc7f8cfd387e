"""Chaos suite: every fault of the matrix, in every replication mode, several trials.

Each trial runs on a fresh 3-node cluster whose nodes live in their own network
namespaces, with the real controller as a process and two writers (an
application through the multi-host DSN, and a stale client inside the
primary's namespace); see hacontrol/testing/faults.py. Prints one table (and
per-trial progress on stderr):

    python checks/chaos.py                   # full matrix, 3 trials each
    python checks/chaos.py --ci              # bounded subset, 1 trial each (< 10 min)
    python checks/chaos.py --faults kill,netem --modes async --trials 5

Needs root (namespaces, veth, iptables). Exit status 1 when a trial broke or a
required zero was missed: a failover that should not have happened or did not
happen, a split-brain window after the fence, or a lost write in quorum mode.
Asynchronous mode loses acknowledged writes by design; they are reported.
Some faults expect more (their ``Fault`` in hacontrol/testing/fault_catalog.py): no
lost write in other modes too, a given final primary, a node left fenced, one
writable node at the end that is the controller's primary, an RTO bound.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from hacontrol.testing.fault_catalog import (
    FAULTS,
    MODES,
    Fault,
    Timings,
    TrialResult,
    mode_unavailable,
)
from hacontrol.testing.faults import Trial
from hacontrol.testing.netns import unavailable_reason

# The CI subset: every fault of the original matrix once in async mode (netem
# shortened), the faults where synchronous replication changes the outcome in
# sync and quorum mode, and the operator/replay faults once each in the mode
# where they promise the most (10-25 s each).
LATER_FAULTS = ("stray-promote", "replay-conflict", "controller-kill-switchover")
CI_PLAN: list[tuple[str, str]] = [(f, "async") for f in FAULTS if f not in LATER_FAULTS] + [
    ("kill", "sync"), ("hang-long", "sync"), ("partition-primary", "sync"),
    ("kill", "quorum"), ("partition-primary", "quorum"),
    ("stray-promote", "async"), ("replay-conflict", "quorum"),
    ("controller-kill-switchover", "quorum"),
]
CI_NETEM_S = 20.0

HEADER = ("fault", "mode", "trials", "failovers exp/seen", "RTO median s", "RTO max s",
          "lost writes", "split-brain windows (after fence)")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def summarise(results: list[TrialResult]) -> tuple[str, ...]:
    """One table row for the trials of one (fault, mode)."""
    first = results[0]
    rtos = [r.rto for r in results if r.rto is not None]
    lost = sum(r.lost for r in results)
    by_writer: dict[str, int] = {}
    for r in results:
        for writer, n in r.lost_by_writer.items():
            by_writer[writer] = by_writer.get(writer, 0) + n
    lost_text = str(lost)
    if lost:
        lost_text += " (" + ", ".join(f"{w} {n}" for w, n in sorted(by_writer.items())) + ")"
    windows = sum(len(r.windows) for r in results)
    after = sum(len(r.windows_after_fence) for r in results)
    errors = sum(1 for r in results if r.error)
    trials = f"{len(results)}" + (f" ({errors} broke)" if errors else "")
    least = sum(r.failovers_expected for r in results)
    most = sum(r.failovers_max for r in results)
    expected = f"{least}" if least == most else f"{least}-{most}"
    return (
        first.fault, first.mode, trials,
        f"{expected}/{sum(r.failovers_seen for r in results)}",
        _fmt(statistics.median(rtos) if rtos else None), _fmt(max(rtos) if rtos else None),
        lost_text, f"{windows} ({after})",
    )


def table(rows: list[tuple[str, ...]]) -> str:
    """A Markdown table (readable as plain text too)."""
    widths = [max(len(str(x)) for x in col) for col in zip(HEADER, *rows, strict=True)]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(HEADER), sep, *(line(r) for r in rows)])


def violations(results: list[TrialResult]) -> list[str]:
    """Every required zero that a trial missed, every other expectation of its
    fault that it missed, and every broken trial."""
    found = []
    for r in results:
        tag = f"{r.fault}/{r.mode}"
        fault = FAULTS.get(r.fault) or Fault(r.fault, r.failovers_expected, "")
        if r.error:
            found.append(f"{tag}: trial broke: {r.error}")
        if r.failovers_seen > r.failovers_max:
            found.append(f"{tag}: {r.failovers_seen} failover(s), expected "
                         + (f"{r.failovers_expected}" if r.failovers_max == r.failovers_expected
                            else f"at most {r.failovers_max}"))
        elif r.failovers_seen < r.failovers_expected and not r.error:
            found.append(f"{tag}: no failover ({'; '.join(r.notes)})")
        if r.windows_after_fence:
            found.append(f"{tag}: {len(r.windows_after_fence)} split-brain window(s) after "
                         "the fence")
        if r.mode in fault.lossless and r.lost:
            found.append(f"{tag}: {r.lost} acknowledged write(s) lost in {r.mode} mode")
        if r.error:
            continue  # the checks below need a trial that ran to its end
        if r.controller_exit is not None:
            found.append(f"{tag}: the controller exited with status {r.controller_exit} "
                         "during the trial")
        if r.mode in fault.lossless and not r.lost_counted:
            found.append(f"{tag}: lost writes not counted (no readable final primary), "
                         f"{r.mode} mode must lose none")
        if fault.final_primary is not None and r.final_primary != fault.final_primary:
            found.append(f"{tag}: the controller's primary at the end is {r.final_primary}, "
                         f"expected {fault.final_primary}")
        if fault.must_fence is not None:
            if r.fenced_at is None:
                found.append(f"{tag}: {fault.must_fence} was never fenced")
            if r.writable_at_end is not None and fault.must_fence in r.writable_at_end:
                found.append(f"{tag}: {fault.must_fence} still takes writes at the end")
        if fault.one_writable and r.writable_at_end is not None and (
            r.writable_at_end != [r.final_primary]
        ):
            found.append(f"{tag}: writable at the end: {', '.join(r.writable_at_end) or 'none'};"
                         f" the controller's primary: {r.final_primary}")
        if fault.rto_limit is not None and (r.rto is None or r.rto > fault.rto_limit):
            found.append(f"{tag}: writes resumed "
                         + ("never" if r.rto is None else f"after {r.rto:.2f} s")
                         + f", expected within {fault.rto_limit:g} s")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ci", action="store_true", help="bounded subset, 1 trial each")
    parser.add_argument("--trials", type=int, default=None, help="trials per cell (default 3)")
    parser.add_argument("--faults", default=",".join(FAULTS), help="comma-separated faults")
    parser.add_argument("--modes", default="async,sync,quorum", help="comma-separated modes")
    parser.add_argument("--netem-seconds", type=float, default=None)
    parser.add_argument("--json", type=Path, help="write every trial's result here")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep every trial's directory (config, journal, controller and "
                        "server logs) under DIR instead of a temporary directory")
    args = parser.parse_args()

    reason = unavailable_reason()
    if reason is not None:
        print(f"skipped: {reason}")
        return 0
    trials = args.trials or (1 if args.ci else 3)
    netem_s = args.netem_seconds or (CI_NETEM_S if args.ci else 60.0)
    timings = Timings(netem=netem_s)
    if args.ci:
        plan = CI_PLAN
    else:
        faults = [f.strip() for f in args.faults.split(",") if f.strip()]
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        unknown = [x for x in faults if x not in FAULTS] + [x for x in modes if x not in MODES]
        if unknown:
            parser.error(f"unknown fault/mode: {', '.join(unknown)}; faults: "
                         f"{', '.join(FAULTS)}; modes: {', '.join(MODES)}")
        plan = [(f, m) for m in modes for f in faults]
    skipped: dict[str, str] = {}
    for mode in dict.fromkeys(m for _, m in plan):
        why = mode_unavailable(MODES[mode])
        if why is not None:
            skipped[mode] = why
    plan = [(f, m) for f, m in plan if m not in skipped]

    command = "python checks/chaos.py " + " ".join(sys.argv[1:])
    started = time.monotonic()
    results: dict[tuple[str, str], list[TrialResult]] = {}
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = str(args.keep.resolve())
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="hacontrol-chaos-"))
        os.chmod(tmp, 0o755)
        for fault, mode in plan:
            for i in range(1, trials + 1):
                workdir = Path(tmp) / f"{fault}-{mode}-{i}"
                workdir.mkdir(exist_ok=args.keep is not None)
                r = Trial(fault, mode, workdir, timings).run()
                results.setdefault((fault, mode), []).append(r)
                status = "ok" if r.ok and not violations([r]) else "FAILED"
                print(f"{fault:<26} {mode:<6} trial {i}: {status} failovers {r.failovers_seen}"
                      f"/{r.failovers_expected} rto {_fmt(r.rto)} s lost {r.lost} windows "
                      f"{len(r.windows)} ({len(r.windows_after_fence)}) in {r.seconds:.0f} s"
                      + (f" [{r.error}]" if r.error else "")
                      + (f" [{'; '.join(r.notes)}]" if r.notes else ""),
                      file=sys.stderr, flush=True)
    elapsed = time.monotonic() - started
    everything = [r for rs in results.values() for r in rs]
    print(f"$ {command.strip()}")
    print(table([summarise(rs) for rs in results.values()]))
    print(f"\n{len(everything)} trials in {elapsed / 60:.1f} min. RTO: fault -> first write "
          "acknowledged by the new primary (failover faults; replay-conflict: from the kill of "
          "pg1), kill of the controller -> first acknowledged write (controller-kill-switchover)"
          " or end of the client's first write stall >= 0.5 s (others; 0 = never stalled). "
          "Lost writes: acknowledged ids "
          "missing on the final primary, by writer. Windows: two nodes acknowledging writes at "
          "once; in parentheses those after the old primary was fenced.")
    for mode, why in skipped.items():
        print(f"mode {mode} not run: {why}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in everything], indent=1) + "\n")
    problems = violations(everything)
    for p in problems:
        print(f"VIOLATION {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
