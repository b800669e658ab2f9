"""
Starting each configuration's server, waiting until it serves, and telling
why it did not.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ._configs import NODE, PLAIN_PROCESSES, SINGLE, TWISTCLUSTER, BenchConfig
from ._processes import Managed

PROJECT = Path(__file__).resolve().parent.parent
BENCHMARKS = Path(__file__).resolve().parent
TWIST = str(Path(sys.executable).parent / "twist")
FACTORY = "benchmarks.responder.HTTPResponderFactory"
BACKLOG = 511  # Node's default, used by every server
READY_TIMEOUT = 30.0
#: twist cluster's exit status for a bad command line.
EX_USAGE = 64


class ServerFailed(Exception):
    """
    A server did not start; the message says why, in one line.
    """


class Skipped(Exception):
    """
    A configuration cannot run here (a policy this twistcluster rejects, no
    Node); the message says why.
    """


@dataclass
class Launch:
    """
    How to start one configuration and how to know it is ready.

    @ivar readyPattern: A line the server logs once per ready worker (or
        once, when it is ready as a whole).
    @ivar readyCount: How many such lines mean "ready".
    """

    argv: list[str]
    env: dict[str, str]
    readyPattern: str
    readyCount: int


def freePort() -> int:
    """
    A TCP port on 127.0.0.1 that nobody listens on now.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@cache
def twistClusterHelp() -> str:
    result = subprocess.run(
        [TWIST, "cluster", "--help"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stdout + result.stderr


def supportsScheduling() -> bool:
    """
    Does the installed C{twist cluster} take C{--scheduling}?
    """
    return "--scheduling" in twistClusterHelp()


def launchFor(
    config: BenchConfig, port: int, env: dict[str, str], masterPrefix: list[str] | None = None
) -> Launch:
    """
    The command line for C{config}, serving on 127.0.0.1:C{port}.

    @param masterPrefix: Replaces C{twist} in twistcluster's command line.

    @raise Skipped: C{config} cannot run with what is installed.
    """
    if config.kind in (SINGLE, PLAIN_PROCESSES):
        argv = [sys.executable, "-m", "benchmarks.responder", "--port", str(port)]
        argv += ["--processes", str(config.workers)]
        return Launch(argv, env, r"^ready on \d+", config.workers)
    if config.kind == NODE:
        node = shutil.which("node") or shutil.which("nodejs")
        if node is None:
            raise Skipped("Node.js is not installed")
        argv = [node, str(BENCHMARKS / "responder.js"), str(port), str(config.workers)]
        nodeEnv = dict(env, NODE_CLUSTER_SCHED_POLICY=config.policy)
        return Launch(argv, nodeEnv, r"^ready on \d+", 1)
    assert config.kind == TWISTCLUSTER
    argv = [TWIST, "--log-format", "text", "cluster", "--workers", str(config.workers)]
    argv += ["--listen", f"tcp:{port}:interface=127.0.0.1:backlog={BACKLOG}"]
    argv += ["--shutdown-timeout", "2"]
    if supportsScheduling():
        argv += ["--scheduling", config.policy]
    elif config.policy != "rr":
        raise Skipped(f"this twist cluster has no --scheduling option (policy {config.policy})")
    argv.append(FACTORY)
    if masterPrefix:
        argv = [*masterPrefix, *argv[1:]]
    return Launch(argv, env, r"worker \d+ \(pid \d+\) ready", config.workers)


class RunningServer:
    """
    A started configuration: its process (the master, the Node primary, or
    the single Twisted process), its log file, and where its workers write
    their counts.
    """

    def __init__(self, config: BenchConfig, launch: Launch, logPath: Path, port: int, counts: Path) -> None:
        self.config = config
        self.port = port
        self.countsDirectory = counts
        self.logPath = logPath
        self._launch = launch
        self._log = logPath.open("wb")
        self.managed = Managed(launch.argv, env=launch.env, cwd=str(PROJECT), stdout=self._log)

    @property
    def masterPid(self) -> int:
        return self.managed.pid

    def logText(self) -> str:
        try:
            return self.logPath.read_text(errors="replace")
        except OSError:
            return ""

    def lastLogLine(self) -> str:
        lines = [line for line in self.logText().splitlines() if line.strip()]
        return lines[-1].strip() if lines else "(no output)"

    def waitReady(self, timeout: float = READY_TIMEOUT) -> None:
        """
        Wait until every worker is ready (from the log) and a request is
        answered.

        @raise Skipped: twist cluster rejected its command line (a policy
            it does not know).
        @raise ServerFailed: It exited, or is not ready in time.
        """
        deadline = time.monotonic() + timeout
        pattern = re.compile(self._launch.readyPattern, re.MULTILINE)
        while len(pattern.findall(self.logText())) < self._launch.readyCount:
            self._checkAlive()
            if time.monotonic() > deadline:
                raise ServerFailed(f"not ready after {timeout:.0f}s: {self.lastLogLine()}")
            time.sleep(0.05)
        while not probe(self.port):
            self._checkAlive()
            if time.monotonic() > deadline:
                raise ServerFailed(f"ready, but no answer on port {self.port} in {timeout:.0f}s")
            time.sleep(0.05)
        self.managed.noteDescendants()

    def _checkAlive(self) -> None:
        code = self.managed.process.poll()
        if code is None:
            return
        if code == EX_USAGE and self.config.kind == TWISTCLUSTER:
            raise Skipped(f"twist cluster rejected it: {self.lastLogLine()}")
        raise ServerFailed(f"exited with status {code}: {self.lastLogLine()}")

    def stop(self) -> None:
        try:
            self.managed.stop()
        finally:
            self._log.close()


def probe(port: int, timeout: float = 2.0) -> bool:
    """
    Does 127.0.0.1:C{port} answer one request with the responder's response?
    """
    request = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
    except OSError:
        return False
    return data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"Hello, World!\n")


def startServer(
    config: BenchConfig,
    logDirectory: Path,
    countsDirectory: Path,
    workIterations: int,
    masterPrefix: list[str] | None = None,
) -> RunningServer:
    """
    Start C{config} and wait until it serves.

    @raise Skipped: It cannot run here.
    @raise ServerFailed: It did not start (it is stopped again).
    """
    port = freePort()
    env = dict(
        os.environ,
        BENCH_COUNTS_DIR=str(countsDirectory),
        BENCH_WORK_ITERATIONS=str(workIterations),
        PYTHONUNBUFFERED="1",
    )
    env.pop("TWISTCLUSTER_SCHED_POLICY", None)
    launch = launchFor(config, port, env, masterPrefix)
    logPath = logDirectory / f"{config.name}.log"
    server = RunningServer(config, launch, logPath, port, countsDirectory)
    try:
        server.waitReady()
    except BaseException:
        server.stop()
        raise
    return server
