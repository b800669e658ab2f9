"""
Where the master's time goes under short-connection load: py-spy samples it
(C{--native}, so time in system calls shows), or cProfile does when py-spy
cannot attach; the report lists the top functions with their shares.
"""

from __future__ import annotations

import pstats
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from ._configs import TWISTCLUSTER, BenchConfig
from ._load import LoadFailed, LoadResult, runLoad
from ._procstat import CPUMeter
from ._run import RunOptions, measureConfig
from ._servers import RunningServer
from ._spread import readCounts

TOP = 25


class ProfilerFailed(Exception):
    """
    py-spy is missing or could not attach; the message says why.
    """
_FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def pySpy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def shortFile(path: str) -> str:
    """
    A source path without its installation prefix.
    """
    for marker in ("site-packages/", "lib/python3.11/", "/wt6/", "/work/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return path


def frameName(frame: str) -> tuple[str, str]:
    """
    C{(function, file)} of one py-spy frame, C{"name (file:line)"}.
    """
    match = _FRAME.match(frame)
    if not match:
        return frame, "?"
    return match.group("name"), shortFile(match.group("file"))


#: The master's hand-off path as exclusive stages: each busy sample goes
#: to the first stage whose rule matches, a system call at the leaf first,
#: then the innermost Python step on the stack.  (label, leaf names, frames)
HAND_OFF_STAGES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("accept4() system call", ("accept4",), ()),
    ("sendmsg()/send() on the control channel (fds via SCM_RIGHTS)", ("sendmsg", "send"), ()),
    ("recvmsg()/recv() on the control channel", ("recvmsg", "recv"), ()),
    ("close() of acked sockets", ("close",), ()),
    ("NewConn: scheduler -> callRemote -> AMP encode", (), ("RoundRobinHandle._handOff",)),
    ("ack: _answered -> scheduler.answered (minus the above)", (), ("RoundRobinHandle._answered",)),
    ("control-channel write plumbing (doWrite, Python)", (), ("FileDescriptor.doWrite",)),
    ("AMP decode + Deferred plumbing up to the ack callback", (), ("_SendmsgMixin.doRead",)),
    ("accept loop (Python, minus NewConn)", (), ("_acceptSome", "_HandOffAccepting.doRead")),
    ("reactor loop and the rest (epoll dispatch, log context, GC)", (), ()),
)
#: The reactor's handlers, inclusive: (label, frames).
HANDLERS = (
    ("listening socket readable (accept batch, first hand-offs)", ("_HandOffAccepting.doRead",)),
    ("control channel readable (acks -> more hand-offs)", ("_SendmsgMixin.doRead",)),
    ("control channel writable (queued NewConn boxes + fds)", ("FileDescriptor.doWrite",)),
)


def stageOf(names: Sequence[str]) -> str:
    """
    The hand-off stage a sample (its stack's function names) belongs to.
    """
    onStack = set(names)
    for label, leaves, frames in HAND_OFF_STAGES:
        if names and names[-1] in leaves:
            return label
        if onStack.intersection(frames):
            return label
    return HAND_OFF_STAGES[-1][0]


@dataclass
class StackSummary:
    """
    py-spy's collapsed stacks, counted.

    @ivar busy: Samples not waiting in the reactor's poll.
    @ivar stacks: The busy samples' stacks (function names), with counts.
    """

    total: int = 0
    busy: int = 0
    selfTime: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    byFile: Counter[str] = field(default_factory=Counter)
    stacks: list[tuple[list[str], int]] = field(default_factory=list)

    def share(self, functions: Sequence[str]) -> int:
        """
        Busy samples whose stack holds any of C{functions}.
        """
        wanted = set(functions)
        return sum(n for names, n in self.stacks if wanted.intersection(names))

    def byStage(self) -> Counter[str]:
        stages: Counter[str] = Counter()
        for names, samples in self.stacks:
            stages[stageOf(names)] += samples
        return stages


