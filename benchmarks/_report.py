"""
The results as tables (L{benchmarks._metrics}) and targets, and as JSON.
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

#: What the columns mean is in docs/benchmarks.md; this, with the load's figures, under the second table.
UNEVEN_LEGEND = """\
Uneven work: {rate:g} requests/s for {seconds:g}s from a constant-rate client, 5% of them costing 20 ms
of CPU; latency (ms) from each request's due time. uneven: a connection per request; uneven ka:
{connections} keep-alive connections. busy %: the cheap requests sent to a worker busy with a slow
one while another worker was not, % of the cheap requests; cheap p99: theirs alone."""


def machineDescription() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    cores = len(os.sched_getaffinity(0))
    model = models[0] if models else "unknown CPU"
    return f"{cores} cores ({model}), Linux {platform.release()}, Python {platform.python_version()}"


def rowFor(result: ConfigResult, columns: Sequence[Metric] = TABLE) -> list[str]:
    """
    A configuration's cells; a configuration not measured has one, why.
    """
    if result.status != "ok":
        return [result.name, f"{result.status}: {result.note}"]
    errors = "; ".join(p.error for p in result.phases.values() if p.error)
    return [result.name, *(metric.cell(result) for metric in columns)] + (
        [f"phase failed: {errors}"] if errors else []
    )


def formatTable(results: Sequence[ConfigResult], columns: Sequence[Metric] = TABLE) -> str:
    header = ["config", *(metric.name for metric in columns)]
    rows = [rowFor(result, columns) for result in results]
    full = [row for row in rows if len(row) > 2]
    widths = [max(len(cells[i]) for cells in [header, *full]) for i in range(len(header))]
    lines = []
    for cells in [header, *rows]:
        if len(cells) == 2:
            lines.append(f"{cells[0].ljust(widths[0])}  {cells[1]}")
            continue
        aligned = [
            cell.rjust(width) if i else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths))
        ]
        lines.append("  ".join(aligned + cells[len(widths) :]))
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def formatReport(results: Sequence[ConfigResult], options: RunOptions, checks: Sequence[TargetCheck]) -> str:
    header = (
        f"Machine: {machineDescription()}\nLoad: wrk, {options.connections} connections, 1 thread, "
        f"{options.duration:g}s per phase after {options.warmup:g}s warm-up"
    )
    parts = [header, formatTable(results), "Columns: see docs/benchmarks.md."]
    if uneven := [r for r in results if any(phase.startswith("uneven") for phase in r.phases)]:
        spec = options.loadFor("uneven", 0)
        legend = UNEVEN_LEGEND.format(rate=spec.rate, seconds=spec.duration, connections=spec.connections)
        parts += [formatTable(uneven, UNEVEN), legend]
    model = modelOfScale(metricValues(results))
    return "\n\n".join([*parts, formatTargets(checks), *([model] if model else [])]) + "\n"


def metricValues(results: Sequence[ConfigResult]) -> dict[str, dict[str, float | None]]:
    """
    Every metric of every measured configuration, by name.
    """
    return {r.name: {name: m.value(r) for name, m in METRICS.items()} for r in results if r.status == "ok"}


def resultJSON(result: ConfigResult) -> dict[str, Any]:
    perRound = [name for name, m in METRICS.items() if m.perRound]
    return {
        "name": result.name,
        **asdict(result.config),
        "status": result.status,
        "note": result.note,
        "metrics": metricValues([result]).get(result.name, {}),
        "masterPeakRSSKiB": result.masterPeakRSSKiB,
        "masterHWMKiB": result.masterHWMKiB,
        "phases": {name: asdict(phase) for name, phase in result.phases.items()},
        "rounds": {
            name: [METRICS[name].value(r) if r.status == "ok" else None for r in result.rounds]
            for name in perRound
        },
    }


def targetJSON(c: TargetCheck) -> dict[str, Any]:
    return {
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


def writeJSON(
    path: Path, results: Sequence[ConfigResult], options: RunOptions, checks: Sequence[TargetCheck]
) -> None:
    document = {
        "machine": machineDescription(),
        "options": asdict(options),
        "results": [resultJSON(r) for r in results],
        "targets": [targetJSON(c) for c in checks],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
