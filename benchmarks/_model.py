"""
A model of scale: new connections per second on more cores, projected from
what a connection costs in this run (the short phase's C{m us/c}, C{all us/c}
and C{wrk us/c}), and checked against the rates measured here.

A connection costs C{all} microseconds of CPU in the servers, C{master} of
them in the master's one thread (C{rr}), and C{client} in the load
generator.  On C{C} cores with a worker per core and the load coming from
other machines, C{none} makes C{C / all} connections per second and C{rr}
C{min(C / all, 1 / master)}: the master, one thread, caps C{rr} from
C{all / master} cores on.  Here wrk shares the cores, other processes may
too (the machine's busy CPU less the servers' and wrk's: what was left is
C{free} cores), and a configuration may have fewer workers than cores:
C{min(free / (all + client), workers / (all - master), 1 / master)}.  The
model leaves out the contention (locks, caches, the accept queue) that more
cores add.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

CORES = (2, 8, 16, 64)
PROJECTED = ("twistcluster-rr-2", "twistcluster-none-2")
CHECKED = (
    "twisted-single",
    "twistcluster-rr-1",
    "twistcluster-rr-2",
    "twistcluster-none-1",
    "twistcluster-none-2",
)
Values = Mapping[str, Mapping[str, "float | None"]]


def _rate(value: float) -> str:
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}k"


def projected(master: float, all: float, cores: int) -> tuple[float, bool]:
    """
    New connections per second on C{cores} cores, and whether the master
    caps it.
    """
    workers = cores * 1e6 / all
    cap = 1e6 / master if master >= 1 else float("inf")
    return min(workers, cap), cap < workers


def here(master: float, all: float, client: float, workers: int, free: float) -> float:
    """
    The model on this machine: C{free} cores for the servers and wrk.
    """
    limits = [free * 1e6 / (all + client), workers * 1e6 / max(all - master, 1e-9)]
    return min(limits + ([1e6 / master] if master >= 1 else []))


def freeCores(metrics: Mapping[str, float | None], cores: int) -> float:
    """
    The cores the servers and wrk had: C{cores} less what the rest of the
    machine used during the short phase (when it was measured).
    """
    machine, rate = metrics.get("machine CPU%"), metrics.get("conn/s")
    if not machine or not rate:
        return float(cores)
    ours = ((metrics.get("all us/c") or 0) + (metrics.get("wrk us/c") or 0)) * rate / 1e6
    return max(0.1, min(float(cores), cores - (machine / 100 - ours)))


def modelOfScale(values: Values, cores: int | None = None) -> str:
    """
    The section, in Markdown, from each configuration's metrics by name
    (empty if neither C{rr} nor C{none} with 2 workers was measured).
    """
    cores = cores or len(os.sched_getaffinity(0))
    rows = []
    for name in PROJECTED:
        if (costs := _costs(values.get(name, {}))) is None:
            continue
        cells = [
            _rate(rate) + (" (master)" if capped else "")
            for rate, capped in (projected(*costs[:2], c) for c in CORES)
        ]
        rows.append(f"| {name} | {' | '.join(f'{cost:.0f}' for cost in costs)} | {' | '.join(cells)} |")
    if not rows:
        return ""
    lines = [
        "Model of scale (benchmarks/_model.py): new conn/s projected from this run's CPU per connection,",
        "a worker per core, the load from other machines; (master): the master's one thread caps it",
        "",
        "| from | m us/c | all us/c | wrk us/c | " + " | ".join(f"{c} cores" for c in CORES) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(CORES),
        *rows,
        "",
        f"Checked on this machine ({cores} cores, wrk on them; free: what other processes left to the",
        "servers and wrk), each configuration from its own costs:",
        "",
        "| configuration | free cores | model conn/s | measured conn/s | measured / model |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in CHECKED:
        metrics = values.get(name, {})
        if (costs := _costs(metrics)) is None or not (measured := metrics.get("conn/s")):
            continue
        free = freeCores(metrics, cores)
        model = here(*costs, int(name.rsplit("-", 1)[1]) if name[-1].isdigit() else 1, free)
        lines.append(f"| {name} | {free:.2f} | {_rate(model)} | {_rate(measured)} | {measured / model:.2f} |")
    return "\n".join(lines)


def _costs(metrics: Mapping[str, float | None]) -> tuple[float, float, float] | None:
    master, all, client = (metrics.get(k) for k in ("m us/c", "all us/c", "wrk us/c"))
    return (master or 0.0, all, client) if all and client is not None else None
