"""
Load generators: C{wrk} (the real client) and a tiny built-in Python one,
for the smoke test on machines without C{wrk} (its figures are not
comparable with C{wrk}'s).
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._processes import Managed

#: Printed by the wrk script's done(): one JSON object on one line.
WRK_MARKER = "BENCH_RESULT "
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_report.lua"


@dataclass
class LoadSpec:
    """
    One load to apply.

    @ivar close: Send C{Connection: close} (one request per connection).
    @ivar path: C{/} or C{/work} (the CPU-bound variant).
    """

    port: int
    duration: float
    connections: int
    threads: int
    close: bool
    path: str = "/"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"


@dataclass
class LoadResult:
    """
    What a load generator measured.  Latencies are in milliseconds.

    @ivar clientCPU: Seconds of CPU (user and system) that the load
        generator itself used, when it ran as a process of its own
        (C{wrk}); 0 when not known.
    """

    requests: int
    seconds: float
    p50: float
    p99: float
    errors: dict[str, int] = field(default_factory=dict)
    clientCPU: float = 0.0

    @property
    def perSecond(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def toJSON(self) -> dict[str, Any]:
        return dict(asdict(self), perSecond=self.perSecond)


class LoadFailed(Exception):
    """
    The load generator failed; the message says why.
    """


def wrkCommand(spec: LoadSpec) -> list[str]:
    argv = ["wrk", "-t", str(spec.threads), "-c", str(spec.connections)]
    # wrk takes whole seconds only.
    seconds = max(1, math.ceil(spec.duration))
    argv += ["-d", f"{seconds}s", "--timeout", "5s", "--latency"]
    argv += ["-s", str(WRK_SCRIPT)]
    if spec.close:
        argv += ["-H", "Connection: close"]
    return [*argv, spec.url]


def parseWrkOutput(output: str) -> LoadResult:
    """
    Read the result line that C{wrk_report.lua} prints.

    @raise LoadFailed: There is none.
    """
    for line in output.splitlines():
        if line.startswith(WRK_MARKER):
            data = json.loads(line[len(WRK_MARKER) :])
            return LoadResult(
                requests=int(data["requests"]),
                seconds=data["duration_us"] / 1e6,
                p50=data["p50_us"] / 1000,
                p99=data["p99_us"] / 1000,
                errors={k: int(v) for k, v in data["errors"].items() if v},
            )
    tail = output.strip().splitlines()[-1:] or ["(no output)"]
    raise LoadFailed(f"wrk printed no result: {tail[0]}")


def runWrk(spec: LoadSpec) -> LoadResult:
    """
    Run C{wrk} for C{spec.duration} seconds (killed if it overruns).
    """
    wrk = Managed(wrkCommand(spec), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # wrk shares the machine with the servers: what it costs is part of the
    # picture.  The kernel adds a child's CPU time to RUSAGE_CHILDREN when
    # it is reaped, and wrk is the only child reaped while it runs (the
    # servers outlive the phase; Popen reaps its leftovers before forking).
    before = childrenCPU()
    try:
        output, _ = wrk.process.communicate(timeout=spec.duration + 20)
        clientCPU = childrenCPU() - before
    except subprocess.TimeoutExpired as e:
        raise LoadFailed(f"wrk overran {spec.duration + 20:g}s") from e
    finally:
        wrk.stop(grace=1.0)
    result = parseWrkOutput(output.decode(errors="replace"))
    result.clientCPU = clientCPU
    return result


def childrenCPU() -> float:
    """
    Seconds of CPU (user and system) used by this process's children that
    have ended and been waited for.
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def runLoad(spec: LoadSpec, generator: str) -> LoadResult:
    if generator == "wrk":
        return runWrk(spec)
    from ._pyload import runPythonLoad

    return runPythonLoad(spec)


def percentile(sortedValues: list[float], fraction: float) -> float:
    """
    The C{fraction} (0..1) percentile of already sorted values (nearest rank).
    """
    if not sortedValues:
        return 0.0
    index = min(len(sortedValues) - 1, max(0, round(fraction * len(sortedValues)) - 1))
    return sortedValues[index]
