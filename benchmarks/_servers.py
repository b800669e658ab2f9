"""
What the benchmark runs: every configuration by name (C{--only} chooses),
its server started until it serves or telling why not.  Each process the
harness starts has a session (a process group) of its own, and none outlives
the harness: each is killed, with its group and every descendant seen, on
the way out (an error, Ctrl-C, C{SIGTERM} or C{SIGHUP}).
"""

from __future__ import annotations

import atexit
import fnmatch
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from subprocess import DEVNULL, STDOUT
from typing import IO, Any

import psutil

PROJECT = Path(__file__).resolve().parent.parent
TWIST = str(Path(sys.executable).parent / "twist")
TWISTCLUSTER, NODE, SINGLE = "twistcluster", "node", "twisted-single"
#: Plain Twisted processes (no cluster), each with its own SO_REUSEPORT
#: socket on the one port: what Twisted itself reaches with 2 processes.
PLAIN_PROCESSES = "twisted-reuseport"
#: Each kind's policies, each run with 1, 2 and 4 workers.
POLICIES = {TWISTCLUSTER: ("rr", "least-conn", "none", "reuseport"), NODE: ("rr", "none")}
_live: set[Managed] = set()


class ServerFailed(Exception):
    """
    A server did not start or died; the message says why, in one line.
    """


@dataclass(frozen=True)
class BenchConfig:
    """
    One server set-up to measure.

    @ivar kind: L{TWISTCLUSTER}, L{NODE}, L{SINGLE} or L{PLAIN_PROCESSES}.
    @ivar policy: The scheduling policy (Node's C{NODE_CLUSTER_SCHED_POLICY}).
    @ivar workers: Worker processes (the single process is its own worker).
    @ivar cockpit: twistcluster with the control socket and C{--metrics} on,
        scraped every second under load (issue 15); the other twistcluster
        configurations run with C{--control none}.
    """

    kind: str
    policy: str
    workers: int
    cockpit: bool = False

    @property
    def name(self) -> str:
        if self.kind == SINGLE:
            return SINGLE
        family = self.kind if self.kind == PLAIN_PROCESSES else f"{self.kind}-{self.policy}"
        return f"{family}-{self.workers}" + ("-cockpit" if self.cockpit else "")


#: Every configuration, in the order the table shows them.
CONFIGS = [
    BenchConfig(SINGLE, "", 1),
    BenchConfig(PLAIN_PROCESSES, "reuseport", 2),
    *(BenchConfig(kind, p, n) for kind, policies in POLICIES.items() for p in policies for n in (1, 2, 4)),
    *(BenchConfig(TWISTCLUSTER, policy, 2, cockpit=True) for policy in ("rr", "none")),
]


def selectConfigs(only: str | None) -> list[BenchConfig]:
    """
    The configurations named by C{only}: comma-separated names or shell
    patterns (C{twistcluster-rr-*}); all of them for L{None}.

    @raise ValueError: A name or pattern matches nothing.
    """
    patterns = [p.strip() for p in (only or "*").split(",") if p.strip()]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(c.name, pattern) for c in CONFIGS):
            known = ", ".join(c.name for c in CONFIGS)
            raise ValueError(f"--only {pattern!r} matches no configuration (known: {known})")
    return [c for c in CONFIGS if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]


class Managed(subprocess.Popen[bytes]):
    """
    A process started in a new session, in the project's directory.

    @ivar seen: Every descendant seen while it ran, killed too wherever it
        was reparented (psutil checks that a pid still names that process).
    """

    def __init__(
        self, argv: Sequence[str], env: dict[str, str] | None = None, stdout: IO[Any] | int = DEVNULL
    ) -> None:
        super().__init__(
            argv, env=env, cwd=PROJECT, stdin=DEVNULL, stdout=stdout, stderr=STDOUT, start_new_session=True
        )
        self.seen: dict[int, psutil.Process] = {}
        _live.add(self)

    def descendants(self) -> list[psutil.Process]:
        """
        The process's live descendants, remembered in L{seen}.
        """
        found: list[psutil.Process] = []
        with suppress(psutil.Error):
            found = psutil.Process(self.pid).children(recursive=True) if self.poll() is None else []
        self.seen.update((p.pid, p) for p in found)
        return found

    def stop(self, grace: float = 5.0) -> None:
        """
        C{SIGTERM} to the group, C{SIGKILL} after C{grace} seconds to the
        group and to every descendant that left it; wait until all are gone
        (or zombies: this machine's init may be slow to reap what it inherits).
        """
        self.descendants()
        for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)
            with suppress(subprocess.TimeoutExpired):
                self.wait(wait)
        for process in self.seen.values():
            with suppress(psutil.Error):
                process.kill()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not all(map(_gone, self.seen.values())):
            time.sleep(0.05)
        _live.discard(self)


