"""
What the run reports: every figure about a configuration, by the name of its
column (L{METRICS}: the tables show them, the JSON keeps them); the issues'
targets, read from C{targets.toml}, each a ratio of two configurations'
figures in this run, MET or MISSED; the tables and the JSON.

With several rounds (C{--repeat}), a ratio of rates or costs is the median of
its ratios round by round, each from two sides measured close together
(L{benchmarks._cli.runOrder}); memory and latencies, and a single round,
compare the two configurations' median rounds.
"""

from __future__ import annotations

import json
import operator
import os
import platform
import statistics
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._model import modelOfScale
from ._run import ConfigResult, RunOptions

TARGETS = Path(__file__).resolve().parent / "targets.toml"
COMPARISONS = {">=": operator.ge, "<=": operator.le, "<": operator.lt, ">": operator.gt}
Value = Callable[[ConfigResult], "float | None"]


@dataclass(frozen=True)
class Metric:
    """
    @ivar name: The column's heading, and the metric's name in C{targets.toml}.
    @ivar label: What a target line calls it (its name if empty).
    @ivar perRound: A target's ratio of it is the median of its ratios
        round by round (rates and costs, which a slow spell of the machine
        moves alike on both sides), not that of the two median rounds.
    @ivar text: The cell, for a column that is not a number.
    """

    name: str
    value: Value
    digits: int = 0
    label: str = ""
    perRound: bool = False
    text: Callable[[ConfigResult], str] | None = None

    def cell(self, result: ConfigResult) -> str:
        if self.text is not None:
            return self.text(result)
        value = self.value(result)
        return "-" if value is None else f"{value:,.{self.digits}f}"


def figure(phase: str, attribute: str) -> Value:
    """
    An attribute of a phase's load (C{perSecond}, C{p99}...), or a key of
    its C{uneven} details (C{uneven.cheapP99}).
    """
    if attribute.startswith("uneven."):
        return lambda result: load.uneven.get(attribute[7:]) if (load := result.load(phase)) else None
    return lambda result: getattr(result.load(phase), attribute, None)


def busyShare(phase: str) -> Value:
    """
    Of the cheap requests, the share (%) sent to a worker busy with a slow
    request while another worker was not.
    """

    def value(result: ConfigResult) -> float | None:
        load = result.load(phase)
        cheap = load.uneven.get("cheap") if load else None
        return 100 * load.uneven["toBusyWhileIdle"] / cheap if load and cheap else None

    return value


def cpuPerConnection(which: str) -> Value:
    """
    Microseconds of CPU per new connection in the short phase: the master's
    (C{master}), the master's and every worker's (C{all}), or the load
    generator's (C{client}).
    """

    def value(result: ConfigResult) -> float | None:
        phase, load = result.phases.get("short"), result.load("short")
        if phase is None or load is None or not load.requests:
            return None
        if which == "client":
            return load.clientCPU / load.requests * 1e6 if load.clientCPU else None
        percent = phase.masterCPU if which == "master" else phase.allCPU
        return percent / 100 * load.seconds / load.requests * 1e6

    return value


def shortPhase(attribute: str) -> Value:
    return lambda result: getattr(result.phases["short"], attribute) if result.load("short") else None


def spread(result: ConfigResult) -> str:
    """
    Each worker's share of the short phase's connections: C{51/49}.
    """
    counts = result.phases["short"].spread if "short" in result.phases else {}
    total = sum(counts.values())
    return "/".join(f"{100 * n / total:.0f}" for n in counts.values()) if total > 0 else "-"


TABLE = (
    Metric("conn/s", figure("short", "perSecond"), label="new conn/s", perRound=True),
    Metric("p50 ms", figure("short", "p50"), 2),
    Metric("p99 ms", figure("short", "p99"), 2, label="short-conn p99"),
    Metric("ka req/s", figure("keepalive", "perSecond"), label="keep-alive req/s", perRound=True),
    Metric("ka p50", figure("keepalive", "p50"), 2),
    Metric("ka p99", figure("keepalive", "p99"), 2, label="keep-alive p99"),
    Metric("cpu req/s", figure("cpu", "perSecond"), label="CPU-bound req/s", perRound=True),
    Metric("spread %", lambda r: None, text=spread),
    Metric("mCPU%", shortPhase("masterCPU")),
    Metric("m us/c", cpuPerConnection("master"), label="master CPU per connection", perRound=True),
    Metric("all us/c", cpuPerConnection("all"), label="CPU per connection", perRound=True),
    Metric("wrk us/c", cpuPerConnection("client"), label="wrk's CPU per connection", perRound=True),
    Metric("mRSS MiB", lambda r: r.masterPeakRSSKiB / 1024 or None, 1, label="master RSS"),
    Metric("mHWM MiB", lambda r: r.masterHWMKiB / 1024 or None, 1),
    Metric("errors", lambda r: sum(sum(p.load.errors.values()) for p in r.phases.values() if p.load)),
)
UNEVEN = tuple(
    Metric(f"{prefix} {name}", value, digits, label=f"{prefix} {name}")
    for phase, prefix in (("uneven", "uneven"), ("uneven-ka", "uneven ka"))
    for name, value, digits in (
        ("p50", figure(phase, "p50"), 2),
        ("p99", figure(phase, "p99"), 2),
        ("p99.9", figure(phase, "p999"), 2),
        ("busy %", busyShare(phase), 1),
        ("cheap p99", figure(phase, "uneven.cheapP99"), 2),
    )
)
#: Only in the JSON: the whole machine's busy CPU in the short phase, every process and the
#: kernel (% of one core), from which the model of scale tells what the others on a shared
#: machine left to the servers and wrk.
EXTRA = (Metric("machine CPU%", shortPhase("machineCPU")),)
METRICS = {metric.name: metric for metric in TABLE + UNEVEN + EXTRA}


