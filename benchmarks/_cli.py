"""
C{python -m benchmarks}: run the configurations, print the tables and the
targets, write them as text and JSON; or profile one master (C{--profile}).

With C{--repeat N} every configuration runs N rounds.  Each round runs the
targets' two sides close together (L{runOrder}), every other round in
reverse, so that a slow spell of a shared machine weighs on both sides of a
ratio alike; each configuration keeps its median round for the tables.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ._load import LoadFailed
from ._model import modelOfScale
from ._profile import profileConfig
from ._report import formatReport, loadTargets, targetChecks, writeJSON
from ._run import PHASES, WRK_PHASES, ConfigResult, RunOptions, measureConfig
from ._servers import BenchConfig, ServerFailed, installCleanup, selectConfigs, stopAll

RESULTS = Path(__file__).resolve().parent / "results"


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="twistcluster vs Node cluster vs single-process Twisted, side by side.",
    )
    add = parser.add_argument
    add("--duration", type=float, help="seconds of load per phase (uneven: twice) [5; --quick 2]")
    add("--warmup", type=float, default=1.0, help="seconds of warm-up before each phase [1]")
    add("--quick", action="store_true", help="short phases (2 s)")
    add("--repeat", type=int, default=1, help="rounds, the targets' two sides close together in each [1]")
    add("--only", help="comma-separated configurations or patterns (node-rr-*)")
    add("--phases", default=",".join(PHASES), help=f"which phases [{','.join(PHASES)}]")
    add("--connections", type=int, default=64, help="concurrent client connections [64]")
    add("--uneven-rate", type=float, default=200.0, help="requests/s offered in the uneven phases [200]")
    add("--results", type=Path, default=RESULTS, help="where to write results [benchmarks/results]")
    add("--model", type=Path, metavar="JSON", help="print the model of scale from a bench.json, and exit")
    add("--profile", metavar="CONFIG", help="profile this configuration's master under short-connection load")
    add("--profile-seconds", type=float, default=10.0, help="how long to profile [10]")
    add("--micro", action="store_true", help="the master's hand-off path alone: its CPU per connection")
    add("--micro-connections", type=int, default=20000, help="connections measured by --micro [20000]")
    add("--micro-concurrency", type=integers, default=[1, 16, 64], help="connections at a time [1,16,64]")
    add("--micro-workers", type=int, default=2, help="fake workers [2]")
    add("--micro-policy", choices=("rr", "least-conn"), default="rr", help="[rr]")
    add("--micro-callgrind", action="store_true", help="instructions per connection under valgrind instead")
    return parser.parse_args(argv)


def integers(text: str) -> list[int]:
    return [int(n) for n in text.split(",")]


def optionsFrom(arguments: argparse.Namespace) -> RunOptions:
    phases = tuple(p.strip() for p in arguments.phases.split(",") if p.strip())
    if unknown := set(phases) - set(PHASES):
        raise SystemExit(f"--phases: unknown {', '.join(sorted(unknown))} (known: {', '.join(PHASES)})")
    return RunOptions(
        duration=arguments.duration or (2.0 if arguments.quick else 5.0),
        warmup=arguments.warmup,
        connections=arguments.connections,
        phases=phases,
        unevenRate=arguments.uneven_rate,
    )


def requireWrk(phases: Sequence[str]) -> None:
    """
    Exit with one line saying what to install if a throughput phase runs
    and wrk is missing (C{make bench} installs it, as root).
    """
    if set(phases) & set(WRK_PHASES) and not shutil.which("wrk"):
        raise SystemExit(
            "benchmarks: wrk is required for the throughput phases: apt-get install wrk (as root)"
        )


def medianRound(rounds: list[ConfigResult], phases: Sequence[str]) -> ConfigResult:
    """
    Of one configuration's rounds, the one with the median rate in the
    first phase (a whole run, so its figures stay consistent together),
    which keeps them all in its C{rounds}.
    """
    measured = sorted(
        (r for r in rounds if r.rate(phases[0]) is not None), key=lambda r: r.rate(phases[0]) or 0
    )
    chosen = measured[(len(measured) - 1) // 2] if measured else rounds[-1]
    if len(measured) > 1:
        rates = ", ".join(f"{r.rate(phases[0]) or 0:,.0f}" for r in measured)
        chosen.note = f"median of {len(measured)} rounds by {phases[0]} rate ({rates})"
    chosen.rounds = rounds
    return chosen


def runOrder(configs: Sequence[BenchConfig], roundNumber: int = 1) -> list[BenchConfig]:
    """
    The order in which round C{roundNumber} runs C{configs}: first lines of
    configurations in which each target's two sides are next to each other
    wherever a line allows (the targets compared round by round first),
    then the rest in table order.  Every other round runs backwards.
    """
    byName = {c.name: c for c in configs}
    lines = [[c.name] for c in configs]
    for target in sorted(loadTargets(), key=lambda t: not t.perRound):
        ends = {line[end]: line for line in lines for end in (0, -1)}
        first, second = ends.get(target.numerator), ends.get(target.denominator)
        if first is None or second is None or first is second:
            continue  # not selected, inside a line already, or in the same line
        if first[-1] != target.numerator:
            first.reverse()
        if second[0] != target.denominator:
            second.reverse()
        first.extend(second)
        lines.remove(second)
    lines.sort(key=lambda line: len(line) == 1)
    order = [byName[name] for line in lines for name in line]
    return order if roundNumber % 2 else order[::-1]


def runAll(
    configs: Sequence[BenchConfig], options: RunOptions, logs: Path, repeat: int = 1
) -> list[ConfigResult]:
    """
    Measure every configuration, C{repeat} rounds in turn, each in
    L{runOrder}, and keep each one's median round, in C{configs}' order.
    """
    rounds: dict[str, list[ConfigResult]] = {c.name: [] for c in configs}
    for roundNumber in range(1, repeat + 1):
        for number, config in enumerate(runOrder(configs, roundNumber), 1):
            label = f"{number}/{len(configs)}" + (f" round {roundNumber}/{repeat}" if repeat > 1 else "")
            print(f"[{label}] {config.name} ...", end=" ", flush=True)
            started, result = time.monotonic(), measureConfig(config, options, logs)
            rounds[config.name].append(result)
            if result.status != "ok":
                print(f"{result.status.upper()}: {result.note}", flush=True)
                continue
            rates = ", ".join(f"{phase} {result.rate(phase) or 0:,.0f}/s" for phase in result.phases)
            print(f"{rates} ({time.monotonic() - started:.0f}s)", flush=True)
    return [medianRound(rounds[c.name], options.phases) for c in configs]


def bench(configs: Sequence[BenchConfig], options: RunOptions, repeat: int, directory: Path) -> int:
    requireWrk(options.phases)
    phases = [p for c in configs for p in options.phases if c.workers > 1 or p in WRK_PHASES]
    seconds = 4 * len(configs) + sum(options.loadFor(p, 0).duration + options.warmup + 1 for p in phases)
    print(f"{len(configs)} configurations, about {seconds * repeat / 60:.1f} minutes", flush=True)
    results = runAll(configs, options, directory / "logs", repeat)
    checks = targetChecks(results)
    text = formatReport(results, options, checks)
    (directory / "bench.txt").write_text(text)
    writeJSON(directory / "bench.json", results, options, checks)
    print(f"\n{text}\nWritten to {directory}: bench.txt, bench.json, logs/ (each server's output)")
    return 1 if any(r.status == "failed" for r in results) else 0


def profile(config: BenchConfig, options: RunOptions, directory: Path, seconds: float) -> int:
    requireWrk(["short"])
    try:
        path = profileConfig(config, options, directory, seconds)
    except (ServerFailed, LoadFailed) as e:
        raise SystemExit(f"benchmarks: profiling {config.name}: {e}") from e
    print(f"{path.read_text()}\nWritten to {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    installCleanup()
    arguments = parseArguments(sys.argv[1:] if argv is None else argv)
    options = optionsFrom(arguments)
    if arguments.micro:
        from ._micro import micro

        return micro(arguments)
    try:
        if arguments.model:
            results = json.loads(arguments.model.read_text())["results"]
            print(modelOfScale({r["name"]: r["metrics"] for r in results}) or "no rr-2 or none-2 costs in it")
            return 0
        loadTargets()
        configs = selectConfigs(arguments.profile or arguments.only)
        if arguments.profile and len(configs) != 1:
            raise ValueError(f"--profile {arguments.profile!r}: name one configuration")
        (arguments.results / "logs").mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"benchmarks: {e}") from e
    try:
        if arguments.profile:
            return profile(configs[0], options, arguments.results, arguments.profile_seconds)
        return bench(configs, options, max(1, arguments.repeat), arguments.results)
    finally:
        stopAll()