def _gone(process: psutil.Process) -> bool:
    try:
        return bool(process.status() == psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return True


def stopAll(signum: int = 0, frame: Any = None) -> None:
    """
    Stop every process still running; on a signal, exit.
    """
    for managed in list(_live):
        managed.stop(grace=1.0)
    if signum:
        raise SystemExit(128 + signum)


def installCleanup() -> None:
    """
    Kill whatever is left when the harness exits, is interrupted (Ctrl-C
    raises KeyboardInterrupt: the C{finally} blocks and L{atexit} do the
    rest) or is sent C{SIGTERM}/C{SIGHUP}.
    """
    atexit.register(stopAll)
    signal.signal(signal.SIGTERM, stopAll)
    signal.signal(signal.SIGHUP, stopAll)


def freePort() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunningServer:
    """
    A started configuration on 127.0.0.1, backlog 511 (Node's): its process
    (the master, the Node primary, or the single Twisted process), its log,
    and where its processes write their counts.

    @ivar metricsURL: Its C{/metrics}, scraped under load (the cockpit
        configurations), or L{None}.
    """

    metricsURL: str | None

    def __init__(self, config: BenchConfig, log: Path, counts: Path) -> None:
        self.config, self.logPath, self.countsDirectory = config, log, counts
        self.port, self.metricsURL = freePort(), None
        # What each ready worker logs (Node's primary: once when all are).
        self._ready, self._readyCount = "^ready on", config.workers
        argv = self._command()
        env = dict(os.environ, BENCH_COUNTS_DIR=str(counts), PYTHONUNBUFFERED="1")
        env.update(NODE_CLUSTER_SCHED_POLICY=config.policy)
        with log.open("wb") as output:
            self.managed = Managed(argv, env=env, stdout=output)
        self.masterPid = self.managed.pid

    def _command(self) -> list[str]:
        config, port, responder = self.config, str(self.port), [sys.executable, "-m", "benchmarks.responder"]
        if config.kind == NODE:
            if (node := shutil.which("node")) is None:
                raise ServerFailed("Node.js is not installed (make bench installs it, as root)")
            self._readyCount = 1
            return [node, str(PROJECT / "benchmarks" / "responder.js"), port, str(config.workers)]
        if config.kind == SINGLE:
            return [*responder, port]
        if config.kind == PLAIN_PROCESSES:  # an idle parent (the "master" columns), workers 1, 2, ...
            each = [
                f"TWISTCLUSTER_WORKER_ID={n} {shlex.join(responder)} {port} reuseport &"
                for n in range(1, config.workers + 1)
            ]
            return ["sh", "-c", " ".join([*each, "wait"])]
        self._ready = r"worker \d+ \(pid \d+\) ready"
        argv = [TWIST, "--log-format", "text", "cluster", "--workers", str(config.workers), "--scheduling"]
        argv += [config.policy, "--listen", f"tcp:{port}:interface=127.0.0.1:backlog=511"]
        if config.cockpit:  # the control socket is on by default
            metrics = freePort()
            self.metricsURL = f"http://127.0.0.1:{metrics}/metrics"
            argv += ["--metrics", f"tcp:{metrics}:interface=127.0.0.1"]
        else:
            argv += ["--control", "none"]
        return [*argv, "--shutdown-timeout", "2", "benchmarks.responder.HTTPResponderFactory"]

    def lastLogLine(self) -> str:
        lines = [line.strip() for line in self._log().splitlines() if line.strip()]
        return lines[-1] if lines else "(no output)"

    def _log(self) -> str:
        with suppress(OSError):
            return self.logPath.read_text(errors="replace")
        return ""

    def waitReady(self, timeout: float = 30.0) -> None:
        """
        Wait until every worker is ready (from the log) and a request is
        answered.

        @raise ServerFailed: It exited, or is not ready in time.
        """
        deadline = time.monotonic() + timeout
        pattern = re.compile(self._ready, re.MULTILINE)
        while len(pattern.findall(self._log())) < self._readyCount or not probe(self.port):
            if (code := self.managed.poll()) is not None:
                raise ServerFailed(f"exited with status {code}: {self.lastLogLine()}")
            if time.monotonic() > deadline:
                raise ServerFailed(f"not serving after {timeout:.0f}s: {self.lastLogLine()}")
            time.sleep(0.05)
        self.managed.descendants()


def probe(port: int) -> bool:
    """
    Does 127.0.0.1:C{port} answer one request with the responder's response?
    """
    data = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            while chunk := sock.recv(4096):
                data += chunk
    except OSError:
        return False
    return data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"Hello, World!\n")


@contextmanager
def serving(config: BenchConfig, logs: Path) -> Iterator[RunningServer]:
    """
    C{config} serving meanwhile (its counts in a temporary directory), its
    processes stopped afterwards.

    @raise ServerFailed: It did not start, or is not serving in time.
    """
    counts = Path(tempfile.mkdtemp(prefix=f"bench-{config.name}-"))
    server = None
    try:
        server = RunningServer(config, logs / f"{config.name}.log", counts)
        server.waitReady()
        yield server
    finally:
        if server is not None:
            server.managed.stop()
        shutil.rmtree(counts, ignore_errors=True)
