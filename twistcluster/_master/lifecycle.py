# -*- test-case-name: tests.test_lifecycle -*-
"""
A worker's life as the master sees it, as one explicit state machine:

    spawning → online → listening (ready) → disconnecting → disconnected → dead

with the control channel's loss (C{disconnected}) and the process's exit
(C{dead}) possible from any state, in either order.
"""

from __future__ import annotations

import signal as _signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from automat import TypeMachineBuilder, pep614

#: Node's names of the states a worker the master still lists can be in (what
#: the status's C{state} and the C{twistcluster_workers} metric's label say).
LIVING_STATES = ("spawning", "online", "listening", "disconnecting", "disconnected")


class Lifecycle(Protocol):
    """
    What happens to a worker.
    """

    def online(self) -> None:
        """
        The worker said it is online.
        """

    def listening(self) -> None:
        """
        The worker serves one of its listens (the first makes it ready).
        """

    def disconnect(self) -> None:
        """
        The master wants the worker gone: it closes its servers, finishes its
        connections, and exits.
        """

    def controlLost(self) -> None:
        """
        The control channel closed.
        """

    def exited(self, code: int | None, signal: _signal.Signals | None) -> None:
        """
        The process ended.
        """

    # A worker an earlier image of the master spawned (an upgrade): it comes
    # into this one where it was.

    def adoptOnline(self) -> None: ...

    def adoptListening(self) -> None: ...

    def adoptDisconnecting(self) -> None: ...

    def adoptDisconnected(self) -> None: ...


class LifecycleHooks(Protocol):
    """
    The side effects of a worker's transitions, carried out by the master's
    L{twistcluster._master.worker.Worker}.
    """

    def becameOnline(self) -> None: ...

    def becameReady(self) -> None: ...

    def beganDisconnect(self, connected: bool) -> None: ...

    def lostControl(self) -> None: ...

    def ended(self, code: int | None, signal: _signal.Signals | None) -> None: ...

    def adopted(self) -> None: ...


@dataclass
class LifecycleCore:
    """
    What the machine knows, and the answers callers get from it (nobody else
    reads C{state}'s words).

    @ivar state: Node's name for the current state.
    @ivar everReady: Whether it ever became ready.
    """

    hooks: LifecycleHooks
    state: str = "spawning"
    everReady: bool = False

    def isBooting(self) -> bool:
        return self.state in ("spawning", "online")

    def isReady(self) -> bool:
        return self.state == "listening"

    def isServing(self) -> bool:
        return self.state in ("spawning", "online", "listening")

    def acceptsListens(self) -> bool:
        return self.state in ("online", "listening")

    def isConnected(self) -> bool:
        return self.state not in ("disconnected", "dead")

    def isOnline(self) -> bool:
        return self.state in ("online", "listening", "disconnecting")

    def isDead(self) -> bool:
        return self.state == "dead"

    def isLeaving(self) -> bool:
        """
        Was it told to leave, or did it lose its channel (and is alive)?
        """
        return self.state in ("disconnecting", "disconnected")


def adoptCarried(lifecycle: Lifecycle, state: str) -> None:
    """
    Bring a new worker's C{lifecycle} (still spawning) to C{state}, the
    L{LifecycleCore.state} an earlier image of the master carried across an
    upgrade.  A worker carried while spawning stays so.
    """
    adopt = {
        "online": lifecycle.adoptOnline,
        "listening": lifecycle.adoptListening,
        "disconnecting": lifecycle.adoptDisconnecting,
        "disconnected": lifecycle.adoptDisconnected,
    }.get(state)
    if adopt is not None:
        adopt()


def _adopter(state: str) -> Callable[[Lifecycle, LifecycleCore], None]:
    def adopted(lifecycle: Lifecycle, core: LifecycleCore) -> None:
        core.state = state
        core.hooks.adopted()

    return adopted


def _makeLifecycle() -> Callable[[LifecycleCore], Lifecycle]:
    machine = TypeMachineBuilder(Lifecycle, LifecycleCore)
    Spawning = machine.state("Spawning")
    Online = machine.state("Online")
    Listening = machine.state("Listening")
    Disconnecting = machine.state("Disconnecting")
    Disconnected = machine.state("Disconnected")
    Dead = machine.state("Dead")
    alive = (Spawning, Online, Listening, Disconnecting)

    @pep614(Spawning.upon(Lifecycle.online).to(Online))
    def online(lifecycle: Lifecycle, core: LifecycleCore) -> None:
        core.state = "online"
        core.hooks.becameOnline()

    @pep614(Online.upon(Lifecycle.listening).to(Listening))
    def ready(lifecycle: Lifecycle, core: LifecycleCore) -> None:
        core.state = "listening"
        core.everReady = True
        core.hooks.becameReady()

    for state in (Spawning, Online, Listening):

        @pep614(state.upon(Lifecycle.disconnect).to(Disconnecting))
        def disconnect(lifecycle: Lifecycle, core: LifecycleCore) -> None:
            core.state = "disconnecting"
            core.hooks.beganDisconnect(connected=True)

    @pep614(Disconnected.upon(Lifecycle.disconnect).loop())
    def disconnectUnreachable(lifecycle: Lifecycle, core: LifecycleCore) -> None:
        core.hooks.beganDisconnect(connected=False)

    for state in alive:

        @pep614(state.upon(Lifecycle.controlLost).to(Disconnected))
        def lost(lifecycle: Lifecycle, core: LifecycleCore) -> None:
            core.state = "disconnected"
            core.hooks.lostControl()

        @pep614(state.upon(Lifecycle.exited).to(Dead))
        def exitedWithControl(
            lifecycle: Lifecycle, core: LifecycleCore, code: int | None, signal: _signal.Signals | None
        ) -> None:
            # The channel is as good as gone: "disconnected" while its hook runs.
            core.state = "disconnected"
            core.hooks.lostControl()
            core.state = "dead"
            core.hooks.ended(code, signal)

    @pep614(Disconnected.upon(Lifecycle.exited).to(Dead))
    def exited(
        lifecycle: Lifecycle, core: LifecycleCore, code: int | None, signal: _signal.Signals | None
    ) -> None:
        core.state = "dead"
        core.hooks.ended(code, signal)

    for adopt, target, name in (
        (Lifecycle.adoptOnline, Online, "online"),
        (Lifecycle.adoptListening, Listening, "listening"),
        (Lifecycle.adoptDisconnecting, Disconnecting, "disconnecting"),
        (Lifecycle.adoptDisconnected, Disconnected, "disconnected"),
    ):
        Spawning.upon(adopt).to(target)(_adopter(name))

    # Late or repeated news changes nothing.
    Online.upon(Lifecycle.online).loop().returns(None)
    Listening.upon(Lifecycle.listening).loop().returns(None)
    Disconnecting.upon(Lifecycle.disconnect).loop().returns(None)
    for state in (Listening, Disconnecting, Disconnected, Dead):
        state.upon(Lifecycle.online).loop().returns(None)
    for state in (Spawning, Disconnecting, Disconnected, Dead):
        state.upon(Lifecycle.listening).loop().returns(None)
    Disconnected.upon(Lifecycle.controlLost).loop().returns(None)
    Dead.upon(Lifecycle.controlLost).loop().returns(None)
    Dead.upon(Lifecycle.disconnect).loop().returns(None)
    Dead.upon(Lifecycle.exited).loop().returns(None)
    return machine.build()


makeLifecycle = _makeLifecycle()
