# -*- test-case-name: tests.test_upgrade -*-
"""
Upgrading the master itself (C{USR2}, C{twistcluster upgrade}) without
closing a listening socket: the master re-executes itself, keeping its pid,
as HAProxy's master does.  Nothing that supervises it (systemd,
supervisord, a container whose PID 1 it is) has to know, and its pid file
and control socket's path stay right.

    1. Check (L{twistcluster._master.upgradecheck}): the new code starts in
       a throwaway process, short of taking over.  If it fails, nothing
       changes: one line in the log, and the reason to whoever asked.
    2. Hand over (L{twistcluster._master.handover}): accepting stops for the
       shortest moment, the master gets quiet, writes down its state and
       C{exec}s the new code (through L{twistcluster._master.relaunch}'s
       bootstrap).  The C{exec} is the point of no return.
    3. Go on (L{twistcluster._master.resume}): the new image adopts the
       sockets and the workers, accepts again, and replaces the workers with
       a rolling restart; if its workers fail to boot, it serves on with the
       old ones, and says so.
    4. Roll back: if the new image fails before it has resumed, the old code
       runs again on the same state, and says so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from .._common.endpoints import ListenSpec
from .._common.events import Latch
from .._common.reactors import ISpawningReactor
from .carried import STATE_VARIABLE, CarriedState, Launch, RunSpec, writeState
from .handover import Handover, HandoverFailed, execute, holdSignals, releaseSignals
from .phase import UpgradePhase
from .relaunch import bootstrapCommand
from .resume import Resumption
from .supervised import RestartCause
from .upgradecheck import CheckResult, UpgradeCheck, checkRequest

#: Seconds the check may take.
CHECK_TIMEOUT = 60.0
#: Seconds the master may take to get quiet before it hands over.
QUIET_TIMEOUT = 10.0


class MasterUpgrade:
    """
    The master's upgrade, from the request to its outcome.

    @ivar phase: Where it is (L{UpgradePhase}); others ask L{underWay}.
    @ivar upgrades: How many upgrades this master went through.
    @ivar last: The last upgrade's outcome: C{result} (C{done},
        C{done, old workers kept}, C{refused}, C{rolled back}), C{reason},
        C{from} and C{to} (versions), C{time}.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: ISpawningReactor,
        master: Any,
        version: str,
        launch: Launch | None,
        previous: RunSpec | None,
        resumption: Resumption | None = None,
    ) -> None:
        self._reactor = reactor
        self._master = master
        self.version = version
        self._launch = launch
        self._previous = previous
        self.resumption = resumption
        self.phase = UpgradePhase.IDLE
        self.upgrades = 0 if resumption is None else resumption.state.upgrades
        self.last: dict[str, Any] | None = None
        self._check: UpgradeCheck | None = None
        self._handover: Handover | None = None
        #: The answer to the upgrade this image started (a new one each time).
        self._attempt: Latch[dict[str, Any]] = Latch()
        #: This image's outcome of the upgrade it resumed.
        self._resumed: Latch[dict[str, Any]] = Latch()
        #: The master's other listening sockets, by name: how to get their
        #: descriptor (L{None} when not listening).
        self._listeners: dict[str, Callable[[], int | None]] = {}
        #: How to get the connections waiting for the upgrade's outcome.
        self._requesters: Callable[[], list[int]] = list
        if resumption is not None:
            self._launch = resumption.state.launch

    def carryListener(self, name: str, fileno: Callable[[], int | None]) -> None:
        """
        Carry the listening socket of the master's C{name} service (its
        descriptor, when it has one) across the upgrade.
        """
        self._listeners[name] = fileno

    def adoptedListener(self, name: str) -> int | None:
        """
        The listening socket the C{name} service had before the upgrade (to
        adopt instead of binding), if any.
        """
        return None if self.resumption is None else self.resumption.listener(name)

    def carryRequesters(self, fds: Callable[[], list[int]]) -> None:
        """
        Carry the connections that asked for the upgrade (they stop being
        read), so the new image answers them.
        """
        self._requesters = fds

    def adoptedRequesters(self) -> list[int]:
        return [] if self.resumption is None else list(self.resumption.state.requesters)

    def describe(self) -> dict[str, Any]:
        """
        The upgrade as the status shows it: C{phase}, C{upgrades} (how many
        this master went through), C{last} (the last one's outcome).
        """
        return {"phase": self.phase.value, "upgrades": self.upgrades, "last": self.last}

    def underWay(self) -> bool:
        """
        Is this image upgrading itself (checking the new code, or handing
        over to it)?  Nothing else changes the workers meanwhile.
        """
        return self.phase in (UpgradePhase.CHECKING, UpgradePhase.HANDING_OVER)

    def outcome(self) -> Deferred[dict[str, Any]]:
        """
        Fires with this image's outcome of the upgrade it resumed (done, or
        rolled back).
        """
        return self._resumed.wait()

    # The old image

    def start(self) -> Deferred[dict[str, Any]]:
        """
        Upgrade the master (C{USR2}).

        @return: Fires with the outcome (L{last}) if this image sees it: a
            refusal, a failed check, a failed hand-over.  (A successful
            upgrade's outcome is the new image's.)
        """
        master = self._master
        refusal = None
        if self.phase is not UpgradePhase.IDLE:
            refusal = f"an upgrade is under way ({self.phase.value})"
        elif master.isStopping():
            refusal = f"the master is {master.phase.value}"
        elif master.supervisor.restarting:
            refusal = "a rolling restart is under way; upgrade once it is done"
        elif self._launch is None or self._previous is None:
            refusal = "this master cannot tell how it was started"
        if refusal is not None:
            return succeed(self._outcome("refused", refusal, record=False))
        self.phase = UpgradePhase.CHECKING
        assert self._launch is not None
        # systemd's reload: RELOADING=1 now, READY=1 from whichever image
        # ends it (the pid stays: no MAINPID=).
        master.notifier.reload(master.statusText("upgrading: "))
        self._log.info(
            "upgrade: checking the new code ({command}, in {directory})",
            command=" ".join(self._launch.argv),
            directory=self._launch.cwd,
        )
        request = checkRequest([handle.key for handle in master.handles])
        self._check = UpgradeCheck(
            self._reactor, self._launch, request, CHECK_TIMEOUT, master.inheritedDescriptors()
        )
        self._check.run().addCallback(self._checked)
        self._attempt = Latch()
        return self._attempt.wait()

    def _checked(self, result: CheckResult) -> None:
        self._check = None
        if self.phase is not UpgradePhase.CHECKING:
            return
        if not result.ok:
            self._failed(f"the new code does not start: {result.reason}")
            return
        self.phase = UpgradePhase.HANDING_OVER
        master = self._master
        self._handover = Handover(
            self._reactor, master.handles, master.supervisor, master.spawner.lastId, QUIET_TIMEOUT
        )
        self._handover.quiesce().addCallbacks(self._quiet, self._notQuiet, callbackArgs=(result,))

    def _notQuiet(self, reason: Failure) -> None:
        self._handover = None
        if self.phase is UpgradePhase.HANDING_OVER:
            self._failed(reason.getErrorMessage() if reason.check(HandoverFailed) else str(reason.value))

    def _quiet(self, ignored: None, result: CheckResult) -> None:
        if self.phase is not UpgradePhase.HANDING_OVER:
            return
        handover, master = self._handover, self._master
        assert handover is not None and result.run is not None and self._launch is not None
        held = holdSignals()
        stateFD = -1
        try:
            handles, workers, supervisor = handover.capture()
            listeners = {}
            for name, fileno in self._listeners.items():
                fd = fileno()
                if fd is not None:
                    listeners[name] = fd
            state = CarriedState(
                self.version,
                self.upgrades + 1,
                handles,
                workers,
                supervisor,
                self._launch,
                self._previous,  # type: ignore[arg-type]
                listeners,
                self._requesters(),
                master.signals.unhandled(),
            )
            stateFD = writeState(state)
            environ = dict(self._launch.environ, **{STATE_VARIABLE: str(stateFD)})
            self._log.info(
                "upgrade: handing over to twistcluster {version} ({workers} workers, {sockets} sockets; "
                "the pid stays {pid})",
                version=result.version,
                workers=len(workers),
                sockets=len(handles),
                pid=os.getpid(),
            )
            kept = [*state.descriptors(), stateFD, *master.inheritedDescriptors()]
            execute(bootstrapCommand(result.run, self._previous), result.run.cwd, environ, kept)
        except Exception as e:
            if stateFD >= 0:
                os.close(stateFD)
            releaseSignals(held)
            handover.undo()
            self._handover = None
            self._failed(f"cannot run the new master: {e}")

    def _failed(self, reason: str) -> None:
        self.phase = UpgradePhase.IDLE
        self._answer(self._outcome("failed", reason))

    def stopRequested(self) -> None:
        """
        The master is stopping: an upgrade not yet handed over is dropped
        (its check killed, accepting resumed for the graceful stop).
        """
        if self._check is not None:
            check, self._check = self._check, None
            check.abandon()
        if self._handover is not None:
            handover, self._handover = self._handover, None
            handover.undo()
        if self.underWay():
            self.phase = UpgradePhase.IDLE
            self._answer(self._outcome("failed", "the master is stopping"))

    # The new image

    def adopt(self, listens: Sequence[tuple[str, ListenSpec]]) -> list[Any]:
        """
        Take over the old image's sockets and workers (a failure raises, and
        the old code runs again).

        @return: The handle of each of C{listens}.
        """
        resumption, master = self.resumption, self._master
        assert resumption is not None
        carried = resumption.state.supervisor
        workers = resumption.adoptWorkers(self._reactor, master.handles, master.limits.shutdownTimeout)
        handles = resumption.adoptHandles(master.handles, listens, workers)
        master.spawner.lastId = carried.lastId
        supervisor = master.supervisor
        supervisor.size, supervisor.generation = carried.size, carried.generation
        supervisor.maxSize = carried.maxSize
        supervisor.restarts.update({RestartCause(cause): n for cause, n in carried.restarts.items()})
        supervisor.adopt(list(workers.values()), carried.wornOut, carried.dismissed, carried.hung)
        resumption.attach(self._reactor, master.handles, workers, master.spawner.maxMessageSize)
        resumption.feed(workers)
        return handles

    def resumed(self) -> None:
        """
        This image has taken over and runs: replace the workers (they run
        the old code), unless this image is the old code run again.
        """
        resumption = self.resumption
        assert resumption is not None
        previous = resumption.state.version
        if resumption.failedUpgrade is not None:
            self._outcome("rolled back", resumption.failedUpgrade, source=previous)
            return
        self._log.info(
            "upgrade: twistcluster {version} took over from {previous} (upgrade {count}); "
            "replacing the workers",
            version=self.version,
            previous=previous,
            count=self.upgrades,
        )
        self.phase = UpgradePhase.REPLACING_WORKERS
        restart: Deferred[int] = self._master.supervisor.restartAll()
        restart.addBoth(self._replaced, previous)

    def _replaced(self, result: object, previous: str) -> None:
        self.phase = UpgradePhase.IDLE
        kept = len(self._master.supervisor.staleWorkers(set()))
        if isinstance(result, Failure) or not self._master.supervisor.running:
            self._outcome("done", "the master stopped before every worker was replaced", source=previous)
        elif kept:
            reason = f"{kept} workers still run the old code: their replacements failed to boot"
            self._outcome("done, old workers kept", reason, source=previous)
        else:
            # Done once no old worker accepts any more (under none and
            # reuseport one does until it has closed its listens).
            self._oldWorkersGone().addBoth(
                lambda _: self._outcome("done", f"{result} workers replaced", source=previous)
            )

    def _oldWorkersGone(self) -> Deferred[None]:
        """
        Fires once no worker of an older generation listens any more (or
        after the shutdown timeout).
        """
        master = self._master
        started = self._reactor.seconds()

        def listening() -> bool:
            generation = master.supervisor.generation
            old = {w for w in master.supervisor.workers.values() if w.generation < generation}
            return any(old & master.handles.listeningOn(handle.key) for handle in master.handles)

        def look() -> None:
            if not listening() or self._reactor.seconds() - started > master.limits.shutdownTimeout:
                poll.stop()

        poll = LoopingCall(look)
        poll.clock = self._reactor
        return poll.start(0.02, now=True).addCallback(lambda _: None)

    # Outcomes

    #: How each outcome is logged.
    _said = {
        "refused": (LogLevel.warn, "upgrade refused: {reason}"),
        "failed": (LogLevel.error, "upgrade failed, the old code serves on: {reason}"),
        "rolled back": (
            LogLevel.error,
            "upgrade rolled back: the new master failed before it resumed ({reason}); "
            "twistcluster {version} serves again",
        ),
        "done": (LogLevel.info, "upgrade done: every process runs twistcluster {version} ({reason})"),
        "done, old workers kept": (LogLevel.error, "upgrade done, but {reason}"),
    }

    def _outcome(
        self, result: str, reason: str, source: str | None = None, record: bool = True
    ) -> dict[str, Any]:
        outcome = {
            "result": result,
            "reason": reason,
            "from": source or self.version,
            "to": self.version,
            "time": time.time(),
        }
        if record:
            self.last = outcome
            self._master.notifier.reloaded(self._master.statusText())
        if self.resumption is not None and result in ("done", "done, old workers kept", "rolled back"):
            self._resumed.fire(outcome)
        level, text = self._said[result]
        self._log.emit(
            level,
            text,
            reason=reason,
            version=self.version,
            previous=outcome["from"],
            upgradeResult=result,
            clusterEvent="upgrade",
        )
        return outcome

    def _answer(self, outcome: dict[str, Any]) -> None:
        self._attempt.fire(outcome)
