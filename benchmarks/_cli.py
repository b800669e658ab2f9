"""
C{python -m benchmarks}: run the configurations, print the table and the
targets, write JSON and a PNG chart; or profile one master (C{--profile}).

With C{--repeat N} every configuration runs N rounds.  Each round runs the
targets' two sides close together (L{runOrder}), every other round in
reverse, so that a slow spell of a shared machine weighs on both sides of a
ratio alike; each configuration keeps its median round for the table, and a
rate target's verdict is the median of its ratios round by round.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ._chart import writeChart
from ._configs import NODE, BenchConfig, allConfigs, selectConfigs
from ._processes import installCleanup, stopAll
from ._profile import ProfilerFailed, profileConfig
from ._report import (
    LEGEND,
    formatTable,
    formatTargets,
    machineDescription,
    targetChecks,
    targetSpecs,
    writeJSON,
)
from ._run import PHASES, ConfigResult, RunOptions, measureConfig
from ._tools import ensureInstalled

RESULTS = Path(__file__).resolve().parent / "results"
#: Seconds each configuration costs besides its loads (start, settle, stop).
OVERHEAD = 4.0


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="twistcluster vs Node cluster vs single-process Twisted, side by side.",
    )
    add = parser.add_argument
    add("--duration", type=float, default=None, help="seconds of load per phase [5; --quick 2]")
    add("--warmup", type=float, default=None, help="seconds of warm-up before each phase [1]")
    add("--quick", action="store_true", help="short phases (2 s, 1 s warm-up)")
    add(
        "--repeat",
        type=int,
        default=1,
        help=(
            "rounds of every configuration, each round with the targets' two sides close together "
            "(every other round reversed); a rate target's ratio is the median of its ratios "
            "round by round, the rest use each configuration's median round [1]"
        ),
    )
    add("--only", default=None, help="comma-separated configurations or patterns (node-rr-*)")
    add("--list", action="store_true", help="list the configurations and exit")
    add("--phases", default=",".join(PHASES), help=f"which phases [{','.join(PHASES)}]")
    add("--connections", type=int, default=64, help="concurrent client connections [64]")
    add("--threads", type=int, default=1, help="wrk threads [1]")
    add("--work-iterations", type=int, default=16000, help="CPU loop per /work request [16000]")
    add(
        "--load-generator",
        choices=("wrk", "python"),
        default="wrk",
        help="wrk, or the built-in Python client (smoke tests only) [wrk]",
    )
    add("--results", type=Path, default=RESULTS, help="where to write results [benchmarks/results]")
    add("--no-install", action="store_true", help="never apt-get install wrk/nodejs")
    add(
        "--profile",
        metavar="CONFIG",
        default=None,
        help="profile this configuration's master under short-connection load instead",
    )
    add("--profile-seconds", type=float, default=10.0, help="how long to profile [10]")
    add(
        "--profiler",
        choices=("py-spy", "cprofile"),
        default="py-spy",
        help="py-spy (falls back to cprofile if it cannot attach) or cprofile [py-spy]",
    )
    add(
        "--profile-process",
        choices=("master", "worker"),
        default="master",
        help="profile the master or the first worker (py-spy only) [master]",
    )
    return parser.parse_args(argv)


def optionsFrom(arguments: argparse.Namespace) -> RunOptions:
    duration = arguments.duration or (2.0 if arguments.quick else 5.0)
    warmup = 1.0 if arguments.warmup is None else arguments.warmup
    phases = tuple(p.strip() for p in arguments.phases.split(",") if p.strip())
    unknown = set(phases) - set(PHASES)
    if unknown:
        raise SystemExit(f"--phases: unknown {', '.join(sorted(unknown))} (known: {', '.join(PHASES)})")
    return RunOptions(
        duration=duration,
        warmup=warmup,
        connections=arguments.connections,
        threads=arguments.threads,
        generator=arguments.load_generator,
        phases=phases,
        workIterations=arguments.work_iterations,
    )


def installTools(configs: Sequence[BenchConfig], options: RunOptions, allowed: bool) -> None:
    """
    Make sure wrk (and Node, if a Node configuration runs) are installed.
    Without wrk nothing can be measured; without Node those rows are skipped.
    """
    wanted = ["wrk"] if options.generator == "wrk" else []
    if any(c.kind == NODE for c in configs):
        wanted.append("nodejs")
    missing = ensureInstalled(wanted) if allowed else []
    if "wrk" in missing or (not allowed and options.generator == "wrk" and _noWrk()):
        raise SystemExit("benchmarks: wrk is required (apt-get install wrk)")


def _noWrk() -> bool:
    import shutil

    return shutil.which("wrk") is None


def estimateSeconds(configs: Sequence[BenchConfig], options: RunOptions) -> float:
    perPhase = options.duration + options.warmup + 1.0
    return len(configs) * (OVERHEAD + perPhase * len(options.phases))


def runOnce(config: BenchConfig, options: RunOptions, logs: Path, label: str) -> ConfigResult:
    started = time.monotonic()
    print(f"[{label}] {config.name} ...", end=" ", flush=True)
    result = measureConfig(config, options, logs)
    elapsed = time.monotonic() - started
    if result.status == "ok":
        rates = ", ".join(f"{phase} {result.rate(phase) or 0:,.0f}/s" for phase in options.phases)
        print(f"{rates} ({elapsed:.0f}s)", flush=True)
    else:
        print(f"{result.status.upper()}: {result.note}", flush=True)
    return result


def medianRound(rounds: list[ConfigResult], phases: Sequence[str]) -> ConfigResult:
    """
    Of one configuration's rounds, the one with the median rate in the
    first phase (a whole run, so its figures stay consistent together).
    """
    measured = [r for r in rounds if r.status == "ok" and r.rate(phases[0]) is not None]
    if len(rounds) == 1 or not measured:
        return rounds[-1]
    measured.sort(key=lambda r: r.rate(phases[0]) or 0)
    chosen = measured[(len(measured) - 1) // 2]
    rates = ", ".join(f"{r.rate(phases[0]) or 0:,.0f}" for r in measured)
    chosen.note = f"median of {len(measured)} rounds by {phases[0]} rate ({rates})"
    chosen.roundRates = {
        phase: [r.rate(phase) if r.status == "ok" else None for r in rounds] for phase in phases
    }
    return chosen


def runOrder(configs: Sequence[BenchConfig], roundNumber: int = 1) -> list[BenchConfig]:
    """
    The order in which round C{roundNumber} runs C{configs}: first lines of
    configurations in which each target's two sides are next to each other
    wherever a line allows (the rates' targets first: their verdicts pair
    the two sides round by round), then the rest in table order.  Every
    other round runs backwards, so that neither side always goes first.
    """
    byName = {c.name: c for c in configs}
    lines = [[c.name] for c in configs]
    specs = sorted(targetSpecs(), key=lambda spec: not spec[2].endswith(".rate"))
    for ours, theirs, _, _, _ in specs:
        _putNextToEachOther(lines, ours, theirs)
    lines.sort(key=lambda line: len(line) == 1)
    order = [byName[name] for line in lines for name in line]
    return order if roundNumber % 2 else order[::-1]


def _putNextToEachOther(lines: list[list[str]], ours: str, theirs: str) -> None:
    """
    Join the line ending in C{ours} to the one ending in C{theirs}; nothing
    if either is not selected or is inside its line (its neighbours are
    taken), or if both are in the same line already.
    """
    ends = {line[end]: line for line in lines for end in (0, -1)}
    first, second = ends.get(ours), ends.get(theirs)
    if first is None or second is None or first is second:
        return
    if first[-1] != ours:
        first.reverse()
    if second[0] != theirs:
        second.reverse()
    first.extend(second)
    lines.remove(second)


def runAll(
    configs: Sequence[BenchConfig], options: RunOptions, logs: Path, repeat: int = 1
) -> list[ConfigResult]:
    """
    Measure every configuration, C{repeat} rounds in turn, each in
    L{runOrder} (so that a noisy spell hits the two sides of a target
    alike), and keep each one's median round, in C{configs}' order.
    """
    rounds: dict[str, list[ConfigResult]] = {c.name: [] for c in configs}
    for roundNumber in range(1, repeat + 1):
        for number, config in enumerate(runOrder(configs, roundNumber), 1):
            earlier = rounds[config.name]
            if earlier and earlier[-1].status == "skipped":
                continue
            label = f"{number}/{len(configs)}" + (f" round {roundNumber}/{repeat}" if repeat > 1 else "")
            earlier.append(runOnce(config, options, logs, label))
    return [medianRound(rounds[c.name], options.phases) for c in configs]


def report(results: list[ConfigResult], options: RunOptions, directory: Path) -> str:
    checks = targetChecks(results)
    header = (
        f"Machine: {machineDescription()}\n"
        f"Load: {options.generator}, {options.connections} connections, "
        f"{options.threads} thread(s), {options.duration:g}s per phase after "
        f"{options.warmup:g}s warm-up; /work = {options.workIterations} iterations"
    )
    text = "\n\n".join([header, formatTable(results), LEGEND, formatTargets(checks)]) + "\n"
    (directory / "bench.txt").write_text(text)
    writeJSON(directory / "bench.json", results, options, checks)
    drawn = writeChart(directory / "bench.png", results, machineDescription())
    written = ["bench.txt", "bench.json"] + (["bench.png"] if drawn else [])
    return text + f"\nWritten to {directory}: {', '.join(written)}\n"


def profile(arguments: argparse.Namespace, options: RunOptions) -> int:
    config = {c.name: c for c in allConfigs()}.get(arguments.profile)
    if config is None:
        raise SystemExit(f"--profile: no configuration named {arguments.profile!r} (see --list)")
    installTools([config], options, not arguments.no_install)
    profiler, seconds = arguments.profiler, arguments.profile_seconds
    try:
        path = profileConfig(config, options, arguments.results, seconds, profiler, arguments.profile_process)
    except ProfilerFailed as e:
        if arguments.profile_process != "master":
            raise SystemExit(f"benchmarks: {e}") from e
        print(f"benchmarks: {e}; profiling with cProfile instead", file=sys.stderr)
        path = profileConfig(config, options, arguments.results, seconds, "cprofile")
    print(path.read_text())
    print(f"Written to {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    installCleanup()
    arguments = parseArguments(sys.argv[1:] if argv is None else argv)
    options = optionsFrom(arguments)
    if arguments.list:
        print("\n".join(c.name for c in allConfigs()))
        return 0
    logs = arguments.results / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        if arguments.profile:
            return profile(arguments, options)
        try:
            configs = selectConfigs(arguments.only)
        except ValueError as e:
            raise SystemExit(f"benchmarks: {e}") from e
        installTools(configs, options, not arguments.no_install)
        print(
            f"{len(configs)} configurations, about "
            f"{estimateSeconds(configs, options) * max(1, arguments.repeat) / 60:.1f} "
            f"minutes; server logs in {logs}",
            flush=True,
        )
        results = runAll(configs, options, logs, max(1, arguments.repeat))
        print("\n" + report(results, options, arguments.results))
        return 1 if any(r.status == "failed" for r in results) else 0
    finally:
        stopAll()
