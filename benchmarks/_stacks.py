"""
Reading py-spy's collapsed stacks: where a process's CPU goes, by function,
by file, and by stage of the hand-off path.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

TOP = 25
#: Where a reactor waits for events: idle time, not work.
_WAITING = ("epoll_wait", "epoll_pwait", "poll", "ppoll", "select", "pselect")
_FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def isWaiting(function: str) -> bool:
    """
    Is C{function} (as cProfile names it) the reactor waiting for events?
    """
    return function.removeprefix("<method '").split("'", 1)[0] in _WAITING


def shortFile(path: str) -> str:
    """
    A source path without its installation prefix.
    """
    for marker in ("site-packages/", "lib/python3.11/", "/work/"):
        path = path.split(marker, 1)[-1]
    return path


@dataclass(frozen=True)
class StageSet:
    """
    One process's hot path as exclusive stages: each busy sample goes to
    the first stage whose rule matches (a system call at the leaf, or a
    function on the stack, whose name ends with the rule's, so that
    C{Handle._handOff} survives a class's renaming); the last stage takes
    the rest.

    @ivar stages: C{(label, leaf function names, functions on the stack)}.
    @ivar handlers: The reactor's handlers, inclusive: C{(label, functions)}.
    """

    title: str
    stages: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]
    handlers: tuple[tuple[str, tuple[str, ...]], ...]

    def stageOf(self, names: Sequence[str]) -> str:
        """
        The stage of a sample (its stack's function names, root first).
        """
        for label, leaves, functions in self.stages:
            if (names and names[-1] in leaves) or onStack(names, functions):
                return label
        return self.stages[-1][0]


def onStack(names: Sequence[str], functions: Sequence[str]) -> bool:
    return any(name.endswith(function) for name in names for function in functions)


MASTER_STAGES = StageSet(
    "The master's hand-off path",
    (
        ("accept4() system call", ("accept4",), ()),
        ("sendmsg()/send() on the control channel (fds via SCM_RIGHTS)", ("sendmsg", "send"), ()),
        ("recvmsg()/recv() on the control channel", ("recvmsg", "recv"), ()),
        ("close() of acked sockets", ("close",), ()),
        ("NewConn: scheduler -> callRemote -> AMP encode", (), ("Handle._handOff", "Handle._flush")),
        ("ack: _answered -> scheduler.answered (rest)", (), ("Handle._answered",)),
        ("control-channel write plumbing (doWrite, Python)", (), ("FileDescriptor.doWrite",)),
        (
            "AMP decode + Deferred plumbing up to the ack callback",
            (),
            ("_SendmsgMixin.doRead", "_ChannelReads.doRead"),
        ),
        ("accept loop (Python, minus NewConn)", (), ("_acceptSome", "_AcceptLoop.doRead")),
        ("reactor loop and the rest (epoll dispatch, log context, GC)", (), ()),
    ),
    (
        ("listening socket readable (accept batch, first hand-offs)", ("_AcceptLoop.doRead",)),
        (
            "control channel readable (acks -> more hand-offs)",
            ("_SendmsgMixin.doRead", "_ChannelReads.doRead"),
        ),
        ("control channel writable (queued NewConn boxes + fds)", ("FileDescriptor.doWrite",)),
    ),
)

WORKER_STAGES = StageSet(
    "A worker's side of the hand-off, and its HTTP work",
    (
        ("recvmsg() on the control channel (NewConn + fd)", ("recvmsg",), ()),
        ("adopting the socket (adoptStreamConnection)", (), ("ClusterPort.connectionReceived",)),
        ("NewConn: AMP decode, ack encode, Deferreds", (), ("_SendmsgMixin.doRead", "_ChannelReads.doRead")),
        ("acks written on the control channel (send)", (), ("_SendmsgMixin.writeSomeData",)),
        ("HTTP: reading requests, the responder", (), ("Connection.doRead",)),
        ("HTTP: writing responses (send)", (), ("Connection.writeSomeData",)),
        (
            "closing client connections (shutdown, close)",
            (),
            ("_DisconnectSelectableMixin._disconnectSelectable", "Connection.connectionLost"),
        ),
        ("write plumbing (doWrite, epoll_ctl)", (), ("FileDescriptor.doWrite",)),
        ("reactor loop and the rest", (), ()),
    ),
    (
        ("control channel readable (NewConn)", ("_SendmsgMixin.doRead", "_ChannelReads.doRead")),
        ("client connections readable (requests)", ("Connection.doRead",)),
        ("writable (acks and responses)", ("FileDescriptor.doWrite",)),
    ),
)


def _line(samples: int, total: int, label: str) -> str:
    return f"  {100 * samples / total:5.1f}%  {samples:7d}  {label}"


def pySpyReport(collapsed: str, stages: StageSet = MASTER_STAGES) -> str:
    """
    Count py-spy's collapsed stacks (C{frame;frame;... count}) by stage, by
    function (self and inclusive) and by file, leaving out the samples
    waiting in the reactor's poll (py-spy's C{--native} counts them).
    """
    total = 0
    stacks: list[tuple[list[str], int]] = []
    selfTime: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    byFile: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        frames = [
            (m["name"], shortFile(m["file"])) if (m := _FRAME.match(f)) else (f, "?")
            for f in stack.split(";")
        ]
        if frames[-1][0] in _WAITING:
            continue
        stacks.append(([name for name, _ in frames], int(count)))
        selfTime["{} ({})".format(*frames[-1])] += int(count)
        byFile[frames[-1][1]] += int(count)
        for name in {f"{n} ({f})" for n, f in frames}:
            inclusive[name] += int(count)
    busy = sum(n for _, n in stacks)
    if not busy:
        return "py-spy took no busy samples (was the process idle?)\n"
    byStage = Counter[str]()
    for names, samples in stacks:
        byStage[stages.stageOf(names)] += samples
    lines = [
        f"{total} samples, {total - busy} of them waiting in epoll_wait (idle, left out); "
        f"shares below are of the {busy} busy samples",
        "",
        f"{stages.title}, exclusive stages (they add up to 100%):",
        *(_line(byStage[label], busy, label) for label, _, _ in stages.stages),
        "",
        "By reactor handler (inclusive):",
    ]
    for label, functions in stages.handlers:
        lines.append(_line(sum(n for names, n in stacks if onStack(names, functions)), busy, label))
    for title, counts in (
        ("Self time by function (where the CPU is):", selfTime),
        ("Inclusive time by function:", inclusive),
        ("Self time by file:", byFile),
    ):
        lines += ["", title, *(_line(n, busy, name) for name, n in counts.most_common(TOP))]
    return "\n".join(lines) + "\n"
