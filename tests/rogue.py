"""
A FACTORY for `twist cluster` whose one worker misbehaves on its control
channel on cue, while it (and every other worker) serves WhoAmI.

The worker whose id is C{$ROGUE_WORKER} polls for the file
C{$ROGUE_TRIGGER}; once it exists, it does C{$ROGUE} to its channel, prints
C{rogue worker N: NAME} on stdout, and goes on serving.  See
tests._rogue for the test side and MISBEHAVIOURS for what each does.

Imports the reactor only inside the worker: the master loads this module
too, before twist installs its reactor.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet.protocol import Factory
from twisted.protocols import amp

from tests.clusterapps import WhoAmI

#: Bytes a misbehaviour that floods the channel sends at most.
FLOOD_LIMIT = 96 << 20


def say(text: str) -> None:
    sys.stdout.write(f"rogue worker {os.environ.get('TWISTCLUSTER_WORKER_ID')}: {text}\n")
    sys.stdout.flush()


def control() -> Any:
    """
    This worker's end of its control channel (a test may reach in).
    """
    from twistcluster import cluster

    return cluster.worker._runtime._control  # type: ignore[union-attr]


def repeat(step: Callable[[], bool], interval: float = 0.005) -> None:
    """
    Call C{step} every C{interval} seconds until it returns False.
    """
    from twisted.internet.task import LoopingCall

    def run() -> None:
        if not step():
            loop.stop()

    loop = LoopingCall(run)
    loop.start(interval)


def garbage() -> None:
    """
    Bytes that are not AMP.
    """
    control().transport.write(b"\xff\xfe not a box " * 256)


def oversized() -> None:
    """
    One box that never ends: key after key, each with a 64 KiB value.
    """
    channel = control()
    sent = [0]
    value = b"x" * 0xFFFF

    def step() -> bool:
        if channel.transport is None or sent[0] > FLOOD_LIMIT:
            say(f"stopped after {sent[0]} bytes of one box")
            return False
        chunk = b"".join(b"\x00\x08k%07d\xff\xff" % (sent[0] // 0x10000 + i) + value for i in range(16))
        channel.transport.write(chunk)
        sent[0] += len(chunk)
        return True

    repeat(step)


class Bogus(amp.Command):
    commandName = b"bogus"
    arguments = [(b"payload", amp.String())]
    response: list[tuple[bytes, amp.Argument]] = []


def unknown() -> None:
    """
    Commands the master does not know, and a known one with arguments it
    cannot parse; then serve on.
    """
    channel = control()
    errors = [0]

    def counted(reason: Any) -> None:
        errors[0] += 1
        if errors[0] == 1000:
            say(f"{errors[0]} errors answered")

    for _ in range(1000):
        channel.callRemote(Bogus, payload=b"?").addErrback(counted)
    # No _ask: the rogue wants no answer it would not know what to do with.
    box = amp.AmpBox({b"_command": b"listening", b"key": b"k", b"address": b"{no"})
    channel.transport.write(box.serialize())


def descriptors() -> None:
    """
    10,000 descriptors nobody asked for, each with a harmless box.
    """
    from twistcluster._common.protocol import ConnectionsClosed

    channel = control()
    readEnd, writeEnd = os.pipe()
    sent = [0]

    def step() -> bool:
        for _ in range(250):
            channel.transport.sendFileDescriptor(readEnd)
            channel.callRemote(ConnectionsClosed, key="rogue", count=0)
        sent[0] += 250
        if sent[0] >= 10_000:
            say(f"sent {sent[0]} descriptors")
            return False
        return True

    repeat(step, 0.01)


def endlessMessage() -> None:
    """
    Chunks of one user message, more and more, never the last one (as fast
    as the master answers them).
    """
    from twistcluster._common.protocol import Message

    channel = control()
    chunk = b"x" * (60 * 1024)
    state = {"sent": 0, "refused": 0, "waiting": 0}

    def answered(result: Any) -> None:
        state["waiting"] -= 1
        if not isinstance(result, dict):
            state["refused"] += 1

    def step() -> bool:
        if channel.transport is None or (state["sent"] >= FLOOD_LIMIT and not state["waiting"]):
            say(f"sent {state['sent']} bytes of one message; {state['refused']} chunks refused")
            return False
        while state["waiting"] < 64 and state["sent"] < FLOOD_LIMIT:
            state["waiting"] += 1
            state["sent"] += len(chunk)
            channel.callRemote(Message, id=999, chunk=chunk, more=True).addBoth(answered)
        return True

    repeat(step)


def noAck() -> None:
    """
    Keep answering the heartbeat, but never answer a hand-off (and hold on
    to the sockets).
    """
    channel = control()
    held: list[Any] = []
    # Every box the worker's channel reads goes through rawBoxReceived (a
    # hand-off's short path, and AMP's way).
    received = channel.rawBoxReceived

    def rawBoxReceived(box: dict[bytes, bytes]) -> None:
        if box.get(b"_command") == b"newconn":
            held.append(box)
            return
        received(box)

    channel.rawBoxReceived = rawBoxReceived


def lendHoard() -> None:
    """
    Ask the master for the socket of the listen it was configured with, 50
    times over, keep every socket it lends, and never listen on one (under
    C{reuseport}: each is a socket of its own on the port).
    """
    from twistcluster._common.endpoints import ListenSpec
    from twistcluster._common.protocol import QueryServer

    channel = control()
    spec = ListenSpec.forTCP(0, interface="127.0.0.1").toJSON()  # as tests._rogue.LOCAL
    hoard: list[int] = []

    def kept(answer: dict[str, Any]) -> None:
        hoard.extend(fd for fd in answer.get("fds") or () if fd is not None)
        if len(hoard) == 50:
            say("hoarding 50 lent sockets")

    for _ in range(50):
        channel.callRemote(QueryServer, spec=spec, index=0).addCallback(kept)


def listenMany() -> None:
    """
    Ask the master for 3000 more listens on the address it was configured
    with, each at a new index (an honest command-line worker makes such
    listens in itself: tests.test_runtime_listens).
    """
    from twisted.internet.defer import gatherResults

    from twistcluster._common.endpoints import ListenSpec
    from twistcluster._common.protocol import QueryServer

    channel = control()
    spec = ListenSpec.forTCP(0, interface="127.0.0.1").toJSON()  # as tests._rogue.LOCAL
    outcomes: list[object] = []
    queries = [
        channel.callRemote(QueryServer, spec=spec, index=index).addCallbacks(
            lambda answer: outcomes.append(True), lambda f: outcomes.append(f.getErrorMessage())
        )
        for index in range(1, 3001)
    ]

    def done(_: object) -> None:
        refused = [o for o in outcomes if o is not True]
        say(f"listened: {outcomes.count(True)} granted, {len(refused)} refused; first: {refused[0]}")

    gatherResults(queries).addCallback(done)


MISBEHAVIOURS: dict[str, Callable[[], None]] = {
    "listen-many": listenMany,
    "lend-hoard": lendHoard,
    "garbage": garbage,
    "oversized": oversized,
    "unknown": unknown,
    "descriptors": descriptors,
    "endless-message": endlessMessage,
    "no-ack": noAck,
}


class RogueFactory(Factory):
    protocol = WhoAmI

    def startFactory(self) -> None:
        if os.environ.get("TWISTCLUSTER_WORKER_ID") != os.environ.get("ROGUE_WORKER"):
            return
        trigger, name = os.environ["ROGUE_TRIGGER"], os.environ["ROGUE"]

        def check() -> bool:
            if not os.path.exists(trigger):
                return True
            MISBEHAVIOURS[name]()
            say(name)
            return False

        repeat(check, 0.05)
