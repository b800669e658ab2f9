"""
Every figure the benchmark reports about a configuration, by the name of its
column: the tables show them, C{targets.toml} compares them, the JSON keeps
them (C{metrics}).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ._run import ConfigResult

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


def rate(phase: str) -> Value:
    return lambda result: result.rate(phase)


def latency(phase: str, attribute: str) -> Value:
    return lambda result: getattr(result.load(phase), attribute, None)


def uneven(phase: str, key: str) -> Value:
    return lambda result: load.uneven.get(key) if (load := result.load(phase)) else None


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


def spread(result: ConfigResult) -> str:
    """
    Each worker's share of the short phase's connections: C{51/49}.
    """
    counts = result.phases["short"].spread if "short" in result.phases else {}
    total = sum(counts.values())
    return "/".join(f"{100 * n / total:.0f}" for n in counts.values()) if total > 0 else "-"


def shortPhase(attribute: str) -> Value:
    return lambda result: getattr(result.phases["short"], attribute) if result.load("short") else None


TABLE = (
    Metric("conn/s", rate("short"), label="new conn/s", perRound=True),
    Metric("p50 ms", latency("short", "p50"), 2),
    Metric("p99 ms", latency("short", "p99"), 2, label="short-conn p99"),
    Metric("ka req/s", rate("keepalive"), label="keep-alive req/s", perRound=True),
    Metric("ka p50", latency("keepalive", "p50"), 2),
    Metric("ka p99", latency("keepalive", "p99"), 2, label="keep-alive p99"),
    Metric("cpu req/s", rate("cpu"), label="CPU-bound req/s", perRound=True),
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
        ("p50", latency(phase, "p50"), 2),
        ("p99", latency(phase, "p99"), 2),
        ("p99.9", latency(phase, "p999"), 2),
        ("busy %", busyShare(phase), 1),
        ("cheap p99", uneven(phase, "cheapP99"), 2),
    )
)

#: Only in the JSON: the whole machine's busy CPU in the short phase, every process and the
#: kernel (% of one core), from which the model of scale tells what the others on a shared
#: machine left to the servers and wrk.
EXTRA = (Metric("machine CPU%", shortPhase("machineCPU")),)

METRICS = {metric.name: metric for metric in TABLE + UNEVEN + EXTRA}
