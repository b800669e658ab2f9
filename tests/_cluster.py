"""
Run a real `twist cluster` master (and its workers) for a test: read its log
as it comes, wait for lines with a deadline, signal it, and always leave no
process behind.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
TWIST = str(Path(sys.executable).parent / "twist")
MARKER = "TWISTCLUSTER_TEST_MARKER"


def processesWithMarker(marker: str) -> list[int]:
    """
    The pids of live processes whose environment carries C{marker}: the
    master and every worker it spawned, wherever they were reparented.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if f"{MARKER}={marker}".encode() in environ.split(b"\0") and "State:\tZ" not in status:
            found.append(int(entry.name))
    return found


def waitUntil(predicate, timeout: float, what: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Cluster:
    """
    One `twist --log-format text cluster ARGS...` process.
    """

    def __init__(
        self,
        *args: str,
        cwd: Path = PROJECT,
        env: dict[str, str] | None = None,
        twistArgs: Sequence[str] = (),
        launcher: Sequence[str] = (),
        passFDs: Sequence[int] = (),
        command: list[str] | None = None,
    ):
        """
        @param twistArgs: twist's own options (before C{cluster}).
        @param launcher: A command that runs the master (it execs its
            arguments, keeping its pid), e.g. to set up socket activation.
        @param passFDs: Descriptors the launcher inherits.
        @param command: Run this instead of C{twist ... cluster ARGS} (a
            primary script, say).
        """
        self.marker = uuid.uuid4().hex
        environ = dict(os.environ, **(env or {}))
        environ[MARKER] = self.marker
        environ["PYTHONUNBUFFERED"] = "1"
        self.args = args
        self.process = subprocess.Popen(
            command or [*launcher, TWIST, "--log-format", "text", *twistArgs, "cluster", *args],
            cwd=cwd,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=tuple(passFDs),
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            with self._changed:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.lines.append("<EOF>")
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def matches(self, pattern: str) -> list[re.Match]:
        regex = re.compile(pattern)
        with self._changed:
            return [m for m in map(regex.search, self.lines) if m]

    def waitFor(self, pattern: str, count: int = 1, timeout: float = 20.0) -> list[re.Match]:
        """
        Wait until C{pattern} has matched C{count} log lines; return the
        matches.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [m for m in map(regex.search, self.lines) if m]
                if len(found) >= count:
                    return found
                if self.lines and self.lines[-1] == "<EOF>":
                    raise AssertionError(
                        f"master exited before {count}x {pattern!r}:\n{self.output_unlocked()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"timed out waiting for {count}x {pattern!r}:\n{self.output_unlocked()}"
                    )
                self._changed.wait(remaining)

    def output_unlocked(self) -> str:
        return "\n".join(self.lines)

    def waitReady(self, workers: int, timeout: float = 30.0) -> dict[int, int]:
        """
        Wait until C{workers} workers have become ready; return {worker id: pid}.
        """
        found = self.waitFor(r"worker (\d+) \(pid (\d+)\) ready", workers, timeout)
        return {int(m.group(1)): int(m.group(2)) for m in found}

    def address(self, description: str | None = None) -> tuple[str, int]:
        pattern = r"listening on (\S+) at (?:tcp|udp)6?:\[?([^\]\s]*)\]?:(\d+)"
        for match in self.waitFor(pattern):
            if description is None or match.group(1) == description:
                host = match.group(2)
                return ("127.0.0.1" if host in ("0.0.0.0", "") else host, int(match.group(3)))
        raise AssertionError(f"no address for {description}")

    def bound(self) -> list[tuple[str, str, str]]:
        """
        The master's line for each configured endpoint: (description, bound
        address, scheduling), in order.
        """
        pattern = r"listening on (\S+) at (\S+) \(scheduling (\S+)\)$"
        return [m.groups() for m in self.matches(pattern)]

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        return code

    def leftovers(self) -> list[int]:
        return processesWithMarker(self.marker)

    def close(self) -> None:
        """
        Kill whatever is left: the master, its process group, and any worker
        carrying this cluster's marker.
        """
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)
        for pid in self.leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(address: tuple[str, int] | str, timeout: float = 10.0) -> socket.socket:
    """
    A client connection to a TCP address, or to a UNIX socket's path.
    """
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(address)
        return sock
    sock = socket.create_connection(address, timeout=timeout)
    sock.settimeout(timeout)
    return sock


def readLine(sock: socket.socket) -> str:
    """
    One line (or what came before EOF), read a byte at a time so that nothing
    after it is consumed.
    """
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data.decode()


def whoServes(address: tuple[str, int] | str) -> tuple[int, int]:
    """
    Connect to a WhoAmI server: (worker id, pid) of the worker serving us.
    """
    with connect(address) as sock:
        match = re.match(r"worker=(\d+) pid=(\d+)", readLine(sock))
        assert match, "no greeting from the worker"
        return int(match.group(1)), int(match.group(2))


@contextmanager
def stopped(*pids: int) -> Iterator[None]:
    """
    Keep processes C{pids} stopped (SIGSTOP) for the duration.
    """
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def socketsHeldBy(pid: int) -> set[int]:
    """
    The inodes of the sockets process C{pid} has open.
    """
    inodes = set()
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def listeningSockets(port: int | None = None, path: str | None = None) -> set[int]:
    """
    The inodes of the listening TCP sockets on C{port}, or of the listening
    UNIX sockets bound to C{path}, on this machine.
    """
    inodes = set()
    if port is not None:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(int(fields[9]))
    if path is not None:
        for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == path and int(fields[3], 16) & 0x10000:
                inodes.add(int(fields[6]))
    return inodes


def temporaryPath(testCase, name: str = "path") -> str:
    """
    A path in a fresh temporary directory, removed after C{testCase}
    (trial's C{mktemp} would leave it in the current directory under pytest).
    """
    directory = tempfile.mkdtemp(prefix="twistcluster-")
    testCase.addCleanup(shutil.rmtree, directory, True)
    return os.path.join(directory, name)