def summariseStacks(collapsed: str) -> StackSummary:
    """
    Count py-spy's collapsed stacks (C{frame;frame;... count}): by function
    (self and inclusive) and by file, leaving out samples waiting in the
    reactor's poll (py-spy's C{--native} mode counts those as active).
    """
    summary = StackSummary()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        summary.total += samples
        frames = [frameName(f) for f in stack.split(";")]
        leaf, leafFile = frames[-1]
        if leaf in _WAITING:
            continue
        summary.busy += samples
        summary.stacks.append(([name for name, _ in frames], samples))
        summary.selfTime[f"{leaf} ({leafFile})"] += samples
        summary.byFile[leafFile] += samples
        for name in {f"{n} ({f})" for n, f in frames}:
            summary.inclusive[name] += samples
    return summary


def _table(title: str, counts: Counter[str], total: int) -> list[str]:
    lines = [title]
    for name, samples in counts.most_common(TOP):
        lines.append(f"  {100 * samples / total:5.1f}%  {samples:7d}  {name}")
    return lines + [""]


def handOffBreakdown(summary: StackSummary) -> list[str]:
    lines = ["The hand-off path, exclusive stages (they add up to 100%):"]
    stages = summary.byStage()
    for label, _, _ in HAND_OFF_STAGES:
        samples = stages[label]
        lines.append(f"  {100 * samples / summary.busy:5.1f}%  {samples:7d}  {label}")
    lines += ["", "By reactor handler (inclusive):"]
    for label, functions in HANDLERS:
        samples = summary.share(functions)
        lines.append(f"  {100 * samples / summary.busy:5.1f}%  {samples:7d}  {label}")
    return lines + [""]


def pySpyReport(collapsed: str) -> str:
    summary = summariseStacks(collapsed)
    if not summary.busy:
        return "py-spy took no busy samples (was the master idle?)\n"
    lines = [
        f"{summary.total} samples, {summary.total - summary.busy} of them waiting in "
        f"epoll_wait (idle, left out); shares below are of the {summary.busy} busy samples",
        "",
    ]
    lines += handOffBreakdown(summary)
    lines += _table("Self time by function (where the CPU is):", summary.selfTime, summary.busy)
    lines += _table("Inclusive time by function:", summary.inclusive, summary.busy)
    lines += _table("Self time by file:", summary.byFile, summary.busy)
    return "\n".join(lines)


def cProfileReport(statsPath: Path, connections: int) -> str:
    stats = pstats.Stats(str(statsPath))
    entries = {
        where: values
        for where, values in stats.stats.items()  # type: ignore[attr-defined]
        if not _isWaiting(where[2])
    }
    total = sum(values[2] for values in entries.values()) or 1e-9
    lines = [
        f"cProfile: {total:.2f}s in the master outside epoll's poll (waiting excluded); "
        f"{connections} connections; shares are of that time (cProfile's own overhead inflates "
        "Python-level calls)",
        "",
    ]
    for title, index in (("Self time (tottime):", 2), ("Inclusive time (cumtime):", 3)):
        lines.append(title)
        ranked = sorted(entries.items(), key=lambda item: item[1][index], reverse=True)
        for (file, line, name), values in ranked[:TOP]:
            perConnection = values[1] / connections if connections else 0
            lines.append(
                f"  {100 * values[index] / total:5.1f}%  {values[index]:7.3f}s  "
                f"{perConnection:6.2f} calls/conn  {name} ({shortFile(file)}:{line})"
            )
        lines.append("")
    return "\n".join(lines)


#: Where a reactor waits for events: idle time, not work.
_WAITING = ("epoll_wait", "epoll_pwait", "poll", "ppoll", "select", "pselect")


def _isWaiting(function: str) -> bool:
    name = function.removeprefix("<method '").split("'", 1)[0]
    return name in _WAITING


class _Background:
    """
    The load, in a thread, so the profiler can run beside it.
    """

    def __init__(self, run: Callable[[], LoadResult]) -> None:
        self.result: LoadResult | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(run,), daemon=True)
        self._thread.start()

    def _run(self, run: Callable[[], LoadResult]) -> None:
        try:
            self.result = run()
        except Exception as e:  # reported by join()
            self.error = e

    def join(self, timeout: float) -> LoadResult | None:
        self._thread.join(timeout)
        return self.result


