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
from dataclasses import replace
from pathlib import Path

from ._configs import TWISTCLUSTER, BenchConfig
from ._load import LoadFailed, LoadResult, runLoad
from ._run import ProcessMeter, RunOptions, difference, measureConfig, readCounts
from ._servers import RunningServer
from ._stacks import MASTER_STAGES, TOP, WORKER_STAGES, isWaiting, pySpyReport, shortFile


class ProfilerFailed(Exception):
    """
    py-spy is missing or could not attach; the message says why.
    """


def cProfileReport(statsPath: Path, connections: int) -> str:
    stats = pstats.Stats(str(statsPath)).stats  # type: ignore[attr-defined]
    entries = {where: values for where, values in stats.items() if not isWaiting(where[2])}
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
        # Callers of the poll (doPoll, run...) hold waiting time: leave them out.
        ranked = sorted((e for e in entries.items() if e[1][index] <= total), key=lambda e: -e[1][index])
        lines.append(title)
        for (file, line, name), values in ranked[:TOP]:
            lines.append(
                f"  {100 * values[index] / total:5.1f}%  {values[index]:7.3f}s  "
                f"{values[1] / max(connections, 1):6.2f} calls/conn  {name} ({shortFile(file)}:{line})"
            )
        lines.append("")
    return "\n".join(lines)


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
    prefix = None
    if profiler == "cprofile":
        if config.kind != TWISTCLUSTER or process != "master":
            raise SystemExit("--profiler cprofile profiles a twistcluster master only")
        prefix = [sys.executable, "-m", "benchmarks._cprofile_master", str(stem.with_suffix(".pstats")), "--"]
    lines: list[str] = []

    def window(server: RunningServer) -> None:
        lines.extend(_profileWindow(server, options, seconds, profiler, process, stem))

    outcome = measureConfig(config, options, resultsDirectory / "logs", window, prefix)
    if outcome.status != "ok":
        raise SystemExit(f"profiling {config.name} {outcome.status}: {outcome.note}")
    report = stem.with_suffix(".txt")
    report.write_text("\n".join(lines) + "\n")
    return report


def _profileWindow(
    server: RunningServer, options: RunOptions, seconds: float, profiler: str, process: str, stem: Path
) -> list[str]:
    """
    Profile one process of C{server} for C{seconds} under short-connection
    load; return the report's lines.
    """
    workers = sorted(p.pid for p in server.managed.descendants())
    if process == "worker" and not workers:
        raise LoadFailed(f"{server.config.name} has no worker process to profile")
    target = workers[0] if process == "worker" else server.masterPid
    spec = replace(options.loadFor("short", server.port), duration=seconds + options.warmup + 2)
    outcome: list[LoadResult] = []
    load = threading.Thread(target=lambda: outcome.append(runLoad(spec)), daemon=True)
    load.start()
    time.sleep(options.warmup)
    before = readCounts(server.countsDirectory, byPid=True)
    with ProcessMeter(server.masterPid) as master, ProcessMeter(target) as profiled:
        if profiler == "cprofile":
            server.managed.process.send_signal(signal.SIGWINCH)
            time.sleep(seconds)
            server.managed.process.send_signal(signal.SIGURG)
        else:
            collapsed = _pySpy(target, seconds, stem.with_suffix(".collapsed"))
    # Both readings lag by up to one reporting interval: the difference holds.
    served = difference(before, readCounts(server.countsDirectory, byPid=True))
    connections = sum(served.values())
    load.join(spec.duration + 30)
    if not outcome:
        raise LoadFailed("the load failed")

    def perConnection(percent: float, count: int) -> float:
        return percent / 100 * seconds / count * 1e6 if count else 0.0

    lines = [
        f"{server.config.name} under short-connection load ({options.connections} connections, wrk): "
        f"{outcome[0].perSecond:,.0f} new conn/s over the whole load.",
        f"During the {seconds:g}s profile: {connections} connections; the master used "
        f"{master.masterPercent:.0f}% of a core ({perConnection(master.masterPercent, connections):.0f} us "
        f"of CPU per connection), the master and its workers {master.allPercent:.0f}% "
        f"({perConnection(master.allPercent, connections):.0f} us per connection).",
    ]
    if process == "worker":
        own = served.get(str(target), connections)
        lines.append(
            f"The profiled worker served {own} of them with {profiled.masterPercent:.0f}% of a core "
            f"({perConnection(profiled.masterPercent, own):.0f} us each)."
        )
    if profiler == "cprofile":
        time.sleep(1.0)  # the master writes the stats from its signal handler
        return [*lines, "", cProfileReport(stem.with_suffix(".pstats"), connections)]
    stages = MASTER_STAGES if process == "master" else WORKER_STAGES
    raw = f"py-spy raw stacks: {stem.with_suffix('.collapsed')}"
    return [*lines, "", raw, "", pySpyReport(collapsed, stages)]


def _pySpy(pid: int, seconds: float, collapsedPath: Path) -> str:
    beside = Path(sys.executable).parent / "py-spy"
    binary = str(beside) if beside.exists() else shutil.which("py-spy")
    if binary is None:
        raise ProfilerFailed("py-spy is not installed (make install-bench)")
    argv = [binary, "record", "--pid", str(pid), "--duration", f"{seconds:g}", "--rate", "200"]
    argv += ["--native", "--format", "raw", "--output", str(collapsedPath)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0 or not collapsedPath.exists():
        why = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ProfilerFailed(f"py-spy could not profile pid {pid}: {why}")
    return collapsedPath.read_text()
