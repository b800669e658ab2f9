"""
A model of scale: new connections per second on more cores, projected from
what a connection costs in this run (the short phase's C{m us/c}, C{all us/c}
and C{wrk us/c}), and checked against the rates measured here.

A connection costs C{all} microseconds of CPU in the servers, C{master} of
them in the master's one thread (C{rr}), and C{client} in the load
generator.  On C{C} cores with a worker per core and the load coming from
other machines, C{none} makes C{C / all} connections per second and C{rr}
C{min(C / all, 1 / master)}: the master, one thread, caps C{rr} from
C{all / master} cores on.  Here, where wrk shares the 2 cores and a
configuration may have fewer workers than cores, the model is
C{min(2 / (all + client), workers / (all - master), 1 / master)}.  It leaves
out what does not show in a process's CPU time on 2 cores: the kernel's work
for the network outside any process, and contention (locks, caches, the
accept queue) that more cores add.
"""

from __future__ import annotations

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


def here(master: float, all: float, client: float, workers: int, cores: int = 2) -> float:
    """
    The model on this machine: wrk on the same cores, C{workers} processes.
    """
    limits = [cores * 1e6 / (all + client), workers * 1e6 / max(all - master, 1e-9)]
    return min(limits + ([1e6 / master] if master >= 1 else []))


def modelOfScale(values: Values) -> str:
    """
    The section, in Markdown, from each configuration's metrics by name
    (empty if neither C{rr} nor C{none} with 2 workers was measured).
    """
    costs = {name: _costs(values.get(name, {})) for name in PROJECTED + CHECKED}
    rows = []
    for name in PROJECTED:
        if costs[name] is None:
            continue
        master, all, client = costs[name]  # type: ignore[misc]
        cells = []
        for cores in CORES:
            rate, capped = projected(master, all, cores)
            cells.append(_rate(rate) + (" (master)" if capped else ""))
        rows.append(f"| {name} | {master:.0f} | {all:.0f} | {client:.0f} | {' | '.join(cells)} |")
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
        "Checked on this machine (2 cores, wrk on them too), each configuration from its own costs:",
        "",
        "| configuration | model conn/s | measured conn/s | measured / model |",
        "|---|---:|---:|---:|",
    ]
    for name in CHECKED:
        measured = values.get(name, {}).get("conn/s")
        if costs[name] is None or not measured:
            continue
        master, all, client = costs[name]  # type: ignore[misc]
        workers = int(name.rsplit("-", 1)[1]) if name[-1].isdigit() else 1
        model = here(master, all, client, workers)
        lines.append(f"| {name} | {_rate(model)} | {_rate(measured)} | {measured / model:.2f} |")
    return "\n".join(lines)


def _costs(metrics: Mapping[str, float | None]) -> tuple[float, float, float] | None:
    master, all, client = (metrics.get(k) for k in ("m us/c", "all us/c", "wrk us/c"))
    if not all or client is None:
        return None
    return master or 0.0, all, client
