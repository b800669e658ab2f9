"""
What the master-upgrade tests need: release directories of their own (a
copy of twistcluster's source tree, its twist plugin and an application,
behind a C{current} symlink, used through C{PYTHONPATH} and the working
directory, never the environment the suite runs from), and a real client
that keeps sending requests (short connections and keep-alive, over TCP and
UNIX sockets) and keeps every answer.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from attrs import frozen

from tests._cluster import PROJECT, Cluster

#: The application of a release: a small HTTP server (keep-alive when the
#: client asks) whose answer names its release, the twistcluster version of
#: the worker that served it, and that worker's id.
APP = """
import os

import twistcluster
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol

RELEASE = {release!r}


class Answer(Protocol):
    def connectionMade(self):
        self.buffer = b""

    def dataReceived(self, data):
        self.buffer += data
        while b"\\r\\n\\r\\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\\r\\n\\r\\n", 1)
            first = head.split(b"\\r\\n", 1)[0]
            keep = first.endswith(b"HTTP/1.1") and b"connection: close" not in head.lower()
            body = "release={{}} twistcluster={{}} worker={{}}\\n".format(
                RELEASE, twistcluster.__version__, os.environ.get("TWISTCLUSTER_WORKER_ID")
            ).encode()
            close = b"" if keep else b"Connection: close\\r\\n"
            head = b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n%s\\r\\n" % (len(body), close)
            self.transport.write(head + body)
            if not keep:
                self.transport.loseConnection()
                return


factory = Factory.forProtocol(Answer)


class Datagrams(DatagramProtocol):
    def datagramReceived(self, data, address):
        said = "release={{}} twistcluster={{}}".format(RELEASE, twistcluster.__version__)
        self.transport.write(said.encode(), address)
"""

ANSWER = re.compile(r"release=(\S+) twistcluster=(\S+) worker=(\S+)")


class Releases:
    """
    Release directories under C{root}, and its C{current} symlink.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "releases").mkdir(parents=True)
        self.current = root / "current"

    def make(
        self, name: str, version: str | None = None, edits: dict[str, Callable[[str], str]] | None = None
    ) -> Path:
        """
        A release: twistcluster's source tree (its version set to
        C{version}, each file of C{edits} changed by its function), the
        plugin, and the application answering with C{name}.
        """
        directory = self.root / "releases" / name
        shutil.copytree(
            PROJECT / "twistcluster", directory / "twistcluster", ignore=shutil.ignore_patterns("__pycache__")
        )
        plugins = directory / "twisted" / "plugins"
        plugins.mkdir(parents=True)
        shutil.copy(PROJECT / "twisted" / "plugins" / "twistcluster_plugin.py", plugins)
        (directory / "app.py").write_text(APP.format(release=name))
        if version is not None:
            self.edit(name, versionFile(directory), lambda text: setVersion(text, version))
        for path, change in (edits or {}).items():
            self.edit(name, path, change)
        return directory

    def edit(self, name: str, path: str | Path, change: Callable[[str], str]) -> None:
        target = self.root / "releases" / name / path
        text = target.read_text()
        changed = change(text)
        assert changed != text, f"the edit of {path} in {name} changed nothing"
        target.write_text(changed)

    def switch(self, name: str) -> None:
        """
        Point C{current} at release C{name}, at once (a rename over it).
        """
        link = self.root / "current.new"
        link.symlink_to(Path("releases") / name)
        os.replace(link, self.current)

    def start(
        self,
        cluster: Callable[..., Cluster],
        *args: str,
        env: dict[str, str] | None = None,
        launcher: Sequence[str] = (),
        passFDs: Sequence[int] = (),
        python: str = sys.executable,
        pythonPath: Sequence[str] = (),
        app: str = "app.factory",
    ) -> Cluster:
        """
        A master run from C{current}, as an operator would run it there:
        C{python -m twisted cluster ARGS APP} (through C{launcher},
        which execs it), C{current} first on its C{PYTHONPATH}.
        """
        path = os.pathsep.join([str(self.current), *pythonPath])
        environ = {"PYTHONPATH": path, "PWD": str(self.current), **(env or {})}
        command = [python, "-m", "twisted", "--log-format", "json", "cluster", *args, app]
        return cluster(*args, cwd=self.current, env=environ, command=[*launcher, *command], passFDs=passFDs)


def versionFile(directory: Path) -> Path:
    candidate = directory / "twistcluster" / "_version.py"
    return (candidate if candidate.exists() else directory / "twistcluster" / "__init__.py").relative_to(
        directory
    )


def setVersion(text: str, version: str) -> str:
    return re.sub(r'^__version__ = "[^"]*"', f'__version__ = "{version}"', text, flags=re.M)


