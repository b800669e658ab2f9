"""
Measuring one configuration: start it, apply each phase's load (after a
warm-up), read the master's CPU and memory and the workers' counts, stop it.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from ._configs import BenchConfig
from ._load import LoadFailed, LoadResult, LoadSpec, runLoad
from ._servers import RunningServer, ServerFailed, Skipped, startServer

#: The phases, in the order they run: wrk's (short connections, keep-alive,
#: the CPU-bound variant), then uneven work at a constant rate, over short
#: connections and over keep-alive (L{benchmarks._rateclient}).
PHASES = ("short", "keepalive", "cpu", "uneven", "uneven-ka")
WRK_PHASES = PHASES[:3]
#: How long the servers take to write fresh counts (they do every 0.2 s).
SETTLE_SECONDS = 0.5


@dataclass(frozen=True)
class RunOptions:
    """
    @ivar unevenRate: Requests per second offered in the uneven phases,
        which last twice C{duration} (their p99.9 needs the requests) and
        run where there are workers to choose from (2 or more).
    """

    duration: float = 5.0
    warmup: float = 1.0
    connections: int = 64
    threads: int = 1
    phases: tuple[str, ...] = PHASES
    workIterations: int = 16000
    unevenRate: float = 200.0

    def loadFor(self, phase: str, port: int) -> LoadSpec:
        uneven = phase.startswith("uneven")
        return LoadSpec(
            port=port,
            duration=self.duration * (2 if uneven else 1),
            connections=self.connections,
            threads=self.threads,
            close=phase in ("short", "uneven"),
            path="/work" if phase == "cpu" else "/",
            rate=self.unevenRate if uneven else 0.0,
        )


@dataclass
class PhaseResult:
    """
    One phase of one configuration.

    @ivar spread: Connections (short connections) or requests (keep-alive)
        each worker served during the phase, by worker id.
    """

    load: LoadResult | None = None
    masterCPU: float = 0.0
    allCPU: float = 0.0
    masterPeakRSSKiB: int = 0
    spread: dict[str, int] = field(default_factory=dict)
    error: str = ""
    machineCPU: float = 0.0

    def toJSON(self) -> dict[str, Any]:
        cpu = {"masterCPUPercent": round(self.masterCPU, 1), "allCPUPercent": round(self.allCPU, 1)}
        cpu["machineCPUPercent"] = round(self.machineCPU, 1)
        load = self.load.toJSON() if self.load else None
        return {
            "load": load,
            **cpu,
            "masterPeakRSSKiB": self.masterPeakRSSKiB,
            "spread": self.spread,
            "error": self.error,
        }


@dataclass
class ConfigResult:
    """
    Everything measured for one configuration (in one round).

    @ivar status: C{ok}, C{skipped} or C{failed} (C{note} says why).
    @ivar rounds: Every round of this configuration, in order, when there
        were several (this one is their median).
    """

    config: BenchConfig
    status: str = "ok"
    note: str = ""
    phases: dict[str, PhaseResult] = field(default_factory=dict)
    masterHWMKiB: int = 0
    rounds: list[ConfigResult] = field(default_factory=list)

    name = property(lambda self: self.config.name)

    @property
    def masterPeakRSSKiB(self) -> int:
        return max((p.masterPeakRSSKiB for p in self.phases.values()), default=0)

    def load(self, phase: str) -> LoadResult | None:
        measured = self.phases.get(phase)
        return measured.load if self.status == "ok" and measured else None

    def rate(self, phase: str) -> float | None:
        load = self.load(phase)
        return load.perSecond if load else None


class ProcessMeter:
    """
    The CPU a process, it and its descendants together, and the whole
    machine (every process and the kernel) use while a load runs (% of one
    core), and the process's peak resident memory, sampled every 0.1 s.
    """

    def __init__(self, pid: int) -> None:
        self._master = psutil.Process(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.masterPercent = self.allPercent = self.machinePercent = 0.0
        self.peakRSSKiB = 0

    def __enter__(self) -> ProcessMeter:
        self._processes = [self._master, *self._master.children(recursive=True)]
        self._before = [_cpuSeconds(p) for p in self._processes]
        self._machine, self._started = _machineSeconds(), time.monotonic()
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            with suppress(psutil.Error):
                self.peakRSSKiB = max(self.peakRSSKiB, self._master.memory_info().rss // 1024)
            self._stop.wait(0.1)

    def __exit__(self, *exc: object) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        used = [max(0.0, _cpuSeconds(p) - b) for p, b in zip(self._processes, self._before)]
        self.masterPercent, self.allPercent = 100 * used[0] / elapsed, 100 * sum(used) / elapsed
        self.machinePercent = 100 * (_machineSeconds() - self._machine) / elapsed
        self._stop.set()
        self._thread.join(5)


def _cpuSeconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def _machineSeconds() -> float:
    """
    CPU time the machine's cores spent busy (not idle or waiting for I/O),
    or taken by the hypervisor (steal), since boot.
    """
    times = psutil.cpu_times()
    guests = getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)  # counted in user, nice
    return sum(times) - times.idle - getattr(times, "iowait", 0.0) - guests


def peakRSSKiB(pid: int) -> int:
    """
    C{VmHWM}, the peak resident size since the start: psutil has none.
    """
    with suppress(OSError, TypeError):
        return int(re.search(r"VmHWM:\s*(\d+)", Path(f"/proc/{pid}/status").read_text())[1])  # type: ignore[index]
    return 0


def readCounts(directory: Path, what: str = "connections", byPid: bool = False) -> dict[str, int]:
    """
    Totals of C{what} (C{connections} or C{requests}) that the servers wrote
    (C{worker-PID.json}), by worker id (summed over its processes) or pid.
    """
    totals: dict[str, int] = {}
    for path in sorted(directory.glob("worker-*.json")):
        with suppress(OSError, ValueError):
            record = json.loads(path.read_text())
            worker = str(record["pid" if byPid else "worker"])
            totals[worker] = totals.get(worker, 0) + int(record.get(what, 0))
    return totals


def difference(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """
    What each worker served between two readings, in worker order.
    """
    order = sorted(set(before) | set(after), key=lambda w: (int(w), w) if w.isdigit() else (1 << 30, w))
    return {w: after.get(w, 0) - before.get(w, 0) for w in order}


class Scraper:
    """
    A Prometheus stand-in: GET /metrics every second while the load runs
    (the configurations with --metrics on).
    """

    def __init__(self, url: str | None, interval: float = 1.0) -> None:
        self._url = url
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.scrapes = 0

    def _run(self) -> None:
        assert self._url is not None
        while not self._stop.wait(self._interval):
            with suppress(OSError), urllib.request.urlopen(self._url, timeout=10) as answer:
                answer.read()
                self.scrapes += 1

    def __enter__(self) -> Scraper:
        if self._url is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._url is not None:
            self._thread.join(15)


def measurePhase(server: RunningServer, phase: str, options: RunOptions) -> PhaseResult:
    """
    Warm up, then apply C{phase}'s load and measure it.
    """
    spec = options.loadFor(phase, server.port)
    if options.warmup > 0:
        runLoad(replace(spec, duration=options.warmup))
    what = "connections" if spec.close else "requests"
    time.sleep(SETTLE_SECONDS)
    before = readCounts(server.countsDirectory, what)
    with ProcessMeter(server.masterPid) as meter, Scraper(server.metricsURL()):
        load = runLoad(spec)
    time.sleep(SETTLE_SECONDS)
    spread = difference(before, readCounts(server.countsDirectory, what))
    if not server.managed.running():
        raise ServerFailed(f"died during the {phase} phase: {server.lastLogLine()}")
    return PhaseResult(
        load, meter.masterPercent, meter.allPercent, meter.peakRSSKiB, spread, "", meter.machinePercent
    )


def measureConfig(
    config: BenchConfig,
    options: RunOptions,
    logDirectory: Path,
    whileRunning: Callable[[RunningServer], None] | None = None,
    masterPrefix: list[str] | None = None,
) -> ConfigResult:
    """
    Measure C{config}; a failure is recorded, never raised (Ctrl-C is).

    @param whileRunning: Called instead of the phases, with the running
        server (the profiler's window).
    @param masterPrefix: Runs twistcluster's master as this command
        followed by C{twist}'s arguments (the cProfile wrapper).
    """
    result = ConfigResult(config)
    counts = Path(tempfile.mkdtemp(prefix=f"bench-{config.name}-"))
    server: RunningServer | None = None
    try:
        server = startServer(config, logDirectory, counts, options.workIterations, masterPrefix)
        if whileRunning is not None:
            whileRunning(server)
        for phase in options.phases if whileRunning is None else ():
            if phase.startswith("uneven") and config.workers < 2:
                continue
            try:
                result.phases[phase] = measurePhase(server, phase, options)
            except LoadFailed as e:
                result.phases[phase] = PhaseResult(error=str(e))
        result.masterHWMKiB = peakRSSKiB(server.masterPid)
    except Skipped as e:
        result.status, result.note = "skipped", str(e)
    except (ServerFailed, LoadFailed, OSError, psutil.Error) as e:
        result.status, result.note = "failed", str(e)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(counts, ignore_errors=True)
    return result
