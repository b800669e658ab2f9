"""
Smoke tests of the benchmark harness (C{benchmarks/}, C{make bench}): its
pieces on made-up input, and real one-second runs of tiny configurations.
The throughput phases need C{wrk} (C{.ci/run} installs it; without it those
runs are skipped); the uneven-work phases use the harness's own
constant-rate client and always run.  Not a timed test: no figure is
judged, only that every one is produced and no process is left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.testing import StringTransport

from benchmarks._cli import medianRound, requireWrk, runAll, runOrder
from benchmarks._load import LoadFailed, LoadResult, LoadSpec, childrenCPU, command, parseOutput, runLoad
from benchmarks._model import modelOfScale
from benchmarks._profile import pySpyReport, stageOf
from benchmarks._rateclient import Request, busyHandOffs
from benchmarks._report import (
    METRICS,
    TABLE,
    TargetCheck,
    formatTable,
    formatTargets,
    loadTargets,
    rowFor,
    spread,
    targetChecks,
    writeJSON,
)
from benchmarks._run import ConfigResult, PhaseResult, RunOptions, difference, measureConfig, readCounts
from benchmarks._servers import (
    PLAIN_PROCESSES,
    SINGLE,
    TWISTCLUSTER,
    BenchConfig,
    RunningServer,
    selectConfigs,
    serving,
)
from benchmarks.responder import CLOSE_RESPONSE, KEEP_ALIVE_RESPONSE, HTTPResponderFactory
from tests._cluster import MARKER, PROJECT, dieWithTest, killMarked, processesWithMarker, waitUntil

needsWrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
PY_SPY = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
needsNode = pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")


class Harness:
    """
    C{python -m benchmarks ARGS} in a process group of its own, its output
    read as it comes (a harness blocked on a full pipe never stops); every
    process it started carries C{marker}, and L{close} kills them all, each
    with its group, whatever happened.
    """

    def __init__(self, tmp_path: Path, *arguments: str) -> None:
        self.marker = uuid.uuid4().hex
        env = dict(os.environ, **{MARKER: self.marker})
        argv = [sys.executable, "-m", "benchmarks", "--results", str(tmp_path)]
        self.process = subprocess.Popen(
            dieWithTest([*argv, *arguments]),
            cwd=PROJECT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        return code

    def started(self) -> list[int]:
        """
        The live processes the harness started (servers, workers, clients).
        """
        return [pid for pid in processesWithMarker(self.marker) if pid != self.process.pid]

    def close(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        killMarked(self.marker)
        # Shown by pytest only when the test failed.
        print(f"--- python -m benchmarks {' '.join(self.process.args[9:])}\n{self.output}")


def runHarness(tmp_path: Path, *arguments: str) -> str:
    harness = Harness(tmp_path, *arguments)
    try:
        code = harness.wait(180)
        assert code == 0, harness.output
        assert waitUntil(lambda: not processesWithMarker(harness.marker), 10, "no process left") is True
        return harness.output
    finally:
        harness.close()


def request(headers: str = "") -> bytes:
    return f"GET / HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode()


# The responder


def connectedResponder() -> tuple[object, StringTransport]:
    protocol = HTTPResponderFactory().buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def test_responder_keeps_alive_answers_pipelined_requests_and_honours_close() -> None:
    protocol, transport = connectedResponder()
    data = request() + request() + request("Connection: close\r\n") + request()
    for start in range(0, len(data), 7):  # in pieces, split anywhere
        protocol.dataReceived(data[start : start + 7])  # type: ignore[attr-defined]
    assert transport.value() == KEEP_ALIVE_RESPONSE * 2 + CLOSE_RESPONSE
    assert transport.disconnecting


def test_responder_response_is_well_formed() -> None:
    head, _, body = KEEP_ALIVE_RESPONSE.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
    assert b"X-Worker: " in head
    assert b"Connection: close" in CLOSE_RESPONSE


def test_a_slow_request_costs_20_ms_of_cpu() -> None:
    """
    C{/slow} spends 20 ms of the process's CPU time (not of the clock), then
    answers as C{/} does.
    """
    protocol, transport = connectedResponder()
    before = time.process_time()
    protocol.dataReceived(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")  # type: ignore[attr-defined]
    assert time.process_time() - before >= 0.020
    assert transport.value() == KEEP_ALIVE_RESPONSE


# Pieces, on made-up input

WRK_OUTPUT = """Running 1s test @ http://127.0.0.1:8080/
  1 threads and 4 connections