@frozen
class Outcome:
    """
    One request: when it started and ended, when its connection opened,
    and what came back (or why nothing did).
    """

    kind: str
    opened: float
    started: float
    ended: float
    answer: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and ANSWER.search(self.answer) is not None

    @property
    def release(self) -> tuple[str, str]:
        match = ANSWER.search(self.answer)
        assert match is not None
        return match.group(1), match.group(2)


def _connect(address: tuple[str, int] | str, timeout: float) -> socket.socket:
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(address)
        return sock
    return socket.create_connection(address, timeout=timeout)


def _readResponse(sock: socket.socket, buffered: bytes) -> tuple[str, bytes]:
    """
    One response (by its Content-Length), and what was read past it.
    """
    data = buffered
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data[:100]!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the middle of a response")
        rest += chunk
    return rest[:length].decode(), rest[length:]


class ContinuousLoad:
    """
    Threads sending requests to each of C{addresses} until stopped: for
    each, C{short} threads of one request per connection (HTTP/1.0), and
    C{keepAlive} threads of C{perConnection} requests per connection
    (HTTP/1.1).
    """

    def __init__(
        self,
        addresses: Sequence[tuple[str, int] | str],
        short: int = 1,
        keepAlive: int = 1,
        perConnection: int = 10,
        timeout: float = 30.0,
        maxSeconds: float = 100.0,
    ) -> None:
        self._timeout = timeout
        self._perConnection = perConnection
        self._stopped = threading.Event()
        self._deadline = time.monotonic() + maxSeconds
        self._lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self._threads = []
        for address in addresses:
            self._threads += [
                threading.Thread(target=self._short, args=(address,), daemon=True) for _ in range(short)
            ]
            self._threads += [
                threading.Thread(target=self._keepAlive, args=(address,), daemon=True)
                for _ in range(keepAlive)
            ]
        for thread in self._threads:
            thread.start()

    def _running(self) -> bool:
        return not self._stopped.is_set() and time.monotonic() < self._deadline

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    def _short(self, address: tuple[str, int] | str) -> None:
        while self._running():
            started = time.monotonic()
            try:
                with _connect(address, self._timeout) as sock:
                    sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    answer, _ = _readResponse(sock, b"")
            except (OSError, ValueError) as e:
                self._record(Outcome("short", started, started, time.monotonic(), error=repr(e)))
                continue
            self._record(Outcome("short", started, started, time.monotonic(), answer))

    def _keepAlive(self, address: tuple[str, int] | str) -> None:
        while self._running():
            opened = time.monotonic()
            try:
                sock = _connect(address, self._timeout)
            except OSError as e:
                self._record(Outcome("keep-alive", opened, opened, time.monotonic(), error=repr(e)))
                continue
            with sock:
                buffered = b""
                for n in range(self._perConnection):
                    last = n == self._perConnection - 1 or not self._running()
                    started = time.monotonic()
                    request = b"GET / HTTP/1.1\r\nHost: test\r\n"
                    try:
                        sock.sendall(request + (b"Connection: close\r\n\r\n" if last else b"\r\n"))
                        answer, buffered = _readResponse(sock, buffered)
                    except (OSError, ValueError) as e:
                        self._record(Outcome("keep-alive", opened, started, time.monotonic(), error=repr(e)))
                        break
                    self._record(Outcome("keep-alive", opened, started, time.monotonic(), answer))
                    if last:
                        break

    def count(self) -> int:
        with self._lock:
            return len(self.outcomes)

    def waitFor(self, requests: int, timeout: float = 60.0) -> None:
        target = self.count() + requests
        deadline = time.monotonic() + timeout
        while self.count() < target:
            assert time.monotonic() < deadline, f"only {self.count()} of {target} requests in {timeout}s"
            assert not self._stopped.is_set()
            time.sleep(0.02)

    def stop(self) -> list[Outcome]:
        self._stopped.set()
        for thread in self._threads:
            thread.join(self._timeout + 5)
        with self._lock:
            return list(self.outcomes)


def longestGap(outcomes: Sequence[Outcome], since: float, until: float) -> float:
    """
    The longest time between two answered short connections (each accepted
    anew) in [since, until]: how long the listening sockets went unserved.
    """
    ends = sorted(o.ended for o in outcomes if o.kind == "short" and o.ok and since <= o.ended <= until)
    return max((b - a for a, b in zip(ends, ends[1:])), default=0.0)


def descriptorCount(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def childrenOf(pid: int) -> list[int]:
    """
    The live (not zombie) processes whose parent is C{pid}.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("PPid", "").strip() == str(pid) and not fields.get("State", "").startswith("Z"):
            found.append(int(entry.name))
    return found


def residentBytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def socketInode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino
