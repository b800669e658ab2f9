# -*- test-case-name: tests.test_carried -*-
"""
What a master carries across the C{exec} of an upgrade (L{CarriedState}):
which descriptor is which listening socket, worker control channel and
output pipe, and what it knows of its workers and listens.  It travels as
JSON in a C{memfd} whose number is in C{$TWISTCLUSTER_UPGRADE_STATE}
(einhorn's state descriptor), with every descriptor it names kept open
across the C{exec} (HAProxy keeps its listeners the same way).

The format has a number (L{FORMAT}); a master that cannot read it refuses
the upgrade in its check, before anything changes.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from attrs import asdict, field, frozen

#: The state's format: what a new master must be able to read.
FORMAT = 1
#: The environment variable naming the state's descriptor (set only across
#: the C{exec}; the new master removes it at once).
STATE_VARIABLE = "TWISTCLUSTER_UPGRADE_STATE"
#: The environment variable that makes a master start as a check of the
#: upgrade (L{twistcluster._master.upgradecheck}); it holds the
#: L{CheckRequest} as JSON.
CHECK_VARIABLE = "TWISTCLUSTER_UPGRADE_CHECK"
#: Set (to the reason) when the new master failed to resume and the old
#: code takes over again.
FAILED_VARIABLE = "TWISTCLUSTER_UPGRADE_FAILED"


def carriable(description: str) -> bool:
    """
    Can the listening socket of a master's service on the endpoint
    C{description} be carried across an upgrade as it is?  A plain TCP or
    UNIX one can; any other (TLS, a wrapper) is bound again by the new
    image.
    """
    return description.split(":", 1)[0] in ("tcp", "tcp6", "unix")


def encodeBytes(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decodeBytes(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


@frozen
class CarriedHandle:
    """
    One listening handle of the master.

    @ivar key: Node's handle key (the new master finds its listens by it).
    @ivar spec: Its L{ListenSpec<twistcluster._common.endpoints.ListenSpec>}
        as JSON.
    @ivar scheduling: C{rr}, C{least-conn}, C{none} or C{reuseport}.
    @ivar fd: The listening socket (a bound, not listening, one for
        C{reuseport}).
    @ivar listening: The workers listening on it, by id.
    @ivar handing: The workers it hands connections to (C{rr},
        C{least-conn}).
    @ivar live: Each worker's live connections, by id (C{least-conn}).
    @ivar balanceFD: The table of open connections (C{none}), or -1.
    @ivar balanceSlots: Each worker's slot in it, by id.
    @ivar onDemand: Bound for a worker's query, not configured.
    @ivar kept: C{reuseport}: the sockets the master keeps and lends, each
        with its slot (or L{None}) and the workers lent it (by id: whether
        each is leaving).
    @ivar presized: C{reuseport}: whether they were bound up front (under
        C{--user}).
    """

    key: str
    spec: dict[str, Any]
    scheduling: str
    fd: int
    listening: list[int] = field(factory=list)
    handing: list[int] = field(factory=list)
    live: dict[int, int] = field(factory=dict)
    balanceFD: int = -1
    balanceSlots: dict[int, int] = field(factory=dict)
    onDemand: bool = False
    kept: list[tuple[int, int | None, dict[int, bool]]] = field(factory=list)
    presized: bool = False

    def descriptors(self) -> list[int]:
        kept = [fd for fd, _, _ in self.kept]
        return [self.fd, *kept] + ([self.balanceFD] if self.balanceFD >= 0 else [])


@frozen
class CarriedWorker:
    """
    One worker process.

    @ivar state: Its lifecycle state (C{spawning}, C{online}, C{listening},
        C{disconnecting}, C{disconnected}).
    @ivar control: The master's end of its control channel (-1: it closed).
    @ivar unparsed: What the master had received on it and not yet parsed
        (base64): the new master parses it first.
    @ivar descriptorsSent: How many descriptors the master sent on the
        channel (boxes name them by ordinal: the numbering goes on).
    @ivar outputs: The master's ends of its stdout and stderr pipes, by the
        worker's descriptor number.
    @ivar pendingOutput: An unfinished line of each (base64), and how many
        pieces of it were already logged.
    @ivar killIn: Seconds until it is to be killed (it was told to leave, or
        is hung), if it is.
    @ivar exitStatus: Its wait status, if the process was already reaped.
    """

    id: int
    pid: int
    slot: int | None
    generation: int
    state: str
    everReady: bool
    control: int
    outputs: dict[int, int] = field(factory=dict)
    unparsed: str = ""
    descriptorsSent: int = 0
    pendingOutput: dict[int, tuple[str, int]] = field(factory=dict)
    exitedAfterDisconnect: bool = False
    lastError: str | None = None
    connectionsTaken: int = 0
    connectionLimit: int | None = None
    killIn: float | None = None
    exitStatus: int | None = None

    def descriptors(self) -> list[int]:
        return [fd for fd in (self.control, *self.outputs.values()) if fd >= 0]


@frozen
class CarriedSupervisor:
    """
    What the supervisor knows: the slots, the generation, the restarts so
    far, the last worker id given out, which workers are on their way out,
    and the most workers it may grow to (and why).
    """

    size: int
    generation: int
    lastId: int
    restarts: dict[str, int] = field(factory=dict)
    wornOut: list[int] = field(factory=list)
    dismissed: list[int] = field(factory=list)
    hung: list[int] = field(factory=list)
    maxSize: tuple[int, str] | None = None


@frozen
class RunSpec:
    """
    How to run one master image: the interpreter, its options, what it runs
    (a module as C{-m} runs it, a script's path, or code as C{-c} runs it)
    with which C{sys.argv}, from which directory, with which C{PYTHONPATH}.
    """

    executable: str
    options: list[str]
    argv: list[str]
    cwd: str
    module: str | None = None
    path: str | None = None
    code: str | None = None
    pythonPath: str | None = None

    def toJSON(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def fromJSON(cls, value: dict[str, Any]) -> RunSpec:
        return cls(**value)


@frozen
class Launch:
    """
    How the operator started this master: the command as typed (run again
    for the check, so a C{current} symlink to a new release is followed),
    the directory as the shell named it (C{$PWD}, through symlinks) and the
    environment it started with.
    """

    argv: list[str]
    cwd: str
    environ: dict[str, str]

    def toJSON(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def fromJSON(cls, value: dict[str, Any]) -> Launch:
        return cls(**value)


@frozen
class CarriedState:
    """
    Everything a master hands to the image that follows it.

    @ivar version: The twistcluster version that wrote it.
    @ivar upgrades: How many upgrades this master has been through, this one
        included.
    @ivar listeners: The master's other listening sockets (C{control},
        C{metrics}, C{agent}), by name: descriptor.
    @ivar requesters: Connections of the control socket waiting for the
        upgrade's outcome.
    @ivar signals: Signals that arrived during the hand-over and were not
        handled yet, in order.
    @ivar launch: How the operator started it.
    @ivar previous: How to run the image that wrote it (real paths): the
        new image runs it again if it cannot resume.
    """

    version: str
    upgrades: int
    handles: list[CarriedHandle]
    workers: list[CarriedWorker]
    supervisor: CarriedSupervisor
    launch: Launch
    previous: RunSpec
    listeners: dict[str, int] = field(factory=dict)
    requesters: list[int] = field(factory=list)
    signals: list[int] = field(factory=list)
    format: int = FORMAT

    def descriptors(self) -> list[int]:
        """
        Every descriptor the state names, each of which must stay open across
        the C{exec}.
        """
        fds = [fd for handle in self.handles for fd in handle.descriptors()]
        fds += [fd for worker in self.workers for fd in worker.descriptors()]
        return fds + list(self.listeners.values()) + list(self.requesters)

    def toJSON(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def fromJSON(cls, value: dict[str, Any]) -> CarriedState:
        if value.get("format") != FORMAT:
            raise UnreadableState(f"the state is format {value.get('format')}; this master reads {FORMAT}")
        value = dict(value)
        value["handles"] = [_handle(h) for h in value["handles"]]
        value["workers"] = [_worker(w) for w in value["workers"]]
        supervisor = dict(value["supervisor"])
        if supervisor.get("maxSize") is not None:
            supervisor["maxSize"] = tuple(supervisor["maxSize"])
        value["supervisor"] = CarriedSupervisor(**supervisor)
        value["launch"] = Launch.fromJSON(value["launch"])
        value["previous"] = RunSpec.fromJSON(value["previous"])
        return cls(**value)


class UnreadableState(Exception):
    """
    The state is not one this master can read (another format, or not a
    state at all).
    """


def _handle(value: dict[str, Any]) -> CarriedHandle:
    value = dict(value)
    for name in ("live", "balanceSlots"):
        value[name] = {int(k): v for k, v in value[name].items()}
    value["kept"] = [
        (fd, slot, {int(k): v for k, v in holders.items()}) for fd, slot, holders in value["kept"]
    ]
    return CarriedHandle(**value)


def _worker(value: dict[str, Any]) -> CarriedWorker:
    value = dict(value)
    value["outputs"] = {int(k): v for k, v in value["outputs"].items()}
    value["pendingOutput"] = {int(k): tuple(v) for k, v in value["pendingOutput"].items()}
    return CarriedWorker(**value)


def writeState(state: CarriedState) -> int:
    """
    Write C{state} to a new C{memfd}.

    @return: Its descriptor (close-on-exec; the caller makes it inheritable
        just before the C{exec}).
    """
    fd = os.memfd_create("twistcluster-upgrade", os.MFD_CLOEXEC)
    try:
        data = json.dumps(state.toJSON(), separators=(",", ":")).encode("utf-8")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        raise
    return fd


def readState(fd: int) -> CarriedState:
    """
    Read the state in descriptor C{fd} (left open: it stays the old code's
    way back until the new master has resumed).

    @raise UnreadableState: It is not a state this master can read.
    """
    chunks = []
    offset = 0
    try:
        while chunk := os.pread(fd, 1 << 20, offset):
            chunks.append(chunk)
            offset += len(chunk)
        return CarriedState.fromJSON(json.loads(b"".join(chunks)))
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise UnreadableState(f"cannot read the upgrade's state (descriptor {fd}): {e}") from e
