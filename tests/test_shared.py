"""
Sockets the master binds for workers to accept on themselves (none,
reuseport, UDP), and UNIX socket files: real sockets, no processes.
"""

from __future__ import annotations

import errno
import os
import socket

from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests._cluster import temporaryPath
from twistcluster._common.endpoints import ListenSpec
from twistcluster._common.ports import AdoptedUNIXPort
from twistcluster._common.sockets import removeStaleSocketFile
from twistcluster._common.twistedinternals import adoptUNIXPort
from twistcluster._master.sharedhandles import ReusePortHandle, SharedHandle


def openDescriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


class Worker:
    def __init__(self, id: int, slot: int | None = None) -> None:
        self.id = id
        self.slot = slot


def connects(address: object, family: int = socket.AF_INET) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(5)
        try:
            client.connect(address)
        except ConnectionRefusedError:
            return False
    return True


class SharedHandleTests(SynchronousTestCase):
    def test_lendsUntilTheWorkerHasIt(self) -> None:
        """
        Each worker's answer carries a descriptor of the one socket, which
        the master keeps open until the worker says it listens (or stops, or
        is gone): sendmsg runs after the answer is written.
        """
        handle = SharedHandle("k", ListenSpec.forTCP(0, interface="127.0.0.1"))
        self.addCleanup(handle.stopAccepting)
        before = openDescriptors()
        one, two = Worker(1), Worker(2)
        answers = [handle.answer(one), handle.answer(two)]
        # The socket, and the table of open connections (TCP under none).
        self.assertEqual(openDescriptors(), before + 4)
        for answer in answers:
            fd, balance = answer["fds"]
            with socket.socket(fileno=os.dup(fd)) as lent:
                self.assertEqual(lent.getsockname()[1], handle.sockname["port"])
            self.assertEqual((answer["key"], answer["reportClosed"]), ("k", False))
            self.assertEqual(os.readlink(f"/proc/self/fd/{balance}"), "/memfd:twistcluster-balance (deleted)")
        self.assertEqual(sorted(a["balanceSlot"] for a in answers), [1, 2])
        handle.add(one)
        handle.remove(two)
        handle.remove(two)
        self.assertEqual(openDescriptors(), before)

    def test_unixFileRemovedOnlyIfBound(self) -> None:
        """
        The master removes the socket file it bound when it stops, with its
        mode as configured; not one it inherited.
        """
        path = temporaryPath(self)
        handle = SharedHandle("k", ListenSpec.forUNIX(path, mode=0o640))
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o640)
        self.assertTrue(connects(path, socket.AF_UNIX))
        handle.stopAccepting()
        self.assertFalse(os.path.exists(path))

        inherited = socket.socket(socket.AF_UNIX)
        self.addCleanup(inherited.close)
        inherited.bind(path)
        inherited.listen()
        handle = SharedHandle("k", ListenSpec("unix", path, fd=inherited.fileno()))
        handle.stopAccepting()
        self.assertTrue(connects(path, socket.AF_UNIX))

    def test_datagram(self) -> None:
        handle = SharedHandle("k", ListenSpec.forUDP(0, "127.0.0.1"))
        self.addCleanup(handle.stopAccepting)
        (fd,) = handle.answer(Worker(1))["fds"]
        with socket.socket(fileno=os.dup(fd)) as lent:
            self.assertEqual(lent.type, socket.SOCK_DGRAM)
        handle.closeWaiting()


