"""
The load generators, each a process of its own that prints one result line
(L{MARKER} and JSON): C{wrk} for the throughput phases (as many requests as
its connections can make), L{benchmarks._rateclient} for the uneven-work
phases (a fixed offered rate, latency from each request's due time).
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._servers import Managed

MARKER = "BENCH_RESULT "
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_report.lua"


@dataclass(frozen=True)
class LoadSpec:
    """
    One load to apply.

    @ivar close: One request per connection (C{Connection: close}).
    @ivar path: C{/} or C{/work} (the CPU-bound variant).
    @ivar rate: Requests per second offered by the constant-rate client, a
        share C{slowShare} of them to C{/slow}; 0 for C{wrk}.
    """

    port: int
    duration: float
    connections: int
    close: bool
    path: str = "/"
    rate: float = 0.0
    slowShare: float = 0.05


@dataclass
class LoadResult:
    """
    What a load generator measured.  Latencies are in milliseconds.

    @ivar clientCPU: Seconds of CPU (user and system) the generator used.
    @ivar uneven: The constant-rate client's details: cheap and slow
        requests, C{cheapP99}, C{toBusy} (cheap requests sent to a worker
        busy with a slow one), C{toBusyWhileIdle} (...while another was not),
        C{lagP99} (its own lateness), C{workers} (requests by worker).
    """

    requests: int
    seconds: float
    p50: float
    p99: float
    p999: float | None = None
    errors: dict[str, int] = field(default_factory=dict)
    clientCPU: float = 0.0
    uneven: dict[str, Any] = field(default_factory=dict)

    @property
    def perSecond(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


class LoadFailed(Exception):
    """
    The load generator failed; the message says why.
    """


def command(spec: LoadSpec) -> list[str]:
    """
    The constant-rate client's command line for a rate, else wrk's.
    """
    if spec.rate:
        argv = [sys.executable, "-m", "benchmarks._rateclient", str(spec.port), str(spec.rate)]
        argv += [f"{spec.duration:g}", "--slow-share", str(spec.slowShare)]
        return argv + ([] if spec.close else ["--keep-alive", str(spec.connections)])
    seconds = max(1, math.ceil(spec.duration))  # wrk takes whole seconds only
    argv = ["wrk", "-t", "1", "-c", str(spec.connections), "-d", f"{seconds}s", "--timeout", "5s"]
    argv += ["--latency", "-s", str(WRK_SCRIPT), *(["-H", "Connection: close"] if spec.close else [])]
    return [*argv, f"http://127.0.0.1:{spec.port}{spec.path}"]


def parseOutput(output: str) -> LoadResult:
    """
    Read the result line of C{wrk_report.lua} or the rate client.

    @raise LoadFailed: There is none.
    """
    for line in output.splitlines():
        if line.startswith(MARKER):
            data = json.loads(line[len(MARKER) :])
            return LoadResult(
                requests=int(data["requests"]),
                seconds=data["duration_us"] / 1e6,
                p50=data["p50_us"] / 1000,
                p99=data["p99_us"] / 1000,
                p999=data["p999_us"] / 1000 if "p999_us" in data else None,
                errors={k: int(v) for k, v in data["errors"].items() if v},
                uneven=data.get("uneven", {}),
            )
    tail = output.strip().splitlines()[-1:] or ["(no output)"]
    raise LoadFailed(f"the load generator printed no result: {tail[0]}")


def runLoad(spec: LoadSpec) -> LoadResult:
    """
    Apply C{spec} (killing the generator if it overruns) and read its result.
    """
    client = Managed(command(spec), stdout=subprocess.PIPE)
    # The kernel adds a child's CPU time to RUSAGE_CHILDREN when it is
    # reaped, and the generator is the only child reaped while it runs (the
    # servers outlive the phase; Popen reaps its leftovers before forking).
    before = childrenCPU()
    try:
        output, _ = client.communicate(timeout=spec.duration + 20)
        clientCPU = childrenCPU() - before
    except subprocess.TimeoutExpired as e:
        raise LoadFailed(
            f"{'the rate client' if spec.rate else 'wrk'} overran {spec.duration + 20:g}s"
        ) from e
    finally:
        client.stop(grace=1.0)
    result = parseOutput(output.decode(errors="replace"))
    result.clientCPU = clientCPU
    return result


def childrenCPU() -> float:
    """
    Seconds of CPU (user and system) used by this process's children that
    have ended and been waited for.
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
