"""
The issues' targets, read from C{targets.toml}, each a ratio of two
configurations' figures in this run, MET or MISSED.

With several rounds (C{--repeat}), a ratio of rates or costs is the median of
its ratios round by round, each from two sides measured close together
(L{benchmarks._cli.runOrder}); memory and latencies, and a single round,
compare the two configurations' median rounds.
"""

from __future__ import annotations

import operator
import statistics
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._metrics import METRICS, Metric
from ._run import ConfigResult

TARGETS = Path(__file__).resolve().parent / "targets.toml"
COMPARISONS = {">=": operator.ge, "<=": operator.le, "<": operator.lt, ">": operator.gt}


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
        return [
            _target(number, entry)
            for number, entry in enumerate(tomllib.loads(path.read_text())["target"], 1)
        ]
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
        """
        The target's reason metric, for both sides.
        """
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


def formatTargets(checks: Sequence[TargetCheck]) -> str:
    lines = [METHOD if any(c.roundRatios for c in checks) else METHOD.split(". ")[0] + ":"]
    lines += [c.format() for c in checks if c.target.comparison]
    if references := [c.format() for c in checks if not c.target.comparison]:
        lines += ["", "For reference (no target):", *references]
    return "\n".join(lines)
