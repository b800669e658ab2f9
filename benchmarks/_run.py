"""
Measuring one configuration: start it, apply each phase's load (after a
warm-up), read the master's CPU and memory and the workers' counts, stop it.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ._configs import BenchConfig
from ._load import LoadFailed, LoadResult, LoadSpec, runLoad
from ._procstat import CPUMeter, MemorySampler, memoryKiB
from ._servers import RunningServer, ServerFailed, Skipped, startServer
from ._spread import SETTLE_SECONDS, difference, readCounts

#: The phases, in the order they run: short connections, keep-alive, and
#: the CPU-bound variant (keep-alive, C{/work}).
PHASES = ("short", "keepalive", "cpu")


@dataclass(frozen=True)
class RunOptions:
    duration: float = 6.0
    warmup: float = 1.0
    connections: int = 64
    threads: int = 1
    generator: str = "wrk"
    phases: tuple[str, ...] = PHASES
    workIterations: int = 16000

    def loadFor(self, phase: str, port: int) -> LoadSpec:
        return LoadSpec(
            port=port,
            duration=self.duration,
            connections=self.connections,
            threads=self.threads,
            close=phase == "short",
            path="/work" if phase == "cpu" else "/",
        )


@dataclass
class PhaseResult:
    """
    One phase of one configuration.

    @ivar spread: Connections (short phase) or requests (the others) each
        worker served during the phase, by worker id.
    """

    load: LoadResult | None = None
    masterCPU: float = 0.0
    allCPU: float = 0.0
    masterPeakRSSKiB: int = 0
    spread: dict[str, int] = field(default_factory=dict)
    error: str = ""

    def toJSON(self) -> dict[str, Any]:
        return {
            "load": self.load.toJSON() if self.load else None,
            "masterCPUPercent": round(self.masterCPU, 1),
            "allCPUPercent": round(self.allCPU, 1),
            "masterPeakRSSKiB": self.masterPeakRSSKiB,
            "spread": self.spread,
            "error": self.error,
        }


@dataclass
class ConfigResult:
    """
    Everything measured for one configuration.

    @ivar status: C{ok}, C{skipped} or C{failed} (C{note} says why).
    """

    config: BenchConfig
    status: str = "ok"
    note: str = ""
    phases: dict[str, PhaseResult] = field(default_factory=dict)
    masterHWMKiB: int = 0
    #: Each phase's rate in every round, in round order (None: the round
    #: failed), when there were several.
    roundRates: dict[str, list[float | None]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def masterPeakRSSKiB(self) -> int:
        return max((p.masterPeakRSSKiB for p in self.phases.values()), default=0)

    def rate(self, phase: str) -> float | None:
        result = self.phases.get(phase)
        return result.load.perSecond if result and result.load else None

    def toJSON(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.config.kind,
            "policy": self.config.policy,
            "workers": self.config.workers,
            "status": self.status,
            "note": self.note,
            "masterPeakRSSKiB": self.masterPeakRSSKiB,
            "masterHWMKiB": self.masterHWMKiB,
            "phases": {name: p.toJSON() for name, p in self.phases.items()},
            "roundRates": self.roundRates,
        }


def measurePhase(server: RunningServer, phase: str, options: RunOptions, counts: Path) -> PhaseResult:
    """
    Warm up, then apply C{phase}'s load and measure it.
    """
    spec = options.loadFor(phase, server.port)
    if options.warmup > 0:
        runLoad(replace(spec, duration=options.warmup), options.generator)
    what = "connections" if phase == "short" else "requests"
    time.sleep(SETTLE_SECONDS)
    before = readCounts(counts, what)
    cpu = CPUMeter(server.masterPid)
    cpu.start()
    with MemorySampler(server.masterPid) as memory:
        load = runLoad(spec, options.generator)
    cpu.stop()
    time.sleep(SETTLE_SECONDS)
    after = readCounts(counts, what)
    if not server.managed.running():
        raise ServerFailed(f"died during the {phase} phase: {server.lastLogLine()}")
    return PhaseResult(
        load=load,
        masterCPU=cpu.masterPercent,
        allCPU=cpu.allPercent,
        masterPeakRSSKiB=memory.peakRSS,
        spread=difference(before, after),
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
        server (the profiler uses it).
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
        else:
            _measurePhases(server, options, counts, result)
        result.masterHWMKiB = memoryKiB(server.masterPid).get("VmHWM", 0)
    except Skipped as e:
        result.status, result.note = "skipped", str(e)
    except (ServerFailed, LoadFailed, OSError) as e:
        result.status, result.note = "failed", str(e)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(counts, ignore_errors=True)
    return result


def _measurePhases(server: RunningServer, options: RunOptions, counts: Path, result: ConfigResult) -> None:
    for phase in options.phases:
        try:
            result.phases[phase] = measurePhase(server, phase, options, counts)
        except LoadFailed as e:
            result.phases[phase] = PhaseResult(error=str(e))
