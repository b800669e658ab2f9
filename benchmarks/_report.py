"""
The results as one table, the issue's targets as ratio lines, and as JSON.

A target compares two configurations.  With several rounds (C{--repeat}), a
rate's ratio is the median of its ratios round by round, each taken from
the two sides measured in the same round (close together in time, see
L{benchmarks._cli.runOrder}); master RSS and p99, and a single round, are
compared between the two configurations' median rounds.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._configs import NODE, PLAIN_PROCESSES, SINGLE, TWISTCLUSTER, TWISTCLUSTER_POLICIES
from ._run import ConfigResult, PhaseResult, RunOptions
from ._spread import formatSpread

COLUMNS = (
    ("config", 24),
    ("conn/s", 8),
    ("p50 ms", 7),
    ("p99 ms", 7),
    ("ka req/s", 9),
    ("ka p50", 7),
    ("ka p99", 7),
    ("cpu req/s", 9),
    ("spread %", 12),
    ("mCPU%", 6),
    ("m us/c", 6),
    ("all us/c", 8),
    ("wrk us/c", 8),
    ("mRSS MiB", 8),
    ("mHWM MiB", 8),
    ("errors", 6),
)

LEGEND = """\
conn/s     new connections per second, one request each (wrk -H 'Connection: close');
           p50/p99 its latency (ms)
ka req/s   requests per second on keep-alive connections; ka p50/p99 its latency (ms)
cpu req/s  keep-alive requests per second to /work (a fixed CPU loop per request, ~1 ms in CPython)
spread %   each worker's share of the short-connection phase's connections (worker 1/2/...)
mCPU%      the master's CPU (utime+stime from /proc/PID/stat) during the short phase, % of one core
m us/c     the master's CPU time per new connection (microseconds); all us/c the same for the master
           and every worker together: the cost of a connection, less disturbed by a noisy machine;
           wrk us/c the same for the load generator, which shares the cores with the servers
