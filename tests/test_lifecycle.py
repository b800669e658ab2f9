from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twistcluster._master.lifecycle import Lifecycle, LifecycleCore, adoptCarried, makeLifecycle


class Hooks:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def becameOnline(self) -> None:
        self.calls.append(("online",))

    def becameReady(self) -> None:
        self.calls.append(("ready",))

    def beganDisconnect(self, connected: bool) -> None:
        self.calls.append(("disconnect", connected))

    def lostControl(self) -> None:
        self.calls.append(("lostControl",))

    def ended(self, code, signal) -> None:
        self.calls.append(("ended", code, signal))

    def adopted(self) -> None:
        self.calls.append(("adopted",))


class LifecycleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.hooks = Hooks()
        self.core = LifecycleCore(self.hooks)
        self.lifecycle = makeLifecycle(self.core)

    def test_ordinaryLife(self) -> None:
        states = []
        for step in (
            self.lifecycle.online,
            self.lifecycle.listening,
            self.lifecycle.listening,
            self.lifecycle.disconnect,
            self.lifecycle.controlLost,
            lambda: self.lifecycle.exited(0, None),
        ):
            step()
            states.append(self.core.state)
        self.assertEqual(
            states, ["online", "listening", "listening", "disconnecting", "disconnected", "dead"]
        )
        self.assertEqual(
            self.hooks.calls,
            [("online",), ("ready",), ("disconnect", True), ("lostControl",), ("ended", 0, None)],
        )

    def test_exitBeforeChannelCloses(self) -> None:
        """
        The process may end before its channel is seen to close: the worker
        is taken out of rotation once, and late news changes nothing.
        """
        self.lifecycle.online()
        self.lifecycle.listening()
        self.lifecycle.exited(None, 9)
        self.lifecycle.controlLost()
        self.lifecycle.disconnect()
        self.lifecycle.listening()
        self.assertEqual(self.core.state, "dead")
        self.assertEqual(self.hooks.calls[2:], [("lostControl",), ("ended", None, 9)])

    def test_disconnectWhileSpawning(self) -> None:
        self.lifecycle.disconnect()
        self.assertEqual(self.core.state, "disconnecting")
        self.lifecycle.online()
        self.lifecycle.listening()
        self.assertEqual(self.core.state, "disconnecting")
        self.assertNotIn(("ready",), self.hooks.calls)

    def test_disconnectAfterChannelLost(self) -> None:
        """
        A worker whose channel is gone cannot be told to leave; it is only
        given the kill timer.
        """
        self.lifecycle.online()
        self.lifecycle.controlLost()
        self.lifecycle.disconnect()
        self.assertEqual(self.hooks.calls[-1], ("disconnect", False))


class AdoptCarriedTests(SynchronousTestCase):
    """
    A worker carried across a master upgrade comes into the new image's
    lifecycle in the state it was in.
    """

    def adopt(self, state: str) -> tuple[Hooks, LifecycleCore, Lifecycle]:
        hooks = Hooks()
        core = LifecycleCore(hooks)
        lifecycle = makeLifecycle(core)
        adoptCarried(lifecycle, state)
        return hooks, core, lifecycle

    def test_eachCarriedState(self) -> None:
        for state, ready, serving, leaving in (
            ("online", False, True, False),
            ("listening", True, True, False),
            ("disconnecting", False, False, True),
            ("disconnected", False, False, True),
        ):
            hooks, core, _ = self.adopt(state)
            self.assertEqual(
                (core.state, core.isReady(), core.isServing(), core.isLeaving(), hooks.calls),
                (state, ready, serving, leaving, [("adopted",)]),
                state,
            )

    def test_spawningStaysSpawning(self) -> None:
        hooks, core, _ = self.adopt("spawning")
        self.assertEqual((core.state, core.isLeaving(), hooks.calls), ("spawning", False, []))

    def test_adoptedWorkerLivesOn(self) -> None:
        """
        An adopted ready worker is told to leave as any other, and its
        repeated news changes nothing.
        """
        hooks, core, lifecycle = self.adopt("listening")
        lifecycle.listening()
        lifecycle.disconnect()
        self.assertEqual((core.state, hooks.calls), ("disconnecting", [("adopted",), ("disconnect", True)]))
