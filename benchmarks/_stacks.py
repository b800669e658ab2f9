"""
Reading py-spy's collapsed stacks: where a process's CPU goes, by function,
by file, and by stage of the hand-off path.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

TOP = 25
#: Where a reactor waits for events: idle time, not work.
_WAITING = ("epoll_wait", "epoll_pwait", "poll", "ppoll", "select", "pselect")


def isWaiting(function: str) -> bool:
    """
    Is C{function} (as cProfile names it) the reactor waiting for events?
    """
    name = function.removeprefix("<method '").split("'", 1)[0]
    return name in _WAITING


_FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def shortFile(path: str) -> str:
    """
    A source path without its installation prefix.
    """
    for marker in ("site-packages/", "lib/python3.11/", "/wt6/", "/work/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return path


def frameName(frame: str) -> tuple[str, str]:
    """
    C{(function, file)} of one py-spy frame, C{"name (file:line)"}.
    """
    match = _FRAME.match(frame)
    if not match:
        return frame, "?"
    return match.group("name"), shortFile(match.group("file"))


Stage = tuple[str, tuple[str, ...], tuple[str, ...]]


@dataclass(frozen=True)
class StageSet:
    """
    One process's hot path as exclusive stages: each busy sample goes to
    the first stage whose rule matches, a system call at the leaf first,
    then the innermost Python step on the stack; the last stage takes the
    rest.

    @ivar stages: C{(label, leaf function names, functions on the stack)}.
    @ivar handlers: The reactor's handlers, inclusive: C{(label, functions)}.
    """

    title: str
    stages: tuple[Stage, ...]
    handlers: tuple[tuple[str, tuple[str, ...]], ...]

    def stageOf(self, names: Sequence[str]) -> str:
        """
        The stage a sample (its stack's function names, root first) is in.
        """
        onStack = set(names)
        for label, leaves, functions in self.stages:
            if (names and names[-1] in leaves) or onStack.intersection(functions):
                return label
        return self.stages[-1][0]


MASTER_STAGES = StageSet(
    "The master's hand-off path",
    (
        ("accept4() system call", ("accept4",), ()),
        ("sendmsg()/send() on the control channel (fds via SCM_RIGHTS)", ("sendmsg", "send"), ()),
        ("recvmsg()/recv() on the control channel", ("recvmsg", "recv"), ()),
        ("close() of acked sockets", ("close",), ()),
        ("NewConn: scheduler -> callRemote -> AMP encode", (), ("RoundRobinHandle._handOff",)),
        ("ack: _answered -> scheduler.answered (rest)", (), ("RoundRobinHandle._answered",)),
        ("control-channel write plumbing (doWrite, Python)", (), ("FileDescriptor.doWrite",)),
        ("AMP decode + Deferred plumbing up to the ack callback", (), ("_SendmsgMixin.doRead",)),
        ("accept loop (Python, minus NewConn)", (), ("_acceptSome", "_AcceptLoop.doRead")),
        ("reactor loop and the rest (epoll dispatch, log context, GC)", (), ()),
    ),
    (
        (
            "listening socket readable (accept batch, first hand-offs)",
            ("_AcceptLoop.doRead",),
        ),
        ("control channel readable (acks -> more hand-offs)", ("_SendmsgMixin.doRead",)),
        ("control channel writable (queued NewConn boxes + fds)", ("FileDescriptor.doWrite",)),
    ),
)

WORKER_STAGES = StageSet(
    "A worker's side of the hand-off, and its HTTP work",
    (
        ("recvmsg() on the control channel (NewConn + fd)", ("recvmsg",), ()),
        ("adopting the socket (adoptStreamConnection)", (), ("ClusterPort.connectionReceived",)),
        ("NewConn: AMP decode, ack encode, Deferreds", (), ("_SendmsgMixin.doRead",)),
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
        ("control channel readable (NewConn)", ("_SendmsgMixin.doRead",)),
        ("client connections readable (requests)", ("Connection.doRead",)),
        ("writable (acks and responses)", ("FileDescriptor.doWrite",)),
    ),
)


@dataclass
class StackSummary:
    """
    py-spy's collapsed stacks, counted.

    @ivar busy: Samples not waiting in the reactor's poll.
    @ivar stacks: The busy samples' stacks (function names), with counts.
    """

    total: int = 0
    busy: int = 0
    selfTime: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    byFile: Counter[str] = field(default_factory=Counter)
    stacks: list[tuple[list[str], int]] = field(default_factory=list)

    def share(self, functions: Sequence[str]) -> int:
        """
        Busy samples whose stack holds any of C{functions}.
        """
        wanted = set(functions)
        return sum(n for names, n in self.stacks if wanted.intersection(names))

    def byStage(self, stages: StageSet) -> Counter[str]:
        counts: Counter[str] = Counter()
        for names, samples in self.stacks:
            counts[stages.stageOf(names)] += samples
        return counts


def summariseStacks(collapsed: str) -> StackSummary:
    """
    Count py-spy's collapsed stacks (C{frame;frame;... count}): by function
    (self and inclusive) and by file, leaving out samples waiting in the
    reactor's poll (py-spy's C{--native} mode counts those as active).
    """
    summary = StackSummary()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        summary.total += samples
        frames = [frameName(f) for f in stack.split(";")]
        leaf, leafFile = frames[-1]
        if leaf in _WAITING:
            continue
        summary.busy += samples
        summary.stacks.append(([name for name, _ in frames], samples))
        summary.selfTime[f"{leaf} ({leafFile})"] += samples
        summary.byFile[leafFile] += samples
        for name in {f"{n} ({f})" for n, f in frames}:
            summary.inclusive[name] += samples
    return summary


def _line(samples: int, total: int, label: str) -> str:
    return f"  {100 * samples / total:5.1f}%  {samples:7d}  {label}"


def _table(title: str, counts: Counter[str], total: int) -> list[str]:
    lines = [title] + [_line(n, total, name) for name, n in counts.most_common(TOP)]
    return lines + [""]


def stageBreakdown(summary: StackSummary, stages: StageSet) -> list[str]:
    counts = summary.byStage(stages)
    lines = [f"{stages.title}, exclusive stages (they add up to 100%):"]
    lines += [_line(counts[label], summary.busy, label) for label, _, _ in stages.stages]
    lines += ["", "By reactor handler (inclusive):"]
    lines += [_line(summary.share(f), summary.busy, label) for label, f in stages.handlers]
    return lines + [""]


def pySpyReport(collapsed: str, stages: StageSet = MASTER_STAGES) -> str:
    summary = summariseStacks(collapsed)
    if not summary.busy:
        return "py-spy took no busy samples (was the process idle?)\n"
    lines = [
        f"{summary.total} samples, {summary.total - summary.busy} of them waiting in "
        f"epoll_wait (idle, left out); shares below are of the {summary.busy} busy samples",
        "",
    ]
    lines += stageBreakdown(summary, stages)
    lines += _table("Self time by function (where the CPU is):", summary.selfTime, summary.busy)
    lines += _table("Inclusive time by function:", summary.inclusive, summary.busy)
    lines += _table("Self time by file:", summary.byFile, summary.busy)
    return "\n".join(lines)