Requests/sec:  1000.00
BENCH_RESULT {"requests": 2000, "duration_us": 2000000, "p50_us": 1500, "p99_us": 9000, \
"mean_us": 1600, "max_us": 12000, "errors": {"connect": 0, "read": 3, "write": 0, \
"status": 0, "timeout": 0}}
"""


def test_load_generator_results_are_parsed() -> None:
    result = parseOutput(WRK_OUTPUT)
    assert (result.requests, result.perSecond, result.p50, result.p99) == (2000, 1000.0, 1.5, 9.0)
    assert result.errors == {"read": 3} and result.p999 is None
    rate = parseOutput(
        'BENCH_RESULT {"requests": 10, "duration_us": 1e6, "p50_us": 1000, "p99_us": 2000, '
        '"p999_us": 3000, "errors": {}, "uneven": {"cheap": 9, "toBusy": 1}}\n'
    )
    assert (rate.p999, rate.uneven) == (3.0, {"cheap": 9, "toBusy": 1})
    with pytest.raises(LoadFailed, match="unable to connect"):
        parseOutput("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_wrk_command_line() -> None:
    short = command(LoadSpec(8080, 0.4, 8, close=True))
    assert short[short.index("-d") + 1] == "1s"  # wrk takes whole seconds only
    assert "Connection: close" in short and short[-1] == "http://127.0.0.1:8080/"
    work = command(LoadSpec(8080, 5, 8, close=False, path="/work"))
    assert "Connection: close" not in work and work[-1].endswith("/work")


def test_a_finished_childs_cpu_is_counted() -> None:
    """
    What the load generator's CPU column is made of: a child that burned
    0.2 s of CPU adds at least that once it has been waited for.
    """
    burn = "import time\nend = time.process_time() + 0.2\nwhile time.process_time() < end: pass"
    before = childrenCPU()
    subprocess.run([sys.executable, "-c", burn], check=True, timeout=30)
    assert childrenCPU() - before >= 0.2


def column(name: str) -> int:
    return 1 + [metric.name for metric in TABLE].index(name)


def test_the_load_generators_cpu_per_connection_is_shown() -> None:
    result = made(TWISTCLUSTER, "rr", 2, short=1000, p99=2.0, rssKiB=1024)
    result.phases["short"].load.clientCPU = 0.5  # type: ignore[union-attr]
    assert rowFor(result)[column("wrk us/c")] == "50"  # 10,000 connections in 0.5 s of CPU
    assert rowFor(result)[column("m us/c")] == "500"  # the master's 50% of a core for 10 s
    result.phases["short"].load.clientCPU = 0.0  # type: ignore[union-attr]
    assert rowFor(result)[column("wrk us/c")] == "-"


def test_spread_from_counts(tmp_path: Path) -> None:
    for pid, worker, connections in ((10, "1", 5), (11, "2", 7), (12, "10", 1)):
        record = {"worker": worker, "pid": pid, "connections": connections, "requests": 0}
        (tmp_path / f"worker-{pid}.json").write_text(json.dumps(record))
    counts = difference({"1": 1, "2": 3}, readCounts(tmp_path))
    assert list(counts.items()) == [("1", 4), ("2", 4), ("10", 1)]
    result = made(TWISTCLUSTER, "rr", 2, short=1000, p99=2.0, rssKiB=1024)
    result.phases["short"].spread = counts
    assert spread(result) == "44/44/11" and rowFor(result)[column("spread %")] == "44/44/11"
    result.phases["short"].spread = {}
    assert spread(result) == "-"


def test_config_selection() -> None:
    names = [c.name for c in selectConfigs("node-rr-*,twisted-single")]
    assert names == ["twisted-single", "node-rr-1", "node-rr-2", "node-rr-4"]
    # ... and rr and none with the cockpit on (issue 15).
    assert len(selectConfigs(None)) == 2 + 4 * 3 + 2 * 3 + 2
    with pytest.raises(ValueError, match="matches no configuration"):
        selectConfigs("nginx-2")


def made(kind: str, policy: str, workers: int, short: float, p99: float, rssKiB: int) -> ConfigResult:
    result = ConfigResult(BenchConfig(kind, policy, workers))
    for phase in ("short", "keepalive"):
        load = LoadResult(requests=int(short * 10), seconds=10, p50=1.0, p99=p99)
        result.phases[phase] = PhaseResult(load=load, masterCPU=50, allCPU=100, masterPeakRSSKiB=rssKiB)
    result.rounds = [result]
    return result


def checksOf(results: list[ConfigResult]) -> dict[str, TargetCheck]:
    """
    The targets' checks by description, the first of any two alike (issue
    6's rate before issue 19's).
    """
    return {c.target.description: c for c in reversed(targetChecks(results))}


def test_targets_are_read_off_the_results() -> None:
    results = [
        made(SINGLE, "", 1, 10_000, 5.0, 40_000),
        made(TWISTCLUSTER, "rr", 2, 14_000, 4.0, 30_000),
        made("node", "rr", 2, 10_000, 5.0, 50_000),
    ]
    checks = checksOf(results)
    rr = checks["new conn/s: twistcluster-rr-2 / node-rr-2"]
    assert (round(rr.ratio or 0, 2), rr.verdict, rr.ratioFrom) == (1.4, "MET", "median rounds")
    assert rr.format().endswith("1.40x  (want >= 1.3x, issue 6)")
    text = formatTargets(targetChecks(results))
    assert text.startswith("Targets (benchmarks/targets.toml), ratios from this run:\n")
    assert "MISSED new conn/s: twistcluster-rr-2 / node-rr-2" in text  # issue 19's 2.0x
    assert checks["master RSS: twistcluster-rr-2 / node-rr-2"].verdict == "MET"
    assert checks["short-conn p99: twistcluster-rr-2 / node-rr-2"].verdict == "MET"
    assert checks["new conn/s: twistcluster-none-2 / twisted-single"].verdict == "n/a"
    # The master's CPU per connection against the single process's whole CPU per connection.
    cost = checks["master CPU per connection: twistcluster-rr-2 m us/c / twisted-single all us/c"]
    assert (round(cost.ratio or 0, 3), cost.target.issue) == (round(50 / 14 / (100 / 10), 3), 19)
    table = formatTable([*results, ConfigResult(BenchConfig(TWISTCLUSTER, "none", 2), "skipped", "no")])
    assert "twistcluster-rr-2" in table and "skipped: no" in table


def test_the_targets_file_names_what_the_harness_measures(tmp_path: Path) -> None:
    """
    Every target compares configurations the harness runs, by metrics it
    reports; issue 19's are there; a bad file is refused naming the culprit.
    """
    names = {c.name for c in selectConfigs(None)}
    targets = loadTargets()
    assert all({t.numerator, t.denominator} <= names for t in targets)
    issue19 = {
        (t.metric.name, t.denominatorMetric.name, t.comparison, t.threshold) for t in targets if t.issue == 19
    }
    assert ("conn/s", "conn/s", ">=", 2.0) in issue19 and ("conn/s", "conn/s", ">=", 0.8) in issue19
    assert ("uneven p99", "uneven p99", "<=", 0.5) in issue19
    [cost] = [t for t in targets if t.metric.name == "m us/c" and t.issue == 19]
    assert cost.before and cost.threshold <= cost.before / 2 + 0.01
    assert all(t.reason is METRICS["uneven busy %"] for t in targets if t.metric.name == "uneven p99")
    bad = tmp_path / "targets.toml"
    bad.write_text('[[target]]\nnumerator = "a"\ndenominator = "b"\nmetric = "speed"\n')
    with pytest.raises(ValueError, match="target 1: unknown metric 'speed'"):
        loadTargets(bad)


def test_profile_report_splits_the_hand_off_path() -> None:
    collapsed = "\n".join(
        [
            "main (twist:1);EPollReactor.doPoll (e.py:1);epoll_wait (libc.so.6) 50",
            "main (twist:1);_SendmsgMixin.doRead (u.py:1);RoundRobinHandle._answered (h.py:2);"
            "RoundRobinHandle._handOff (h.py:3);AmpBox.serialize (amp.py:4) 30",
            "main (twist:1);FileDescriptor.doWrite (a.py:1);sendmsg (libc.so.6) 20",
        ]
    )
    report = pySpyReport(collapsed)
    assert "50 of them waiting in epoll_wait" in report
    assert " 60.0%       30  NewConn" in report
    assert " 40.0%       20  sendmsg()" in report
    assert stageOf(["main", "_acceptSome", "accept4"]) == "accept4() system call"
    # A class renamed (RoundRobinHandle, then HandOffHandle): its method still finds its stage.
    assert stageOf(["main", "HandOffHandle._handOff", "f"]).startswith("NewConn: ")


def test_cheap_requests_sent_to_a_busy_worker_are_counted() -> None:
    """
    A cheap request sent to a worker between a slow request's send and its
    response counts as sent to a busy worker, "while another was idle" if
    another worker had no slow request then.
    """

    def done(sent: float, end: float, worker: str, slow: bool = False) -> Request:
        return Request(due=sent, slow=slow, sent=sent, done=end, worker=worker)

    requests = [
        done(0.0, 0.020, "1", slow=True),
        done(0.010, 0.030, "2", slow=True),
        done(0.005, 0.021, "1"),  # worker 1 busy, worker 2 idle
        done(0.015, 0.022, "1"),  # both busy
        done(0.025, 0.026, "1"),  # worker 1 free again
    ]
    assert busyHandOffs(requests) == (2, 1)
    # A third worker, never busy, was idle when both others were.
    assert busyHandOffs([*requests, done(0.012, 0.013, "3")]) == (2, 2)


def test_the_model_of_scale_caps_rr_at_the_master() -> None:
    values = {
        "twistcluster-rr-2": {"m us/c": 25.0, "all us/c": 75.0, "wrk us/c": 50.0, "conn/s": 15_000.0},
        "twistcluster-none-2": {"m us/c": 0.0, "all us/c": 50.0, "wrk us/c": 50.0, "conn/s": 19_000.0},
        # 2 cores busy, the servers and wrk 1 of them: the rest of the machine left 1 core.
        "twistcluster-none-1": {
            "all us/c": 50.0,
            "wrk us/c": 50.0,
            "conn/s": 10_000.0,
            "machine CPU%": 200.0,
        },
    }
    model = modelOfScale(values, cores=2)
    # rr: 2 cores / 75 us = 26.7k, then the master's 1 / 25 us = 40k; none: cores / 50 us.
    assert "| twistcluster-rr-2 | 25 | 75 | 50 | 26.7k | 40.0k (master) | 40.0k (master) |" in model
    assert "| twistcluster-none-2 | 0 | 50 | 50 | 40.0k | 160.0k | 320.0k | 1.28M |" in model
    # Here, with wrk on the 2 cores: rr min(2 / 125 us, 2 / 50 us, 1 / 25 us) = 16k.
    assert "| twistcluster-rr-2 | 2.00 | 16.0k | 15.0k | 0.94 |" in model
    assert "| twistcluster-none-2 | 2.00 | 20.0k | 19.0k | 0.95 |" in model
    assert "| twistcluster-none-1 | 1.00 | 10.0k | 10.0k | 1.00 |" in model
    assert modelOfScale({}) == ""


def test_without_wrk_the_harness_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("benchmarks._cli.shutil.which", lambda command: None)
    with pytest.raises(SystemExit, match=r"^benchmarks: wrk is required .*: apt-get install wrk"):
        requireWrk(("short",))
    requireWrk(("uneven",))  # our own client


# Real runs


def test_a_configuration_that_cannot_start_is_recorded_as_failed(tmp_path: Path) -> None:
    """
    A configuration whose server exits is recorded as failed, with its last
    log line, and the run goes on.
    """
    result = measureConfig(BenchConfig(TWISTCLUSTER, "no-such-policy", 1), RunOptions(), tmp_path)
    assert result.status == "failed" and "exited with status 64" in result.note, result.note
    assert "no-such-policy" in result.note


@needsNode
def test_same_bytes_from_twisted_and_node(tmp_path: Path) -> None:
    """
    The Twisted and Node responders send the same bytes (bar the worker
    id), for C{/} and C{/slow}.
    """
    import socket

    responses = []
    for config in selectConfigs("twistcluster-rr-1,node-rr-1"):
        with serving(config, tmp_path) as server:
            for headers in ("", "Connection: close\r\n"):
                with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                    sock.sendall(request(headers).replace(b"GET /", b"GET /slow") + request())
                    time.sleep(0.3)
                    responses.append(sock.recv(65536))
    twisted, node = responses[:2], responses[2:]
    assert twisted == node
    assert twisted[0] == KEEP_ALIVE_RESPONSE.replace(b"X-Worker: 0", b"X-Worker: 1") * 2
    assert twisted[1] == CLOSE_RESPONSE.replace(b"X-Worker: 0", b"X-Worker: 1")


@pytest.fixture
def single(tmp_path: Path) -> Iterator[RunningServer]:
    with serving(selectConfigs(SINGLE)[0], tmp_path) as server:
        yield server


@pytest.mark.parametrize("keepAlive", [False, True])
def test_the_constant_rate_client_sends_on_its_timetable(single: RunningServer, keepAlive: bool) -> None:
    """
    200 requests in a second, one in twenty or so to C{/slow} (20 ms of
    CPU, so the p99 is at least that), each answered.
    """
    result = runLoad(LoadSpec(single.port, 1.0, 4, close=not keepAlive, rate=200))
    assert (result.requests, result.errors) == (200, {})
    assert 0 < result.uneven["slow"] < 30 and result.uneven["workers"] == {"0": 200}
    assert 0 < result.p50 < result.p99 <= result.p999  # type: ignore[operator]
    assert result.p99 >= 20 and result.clientCPU > 0


def test_a_stalled_server_is_charged_for_every_request_it_kept_waiting(single: RunningServer) -> None:
    """
    No coordinated omission: a server stopped for 0.6 s while requests fall
    due every 10 ms delays some sixty of them, and each is charged from its
    due time, so the p99 is near the stall, not near a normal response.
    """
    outcome: list[LoadResult] = []
    spec = LoadSpec(single.port, 3.0, 4, close=True, rate=100, slowShare=0)
    load = threading.Thread(target=lambda: outcome.append(runLoad(spec)))
    load.start()
    try:
        waitUntil(lambda: sum(readCounts(single.countsDirectory).values()) >= 10, 30, "requests served")
        os.kill(single.masterPid, signal.SIGSTOP)
        time.sleep(0.6)  # the stall itself
    finally:
        os.kill(single.masterPid, signal.SIGCONT)
        load.join(60)
    [result] = outcome
    assert result.requests == 300 and result.p99 >= 400, result


@needsWrk
def test_the_harness_runs_a_tiny_configuration(tmp_path: Path) -> None:
    """
    One second per wrk phase of twistcluster-rr-1: the table and the JSON,
    every figure present.
    """
    output = runHarness(
        tmp_path,
        *("--only", "twistcluster-rr-1", "--duration", "1", "--warmup", "0"),
        *("--connections", "4", "--phases", "short,keepalive,cpu"),
    )
    assert "Targets (benchmarks/targets.toml)" in output
    document = json.loads((tmp_path / "bench.json").read_text())
    [result] = document["results"]
    assert result["status"] == "ok", result
    assert result["masterPeakRSSKiB"] > 0 and result["masterHWMKiB"] > 0
    for phase in ("short", "keepalive", "cpu"):
        measured = result["phases"][phase]
        assert measured["load"]["requests"] > 0, (phase, measured)
        assert list(measured["spread"]) == ["1"] and measured["spread"]["1"] > 0, (phase, measured)
        assert measured["masterCPU"] >= 0
    assert result["phases"]["short"]["load"]["clientCPU"] > 0
    assert all(result["metrics"][name] is not None for name in ("conn/s", "m us/c", "all us/c", "wrk us/c"))
    assert "twistcluster-rr-1" in (tmp_path / "bench.txt").read_text()


def test_the_uneven_phases_run_with_the_harness_own_client(tmp_path: Path) -> None:
    """
    The uneven-work phases on least-conn with 2 workers: latency
    percentiles, the busy-worker count, both workers serving, the table and
    the target lines (Node's side not measured: n/a).
    """
    output = runHarness(
        tmp_path,
        *("--only", "twistcluster-least-conn-2", "--phases", "uneven,uneven-ka", "--duration", "1"),
        *("--warmup", "0", "--connections", "4", "--uneven-rate", "100"),
    )
    [result] = json.loads((tmp_path / "bench.json").read_text())["results"]
    assert result["status"] == "ok", result
    for phase in ("uneven", "uneven-ka"):
        load = result["phases"][phase]["load"]
        assert load["requests"] == 200 and load["errors"] == {}, load
        assert 0 < load["p50"] <= load["p99"] <= load["p999"], load
        assert sorted(load["uneven"]["workers"]) == ["1", "2"], load
        assert load["uneven"]["toBusyWhileIdle"] <= load["uneven"]["toBusy"]
    assert result["metrics"]["uneven busy %"] is not None
    assert "uneven p99.9" in output and "constant-rate client" in output
    assert "n/a    uneven p99: twistcluster-least-conn-2 / node-rr-2" in output


def test_the_plain_twisted_processes_share_the_port(tmp_path: Path) -> None:
    """
    twisted-reuseport-2: two plain Twisted processes, each with its own
    SO_REUSEPORT socket, both serving (the kernel spreads the connections).
    """
    runHarness(
        tmp_path,
        *("--only", "twisted-reuseport-2", "--duration", "1", "--warmup", "0", "--phases", "uneven"),
        *(
            "--uneven-rate",
            "100",
        ),
    )
    [result] = json.loads((tmp_path / "bench.json").read_text())["results"]
    assert result["status"] == "ok", result
    spread = result["phases"]["uneven"]["spread"]
    assert list(spread) == ["1", "2"] and min(spread.values()) > 0, spread


@needsWrk
@pytest.mark.skipif(PY_SPY is None, reason="py-spy is not installed")
def test_the_profile_splits_the_masters_time(tmp_path: Path) -> None:
    """
    C{--profile}: py-spy samples the master under load, and the report
    splits its busy samples into the hand-off path's stages.
    """
    output = runHarness(
        tmp_path,
        *("--profile", "twistcluster-rr-1", "--profile-seconds", "1", "--warmup", "0", "--connections", "4"),
    )
    report = (tmp_path / "profile-twistcluster-rr-1.txt").read_text()
    assert "exclusive stages" in report and "accept4() system call" in report, output
    assert "busy samples" in report and (tmp_path / "profile-twistcluster-rr-1.collapsed").exists()


@pytest.mark.timeout(300)
def test_ctrl_c_leaves_no_process_behind(tmp_path: Path) -> None:
    """
    Ctrl-C (SIGINT to the harness's process group) in the middle of a run:
    the harness exits non-zero and stops every server it started, master
    and workers included.
    """
    harness = Harness(tmp_path, "--only", "twistcluster-rr-2", "--duration", "60", "--phases", "uneven")
    try:
        waitUntil(lambda: len(harness.started()) >= 3, 120, "the master and its 2 workers")
        os.killpg(harness.process.pid, signal.SIGINT)
        assert harness.wait(60) != 0, harness.output
        assert waitUntil(lambda: not processesWithMarker(harness.marker), 30, "no process left") is True
    finally:
        harness.close()


def test_plain_processes_are_a_reference_not_a_target() -> None:
    """
    Two plain Twisted processes are measured for reference: ratios against
    them are shown apart from the targets, with no verdict.
    """
    results = [
        made(SINGLE, "", 1, 20_000, 5.0, 40_000),
        made(PLAIN_PROCESSES, "reuseport", 2, 17_000, 5.0, 30_000),
        made(TWISTCLUSTER, "reuseport", 2, 17_500, 5.0, 30_000),
    ]
    checks = checksOf(results)
    plain = checks["new conn/s: twisted-reuseport-2 / twisted-single"]
    assert (round(plain.ratio or 0, 2), plain.verdict) == (0.85, "ref")
    ours = checks["new conn/s: twistcluster-reuseport-2 / twisted-reuseport-2"]
    assert round(ours.ratio or 0, 3) == 1.029
    target = checks["new conn/s: twistcluster-reuseport-2 / twisted-single"]
    assert target.verdict == "MISSED"
    targets, references = formatTargets(list(checks.values())).split("For reference")
    assert "MISSED" in targets and "twisted-reuseport-2 /" not in targets
    assert "ref    new conn/s: twisted-reuseport-2 / twisted-single" in references


def withRounds(result: ConfigResult, rates: list[float | None]) -> ConfigResult:
    """
    C{result}, with one round per rate (L{None}: a failed round).
    """
    result.rounds = []
    for rate in rates:
        measured = made(result.config.kind, result.config.policy, result.config.workers, rate or 1, 5.0, 1)
        measured.status = "ok" if rate else "failed"
        result.rounds.append(measured)
    return result


def test_ratios_round_by_round() -> None:
    """
    With several interleaved rounds, a rate's ratio is also shown round by
    round (each round's figures against the same round's), as a range.
    """
    ours = withRounds(made(TWISTCLUSTER, "rr", 2, 14_000, 4.0, 30_000), [13_000, 14_000, None])
    theirs = withRounds(made("node", "rr", 2, 10_000, 5.0, 50_000), [10_000, 10_000, 9_000])
    checks = checksOf([ours, theirs])
    rate = checks["new conn/s: twistcluster-rr-2 / node-rr-2"]
    assert rate.roundRatios == [1.3, 1.4]
    assert rate.format().endswith("(want >= 1.3x, issue 6)  median of 2 rounds; rounds 1.30-1.40x")
    # A figure that is not a rate or a cost: no range.
    assert checks["short-conn p99: twistcluster-rr-2 / node-rr-2"].roundRatios == []
    # Only one round that both measured: no range either.
    withRounds(ours, [13_000, None, None])
    rate = checksOf([ours, theirs])[rate.target.description]
    assert rate.roundRatios == [] and rate.format().endswith("(want >= 1.3x, issue 6)")


def names(configs: list[BenchConfig]) -> list[str]:
    return [c.name for c in configs]


def test_each_round_runs_a_targets_two_sides_together() -> None:
    """
    A round runs the two sides of the targets next to each other wherever a
    line allows (the table's order does not), then the rest; every other
    round backwards, so that no side always runs first.
    """
    configs = selectConfigs(None)
    order = names(runOrder(configs, 1))
    assert sorted(order) == sorted(names(configs))
    for ours, theirs in [
        ("twistcluster-rr-2", "node-rr-2"),
        ("twistcluster-none-2", "twisted-single"),
        ("twistcluster-reuseport-2", "twisted-single"),
        ("twistcluster-none-2", "twisted-reuseport-2"),
    ]:
        assert abs(order.index(ours) - order.index(theirs)) == 1, (ours, theirs, order)
    inTargets = {name for t in loadTargets() for name in (t.numerator, t.denominator)}
    assert set(order[: len(inTargets)]) == inTargets
    assert names(runOrder(configs, 2)) == order[::-1]
    assert names(runOrder(configs, 3)) == order
    # Only what --only selected, its pairs together too.
    chosen = selectConfigs("twisted-*,twistcluster-none-2,twistcluster-reuseport-2")
    assert names(runOrder(chosen)) == [
        "twistcluster-reuseport-2",
        "twisted-single",
        "twistcluster-none-2",
        "twisted-reuseport-2",
    ]


def test_rounds_run_in_that_order_and_results_keep_the_table_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """
    C{--repeat}: each round measures in its run order; the results come
    back in the table's order, each its median round, with every round.
    """
    measured: list[str] = []

    # Each measurement's rate is 100/s times its place in time.
    def measure(config: BenchConfig, options: RunOptions, logs: Path) -> ConfigResult:
        measured.append(config.name)
        result = ConfigResult(config)
        load = LoadResult(requests=len(measured) * 100, seconds=1, p50=1.0, p99=2.0)
        result.phases["short"] = PhaseResult(load=load)
        return result

    monkeypatch.setattr("benchmarks._cli.measureConfig", measure)
    configs = selectConfigs("twisted-single,twistcluster-rr-2,node-rr-2,twistcluster-none-2")
    results = runAll(configs, RunOptions(phases=("short",)), tmp_path, repeat=3)
    rounds = [names(runOrder(configs, number)) for number in (1, 2, 3)]
    assert measured == rounds[0] + rounds[1] + rounds[2]
    assert rounds[1] == rounds[0][::-1]
    assert names([r.config for r in results]) == names(configs)
    single = [r.rate("short") for r in results[0].rounds]
    assert single == [100.0 * (rounds[n].index("twisted-single") + 1 + 4 * n) for n in range(3)]
    assert results[0].rate("short") == sorted(single)[1] and "median of 3 rounds" in results[0].note
    assert medianRound(results[0].rounds[:1], ("short",)) is results[0].rounds[0]


def test_a_rates_verdict_is_the_median_of_its_ratios_round_by_round(tmp_path: Path) -> None:
    """
    With several rounds, a rate's ratio is the median of the ratios of the
    two sides measured in the same round, not that of their median rounds;
    the report and the JSON say so.
    """
    # Median rounds 9.1k / 10k = 0.91x; round by round 0.91x, 0.80x, 0.86x.
    none = [
        withRounds(made(TWISTCLUSTER, "none", 2, 9_100, 5.0, 1), [9_100, 8_000, 12_000]),
        withRounds(made(SINGLE, "", 1, 10_000, 5.0, 1), [10_000, 10_000, 14_000]),
    ]
    missed = checksOf(none)
    target = missed["new conn/s: twistcluster-none-2 / twisted-single"]
    assert (round(target.ratio or 0, 3), target.verdict) == (0.857, "MISSED")
    assert target.format().endswith("(want >= 0.9x, issue 6)  median of 3 rounds; rounds 0.80-0.91x")
    # Median rounds 14k / 12k = 1.17x; round by round 1.35x, 1.33x, 1.17x.
    rr = [
        withRounds(made(TWISTCLUSTER, "rr", 2, 14_000, 5.0, 1), [13_500, 20_000, 14_000]),
        withRounds(made("node", "rr", 2, 12_000, 5.0, 1), [10_000, 15_000, 12_000]),
    ]
    met = checksOf(rr)
    target = met["new conn/s: twistcluster-rr-2 / node-rr-2"]
    assert (round(target.ratio or 0, 3), target.verdict) == (1.333, "MET")
    # What is not a rate or a cost compares the median rounds.
    p99 = met["short-conn p99: twistcluster-rr-2 / node-rr-2"]
    assert (p99.ratioFrom, p99.roundRatios, p99.ratio) == ("median rounds", [], 1.0)
    header = formatTargets(list(met.values())).splitlines()[0]
    assert "A ratio of rates or costs per connection" in header
    writeJSON(tmp_path / "bench.json", rr, RunOptions(), list(met.values()))
    written = json.loads((tmp_path / "bench.json").read_text())
    byDescription = {t["description"]: t for t in written["targets"]}
    assert byDescription[target.target.description]["ratioFrom"] == "median of per-round ratios"
    assert byDescription[target.target.description]["verdict"] == "MET"
    assert byDescription[p99.target.description]["ratioFrom"] == "median rounds"
    assert written["results"][0]["rounds"]["conn/s"] == [13_500.0, 20_000.0, 14_000.0]