@dataclass(frozen=True)
class Target:
    """
    One C{[[target]]} of C{targets.toml}, whose comments say what each key
    is.  Without a C{comparison} it is shown for reference, with no verdict.
    """

    numerator: str
    denominator: str
    metric: Metric
    denominatorMetric: Metric
    comparison: str = ""
    threshold: float = 0.0
    issue: int | None = None
    reason: Metric | None = None
    before: float | None = None

    @property
    def perRound(self) -> bool:
        return self.metric.perRound and self.denominatorMetric.perRound

    @property
    def description(self) -> str:
        if self.metric is self.denominatorMetric:
            return f"{self.metric.label or self.metric.name}: {self.numerator} / {self.denominator}"
        sides = f"{self.numerator} {self.metric.name} / {self.denominator} {self.denominatorMetric.name}"
        return f"{self.metric.label}: {sides}"


def loadTargets(path: Path = TARGETS) -> list[Target]:
    """
    @raise ValueError: The file is not valid; the message names the culprit.
    """
    try:
        entries = tomllib.loads(path.read_text())["target"]
        return [_target(number, entry) for number, entry in enumerate(entries, 1)]
    except (OSError, tomllib.TOMLDecodeError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from e


def _target(number: int, entry: dict[str, Any]) -> Target:
    def metric(key: str) -> Metric:
        name = entry.get(key, entry.get("metric"))
        if name not in METRICS:
            raise ValueError(f"unknown {key} {name!r} (known: {', '.join(METRICS)})")
        return METRICS[name]

    comparison, _, threshold = str(entry.get("threshold", "")).partition(" ")
    try:
        if comparison and comparison not in COMPARISONS:
            raise ValueError(f"threshold {entry['threshold']!r} is not like '>= 1.3'")
        return Target(
            numerator=str(entry["numerator"]),
            denominator=str(entry["denominator"]),
            metric=metric("metric"),
            denominatorMetric=metric("denominator_metric"),
            comparison=comparison,
            threshold=float(threshold or 0),
            issue=entry.get("issue"),
            reason=metric("reason") if "reason" in entry else None,
            before=entry.get("before"),
        )
    except (KeyError, ValueError) as e:
        raise ValueError(f"target {number}: {e}") from e


@dataclass
class TargetCheck:
    """
    A target read off this run: C{ratio} is L{None} if either side is missing.

    @ivar roundRatios: The ratio in each round both sides measured, when
        there were several and the metric is compared round by round:
        C{ratio} is then their median.
    @ivar sides: The two configurations' median rounds, if measured.
    """

    target: Target
    ratio: float | None
    roundRatios: list[float] = field(default_factory=list)
    sides: tuple[ConfigResult | None, ConfigResult | None] = (None, None)

    @property
    def reasons(self) -> list[float | None]:
        reason = self.target.reason
        return [reason.value(side) if reason and side else None for side in self.sides]

    @property
    def ratioFrom(self) -> str:
        return "median of per-round ratios" if self.roundRatios else "median rounds"

    @property
    def verdict(self) -> str:
        if self.ratio is None:
            return "n/a"
        if not self.target.comparison:
            return "ref"
        return "MET" if COMPARISONS[self.target.comparison](self.ratio, self.target.threshold) else "MISSED"

    def format(self) -> str:
        target = self.target
        ratio = "-" if self.ratio is None else f"{self.ratio:.2f}x"
        notes = [f"want {target.comparison} {target.threshold:g}x"] if target.comparison else []
        notes += [f"issue {target.issue}"] if target.issue else []
        notes += [f"before {target.before:g}x"] if target.before is not None else []
        text = f"{self.verdict:<7}{target.description:<66}{ratio:>8}"
        text += f"  ({', '.join(notes)})" if notes else ""
        if self.roundRatios:
            low, high = min(self.roundRatios), max(self.roundRatios)
            text += f"  median of {len(self.roundRatios)} rounds; rounds {low:.2f}-{high:.2f}x"
        if target.reason is not None and any(value is not None for value in self.reasons):
            ours, theirs = (target.reason.cell(side) if side else "-" for side in self.sides)
            text += f"; {target.reason.name}: {ours} against {theirs}"
        return text

    def json(self) -> dict[str, Any]:
        target = self.target
        return {
            **{key: getattr(target, key) for key in ("description", "issue", "numerator", "denominator")},
            "ratio": self.ratio,
            "threshold": f"{target.comparison} {target.threshold:g}" if target.comparison else None,
            "verdict": self.verdict,
            "ratioFrom": self.ratioFrom,
            "roundRatios": self.roundRatios,
            "reasons": self.reasons if target.reason else None,
        }


def check(target: Target, byName: dict[str, ConfigResult]) -> TargetCheck:
    ours, theirs = byName.get(target.numerator), byName.get(target.denominator)

    def ratio(ours: ConfigResult | None, theirs: ConfigResult | None) -> float | None:
        numerator = target.metric.value(ours) if ours else None
        denominator = target.denominatorMetric.value(theirs) if theirs else None
        return numerator / denominator if numerator is not None and denominator else None

    pairs = zip(ours.rounds, theirs.rounds) if target.perRound and ours and theirs else ()
    perRound = [r for r in (ratio(o, t) for o, t in pairs) if r is not None]
    if len(perRound) > 1:
        return TargetCheck(target, statistics.median(perRound), perRound, (ours, theirs))
    return TargetCheck(target, ratio(ours, theirs), [], (ours, theirs))


def targetChecks(results: Iterable[ConfigResult]) -> list[TargetCheck]:
    byName = {r.name: r for r in results if r.status == "ok"}
    return [check(target, byName) for target in loadTargets()]


METHOD = """\
Targets (benchmarks/targets.toml), ratios from this run. A ratio of rates or costs per connection
is the median of its ratios round by round, each side measured in the same round (each round runs
the targets' two sides close together, every other round in reverse order); memory and latencies
compare the two configurations' median rounds (by the first phase's rate):"""
#: What the columns mean is in docs/benchmarks.md; this, with the load's figures, under the second table.
UNEVEN_LEGEND = """\
Uneven work: {rate:g} requests/s for {seconds:g}s from a constant-rate client, 5% of them costing 20 ms
of CPU; latency (ms) from each request's due time. uneven: a connection per request; uneven ka:
{connections} keep-alive connections. busy %: the cheap requests sent to a worker busy with a slow
one while another worker was not, % of the cheap requests; cheap p99: theirs alone."""


def formatTargets(checks: Sequence[TargetCheck]) -> str:
    lines = [METHOD if any(c.roundRatios for c in checks) else METHOD.split(". ")[0] + ":"]
    lines += [c.format() for c in checks if c.target.comparison]
    if references := [c.format() for c in checks if not c.target.comparison]:
        lines += ["", "For reference (no target):", *references]
    return "\n".join(lines)


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
    widths = [max(len(cells[i]) for cells in [header, *rows] if len(cells) > 2) for i in range(len(header))]
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


def machineDescription() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    cores, model = len(os.sched_getaffinity(0)), models[0] if models else "unknown CPU"
    return f"{cores} cores ({model}), Linux {platform.release()}, Python {platform.python_version()}"


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
    return {r.name: {name: m.value(r) for name, m in METRICS.items()} for r in results if r.status == "ok"}


def writeJSON(
    path: Path, results: Sequence[ConfigResult], options: RunOptions, checks: Sequence[TargetCheck]
) -> None:
    perRound = [name for name, m in METRICS.items() if m.perRound]
    document = {
        "machine": machineDescription(),
        "options": asdict(options),
        "results": [
            {
                "name": r.name,
                **asdict(r.config),
                "status": r.status,
                "note": r.note,
                "metrics": metricValues([r]).get(r.name, {}),
                "masterPeakRSSKiB": r.masterPeakRSSKiB,
                "masterHWMKiB": r.masterHWMKiB,
                "phases": {name: asdict(phase) for name, phase in r.phases.items()},
                "rounds": {
                    n: [METRICS[n].value(x) if x.status == "ok" else None for x in r.rounds] for n in perRound
                },
            }
            for r in results
        ],
        "targets": [c.json() for c in checks],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
