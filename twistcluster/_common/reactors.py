# -*- test-case-name: tests.test_reactors -*-
"""
The reactors twistcluster's parts are given, named by what each part uses.

A part that uses one of Twisted's reactor interfaces is typed by it
(C{IReactorTime} for a clock, C{IReactorCore} for a shutdown trigger); a
part that uses several is typed by one of these intersections, as
C{twisted.trial._dist.disttrial}'s C{IDistTrialReactor} is:

  - L{IAdoptingReactor}: adopts a socket;
  - L{IAcceptingReactor}: runs twistcluster's accept loop (a port);
  - L{IServingReactor}: serves on a listening socket the master sent;
  - L{IEndpointReactor}: listens on a server endpoint string;
  - L{IOperatorReactor}: the operator's services (control socket, metrics);
  - L{ISpawningReactor}: brings workers into the master (the spawner, an
    upgrade taking over the workers of the image before);
  - L{IMasterReactor}: the master's engine, under either face;
  - L{ICommandLineReactor}: C{twist cluster}'s master, engine and operators;
  - L{IWorkerReactor}: a worker's runtime;
  - L{IClusterReactor}: the C{cluster} object, which is either face.

No reactor declares these intersections: L{narrowed} checks that a reactor
provides each interface one extends before it is typed by it.
"""

from __future__ import annotations

from typing import TypeVar, cast

from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFDSet,
    IReactorFromThreads,
    IReactorProcess,
    IReactorSocket,
    IReactorTCP,
    IReactorTime,
    IReactorUNIX,
)
from zope.interface import Interface
from zope.interface.interface import InterfaceClass

_Narrowed = TypeVar("_Narrowed")


class IAdoptingReactor(IReactorSocket, IReactorFDSet):
    """
    Adopts a socket as a port or a connection: with Twisted's own
    C{IReactorSocket}, or with twistcluster's ports and transports, which
    run on C{IReactorFDSet}.
    """


class IAcceptingReactor(IReactorFDSet, IReactorTime):
    """
    Runs twistcluster's accept loop (L{twistcluster._common.acceptloop}): it
    reads the listening socket, and waits a moment before accepting again
    when descriptors run out; the master's hand-off ports time the workers'
    answers too.
    """


class IServingReactor(IAdoptingReactor, IAcceptingReactor):
    """
    Serves on a listening socket the master sent a worker: adopts it as a
    port (Twisted's for datagrams, twistcluster's accept loop for streams).
    """


class IEndpointReactor(IReactorTCP, IReactorUNIX, IAdoptingReactor):
    """
    Listens on an endpoint description: C{serverFromString}'s C{tcp:},
    C{unix:}, C{systemd:} (and C{ssl:}, with C{IReactorSSL}, which a reactor
    provides when TLS is installed), or adopts the socket an earlier image
    of the master listened on (an upgrade).
    """


class IOperatorReactor(IEndpointReactor, IReactorTime):
    """
    The operator's services': they listen on endpoints (the control socket,
    C{--metrics}, C{--agent}) and time the workers' answers.
    """


class ISpawningReactor(IReactorProcess, IReactorFDSet, IReactorTime):
    """
    Brings workers into the master: it spawns a worker (or takes over one an
    earlier image of the master spawned), adopts the master's end of its
    control channel, and times its exit.
    """


class IMasterReactor(ISpawningReactor, IAcceptingReactor, IReactorCore, IReactorFromThreads):
    """
    The master's engine, under either face (the command line's service, the
    API's primary): it spawns, accepts (the hand-off), runs and stops, and
    handles signals on the reactor's thread.
    """


class ICommandLineReactor(IMasterReactor, IOperatorReactor):
    """
    C{twist cluster}'s master: its engine and its operator's services.
    """


class IWorkerReactor(IServingReactor, IReactorCore, IReactorFromThreads):
    """
    A worker's: it adopts its end of the control channel and the sockets the
    master hands it, serves on the listening sockets it sends, times its
    drain, and handles signals on the reactor's thread.
    """


class IClusterReactor(IMasterReactor, IWorkerReactor):
    """
    The C{cluster} object's: the process is a primary or a worker.
    """


def narrowed(reactor: object, interface: type[_Narrowed]) -> _Narrowed:
    """
    C{reactor}, typed by C{interface}, one of this module's intersections.

    @raise TypeError: C{reactor} does not provide one of the interfaces that
        C{interface} extends; the message names them.
    """
    extended = cast(InterfaceClass, interface).__iro__
    missing = [
        each.__name__
        for each in extended
        if each.__module__ != __name__ and each is not Interface and not each.providedBy(reactor)
    ]
    if missing:
        raise TypeError(f"{type(reactor).__name__} does not provide {', '.join(missing)}")
    return cast(_Narrowed, reactor)
