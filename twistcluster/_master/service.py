# -*- test-case-name: tests.test_cluster, tests.test_resilience, tests.test_agent -*-
"""
The master: it owns the listening sockets and the worker processes, and it
does what the signals users send it ask (L{twistcluster._master.signaldispatch}
says which signal asks what).
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._common.descriptors import raiseOpenFilesLimit
from .._common.endpoints import ListenSpec
from .._common.policies import SchedulingPolicy
from .._common.proctitle import setTitle
from .._common.reactors import IMasterReactor
from .._common.sockets import describeAddress
from .binding import StartupError, bindListens
from .carried import Launch, RunSpec
from .handles import Handle, Handles
from .limits import Limits
from .logfile import ReopenableLogFile
from .monitor import WorkerMonitor
from .phase import MasterPhase
from .relaunch import HELD_SIGNALS
from .resume import Resumption
from .sdnotify import ServiceNotifier
from .shutdown import shutDown
from .signaldispatch import SignalDispatch
from .spawner import Spawner, entryPointCommand
from .supervised import RestartCause
from .supervisor import Supervisor
from .upgrade import MasterUpgrade


class Master(Service):
    """
    The cluster's master process.

    @ivar handles: The listening sockets, by Node's key.
    @ivar supervisor: Keeps the worker processes serving.
    @ivar exitStatus: What the process exits with; non-zero once the master
        gave up.
    @ivar phase: Where it is in its life (L{MasterPhase}); others ask
        L{isStopping}.
    @ivar signals: The signals received, queued and dispatched.
    @ivar notifier: What the service manager hears (sd_notify).
    @ivar addresses: Every configured endpoint's bound address, once bound.
    @ivar _grantAny: Whether workers may listen anywhere (a clustered
        plugin whose endpoints the master cannot tell), not only on
        C{listens}.
    """

    _log = Logger()
    name = "master"

    def __init__(
        self,
        reactor: IMasterReactor,
        listens: Sequence[tuple[str, ListenSpec]],
        workerArguments: Sequence[str],
        workers: int,
        limits: Limits = Limits(),
        startupFailed: Callable[[str], object] | None = None,
        policy: SchedulingPolicy = SchedulingPolicy.RR,
        grantAny: bool = False,
        notifier: ServiceNotifier | None = None,
        logFile: ReopenableLogFile | None = None,
        title: Callable[[int], str] | None = None,
        passFDs: Mapping[int, int] | None = None,
        version: str = "",
        launch: Launch | None = None,
        previous: RunSpec | None = None,
        resumption: Resumption | None = None,
    ) -> None:
        """
        @param launch: How the operator started this master (to check an
            upgrade's new code with).
        @param previous: How to run this image's code again (real paths).
        @param resumption: What an earlier image of this master handed over
            (an upgrade): adopted instead of binding.
        """
        self._reactor = reactor
        self.notifier = notifier if notifier is not None else ServiceNotifier(reactor)
        self._logFile = logFile
        self._title = title
        self._policy = policy
        self.addresses: list[str] = []
        self._startupFailed = startupFailed
        self._listens = list(listens)
        self._limits = limits
        self._grantAny = grantAny
        self.exitStatus = 0
        granted = None if grantAny else [spec for _, spec in self._listens]
        self.handles = Handles(reactor, granted, policy, closeUnused=grantAny)
        self.spawner = Spawner(reactor, self.handles, limits.shutdownTimeout)
        self.supervisor = Supervisor(
            self.spawner,
            reactor,
            entryPointCommand(workerArguments, passFDs or {}),
            workers,
            gaveUp=self._gaveUp,
            maxConnections=limits.maxConnections,
        )
        self.supervisor.changed = self._workersChanged
        self._monitor = self._makeMonitor(reactor, limits)
        self._stopping = False
        self._draining: IDelayedCall | None = None
        self.phase = MasterPhase.RUNNING
        self.upgrade = MasterUpgrade(reactor, self, version, launch, previous, resumption)
        self.signals = SignalDispatch(reactor, self)

    def _makeMonitor(self, reactor: IMasterReactor, limits: Limits) -> WorkerMonitor:
        return WorkerMonitor(
            reactor,
            lambda: self.supervisor.workers.values(),
            hung=self.supervisor.workerHung,  # type: ignore[arg-type]
            tooBig=lambda worker, size: self.supervisor.retire(
                worker,  # type: ignore[arg-type]
                RestartCause.MEMORY,
                f"uses {size >> 20} MiB (limit {limits.maxMemory >> 20} MiB)",  # type: ignore[operator]
            ),
            workerTimeout=limits.workerTimeout,
            bootTimeout=limits.bootTimeout,
            maxMemory=limits.maxMemory,
            unansweredSince=self.handles.oldestUnanswered,  # type: ignore[arg-type]
        )

    def isStopping(self) -> bool:
        """
        Was a stop asked (the master is draining, or stopping)?  It takes no
        more commands, and is not ready.
        """
        return self.phase is not MasterPhase.RUNNING

    @property
    def policy(self) -> str:
        """The scheduling policy, by its option name."""
        return self.handles.policy.value

    @property
    def roundTrips(self) -> dict[int, float]:
        """Each ready worker's last heartbeat round-trip (seconds), by id."""
        return self._monitor.roundTrips

    def requestStop(self, by: str) -> None:
        """
        A graceful stop, as C{TERM} asks (a second one kills the workers).

        @param by: Who asked, for the log.
        """
        self._stopRequested(by)

    def startService(self) -> None:
        """
        Bind every configured endpoint now, so a bad address fails the start
        before any worker exists; spawn the workers once the reactor runs.

        @raise StartupError: An endpoint could not be bound (unless a
            C{startupFailed} handler was given, which is called instead).
        """
        before, limit = raiseOpenFilesLimit()
        self._log.info(
            "open files limit {limit}{raised}",
            limit=limit,
            raised=f" (raised from {before})" if limit != before else "",
        )
        if self.upgrade.resumption is not None:
            # An upgrade: a failure here runs the old code again.  RELOADING=1
            # went out from the old image: READY=1 once the upgrade is over.
            self.notifier.resumedReload()
            self._log.info("resuming: adopting the sockets and workers of the old master")
            for (description, spec), handle in zip(self._listens, self.upgrade.adopt(self._listens)):
                self._logBound(description, spec, handle, "adopted")
            super().startService()
            self._reactor.callWhenRunning(self._running)
            return
        try:
            self._bindAll()
        except StartupError as e:
            if self._startupFailed is None:
                raise
            self._startupFailed(str(e))
            return
        super().startService()
        self._reactor.callWhenRunning(self._running)

    def _bindAll(self) -> None:
        bindListens(self.handles, self._listens, self._logListening)
        if self._grantAny:
            self._log.info("workers may listen on any endpoint they ask for")

    def _logListening(self, description: str, spec: ListenSpec, handle: Handle) -> None:
        self._logBound(description, spec, handle, "listening")

    def _logBound(self, description: str, spec: ListenSpec, handle: Handle, how: str) -> None:
        self.addresses.append(describeAddress(spec, handle.sockname))
        self._log.info(
            "{how} on {description} at {address} (scheduling {scheduling})",
            how=how,
            description=description,
            address=describeAddress(spec, handle.sockname),
            scheduling=handle.scheduling,
            sockname=handle.sockname,
            clusterEvent="bound",
        )

    @property
    def limits(self) -> Limits:
        return self._limits

    def inheritedDescriptors(self) -> list[int]:
        """
        The listening sockets this master inherited (systemd's), under the
        numbers they came with.
        """
        return [spec.fd for _, spec in self._listens if spec.fd >= 0]

    def _running(self) -> None:
        self.signals.install()
        # A fault in the master (or SIGABRT sent to it) leaves its stack on
        # stderr before it dies.
        faulthandler.enable(2)  # fd 2: twist replaces sys.stderr with a logging file
        self._showTitle()
        self.notifier.starting()
        resumption = self.upgrade.resumption
        if resumption is not None:
            # Held across the exec; what arrived meanwhile comes now.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)
            for pending in resumption.state.signals:
                self.signals.signalled(pending)
            resumption.commit()
        self._workersChanged()
        self.supervisor.start()
        self._monitor.start()
        if resumption is not None:
            self.upgrade.resumed()

    def restartAll(self) -> Deferred[int]:
        """
        A rolling restart (C{HUP}, C{reload}) told to the service manager:
        a L{Deferred} of how many workers were replaced.
        """
        self.notifier.reload(self.statusText("reloading: "))

        def done(result: int | Failure) -> int | Failure:
            self.notifier.reloaded(self.statusText())
            return result

        return self.supervisor.restartAll().addBoth(done)

    def addWorker(self) -> None:
        """
        One worker more (C{TTIN}).
        """
        self.supervisor.grow()
        self._showTitle()
        self._workersChanged()

    def removeWorker(self) -> None:
        """
        One worker fewer (C{TTOU}).
        """
        self.supervisor.shrink()
        self._showTitle()
        self._workersChanged()

    def reopenLogs(self, by: str) -> None:
        """
        Reopen the log file at its path (after logrotate renamed it) and pass
        C{USR1} on to every worker: what C{SIGUSR1} and C{twistcluster
        reopen-logs} do; C{by} says which, in the log.
        """
        if self._logFile is not None:
            try:
                self._logFile.reopen()
            except OSError as e:
                self._log.error(
                    "{by}: cannot reopen the log file {path}: {error}; still logging to the old file",
                    by=by,
                    path=self._logFile.path,
                    error=e.strerror,
                )
            else:
                self._log.info("{by}: reopened the log file {path}", by=by, path=self._logFile.path)
        workers = list(self.supervisor.workers.values())
        for worker in workers:
            worker.kill("USR1")
        self._log.info("{by}: passed on to {count} workers", by=by, count=len(workers))

    def statusText(self, doing: str = "") -> str:
        """
        The cluster in one line, for the service manager's STATUS=.
        """
        where = ", ".join(self.addresses) or "no configured endpoint"
        ready, size, policy = self.supervisor.readyCount, self.supervisor.size, self._policy.value
        return f"{doing}{ready} workers ready ({size} configured, {policy}) on {where}"

    def _workersChanged(self) -> None:
        if self.isStopping():
            self.notifier.status(self.statusText(f"{self.phase.value}: "))
        elif self.notifier.reloading:
            self.notifier.status(self.statusText("reloading: "))
        elif self.supervisor.readyCount >= self.supervisor.size:
            self.notifier.isReady(self.statusText())
        else:
            self.notifier.status(self.statusText())

    def _showTitle(self) -> None:
        if self._title is not None:
            setTitle(self._title(self.supervisor.size))

    def _stopRequested(self, signame: str) -> None:
        # An upgrade not yet handed over is dropped.
        self.upgrade.stopRequested()
        if not self.isStopping():
            # A graceful stop begins (the drain delay included).
            self.notifier.stopping(self.statusText("stopping: "))
        if not self.isStopping() and self._limits.drainDelay > 0:
            self.phase = MasterPhase.DRAINING
            self._log.info(
                "{signal}: draining for {delay}s (still accepting), then stopping gracefully",
                signal=signame,
                delay=self._limits.drainDelay,
            )
            self._draining = self._reactor.callLater(self._limits.drainDelay, self._drained)
        elif not self._stopping:
            self.phase = MasterPhase.STOPPING
            self._log.info("{signal}: stopping gracefully", signal=signame)
            self._reactor.stop()
        else:
            self._log.warn("{signal} again: killing the workers now", signal=signame)
            self.supervisor.killAll()

    def _drained(self) -> None:
        self.phase = MasterPhase.STOPPING
        self._log.info("drain delay over: stopping gracefully")
        self._reactor.stop()

    def _gaveUp(self, reason: str) -> None:
        self._log.critical("giving up: {reason}", reason=reason)
        # The process's own stderr, as for a bad FACTORY (twist sends
        # sys.stderr to the log).
        stderr = sys.__stderr__ or sys.stderr
        stderr.write(f"twist cluster: error: {reason}\n")
        stderr.flush()
        self.notifier.stopping(f"giving up: {reason}")
        self.exitStatus = 1
        # twist has no way to set the exit status: leave with it once the
        # orderly shutdown (workers gone, sockets closed) is done.
        self._reactor.addSystemEventTrigger("after", "shutdown", self._exit)
        if not self._stopping:
            self._reactor.stop()

    def _exit(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(self.exitStatus)

    @inlineCallbacks
    def stopService(self) -> Any:
        """
        Stop accepting, let queued connections reach a worker, then let every
        worker finish its connections (up to the shutdown timeout).
        """
        self.notifier.stopping(self.statusText("stopping: "))
        self._stopping = True
        self.phase = MasterPhase.STOPPING
        self.upgrade.stopRequested()
        if self._draining is not None and self._draining.active():
            self._draining.cancel()
        super().stopService()
        self._monitor.stop()
        self._log.info(
            "no longer accepting; workers finish their connections (up to {timeout}s)",
            timeout=self._limits.shutdownTimeout,
        )
        # Nothing is replaced from now on; the rest is the API's primary's
        # shutdown too.
        self.supervisor.halt()
        supervisor = self.supervisor
        yield shutDown(
            self.handles, lambda: supervisor.workers.values(), self._reactor, self._limits.shutdownTimeout
        )
        self.notifier.close()
        self._log.info("stopped")
