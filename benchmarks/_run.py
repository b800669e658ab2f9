"""
Measuring one configuration: start it, apply each phase's load (after a
warm-up), read the processes' CPU and memory (psutil) and the workers'
counts, stop it.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path

import psutil

from ._load import LoadFailed, LoadResult, LoadSpec, runLoad
from ._servers import BenchConfig, RunningServer, ServerFailed, serving

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
    phases: tuple[str, ...] = PHASES
    unevenRate: float = 200.0

    def loadFor(self, phase: str, port: int) -> LoadSpec:
        uneven, close = phase.startswith("uneven"), phase in ("short", "uneven")
        duration, path = self.duration * (2 if uneven else 1), "/work" if phase == "cpu" else "/"
        return LoadSpec(port, duration, self.connections, close, path, self.unevenRate if uneven else 0.0)


@dataclass
class PhaseResult:
    """
    One phase of one configuration.  CPU is in % of one core: the master's,
    the master's and its descendants', the whole machine's (every process
    and the kernel).

    @ivar spread: Connections (short connections) or requests (keep-alive)
        each worker served during the phase, by worker id.
    """

    load: LoadResult | None = None
    masterCPU: float = 0.0
    allCPU: float = 0.0
    machineCPU: float = 0.0
    masterPeakRSSKiB: int = 0
    spread: dict[str, int] = field(default_factory=dict)
    error: str = ""


@dataclass
class ConfigResult:
    """
    Everything measured for one configuration (in one round).

    @ivar status: C{ok} or C{failed} (C{note} says why).
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
    While it is entered: the CPU a process uses, it and its descendants
    together, and the whole machine, and the process's peak resident memory
    (sampled every 0.1 s).
    """

    def __init__(self, pid: int) -> None:
        self._master = psutil.Process(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.result = PhaseResult()

    def __enter__(self) -> ProcessMeter:
        self._processes = [self._master, *self._master.children(recursive=True)]
        self._before = [_cpuSeconds(p) for p in self._processes]
        self._machine, self._started = _machineSeconds(), time.monotonic()
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            with suppress(psutil.Error):
                rss = self._master.memory_info().rss // 1024
                self.result.masterPeakRSSKiB = max(self.result.masterPeakRSSKiB, rss)
            self._stop.wait(0.1)

    def __exit__(self, *exc: object) -> None:
        percent = 100 / max(time.monotonic() - self._started, 1e-9)
        used = [max(0.0, _cpuSeconds(p) - b) for p, b in zip(self._processes, self._before)]
        self.result.masterCPU, self.result.allCPU = percent * used[0], percent * sum(used)
        self.result.machineCPU = percent * (_machineSeconds() - self._machine)
        self._stop.set()
        self._thread.join(5)


def _cpuSeconds(process: psutil.Process) -> float:
    with suppress(psutil.Error):
        return float(sum(process.cpu_times()[:2]))  # user, system
    return 0.0


def _machineSeconds() -> float:
    """
    CPU time the machine's cores spent busy (not idle or waiting for I/O),
    or taken by the hypervisor (steal), since boot.
    """
    times = psutil.cpu_times()
    guests = getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)  # counted in user, nice
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0) - guests)


def peakRSSKiB(pid: int) -> int:
    """
    C{VmHWM}, the peak resident size since the start (psutil has none).
    """
    with suppress(OSError, TypeError):
        return int(re.search(r"VmHWM:\s*(\d+)", Path(f"/proc/{pid}/status").read_text())[1])  # type: ignore[index]
    return 0


def readCounts(directory: Path, what: str = "connections") -> dict[str, int]:
    """
    Totals of C{what} (C{connections} or C{requests}) that the servers wrote
    (C{worker-PID.json}), by worker id (summed over its processes).
    """
    totals: dict[str, int] = {}
    for path in sorted(directory.glob("worker-*.json")):
        with suppress(OSError, ValueError):
            record = json.loads(path.read_text())
            totals[str(record["worker"])] = totals.get(str(record["worker"]), 0) + int(record[what])
    return totals


def difference(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """
    What each worker served between two readings, in worker order.
    """
    order = sorted(set(before) | set(after), key=lambda w: (int(w), w) if w.isdigit() else (1 << 30, w))
    return {w: after.get(w, 0) - before.get(w, 0) for w in order}


@contextmanager
def scraping(url: str | None) -> Iterator[None]:
    """
    A Prometheus stand-in: GET C{url} every second meanwhile, if there is one.
    """
    stop = threading.Event()

    def scrape() -> None:
        while url and not stop.wait(1.0):
            with suppress(OSError), urllib.request.urlopen(url, timeout=10) as answer:
                answer.read()

    thread = threading.Thread(target=scrape, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(15)


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
    with ProcessMeter(server.masterPid) as meter, scraping(server.metricsURL):
        meter.result.load = runLoad(spec)
    time.sleep(SETTLE_SECONDS)
    meter.result.spread = difference(before, readCounts(server.countsDirectory, what))
    if server.managed.poll() is not None:
        raise ServerFailed(f"died during the {phase} phase: {server.lastLogLine()}")
    return meter.result


def measureConfig(config: BenchConfig, options: RunOptions, logDirectory: Path) -> ConfigResult:
    """
    Measure C{config}; a failure is recorded, never raised (Ctrl-C is).
    """
    result = ConfigResult(config)
    try:
        with serving(config, logDirectory) as server:
            for phase in options.phases:
                if phase.startswith("uneven") and config.workers < 2:
                    continue
                try:
                    result.phases[phase] = measurePhase(server, phase, options)
                except LoadFailed as e:
                    result.phases[phase] = PhaseResult(error=str(e))
            result.masterHWMKiB = peakRSSKiB(server.masterPid)
    except (ServerFailed, LoadFailed, OSError, psutil.Error) as e:
        result.status, result.note = "failed", str(e)
    return result
