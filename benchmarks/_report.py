"""
The results as tables (L{benchmarks._metrics}), and as JSON.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ._metrics import METRICS, TABLE, UNEVEN, Metric
from ._model import modelOfScale
from ._run import ConfigResult, RunOptions
from ._targets import TargetCheck, formatTargets

LEGEND = """\
conn/s     new connections per second, one request each (wrk -H 'Connection: close');
           p50/p99 its latency (ms)
ka req/s   requests per second on keep-alive connections; ka p50/p99 its latency (ms)
cpu req/s  keep-alive requests per second to /work (a fixed CPU loop per request, ~1 ms in CPython)
spread %   each worker's share of the short-connection phase's connections (worker 1/2/...)
mCPU%      the master's CPU (user + system, psutil) during the short phase, % of one core
m us/c     the master's CPU time per new connection (microseconds); all us/c the same for the master
           and every worker together: the cost of a connection, less disturbed by a noisy machine;
           wrk us/c the same for the load generator, which shares the cores with the servers
mRSS MiB   the master's peak RSS sampled under load; mHWM its VmHWM (peak since start)
errors     socket errors, timeouts and non-2xx responses, all phases together
twisted-reuseport-2  no cluster: two plain Twisted processes (forked by an idle parent, its "master"
           columns), each with its own SO_REUSEPORT socket on the port"""

UNEVEN_LEGEND = """\
Uneven work: {rate:g} requests/s offered for {seconds:g}s by a constant-rate client, 5% of them
costing 20 ms of the responder's CPU, the rest almost nothing; latency (ms) from each request's due
time, so a stalled server is charged for every request it kept waiting. "uneven": a connection
per request; "uneven ka": {connections} keep-alive connections (a per-connection balancer cannot move
their requests). busy %: the cheap requests sent to a worker busy with a slow one (from its send to
its response) while another worker was not, % of the cheap requests. cheap p99: theirs alone."""


def machineDescription() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0))
    return f"{cores} cores ({model}), Linux {platform.release()}, Python {platform.python_version()}"


def rowFor(result: ConfigResult, columns: Sequence[Metric] = TABLE) -> list[str]:
    if result.status != "ok":
        return [result.name, f"{result.status}: {result.note}"]
    row = [result.name, *(metric.cell(result) for metric in columns)]
    failed = [name for name, p in result.phases.items() if p.error]
    return row + (["phase failed: " + "; ".join(result.phases[n].error for n in failed)] if failed else [])


def formatTable(results: Sequence[ConfigResult], columns: Sequence[Metric] = TABLE) -> str:
    widths = [24, *(metric.width for metric in columns)]
    header = "  ".join(["config".ljust(24), *(m.name.rjust(m.width) for m in columns)])
    lines = [header, "-" * len(header)]
    for result in results:
        cells = rowFor(result, columns)
        if len(cells) == 2:
            lines.append(f"{cells[0].ljust(24)}  {cells[1]}")
            continue
        formatted = [
            cell.rjust(width) if i else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths))
        ]
        lines.append("  ".join(formatted + cells[len(widths) :]))
    return "\n".join(lines)


def formatReport(results: Sequence[ConfigResult], options: RunOptions, checks: Sequence[TargetCheck]) -> str:
    header = (
        f"Machine: {machineDescription()}\n"
        f"Load: wrk, {options.connections} connections, {options.threads} thread(s), "
        f"{options.duration:g}s per phase after {options.warmup:g}s warm-up; "
        f"/work = {options.workIterations} iterations"
    )
    parts = [header, formatTable(results), LEGEND]
    if any(phase.startswith("uneven") for phase in options.phases):
        spec = options.loadFor("uneven", 0)
        legend = UNEVEN_LEGEND.format(rate=spec.rate, seconds=spec.duration, connections=spec.connections)
        uneven = [r for r in results if any(phase.startswith("uneven") for phase in r.phases)]
        parts += [formatTable(uneven, UNEVEN), legend]
    parts.append(formatTargets(checks))
    model = modelOfScale(metricValues(results))
    return "\n\n".join(parts + ([model] if model else [])) + "\n"


def metricValues(results: Sequence[ConfigResult]) -> dict[str, dict[str, float | None]]:
    """
    Every metric of every measured configuration, by name.
    """
    return {r.name: {name: m.value(r) for name, m in METRICS.items()} for r in results if r.status == "ok"}


def resultJSON(result: ConfigResult) -> dict[str, Any]:
    values = metricValues([result]).get(result.name, {})
    perRound = [name for name, m in METRICS.items() if m.perRound]
    return {
        "name": result.name,
        "kind": result.config.kind,
        "policy": result.config.policy,
        "workers": result.config.workers,
        "status": result.status,
        "note": result.note,
        "metrics": values,
        "masterPeakRSSKiB": result.masterPeakRSSKiB,
        "masterHWMKiB": result.masterHWMKiB,
        "phases": {name: phase.toJSON() for name, phase in result.phases.items()},
        "rounds": {
            name: [METRICS[name].value(r) if r.status == "ok" else None for r in result.rounds]
            for name in perRound
        },
    }


def writeJSON(
    path: Path, results: Sequence[ConfigResult], options: RunOptions, checks: Sequence[TargetCheck]
) -> None:
    targets = [
        {
            "description": c.target.description,
            "issue": c.target.issue,
            "numerator": c.target.numerator,
            "denominator": c.target.denominator,
            "ratio": c.ratio,
            "threshold": f"{c.target.comparison} {c.target.threshold:g}" if c.target.comparison else None,
            "verdict": c.verdict,
            "ratioFrom": c.ratioFrom,
            "roundRatios": c.roundRatios,
            "reasons": c.reasons if c.target.reason else None,
        }
        for c in checks
    ]
    document = {
        "machine": machineDescription(),
        "options": asdict(options),
        "results": [resultJSON(r) for r in results],
        "targets": targets,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
