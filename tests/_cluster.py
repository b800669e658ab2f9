"""
Run a real `twist cluster` master (and its workers) for a test, with
L{twistcluster.testing}'s reader: read its log as it comes, wait for events
and lines with a deadline, signal it, and always leave no process behind.
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
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from twistcluster.testing import CLUSTER_EVENT, ClusterFailed, ClusterProcess, RunningCluster

PROJECT = Path(__file__).resolve().parent.parent
TWIST = str(Path(sys.executable).parent / "twist")
MARKER = "TWISTCLUSTER_TEST_MARKER"
#: Runs its arguments (exec, same pid) as a process that is killed if the
#: test process dies first, even by SIGKILL (PR_SET_PDEATHSIG): a master's
#: workers then follow it, as their control channel closes.  SIGINT is
#: reset to its default, as a terminal has it: a suite started in the
#: background (SIGINT ignored, inherited by every child) tests Ctrl-C too.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('the test process is gone')\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def dieWithTest(argv: Sequence[str]) -> list[str]:
    """
    C{argv}, run so that it dies with the test process (see L{_DIE_WITH_PARENT}).
    """
    return [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *argv]


def processesWithMarker(marker: str, variable: str = MARKER) -> list[int]:
    """
    The pids of live processes whose environment carries C{marker} (in
    C{variable}): the master and every worker it spawned, wherever they
    were reparented.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if f"{variable}={marker}".encode() in environ.split(b"\0") and "State:\tZ" not in status:
            found.append(int(entry.name))
    return found


def killMarked(marker: str, timeout: float = 10.0, variable: str = MARKER) -> list[int]:
    """
    SIGKILL every process carrying C{marker}, each with its whole process
    group (never the test's own), until none is left or C{timeout} passes.

    @return: The pids that were still alive at the first look.
    """
    ours = os.getpgrp()
    first = processesWithMarker(marker, variable)
    deadline = time.monotonic() + timeout
    alive = first
    while alive and time.monotonic() < deadline:
        for pid in alive:
            try:
                group = os.getpgid(pid)
                if group != ours:
                    os.killpg(group, signal.SIGKILL)
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.05)
        alive = processesWithMarker(marker, variable)
    return first


def runToEnd(argv: Sequence[str], timeout: float, **options) -> subprocess.CompletedProcess:
    """
    L{subprocess.run} (text, output captured) for a command that may start
    processes: it runs in a process group of its own and dies with the test
    process; if it is not done after C{timeout} seconds (or the wait fails)
    its whole group is killed, and L{subprocess.TimeoutExpired} raised.
    """
    process = subprocess.Popen(
        dieWithTest(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **options,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    # What it left in its group is for the test to find (and conftest.py to kill).
    return subprocess.CompletedProcess(list(argv), process.returncode, stdout, stderr)


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
    One `twist --log-format json cluster ARGS...` process (or another
    command), run and read by L{twistcluster.testing.ClusterProcess}: its
    JSON log's events say when workers are ready and where it listens; its
    text is there to assert on.
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
        # The master's default control socket goes in a RUNDIR of its own,
        # removed with it: killed masters leave no files behind, and a bare
        # `twistcluster` command given this environment finds only it.
        self.runtimeDirectory = tempfile.mkdtemp(prefix="twistcluster-run-")
        environ = dict(os.environ, XDG_RUNTIME_DIR=self.runtimeDirectory)
        environ.update(env or {})
        environ[MARKER] = self.marker
        self.environ = environ
        environ["PYTHONUNBUFFERED"] = "1"
        self.args = args
        argv = dieWithTest(
            command or [*launcher, TWIST, "--log-format", "json", *twistArgs, "cluster", *args]
        )
        self._master = ClusterProcess._fromCommand(argv, environ, str(cwd), passFDs)
        self.process = self._master.process

    @property
    def lines(self) -> list[str]:
        return self._master.running.lines

    @property
    def output(self) -> str:
        return self._master.running.output

    def _found(self, pattern: str, count: int, running: RunningCluster) -> list[re.Match] | None:
        regex = re.compile(pattern)
        found = [m for m in map(regex.search, running.lines) if m]
        return found if len(found) >= count else None

    def matches(self, pattern: str) -> list[re.Match]:
        return self._found(pattern, 0, self._master.running) or []

    def waitFor(self, pattern: str, count: int = 1, timeout: float = 20.0) -> list[re.Match]:
        """
        Wait until C{pattern} has matched C{count} lines of the log's text;
        return the matches.
        """
        return self._waitUntil(
            lambda running: self._found(pattern, count, running), timeout, f"{count}x {pattern!r}"
        )

    def _waitUntil(self, found, timeout: float, what: str):
        try:
            return self._master.waitUntil(found, timeout, what)
        except ClusterFailed as e:
            raise AssertionError(str(e)) from None

    def waitReady(self, workers: int, timeout: float = 30.0) -> dict[int, int]:
        """
        Wait until C{workers} workers have become ready (the log's C{ready}
        events, counted since the start); return {worker id: pid}.
        """
        return self._waitUntil(
            lambda running: dict(running.pids) if len(running.pids) >= workers else None,
            timeout,
            f"{workers} ready workers",
        )

    def _bound(self, running: RunningCluster) -> list[dict]:
        return [event for event in running.events if event.get(CLUSTER_EVENT) == "bound"]

    def address(self, description: str | None = None, timeout: float = 20.0) -> tuple[str, int] | str:
        """
        Where the master listens for C{description} (by default its first
        endpoint): C{(host, port)}, or a UNIX socket's path.
        """

        def find(running: RunningCluster):
            for event in self._bound(running):
                if description is None or event["description"] == description:
                    return event["sockname"]
            return None

        sockname = self._waitUntil(find, timeout, f"the address of {description or 'an endpoint'}")
        if sockname["addressType"] == -1:
            return sockname["address"]
        host = sockname["address"]
        return ("127.0.0.1" if host in ("0.0.0.0", "") else host, int(sockname["port"]))

    def bound(self) -> list[tuple[str, str, str]]:
        """
        The master's event for each configured endpoint: (description, bound
        address, scheduling), in order.
        """
        with self._master._changed:
            return [
                (e["description"], e["address"], e["scheduling"]) for e in self._bound(self._master.running)
            ]

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        code = self.process.wait(timeout)
        self._master._reader.join(timeout)
        return code

    def leftovers(self) -> list[int]:
        return processesWithMarker(self.marker)

    def close(self) -> None:
        """
        Kill whatever is left: the master's process group, and every process
        carrying this cluster's marker with its group.
        """
        self._master.kill()
        killMarked(self.marker)
        shutil.rmtree(self.runtimeDirectory, ignore_errors=True)

    @property
    def controlPath(self) -> str:
        """
        The master's default control socket (in its own RUNDIR).
        """
        return os.path.join(self.environ["XDG_RUNTIME_DIR"], "twistcluster", f"{self.process.pid}.sock")

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
