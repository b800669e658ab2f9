# -*- test-case-name: tests.test_handover, tests.test_upgrade -*-
"""
The new image's part of an upgrade: take over what the old one carried
(L{twistcluster._master.carried}), without binding anything.

    - the listening sockets, under the keys the command line gives them
      (the same port, even for C{tcp:0}; a UNIX socket file untouched);
    - the workers: each in the state it was, its control channel adopted
      (what the old image had read of a box and not parsed comes first, and
      AMP's descriptor numbering goes on where it was), its output pipes
      read again, its process reaped by this image's reactor;
    - the supervisor: the slots, the generation, the restart counts, the
      last worker id.

Every carried descriptor is duplicated, and the originals are closed only
once the new image has resumed (L{Resumption.commit}): until then a failure
can run the old code again on the same state (L{Resumption.rollback}).
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from collections.abc import MutableMapping, Sequence

from twisted.internet.fdesc import setNonBlocking
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from .._common.balance import BalanceTable
from .._common.endpoints import ListenSpec
from .._common.ports import AdoptedUNIXPort
from .._common.protocol import adoptControlChannel
from .._common.reactors import IAdoptingReactor, ISpawningReactor
from .._common.twistedinternals import AdoptedProcess, adoptUNIXPort
from .carried import FAILED_VARIABLE, STATE_VARIABLE, CarriedHandle, CarriedState, decodeBytes, readState
from .control import MasterControl
from .handles import Handle, Handles, HandOffHandle
from .output import WorkerProcessProtocol
from .picking import LeastConnections
from .relaunch import bootstrapped
from .sharedhandles import ReusePortHandle, SharedHandle
from .worker import Worker


class _Given(Factory):
    """
    Gives the one protocol it was made with.
    """

    def __init__(self, protocol: MasterControl) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: object) -> MasterControl:
        return self._protocol


class ResumeFailed(Exception):
    """
    The new image cannot take over what the old one carried; the message
    says why, in one line.
    """


class Resumption:
    """
    What an earlier image of this master handed over, and taking it over.

    @ivar state: The carried state.
    @ivar failedUpgrade: Why the upgrade failed, if this image is the old
        code run again (a rollback).
    """

    _log = Logger()

    def __init__(self, state: CarriedState, stateFD: int, failedUpgrade: str | None = None) -> None:
        self.state = state
        self._stateFD = stateFD
        self.failedUpgrade = failedUpgrade
        self._committed = False

    @classmethod
    def fromEnvironment(cls, environ: MutableMapping[str, str]) -> Resumption | None:
        """
        The state an earlier image left for this one, if any (its variables
        leave the environment, which workers inherit).

        @raise twistcluster._master.carried.UnreadableState: There is one,
            and it cannot be read.
        """
        value = environ.pop(STATE_VARIABLE, None)
        failed = environ.pop(FAILED_VARIABLE, None)
        if value is None:
            return None
        fd = int(value)
        return cls(readState(fd), fd, failed)

    def listener(self, name: str) -> int | None:
        """
        The listening socket the master's C{name} service (C{agent},
        C{control}, C{metrics}) had, to adopt instead of binding.
        """
        return self.state.listeners.get(name)

    def adoptWorkers(
        self, reactor: IReactorTime, handles: Handles, shutdownTimeout: float
    ) -> dict[int, Worker]:
        """
        A L{Worker} for each carried worker, in its state (its process and
        channel are attached by L{attach}).
        """
        workers = {}
        for carried in self.state.workers:
            worker = Worker(carried.id, reactor, handles, shutdownTimeout)
            worker.slot, worker.generation = carried.slot, carried.generation
            worker.exitedAfterDisconnect = carried.exitedAfterDisconnect
            worker.lastError = carried.lastError
            worker.connectionsTaken = carried.connectionsTaken
            worker.connectionLimit = carried.connectionLimit
            worker.adopt(carried.state, carried.everReady, carried.killIn)
            workers[worker.id] = worker
        return workers

    def adoptHandles(
        self, handles: Handles, listens: Sequence[tuple[str, ListenSpec]], workers: dict[int, Worker]
    ) -> list[Handle]:
        """
        Serve every configured listen on the socket the old image had for it
        (and the sockets it had bound for the workers' own queries).

        @raise ResumeFailed: A configured listen was not carried.
        """
        carried = {handle.key: handle for handle in self.state.handles}
        adopted = []
        indexes: Counter[str] = Counter()
        for description, spec in listens:
            index = indexes[spec.key(0)]
            indexes[spec.key(0)] += 1
            found = carried.pop(spec.key(index), None)
            if found is None:
                raise ResumeFailed(f"the old master did not hand over a socket for {description!r}")
            adopted.append(self._adoptHandle(handles, found, spec, workers))
        for rest in carried.values():
            self._adoptHandle(handles, rest, ListenSpec.fromJSON(rest.spec), workers)
        return adopted

    def _adoptHandle(
        self, handles: Handles, carried: CarriedHandle, spec: ListenSpec, workers: dict[int, Worker]
    ) -> Handle:
        listening = [workers[i] for i in carried.listening if i in workers]
        handle = handles.adopt(carried.key, spec, carried.fd, listening, carried.onDemand)  # type: ignore[arg-type]
        if isinstance(handle, HandOffHandle):
            strategy = handle.scheduler.strategy
            for workerId in carried.handing:
                worker = workers.get(workerId)
                if worker is None:
                    continue
                if isinstance(strategy, LeastConnections):
                    strategy.adopt(worker, carried.live.get(workerId, 0))
                handle.add(worker)
        elif isinstance(handle, SharedHandle) and carried.balanceFD >= 0:
            slots: dict[object, int] = {
                workers[i]: s for i, s in carried.balanceSlots.items() if i in workers
            }
            handle.adoptBalance(BalanceTable.adopt(carried.balanceFD, slots))
        if isinstance(handle, ReusePortHandle):
            kept = [
                (fd, slot, {workers[i]: leaving for i, leaving in holders.items() if i in workers})
                for fd, slot, holders in carried.kept
            ]
            handle.adoptKept(kept, carried.presized)  # type: ignore[arg-type]
        return handle

    def attach(
        self,
        reactor: ISpawningReactor,
        handles: Handles,
        workers: dict[int, Worker],
        maxMessageSize: int | None,
    ) -> None:
        """
        Adopt each worker's control channel and process (whose output pipes
        are read again, and which is reaped when it exits).
        """
        for carried in self.state.workers:
            worker = workers[carried.id]
            control = MasterControl(worker, handles, reactor, maxMessageSize)
            if carried.control >= 0:
                adoptControlChannel(reactor, carried.control, _Given(control))
                control.continueNumbering(carried.descriptorsSent)
            output = WorkerProcessProtocol(worker)
            for childFD, (data, parts) in carried.pendingOutput.items():
                output.lines[childFD].restore(decodeBytes(data), parts)
            pipes = {childFD: os.dup(fd) for childFD, fd in carried.outputs.items()}
            process = AdoptedProcess(reactor, carried.pid, output, pipes, carried.exitStatus)
            worker.attach(process, control)
            worker.pid = carried.pid

    def feed(self, workers: dict[int, Worker]) -> None:
        """
        Give each control channel what the old image had read of it and not
        parsed yet, before anything new is read.
        """
        for carried in self.state.workers:
            data = decodeBytes(carried.unparsed)
            control = workers[carried.id].control
            if data and control is not None and control.transport is not None:
                control.dataReceived(data)

    def commit(self) -> None:
        """
        This image has resumed: close the carried originals (this image has
        duplicates of what it adopted) and the state; the old code can no
        longer be run again.
        """
        if self._committed:
            return
        self._committed = True
        for fd in {*self.state.descriptors(), self._stateFD}:
            try:
                os.close(fd)
            except OSError:
                pass
        bootstrap = bootstrapped()
        if bootstrap is not None:
            bootstrap.resumed()

    def rollback(self, reason: str) -> None:
        """
        Run the old code again on the same state, if this image is not the
        old code already (it returns only if it cannot).
        """
        bootstrap = bootstrapped()
        if not self._committed and bootstrap is not None:
            self._log.critical("the new master cannot resume: {reason}", reason=reason)
            bootstrap.rollback(reason)


def adoptListeningPort(reactor: IAdoptingReactor, fd: int, factory: IProtocolFactory) -> IListeningPort:
    """
    Serve C{factory} on the listening socket C{fd} (duplicated) that an
    earlier image of the master had (its control socket, metrics or agent
    endpoint), as it was: a UNIX socket keeps its file's mode, and its file
    is removed when the port stops, as the image that bound it would have.
    """
    with socket.socket(fileno=os.dup(fd)) as probe:
        family, name = probe.family, probe.getsockname()
    setNonBlocking(fd)
    if family != socket.AF_UNIX:
        # IReactorSocket types the factory as a ServerFactory; any serves.
        port: IListeningPort = reactor.adoptStreamPort(fd, family, factory)  # type: ignore[arg-type]
        return port
    unixPort = adoptUNIXPort(AdoptedUNIXPort, reactor, fd, factory)
    unixPort.ownedPath = os.fsdecode(name)
    unixPort.startListening()
    return unixPort
