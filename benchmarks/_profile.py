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
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ._configs import TWISTCLUSTER, BenchConfig
from ._load import LoadFailed, LoadResult, runLoad
from ._procstat import CPUMeter
from ._run import RunOptions, measureConfig
from ._servers import RunningServer

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


def summariseStacks(collapsed: str) -> tuple[int, Counter[str], Counter[str], Counter[str]]:
    """
    From py-spy's collapsed stacks: the sample count, and samples by
    function (self and inclusive) and by file (self).
    """
    total = 0
    selfTime: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    byFile: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [frameName(f) for f in stack.split(";")]
        leaf, leafFile = frames[-1]
        selfTime[f"{leaf} ({leafFile})"] += samples
        byFile[leafFile] += samples
        for name in {f"{n} ({f})" for n, f in frames}:
            inclusive[name] += samples
    return total, selfTime, inclusive, byFile


def _table(title: str, counts: Counter[str], total: int) -> list[str]:
    lines = [title]
    for name, samples in counts.most_common(TOP):
        lines.append(f"  {100 * samples / total:5.1f}%  {samples:7d}  {name}")
    return lines + [""]


def pySpyReport(collapsed: str) -> str:
    total, selfTime, inclusive, byFile = summariseStacks(collapsed)
    if not total:
        return "py-spy took no samples (was the master idle?)\n"
    lines = [f"{total} samples of the master on CPU (idle time excluded)", ""]
    lines += _table("Self time by function (where the CPU is):", selfTime, total)
    lines += _table("Inclusive time by function (what it is spent for):", inclusive, total)
    lines += _table("Self time by file:", byFile, total)
    return "\n".join(lines)


def cProfileReport(statsPath: Path, connections: int) -> str:
    stats = pstats.Stats(str(statsPath))
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, tt, _, _) in entries.values()) or 1e-9
    lines = [f"cProfile: {total:.2f}s of CPU in Python functions; {connections} connections", ""]
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
        cpu.start()
        if self._profiler == "cprofile":
            _cProfileWindow(server, self._seconds)
        else:
            self.sections.append(_pySpyWindow(server.masterPid, self._seconds, self._collapsed))
        cpu.stop()
        result = load.join(spec.duration + 30)
        if result is None:
            raise LoadFailed(f"the load failed: {load.error}")
        self.connections = result.requests
        self._rate = result.perSecond
        self._masterCPU, self._allCPU = cpu.masterPercent, cpu.allPercent

    def summary(self, name: str) -> str:
        return (
            f"{name} under short-connection load ({self._options.connections} connections, "
            f"{self._options.generator}): {self._rate:,.0f} new conn/s, "
            f"{self.connections} connections in all.\n"
            f"During the {self._seconds:g}s profile the master used {self._masterCPU:.0f}% "
            f"of a core; the master and its workers {self._allCPU:.0f}%."
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
