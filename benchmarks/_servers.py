"""
Starting each configuration's server and waiting until it serves, or telling
why it does not.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import sys
import time
from pathlib import Path

from ._configs import NODE, PLAIN_PROCESSES, SINGLE, BenchConfig
from ._processes import PROJECT, Managed

TWIST = str(Path(sys.executable).parent / "twist")
READY_TIMEOUT = 30.0


class ServerFailed(Exception):
    """
    A server did not start or died; the message says why, in one line.
    """


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

    def stop(self) -> None:
        self.managed.stop()

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


def startServer(config: BenchConfig, logs: Path, counts: Path) -> RunningServer:
    """
    Start C{config} and wait until it serves (or stop it again and raise
    L{ServerFailed}).
    """
    server = RunningServer(config, logs / f"{config.name}.log", counts)
    try:
        server.waitReady()
    except BaseException:
        server.stop()
        raise
    return server
