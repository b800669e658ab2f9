"""
Where the master's time goes under short-connection load (C{--profile}):
py-spy samples it (C{--native}, so time in system calls shows); the report
splits the busy samples into the stages of the hand-off path, then lists
the top functions by self and inclusive time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ._load import LoadFailed, LoadResult, runLoad
from ._run import ProcessMeter, RunOptions, readCounts
from ._servers import BenchConfig, serving

TOP = 25
#: Where a reactor waits for events: idle time, not work.
WAITING = ("epoll_wait", "epoll_pwait", "poll", "ppoll", "select", "pselect")
_FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")

#: The master's hand-off path as exclusive stages, C{(label, leaf function
#: names, functions on the stack)}: each busy sample goes to the first stage
#: whose rule matches (a system call at the leaf, or a function on the stack
#: whose name ends with the rule's, so that C{Handle._handOff} survives a
#: class's renaming); the last stage takes the rest.
STAGES = (
    ("accept4() system call", ("accept4",), ()),
    ("sendmsg()/send() on the control channel (fds via SCM_RIGHTS)", ("sendmsg", "send"), ()),
    ("recvmsg()/recv() on the control channel", ("recvmsg", "recv"), ()),
    ("close() of acked sockets", ("close",), ()),
    ("NewConn: scheduler -> callRemote -> AMP encode", (), ("Handle._handOff", "Handle._flush")),
    ("ack: _answered -> scheduler.answered (rest)", (), ("Handle._answered",)),
    ("control-channel write plumbing (doWrite, Python)", (), ("FileDescriptor.doWrite",)),
    (
        "AMP decode + Deferred plumbing up to the ack callback",
        (),
        ("_SendmsgMixin.doRead", "_ChannelReads.doRead"),
    ),
    ("accept loop (Python, minus NewConn)", (), ("_acceptSome", "AcceptLoop.doRead")),
    ("reactor loop and the rest (epoll dispatch, log context, GC)", (), ()),
)


def shortFile(path: str) -> str:
    """
    A source path without its installation prefix.
    """
    for marker in ("site-packages/", "lib/python3.11/", "/work/"):
        path = path.split(marker, 1)[-1]
    return path


def stageOf(names: Sequence[str]) -> str:
    """
    The stage of a sample (its stack's function names, root first).
    """
    for label, leaves, functions in STAGES:
        if (names and names[-1] in leaves) or any(n.endswith(f) for n in names for f in functions):
            return label
    return STAGES[-1][0]


def pySpyReport(collapsed: str) -> str:
    """
    Count py-spy's collapsed stacks (C{frame;frame;... count}) by stage and
    by function (self and inclusive), leaving out the samples waiting in the
    reactor's poll (py-spy's C{--native} counts them).
    """
    total = busy = 0
    byStage, selfTime, inclusive = Counter[str](), Counter[str](), Counter[str]()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [
            f"{m['name']} ({shortFile(m['file'])})" if (m := _FRAME.match(f)) else f for f in stack.split(";")
        ]
        names = [frame.split(" (", 1)[0] for frame in frames]
        total += int(count)
        if names[-1] not in WAITING:
            busy += int(count)
            byStage[stageOf(names)] += int(count)
            selfTime[frames[-1]] += int(count)
            inclusive.update(dict.fromkeys(frames, int(count)))
    if not busy:
        return "py-spy took no busy samples (was the process idle?)\n"
    lines = [
        f"{total} samples, {total - busy} of them waiting in epoll_wait (idle, left out); "
        f"shares below are of the {busy} busy samples",
    ]
    for title, ranked in (
        (
            "The master's hand-off path, exclusive stages (they add up to 100%):",
            [(s, byStage[s]) for s, *_ in STAGES],
        ),
        ("Self time by function (where the CPU is):", selfTime.most_common(TOP)),
        ("Inclusive time by function:", inclusive.most_common(TOP)),
    ):
        lines += ["", title, *(f"  {100 * n / busy:5.1f}%  {n:7d}  {label}" for label, n in ranked)]
    return "\n".join(lines) + "\n"


def profileConfig(config: BenchConfig, options: RunOptions, results: Path, seconds: float) -> Path:
    """
    Run C{config} under short-connection load and sample its master for
    C{seconds}; write the report beside the raw stacks.

    @return: The report's path.
    @raise SystemExit: py-spy is missing or cannot attach.
    """
    stem = results / f"profile-{config.name}"
    with serving(config, results / "logs") as server:
        spec = replace(options.loadFor("short", server.port), duration=seconds + options.warmup + 2)
        outcome: list[LoadResult] = []
        load = threading.Thread(target=lambda: outcome.append(runLoad(spec)), daemon=True)
        load.start()
        time.sleep(options.warmup)
        # Both readings lag by up to one reporting interval: the difference holds.
        before = sum(readCounts(server.countsDirectory).values())
        with ProcessMeter(server.masterPid) as meter:
            collapsed = _pySpy(server.masterPid, seconds, stem.with_suffix(".collapsed"))
        connections = sum(readCounts(server.countsDirectory).values()) - before
        load.join(spec.duration + 30)
    if not outcome:
        raise LoadFailed("the load failed")
    master, both = meter.result.masterCPU, meter.result.allCPU

    def perConnection(percent: float) -> float:
        return percent / 100 * seconds / max(connections, 1) * 1e6

    lines = [
        f"{config.name} under short-connection load ({options.connections} connections, wrk): "
        f"{outcome[0].perSecond:,.0f} new conn/s over the whole load.",
        f"During the {seconds:g}s profile: {connections} connections; the master used "
        f"{master:.0f}% of a core ({perConnection(master):.0f} us of CPU per connection), the master and its "
        f"workers {both:.0f}% ({perConnection(both):.0f} us per connection).",
        "",
        f"py-spy raw stacks: {stem.with_suffix('.collapsed')}",
        "",
        pySpyReport(collapsed),
    ]
    report = stem.with_suffix(".txt")
    report.write_text("\n".join(lines))
    return report


def _pySpy(pid: int, seconds: float, collapsedPath: Path) -> str:
    beside = Path(sys.executable).parent / "py-spy"
    binary = str(beside) if beside.exists() else shutil.which("py-spy")
    if binary is None:
        raise SystemExit("benchmarks: py-spy is not installed (make install-bench)")
    argv = [binary, "record", "--pid", str(pid), "--duration", f"{seconds:g}", "--rate", "200"]
    argv += ["--native", "--format", "raw", "--output", str(collapsedPath)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0 or not collapsedPath.exists():
        why = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"benchmarks: py-spy could not profile pid {pid}: {why}")
    return collapsedPath.read_text()
