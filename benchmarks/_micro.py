"""
The master's hand-off path alone, measured by what the master spends rather
than by a rate (a rate on a shared machine says more about the neighbours):
C{python -m benchmarks --micro}.

This process is the master: a real reactor, a real listening socket with
its L{HandOffHandle} (C{rr} or C{least-conn}), and real control channels
(socketpairs) to fake workers, each a process that answers every C{NewConn}
at once with the bytes a worker sends (and closes the sockets).  A client
process opens C{--micro-concurrency} connections at a time, each waiting for
the server's close (so the kernel backlog never overflows).  Reported: the
master's CPU time (user + system) per connection over C{--micro-connections}
after a warm-up.

With C{--micro-concurrency 1} every hand-off is alone (its own accept, box,
ack and reactor turns), so its cost does not depend on how fast the other
processes are: under C{valgrind --tool=callgrind} (C{--micro-callgrind}) the
master's instructions per connection are the same on a busy machine as on
an idle one (two runs, the difference divided by the difference in
connections, so start-up cancels out).
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

#: Connections before the measured ones.
WARMUP = 300
#: This module as a process of its own: C{worker}, C{client} or C{master}, and their arguments.
ROLE = [sys.executable, "-m", "benchmarks._micro"]


def _cpuSeconds() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def fakeWorker(fd: int) -> None:
    """
    Answer every C{NewConn} on control channel C{fd}: accept each socket
    (close it) and send the ack box a worker sends.
    """
    from twisted.protocols.amp import AmpBox, Boolean, ListOf

    channel = socket.socket(fileno=fd)
    acks = ListOf(Boolean())
    received: dict[int, int] = {}
    nextOrdinal = 0
    buffer = b""
    space = socket.CMSG_SPACE(253 * 4)
    while True:
        data, ancillary, _, _ = channel.recvmsg(65536, space)
        if not data:
            return
        for _, _, payload in ancillary:
            for i in range(0, len(payload) - len(payload) % 4, 4):
                received[nextOrdinal] = int.from_bytes(payload[i : i + 4], sys.byteorder, signed=True)
                nextOrdinal += 1
        buffer += data
        answers = []
        while True:
            box, used = _parseBox(buffer)
            if box is None:
                break
            buffer = buffer[used:]
            if box.get(b"_command") != b"newconn":
                continue
            ordinals = [int(o) for o in box[b"fds"].split(b",")]
            for ordinal in ordinals:
                os.close(received.pop(ordinal))
            answer = AmpBox({b"_answer": box[b"_ask"], b"accepted": acks.toString([True] * len(ordinals))})
            answers.append(answer.serialize())
        if answers:
            channel.sendall(b"".join(answers))


def _parseBox(buffer: bytes) -> tuple[dict[bytes, bytes] | None, int]:
    box: dict[bytes, bytes] = {}
    at = 0
    while True:
        if len(buffer) < at + 2:
            return None, 0
        size = int.from_bytes(buffer[at : at + 2], "big")
        if size == 0:
            return box, at + 2
        key = buffer[at + 2 : at + 2 + size]
        at += 2 + size
        if len(buffer) < at + 2:
            return None, 0
        size = int.from_bytes(buffer[at : at + 2], "big")
        if len(buffer) < at + 2 + size:
            return None, 0
        box[key] = buffer[at + 2 : at + 2 + size]
        at += 2 + size


def client(port: int, total: int, concurrency: int) -> None:
    """
    Open C{total} connections to 127.0.0.1:C{port}, C{concurrency} at a
    time; each ends when the server closes it.
    """
    selector = selectors.DefaultSelector()
    started = 0

    def start() -> None:
        nonlocal started
        started += 1
        sock = socket.socket()
        sock.setblocking(False)
        code = sock.connect_ex(("127.0.0.1", port))
        if code not in (0, errno.EINPROGRESS):
            raise OSError(code, os.strerror(code))
        selector.register(sock, selectors.EVENT_READ)

    for _ in range(min(concurrency, total)):
        start()
    done = 0
    while done < total:
        for key, _ in selector.select(30):
            sock: Any = key.fileobj
            try:
                if sock.recv(16):
                    continue
            except OSError:
                pass
            selector.unregister(sock)
            sock.close()
            done += 1
            if started < total:
                start()


def master(connections: int, concurrency: int, workers: int, policy: str) -> dict[str, float]:
    """
    Run the master's side in this process until C{WARMUP + connections}
    connections were handed off and acked.
    """
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory

    from twistcluster._common.endpoints import ListenSpec
    from twistcluster._common.policies import SchedulingPolicy
    from twistcluster._common.protocol import adoptControlChannel
    from twistcluster._master.control import MasterControl
    from twistcluster._master.handles import Handles
    from twistcluster._master.worker import Worker

    total = WARMUP + connections
    state: dict[str, Any] = {"taken": 0}

    class CountingWorker(Worker):
        def connectionTaken(self) -> None:
            super().connectionTaken()
            taken = state["taken"] = state["taken"] + 1
            if taken == WARMUP:
                state["start"] = (_cpuSeconds(), time.perf_counter())
            elif taken == total:
                state["end"] = (_cpuSeconds(), time.perf_counter())
                reactor.stop()

    class Process:
        pid = 0

        def signalProcess(self, signal: object) -> None:
            pass

    spec = ListenSpec.forTCP(0, interface="127.0.0.1")
    handles = Handles(reactor, [spec], SchedulingPolicy(policy))
    handle: Any = handles.listen(spec, 0)
    children = []
    for number in range(1, workers + 1):
        worker = CountingWorker(number, reactor, handles, shutdownTimeout=10)
        masterEnd, workerEnd = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        control = MasterControl(worker, handles)

        def channel(control: MasterControl = control) -> MasterControl:
            return control

        adoptControlChannel(reactor, masterEnd.fileno(), Factory.forProtocol(channel))
        masterEnd.close()
        worker.attach(Process(), control)  # type: ignore[arg-type]
        handle.add(worker)
        children.append(_spawn(["worker", str(workerEnd.fileno())], workerEnd.fileno()))
        workerEnd.close()
    port = handle.sockname["port"]
    children.append(_spawn(["client", str(port), str(total), str(concurrency)]))
    try:
        reactor.run()
    finally:
        for child in children:
            child.kill()
            child.wait()
    (user0, system0), wall0 = state["start"]
    (user1, system1), wall1 = state["end"]
    return {
        "connections": connections,
        "us/c": (user1 - user0 + system1 - system0) / connections * 1e6,
        "user us/c": (user1 - user0) / connections * 1e6,
        "system us/c": (system1 - system0) / connections * 1e6,
        "conn/s": connections / (wall1 - wall0),
    }


def _spawn(arguments: list[str], passFD: int | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*ROLE, *arguments], pass_fds=() if passFD is None else (passFD,), start_new_session=True
    )


def callgrind(connections: int, workers: int, policy: str) -> dict[str, float]:
    """
    The master's instructions per connection, alone (concurrency 1): two
    runs under callgrind, C{connections} apart.
    """
    counts = []
    for run in (0, connections):
        with tempfile.TemporaryDirectory() as directory:
            valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={directory}/out"]
            master = ["master", str(max(run, 1)), "1", str(workers), policy]
            finished = subprocess.run([*valgrind, *ROLE, *master], capture_output=True, text=True, check=True)
        found = re.search(r"Collected : (\d+)", finished.stderr)
        if found is None:
            raise SystemExit(f"benchmarks: no count in callgrind's output:\n{finished.stderr[-2000:]}")
        counts.append(int(found.group(1)))
    return {"connections": connections, "instructions/c": (counts[1] - counts[0]) / (connections - 1)}


def micro(arguments: argparse.Namespace) -> int:
    """
    C{--micro}: print the master's cost per hand-off.
    """
    workers, policy = arguments.micro_workers, arguments.micro_policy
    if arguments.micro_callgrind:
        result = callgrind(min(arguments.micro_connections, 1000), workers, policy)
        print(f"{policy}, {workers} workers, concurrency 1: {result['instructions/c']:,.0f} instructions/c")
        return 0
    for concurrency in arguments.micro_concurrency:
        # A process each: a reactor runs once.
        command = ["master", str(arguments.micro_connections), str(concurrency), str(workers), policy]
        subprocess.run([*ROLE, *command], check=True, timeout=600)
    return 0


def _describe(result: dict[str, float], concurrency: int, workers: int, policy: str) -> str:
    return (
        f"{policy}, {workers} workers, concurrency {concurrency}: {result['us/c']:.1f} us/c master CPU "
        f"({result['user us/c']:.1f} user, {result['system us/c']:.1f} system), "
        f"{result['conn/s']:,.0f} conn/s"
    )


def main(argv: list[str]) -> None:
    role = argv[0]
    if role == "worker":
        fakeWorker(int(argv[1]))
    elif role == "client":
        client(int(argv[1]), int(argv[2]), int(argv[3]))
    elif role == "master":
        connections, concurrency, workers, policy = int(argv[1]), int(argv[2]), int(argv[3]), argv[4]
        print(_describe(master(connections, concurrency, workers, policy), concurrency, workers, policy))


if __name__ == "__main__":
    main(sys.argv[1:])
