"""
Starting each configuration's server, waiting until it serves, and telling
why it did not.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path

from ._configs import NODE, TWISTCLUSTER, BenchConfig
from ._processes import Managed

PROJECT = Path(__file__).resolve().parent.parent
TWIST = str(Path(sys.executable).parent / "twist")
READY_TIMEOUT = 30.0
EX_USAGE = 64  # twist cluster's exit status for a bad command line


class ServerFailed(Exception):
    """
    A server did not start or died; the message says why, in one line.
    """


class Skipped(Exception):
    """
    A configuration cannot run here (a policy twist cluster rejects, no Node).
    """


def launchFor(config: BenchConfig, port: int, prefix: list[str] | None) -> tuple[list[str], str, int]:
    """
    C{config}'s command line on 127.0.0.1:C{port} (C{prefix} replacing
    C{twist}), the line it logs once per ready worker (or once when all
    are), and how many.  Every server listens with a backlog of 511 (Node's).
    """
    if config.kind == NODE:
        node = shutil.which("node") or shutil.which("nodejs")
        if node is None:
            raise Skipped("Node.js is not installed")
        return (
            [node, str(PROJECT / "benchmarks" / "responder.js"), str(port), str(config.workers)],
            "^ready on",
            1,
        )
    if config.kind != TWISTCLUSTER:
        argv = [sys.executable, "-m", "benchmarks.responder", "--port", str(port)]
        return [*argv, "--processes", str(config.workers)], "^ready on", config.workers
    argv = [*(prefix or [TWIST]), "--log-format", "text", "cluster", "--workers", str(config.workers)]
    argv += ["--listen", f"tcp:{port}:interface=127.0.0.1:backlog=511", "--shutdown-timeout", "2"]
    # The control socket is on by default; --metrics (scraped every second)
    # only in the cockpit configurations, which are measured against these.
    argv += (
        ["--metrics", f"tcp:{_freePort()}:interface=127.0.0.1"] if config.cockpit else ["--control", "none"]
    )
    argv += ["--scheduling", config.policy, "benchmarks.responder.HTTPResponderFactory"]
    return argv, r"worker \d+ \(pid \d+\) ready", config.workers


def _freePort() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunningServer:
    """
    A started configuration: its process (the master, the Node primary, or
    the single Twisted process), its log, and where its processes write
    their counts.
    """

    def __init__(
        self, config: BenchConfig, log: Path, counts: Path, workIterations: int, prefix: list[str] | None
    ):
        self.port = _freePort()
        self.config, self.logPath, self.countsDirectory = config, log, counts
        argv, self._ready, self._readyCount = launchFor(config, self.port, prefix)
        env = dict(os.environ, BENCH_COUNTS_DIR=str(counts), BENCH_WORK_ITERATIONS=str(workIterations))
        env.update(PYTHONUNBUFFERED="1", NODE_CLUSTER_SCHED_POLICY=config.policy)
        env.pop("TWISTCLUSTER_SCHED_POLICY", None)
        with log.open("wb") as output:
            self.managed = Managed(argv, env=env, cwd=str(PROJECT), stdout=output)

    @property
    def masterPid(self) -> int:
        return self.managed.pid

    def lastLogLine(self) -> str:
        lines = [line.strip() for line in self._log().splitlines() if line.strip()]
        return lines[-1] if lines else "(no output)"

    def _log(self) -> str:
        try:
            return self.logPath.read_text(errors="replace")
        except OSError:
            return ""

    def waitReady(self, timeout: float = READY_TIMEOUT) -> None:
        """
        Wait until every worker is ready (from the log) and a request is
        answered.

        @raise Skipped: twist cluster rejected its command line.
        @raise ServerFailed: It exited, or is not ready in time.
        """
        deadline = time.monotonic() + timeout
        pattern = re.compile(self._ready, re.MULTILINE)
        while len(pattern.findall(self._log())) < self._readyCount or not probe(self.port):
            code = self.managed.process.poll()
            if code == EX_USAGE and self.config.kind == TWISTCLUSTER:
                raise Skipped(f"twist cluster rejected it: {self.lastLogLine()}")
            if code is not None:
                raise ServerFailed(f"exited with status {code}: {self.lastLogLine()}")
            if time.monotonic() > deadline:
                raise ServerFailed(f"not serving after {timeout:.0f}s: {self.lastLogLine()}")
            time.sleep(0.05)
        self.managed.descendants()

    def stop(self) -> None:
        self.managed.stop()

    def metricsURL(self) -> str | None:
        """
        Where its /metrics is (from its log), if it serves one.
        """
        found = re.search(r"metrics, health and liveness at tcp:([\d.]+):(\d+)", self._log())
        return None if found is None else f"http://{found.group(1)}:{found.group(2)}/metrics"


def probe(port: int, timeout: float = 2.0) -> bool:
    """
    Does 127.0.0.1:C{port} answer one request with the responder's response?
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
    except OSError:
        return False
    return data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"Hello, World!\n")


def startServer(
    config: BenchConfig, logs: Path, counts: Path, workIterations: int, prefix: list[str] | None = None
) -> RunningServer:
    """
    Start C{config} and wait until it serves (or stop it again and raise
    L{Skipped} or L{ServerFailed}).
    """
    server = RunningServer(config, logs / f"{config.name}.log", counts, workIterations, prefix)
    try:
        server.waitReady()
    except BaseException:
        server.stop()
        raise
    return server
