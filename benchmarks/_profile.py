"""
Where the master's (or a worker's) time goes under short-connection load:
py-spy samples it (C{--native}, so time in system calls shows), or cProfile
does when py-spy cannot attach; the report splits the hand-off path into
stages and lists the top functions, with their shares.
"""

from __future__ import annotations

import pstats
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ._configs import TWISTCLUSTER, BenchConfig
from ._load import LoadFailed, LoadResult, runLoad
from ._procstat import CPUMeter
from ._run import RunOptions, measureConfig
from ._servers import RunningServer
from ._spread import difference, readCounts
from ._stacks import MASTER_STAGES, TOP, WORKER_STAGES, isWaiting, pySpyReport, shortFile


class ProfilerFailed(Exception):
    """
    py-spy is missing or could not attach; the message says why.
    """


def pySpy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def cProfileReport(statsPath: Path, connections: int) -> str:
    stats = pstats.Stats(str(statsPath))
    entries = {
        where: values
        for where, values in stats.stats.items()  # type: ignore[attr-defined]
        if not isWaiting(where[2])
    }
    total = sum(values[2] for values in entries.values()) or 1e-9
    calls = sum(values[1] for values in entries.values())
    lines = [
        f"cProfile: {total:.2f}s in the master outside epoll's poll (waiting excluded); "
        f"{connections} connections; shares are of that time (cProfile's own overhead inflates "
        "Python-level calls)",
        f"{calls / max(connections, 1):.0f} function calls (Python and built-in) per connection",
        "",
    ]
    for title, index in (("Self time (tottime):", 2), ("Inclusive time (cumtime):", 3)):
        lines.append(title)
        # Callers of the poll (doPoll, run...) hold waiting time: leave them out.
        working = [item for item in entries.items() if item[1][index] <= total]
        ranked = sorted(working, key=lambda item: item[1][index], reverse=True)
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
    config: BenchConfig,
    options: RunOptions,
    resultsDirectory: Path,
    seconds: float,
    profiler: str,
    process: str = "master",
) -> Path:
    """
    Run C{config} under short-connection load and profile its master (or
    its first worker) for C{seconds}; write the report beside the raw data.

    @param profiler: C{py-spy} or C{cprofile} (the master only).
    @param process: C{master} or C{worker}.
    @return: The report's path.
    """
    suffix = ("-worker" if process == "worker" else "") + ("-cprofile" if profiler == "cprofile" else "")
    stem = resultsDirectory / f"profile-{config.name}{suffix}"
    statsPath = stem.with_suffix(".pstats")
    prefix = None
    if profiler == "cprofile":
        if config.kind != TWISTCLUSTER or process != "master":
            raise SystemExit("--profiler cprofile profiles a twistcluster master only")
        prefix = [sys.executable, "-m", "benchmarks._cprofile_master", str(statsPath), "--"]
    window = _ProfileWindow(options, seconds, profiler, process, stem.with_suffix(".collapsed"))
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
    Profiles one process of a running server under short-connection load.
    """

    def __init__(
        self, options: RunOptions, seconds: float, profiler: str, process: str, collapsed: Path
    ) -> None:
        self._options = options
        self._seconds = seconds
        self._profiler = profiler
        self._process = process
        self._collapsed = collapsed
        self.sections: list[str] = []
        self.connections = 0
        self._targetConnections = 0
        self._rate = 0.0
        self._cpu: dict[str, float] = {}

    def _target(self, server: RunningServer) -> int:
        if self._process == "master":
            return server.masterPid
        workers = sorted(server.managed.noteDescendants())
        if not workers:
            raise LoadFailed(f"{server.config.name} has no worker process to profile")
        return workers[0]

    def run(self, server: RunningServer) -> None:
        options = self._options
        spec = replace(options.loadFor("short", server.port), duration=self._seconds + options.warmup + 2)
        target = self._target(server)
        load = _Background(lambda: runLoad(spec, options.generator))
        time.sleep(options.warmup)
        master, profiled = CPUMeter(server.masterPid), CPUMeter(target)
        before = readCounts(server.countsDirectory, byPid=True)
        master.start()
        profiled.start()
        if self._profiler == "cprofile":
            _cProfileWindow(server, self._seconds)
        else:
            stages = MASTER_STAGES if self._process == "master" else WORKER_STAGES
            collapsed = _pySpyWindow(target, self._seconds, self._collapsed)
            self.sections.append(f"py-spy raw stacks: {self._collapsed}\n\n")
            self.sections.append(pySpyReport(collapsed, stages))
        master.stop()
        profiled.stop()
        # Both readings lag by up to one reporting interval: the difference holds.
        served = difference(before, readCounts(server.countsDirectory, byPid=True))
        self.connections = sum(served.values())
        self._targetConnections = served.get(str(target), self.connections)
        if self._profiler == "cprofile":
            time.sleep(1.0)  # the master writes the stats from its signal handler
        result = load.join(spec.duration + 30)
        if result is None:
            raise LoadFailed(f"the load failed: {load.error}")
        self._rate = result.perSecond
        self._cpu = {
            "master": master.masterPercent,
            "all": master.allPercent,
            "profiled": profiled.masterPercent,
        }

    def _microseconds(self, percent: float, connections: int) -> float:
        return percent / 100 * self._seconds / connections * 1e6 if connections else 0.0

    def summary(self, name: str) -> str:
        cpu = self._cpu
        lines = [
            f"{name} under short-connection load ({self._options.connections} connections, "
            f"{self._options.generator}): {self._rate:,.0f} new conn/s over the whole load.",
            f"During the {self._seconds:g}s profile: {self.connections} connections; the master "
            f"used {cpu['master']:.0f}% of a core "
            f"({self._microseconds(cpu['master'], self.connections):.0f} us of CPU per "
            f"connection), the master and its workers {cpu['all']:.0f}% "
            f"({self._microseconds(cpu['all'], self.connections):.0f} us per connection).",
        ]
        if self._process == "worker":
            lines.append(
                f"The profiled worker served {self._targetConnections} of them with "
                f"{cpu['profiled']:.0f}% of a core "
                f"({self._microseconds(cpu['profiled'], self._targetConnections):.0f} us each)."
            )
        return "\n".join(lines)


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
    return collapsedPath.read_text()


def _cProfileWindow(server: RunningServer, seconds: float) -> None:
    server.managed.process.send_signal(signal.SIGUSR1)
    time.sleep(seconds)
    server.managed.process.send_signal(signal.SIGUSR2)
