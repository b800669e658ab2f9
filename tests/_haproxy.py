"""
A real HAProxy for a test: Debian's C{haproxy} (C{.ci/run} installs it), run
in the foreground as a child of the test, in its own process group, on
loopback ports chosen free, with its configuration and stats socket in a
temporary directory.  Tests that need it skip, saying why, where it is
absent.

L{exampleConfig} turns C{examples/deploy/haproxy.cfg} into a configuration
for masters on this machine: the example's defaults and backend as they are,
its check intervals shortened, its servers replaced by the test's.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from attrs import frozen

from tests._cluster import PROJECT, waitUntil
from tests._primary import freePort

EXAMPLE = PROJECT / "examples" / "deploy" / "haproxy.cfg"


def haproxyPath() -> str | None:
    """
    Where HAProxy is (Debian puts it in /usr/sbin, not always on a user's PATH).
    """
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/local/sbin:/usr/sbin:/sbin")


@frozen
class Server:
    """
    One twistcluster host as HAProxy sees it.

    @ivar name: Its name in the backend.
    @ivar port: The port of its C{haproxy:} listen.
    @ivar checkPort: The port of its C{--metrics} endpoint (C{/healthz}), or
        L{None} for no health check.
    @ivar agentPort: The port of its C{--agent} endpoint, or L{None} for no
        agent check.
    """

    name: str
    port: int
    checkPort: int | None = None
    agentPort: int | None = None


#: Each time in the example's checks, and what the tests use instead.
SHORT_TIMES = {"inter": "200ms", "agent-inter": "200ms"}


def exampleConfig(servers: Sequence[Server], text: str | None = None) -> str:
    """
    The example configuration's C{defaults} and C{backend twistcluster}
    sections, with short check intervals and C{servers} on loopback, and a
    C{frontend} that L{HAProxy} binds (its C{bind} line is filled in then).
    """
    text = EXAMPLE.read_text() if text is None else text
    sections = _sections(text)
    backend = []
    for line in sections["backend twistcluster"]:
        if line.split()[:1] == ["server"]:
            continue
        for name, short in SHORT_TIMES.items():
            line = re.sub(rf"(\s{name}\s+)\S+", rf"\g<1>{short}", line)
        backend.append(line)
    for server in servers:
        line = f"    server {server.name} 127.0.0.1:{server.port}"
        if server.checkPort is not None:
            line += f" port {server.checkPort}"
        else:
            line += " no-check"
        if server.agentPort is not None:
            line += f" agent-port {server.agentPort}"
        else:
            line += " no-agent-check"
        backend.append(line)
    return "\n".join(
        [
            "defaults",
            *sections["defaults"],
            "",
            "frontend service",
            "    bind {frontend}",
            "    default_backend twistcluster",
            "",
            "backend twistcluster",
            *backend,
            "",
        ]
    )


def _sections(text: str) -> dict[str, list[str]]:
    """
    The sections of an HAProxy configuration, by their header line, without
    comments or blank lines.
    """
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not line[0].isspace():
            current = sections.setdefault(" ".join(line.split()), [])
        elif current is not None:
            current.append(line)
    return sections


class HAProxy:
    """
    One HAProxy process for a test.

    @ivar frontend: The address clients connect to.
    """

    def __init__(self, config: str, attempts: int = 3) -> None:
        """
        @param config: The configuration without C{global} (added here: no
            daemon, the stats socket); C{{frontend}} in it is replaced by the
            frontend's address.
        """
        executable = haproxyPath()
        assert executable is not None, "no haproxy"
        self.directory = Path(tempfile.mkdtemp(prefix="twistcluster-haproxy-"))
        self.statsPath = str(self.directory / "stats.sock")
        self.process: subprocess.Popen[bytes] | None = None
        for _ in range(attempts):
            self.frontend = ("127.0.0.1", freePort())
            configPath = self.directory / "haproxy.cfg"
            bind = "{}:{}".format(*self.frontend)
            configPath.write_text(self._global() + config.replace("{frontend}", bind))
            self.logPath = self.directory / "haproxy.log"
            with open(self.logPath, "wb") as log:
                self.process = subprocess.Popen(
                    [executable, "-db", "-f", str(configPath)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            if self._started():
                return
            self._kill()
        raise AssertionError(f"haproxy did not start:\n{self.log}")

    def _global(self) -> str:
        return "\n".join(
            [
                "global",
                "    nbthread 1",
                f"    stats socket {self.statsPath} mode 600 level admin",
                "    log stdout format raw local0 info",
                "",
                "",
            ]
        )

    def _started(self, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                self.command("show info")
                with socket.create_connection(self.frontend, timeout=1):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    @property
    def log(self) -> str:
        try:
            return self.logPath.read_text(errors="replace")
        except OSError:
            return ""

    def command(self, line: str) -> str:
        """
        One command on the stats socket, and its answer.
        """
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(self.statsPath)
            sock.sendall(line.encode() + b"\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        return answer.decode()

    def servers(self, backend: str = "twistcluster") -> dict[str, dict[str, str]]:
        """
        Each server's row of C{show stat}: C{status} (C{UP}, C{DOWN},
        C{DRAIN}, ...), C{weight} (the effective one), C{stot} (connections
        sent to it), C{check_status}, C{agent_status}, ...
        """
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(text.splitlines())
        return {
            row["svname"]: row
            for row in rows
            if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def waitServers(self, predicate, what: str, timeout: float = 30.0) -> dict[str, dict[str, str]]:
        """
        Wait until C{predicate(servers)} holds; return the servers.
        """
        found: list[dict[str, dict[str, str]]] = []

        def check() -> bool:
            found[:] = [self.servers()]
            return bool(predicate(found[0]))

        try:
            waitUntil(check, timeout, what, interval=0.05)
        except AssertionError as e:
            raise AssertionError(f"{e}; last: {_summary(found[0] if found else {})}") from None
        return found[0]

    def _kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)

    def close(self) -> None:
        self._kill()
        shutil.rmtree(self.directory, ignore_errors=True)


def _summary(servers: dict[str, dict[str, str]]) -> dict[str, tuple[str, str, str, str]]:
    return {
        name: (row["status"], row["weight"], row.get("check_status", ""), row.get("agent_status", ""))
        for name, row in servers.items()
    }