class ReusePortHandleTests(SynchronousTestCase):
    def test_oneSocketPerWorkerOnOnePort(self) -> None:
        """
        Each worker gets its own socket, all on the port the kernel chose for
        the first; none listens until its worker listens on it (the answer
        says with which backlog), so no connection is queued on a socket no
        worker serves, nor on the master's own, which only holds the address.
        """
        handle = ReusePortHandle("k", ListenSpec.forTCP(0, interface="127.0.0.1", backlog=77))
        self.addCleanup(handle.closeWaiting)
        self.addCleanup(handle.stopAccepting)
        address = ("127.0.0.1", handle.sockname["port"])
        self.assertFalse(connects(address))
        answers = [handle.answer(Worker(i)) for i in (1, 2)]
        lent = [socket.socket(fileno=os.dup(answer["fds"][0])) for answer in answers]
        for sock, answer in zip(lent, answers):
            self.addCleanup(sock.close)
            self.assertEqual(sock.getsockname(), address)
            self.assertFalse(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
            self.assertEqual(answer["listenBacklog"], 77)
        self.assertNotEqual(os.fstat(lent[0].fileno()).st_ino, os.fstat(lent[1].fileno()).st_ino)
        self.assertFalse(connects(address))
        lent[0].listen(answers[0]["listenBacklog"])
        self.assertTrue(connects(address))

    def test_aReplacementTakesOverItsSlotsSocket(self) -> None:
        """
        The worker that replaces another in its slot is lent the same socket
        (its queue is served on, never reset), which the master keeps for as
        long as a worker of the slot is there; a worker that leaves with no
        replacement, or dies, takes its socket along.
        """
        handle = ReusePortHandle("k", ListenSpec.forTCP(0, interface="127.0.0.1"))
        self.addCleanup(handle.closeWaiting)
        self.addCleanup(handle.stopAccepting)

        def inode(worker: Worker) -> int:
            with socket.socket(fileno=os.dup(handle.answer(worker)["fds"][0])) as lent:
                return os.fstat(lent.fileno()).st_ino

        old, other = Worker(1, slot=0), Worker(2, slot=1)
        sockets = {0: inode(old), 1: inode(other)}
        self.assertNotEqual(sockets[0], sockets[1])
        new = Worker(3, slot=0)
        self.assertEqual(inode(new), sockets[0])
        handle.retire(old)
        kept = {k.slot: os.fstat(k.socket.fileno()).st_ino for k in handle.keptSockets()}
        self.assertEqual(kept, sockets)
        # Slot 1's worker leaves with no replacement: the master lets go.
        handle.retire(other)
        self.assertEqual([k.slot for k in handle.keptSockets()], [0])
        handle.remove(new)
        self.assertEqual(handle.keptSockets(), [])
        self.assertNotEqual(inode(Worker(4, slot=0)), sockets[0])


class StaleSocketFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = temporaryPath(self)

    def test_staleRemoved(self) -> None:
        dead = socket.socket(socket.AF_UNIX)
        dead.bind(self.path)
        dead.close()
        removeStaleSocketFile(self.path)
        self.assertFalse(os.path.exists(self.path))

    def test_liveKept(self) -> None:
        live = socket.socket(socket.AF_UNIX)
        self.addCleanup(live.close)
        live.bind(self.path)
        live.listen()
        error = self.assertRaises(CannotListenError, removeStaleSocketFile, self.path)
        self.assertEqual(error.socketError.errno, errno.EADDRINUSE)
        self.assertTrue(connects(self.path, socket.AF_UNIX))

    def test_notASocketKept(self) -> None:
        with open(self.path, "w") as f:
            f.write("precious")
        error = self.assertRaises(CannotListenError, removeStaleSocketFile, self.path)
        self.assertIn("not a socket", str(error))
        with open(self.path) as f:
            self.assertEqual(f.read(), "precious")


class AdoptedUNIXPortTests(SynchronousTestCase):
    def test_leavesTheSharedSocketAlone(self) -> None:
        """
        A worker that stops serving a shared UNIX socket closes its copy
        only: no shutdown() (which would end the socket for every worker), no
        chmod, no removal of the file.
        """
        path = temporaryPath(self)
        shared = socket.socket(socket.AF_UNIX)
        self.addCleanup(shared.close)
        shared.bind(path)
        os.chmod(path, 0o600)
        shared.listen()
        reactor = MemoryReactorClock()
        port = adoptUNIXPort(AdoptedUNIXPort, reactor, shared.fileno(), Factory.forProtocol(Protocol))
        port.startListening()
        self.assertIn(port, reactor.getReaders())
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        port.stopListening()
        reactor.advance(0)
        self.assertNotIn(port, reactor.getReaders())
        self.assertTrue(os.path.exists(path))
        self.assertTrue(connects(path, socket.AF_UNIX))