mRSS MiB   the master's peak VmRSS sampled under load; mHWM its VmHWM (peak since start)
errors     wrk's socket errors and non-2xx responses, all phases together
twisted-reuseport-2  no cluster: two plain Twisted processes (forked by an idle parent, its "master"
           columns), each with its own SO_REUSEPORT socket on the port"""


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


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if digits == 0 else f"{value:.{digits}f}"


def _latency(result: ConfigResult, phase: str, which: str) -> str:
    measured = result.phases.get(phase)
    if not measured or not measured.load:
        return "-"
    return _number(getattr(measured.load, which), 2)


def _perConnection(phase: PhaseResult | None, cpuPercent: float) -> float | None:
    """
    Microseconds of CPU per request (per connection, in the short phase).
    """
    if phase is None or phase.load is None or not phase.load.perSecond:
        return None
    return cpuPercent / 100 / phase.load.perSecond * 1e6


def _clientPerConnection(phase: PhaseResult | None) -> float | None:
    """
    Microseconds of the load generator's CPU per new connection, if known.
    """
    if phase is None or phase.load is None or not (phase.load.clientCPU and phase.load.requests):
        return None
    return phase.load.clientCPU / phase.load.requests * 1e6


def rowFor(result: ConfigResult) -> list[str]:
    if result.status != "ok":
        return [result.name, f"{result.status}: {result.note}"]
    short = result.phases.get("short")
    errors = sum(sum(p.load.errors.values()) for p in result.phases.values() if p.load)
    failedPhases = [name for name, p in result.phases.items() if p.error]
    row = [
        result.name,
        _number(result.rate("short")),
        _latency(result, "short", "p50"),
        _latency(result, "short", "p99"),
        _number(result.rate("keepalive")),
        _latency(result, "keepalive", "p50"),
        _latency(result, "keepalive", "p99"),
        _number(result.rate("cpu")),
        formatSpread(short.spread) if short else "-",
        _number(short.masterCPU) if short and short.load else "-",
        _number(_perConnection(short, short.masterCPU if short else 0)),
        _number(_perConnection(short, short.allCPU if short else 0)),
        _number(_clientPerConnection(short)),
        _number(result.masterPeakRSSKiB / 1024, 1),
        _number(result.masterHWMKiB / 1024, 1),
        str(errors),
    ]
    if failedPhases:
        row.append("phase failed: " + ", ".join(failedPhases))
    return row


def formatTable(results: Sequence[ConfigResult]) -> str:
    header = "  ".join(
        name.rjust(width) if i else name.ljust(width) for i, (name, width) in enumerate(COLUMNS)
    )
    lines = [header, "-" * len(header)]
    for result in results:
        cells = rowFor(result)
        if len(cells) == 2:
            lines.append(f"{cells[0].ljust(COLUMNS[0][1])}  {cells[1]}")
            continue
        formatted = [
            cell.rjust(width) if i else cell.ljust(width)
            for i, (cell, (_, width)) in enumerate(zip(cells, COLUMNS))
        ]
        lines.append("  ".join(formatted + cells[len(COLUMNS) :]))
    return "\n".join(lines)


#: The comparison of a ratio shown for reference, with no target.
REFERENCE = "ref"

#: Where a target's ratio comes from (C{ratioFrom} in the JSON): the median
#: of the ratios measured round by round, or the two sides' median rounds.
PER_ROUND = "median of per-round ratios"
MEDIAN_ROUNDS = "median rounds"


@dataclass
class TargetCheck:
    """
    One of the issue's targets, read off this run: C{ratio} (ours / theirs,
    L{None} if either is missing) must be C{comparison} C{want}.
    """

    description: str
    ours: str
    theirs: str
    ratio: float | None
    comparison: str
    want: float
    #: The same ratio round by round (ours and theirs from the same round),
    #: for a rate both measured in several rounds: C{ratio} is then their
    #: median.
    roundRatios: list[float] = field(default_factory=list)

    @property
    def ratioFrom(self) -> str:
        return PER_ROUND if self.roundRatios else MEDIAN_ROUNDS

    @property
    def verdict(self) -> str:
        if self.ratio is None:
            return "n/a"
        if self.comparison == REFERENCE:
            return "ref"
        met = {
            ">=": self.ratio >= self.want,
            "<=": self.ratio <= self.want,
            "<": self.ratio < self.want,
        }[self.comparison]
        return "MET" if met else "MISSED"

    def format(self) -> str:
        ratio = "-" if self.ratio is None else f"{self.ratio:.2f}x"
        wanted = "" if self.comparison == REFERENCE else f"(want {self.comparison} {self.want:g}x)"
        if self.roundRatios:
            low, high = min(self.roundRatios), max(self.roundRatios)
            rounds = f"median of {len(self.roundRatios)} rounds; rounds {low:.2f}-{high:.2f}x"
            wanted += f"{'  ' if wanted else ''}{rounds}"
        return f"{self.verdict:<7}{self.description:<62}{ratio:>8}  {wanted}".rstrip()


METRIC_NAMES = {
    "short.rate": "new conn/s",
    "keepalive.rate": "keep-alive req/s",
    "rss": "master RSS",
    "short.p99": "short-conn p99",
    "keepalive.p99": "keep-alive p99",
}


def _metric(result: ConfigResult | None, metric: str) -> float | None:
    if result is None or result.status != "ok":
        return None
    if metric == "rss":
        return float(result.masterPeakRSSKiB) or None
    phase, _, field = metric.partition(".")
    measured = result.phases.get(phase)
    if not measured or not measured.load:
        return None
    return measured.load.perSecond if field == "rate" else getattr(measured.load, field)


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or not theirs:
        return None
    return ours / theirs


def targetSpecs() -> list[tuple[str, str, str, str, float]]:
    """
    The issue's targets as C{(ours, theirs, metric, comparison, want)}, all
    at 2 workers on 2 cores.
    """

    def tc(policy: str) -> str:
        return f"{TWISTCLUSTER}-{policy}-2"

    def nodeFor(policy: str) -> str:
        return f"{NODE}-{'none' if policy in ('none', 'reuseport') else 'rr'}-2"

    policies = TWISTCLUSTER_POLICIES
    specs = [(tc("rr"), f"{NODE}-rr-2", "short.rate", ">=", 1.3)]
    specs += [(tc(p), SINGLE, "short.rate", ">=", 0.9) for p in ("none", "reuseport")]
    specs += [(tc(p), SINGLE, "keepalive.rate", ">=", 1.0) for p in policies]
    specs += [(tc(p), nodeFor(p), "rss", "<", 1.0) for p in policies]
    specs += [(tc("rr"), f"{NODE}-rr-2", f"{ph}.p99", "<=", 1.0) for ph in ("short", "keepalive")]
    # What plain Twisted reaches with 2 processes, and twistcluster against it.
    plain = f"{PLAIN_PROCESSES}-2"
    specs += [(plain, SINGLE, "short.rate", REFERENCE, 0)]
    specs += [(tc(p), plain, "short.rate", REFERENCE, 0) for p in ("none", "reuseport")]
    return specs


def targetChecks(results: Iterable[ConfigResult]) -> list[TargetCheck]:
    """
    The issue's targets, each as a ratio from this run: the median of the
    ratios round by round for a rate measured in several rounds (a slow
    spell of the machine then weighs on both sides of a round alike), else
    the ratio of the two median rounds.
    """
    byName = {r.name: r for r in results}
    checks = []
    for ours, theirs, metric, comparison, want in targetSpecs():
        perRound = _roundRatios(byName.get(ours), byName.get(theirs), metric)
        if perRound:
            ratio: float | None = statistics.median(perRound)
        else:
            ratio = _ratio(_metric(byName.get(ours), metric), _metric(byName.get(theirs), metric))
        description = f"{METRIC_NAMES[metric]}: {ours} / {theirs}"
        checks.append(TargetCheck(description, ours, theirs, ratio, comparison, want, perRound))
    return checks


def _roundRatios(ours: ConfigResult | None, theirs: ConfigResult | None, metric: str) -> list[float]:
    """
    A rate's ratio in each round both measured (none for other metrics, or
    a single round).
    """
    phase, _, measure = metric.partition(".")
    if measure != "rate" or ours is None or theirs is None:
        return []
    pairs = zip(ours.roundRates.get(phase, []), theirs.roundRates.get(phase, []))
    ratios = [o / t for o, t in pairs if o and t]
    return ratios if len(ratios) > 1 else []


#: How the ratios were reached, when the rounds were several.
PER_ROUND_METHOD = """\
Targets (issue 6), ratios from this run. A rate's ratio (conn/s, req/s) is the median of its
ratios round by round, ours / theirs measured in the same round (each round runs the targets' two
sides close together, every other round in reverse order); master RSS and p99 compare the two
configurations' median rounds (by the first phase's rate):"""


def formatTargets(checks: Sequence[TargetCheck]) -> str:
    targets = [c.format() for c in checks if c.comparison != REFERENCE]
    references = [c.format() for c in checks if c.comparison == REFERENCE]
    perRound = any(c.roundRatios for c in checks)
    lines = [PER_ROUND_METHOD if perRound else "Targets (issue 6), ratios from this run:", *targets]
    if references:
        lines += [
            "",
            "For reference (no target): plain Twisted with 2 processes, and twistcluster against it:",
        ]
        lines += references
    return "\n".join(lines)


def writeJSON(
    path: Path, results: Sequence[ConfigResult], options: RunOptions, checks: Sequence[TargetCheck]
) -> None:
    document: dict[str, Any] = {
        "machine": machineDescription(),
        "options": {
            "duration": options.duration,
            "warmup": options.warmup,
            "connections": options.connections,
            "threads": options.threads,
            "generator": options.generator,
            "phases": list(options.phases),
            "workIterations": options.workIterations,
        },
        "results": [r.toJSON() for r in results],
        "targets": [
            {
                "description": c.description,
                "ours": c.ours,
                "theirs": c.theirs,
                "ratio": c.ratio,
                "comparison": c.comparison,
                "want": c.want,
                "verdict": c.verdict,
                "ratioFrom": c.ratioFrom,
                "roundRatios": c.roundRatios,
            }
            for c in checks
        ],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