def profileConfig(
    config: BenchConfig, options: RunOptions, resultsDirectory: Path, seconds: float, profiler: str
) -> Path:
    """
    Run C{config} under short-connection load and profile its master for
    C{seconds}; write the report beside the raw data.

    @param profiler: C{py-spy} or C{cprofile}.
    @return: The report's path.
    """
    stem = resultsDirectory / f"profile-{config.name}"
    statsPath = stem.with_suffix(".pstats")
    prefix = None
    if profiler == "cprofile":
        if config.kind != TWISTCLUSTER:
            raise SystemExit("--profiler cprofile works for twistcluster configurations only")
        prefix = [sys.executable, "-m", "benchmarks._cprofile_master", str(statsPath), "--"]
    window = _ProfileWindow(options, seconds, profiler, stem.with_suffix(".collapsed"))
    outcome = measureConfig(config, options, resultsDirectory / "logs", window.run, prefix)
    if outcome.status != "ok":
        raise SystemExit(f"profiling {config.name} {outcome.status}: {outcome.note}")
    if profiler == "cprofile":
        window.sections.append(cProfileReport(statsPath, window.connections))
    report = stem.with_suffix(".txt")
    report.write_text(window.summary(config.name) + "\n\n" + "\n".join(window.sections) + "\n")
    return report


class _ProfileWindow:
    """
    Profiles a running server's master under short-connection load.
    """

    def __init__(self, options: RunOptions, seconds: float, profiler: str, collapsed: Path) -> None:
        self._options = options
        self._seconds = seconds
        self._profiler = profiler
        self._collapsed = collapsed
        self.sections: list[str] = []
        self.connections = 0
        self._rate = 0.0
        self._masterCPU = 0.0
        self._allCPU = 0.0

    def run(self, server: RunningServer) -> None:
        options = self._options
        spec = replace(
            options.loadFor("short", server.port), duration=self._seconds + options.warmup + 2
        )
        load = _Background(lambda: runLoad(spec, options.generator))
        time.sleep(options.warmup)
        cpu = CPUMeter(server.masterPid)
        before = sum(readCounts(server.countsDirectory).values())
        cpu.start()
        if self._profiler == "cprofile":
            _cProfileWindow(server, self._seconds)
        else:
            self.sections.append(_pySpyWindow(server.masterPid, self._seconds, self._collapsed))
        cpu.stop()
        # Both readings lag by up to one reporting interval: the difference holds.
        self.connections = sum(readCounts(server.countsDirectory).values()) - before
        result = load.join(spec.duration + 30)
        if result is None:
            raise LoadFailed(f"the load failed: {load.error}")
        self._rate = result.perSecond
        self._masterCPU, self._allCPU = cpu.masterPercent, cpu.allPercent

    def masterMicroseconds(self) -> float:
        if not self.connections:
            return 0.0
        return self._masterCPU / 100 * self._seconds / self.connections * 1e6

    def summary(self, name: str) -> str:
        return (
            f"{name} under short-connection load ({self._options.connections} connections, "
            f"{self._options.generator}): {self._rate:,.0f} new conn/s over the whole load.\n"
            f"During the {self._seconds:g}s profile: {self.connections} connections; the master "
            f"used {self._masterCPU:.0f}% of a core ({self.masterMicroseconds():.0f} us of CPU "
            f"per connection), the master and its workers {self._allCPU:.0f}%."
        )


def _pySpyWindow(pid: int, seconds: float, collapsedPath: Path) -> str:
    binary = pySpy()
    if binary is None:
        raise ProfilerFailed("py-spy is not installed (make install-bench)")
    argv = [binary, "record", "--pid", str(pid), "--duration", f"{seconds:g}", "--rate", "200"]
    argv += ["--native", "--format", "raw", "--output", str(collapsedPath)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0 or not collapsedPath.exists():
        why = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ProfilerFailed(f"py-spy could not profile pid {pid}: {why}")
    return f"py-spy raw stacks: {collapsedPath}\n\n" + pySpyReport(collapsedPath.read_text())


def _cProfileWindow(server: RunningServer, seconds: float) -> None:
    server.managed.process.send_signal(signal.SIGUSR1)
    time.sleep(seconds)
    server.managed.process.send_signal(signal.SIGUSR2)
    time.sleep(1.0)  # the stats are written from the master's signal handler
