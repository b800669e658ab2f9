# -*- test-case-name: tests.test_signals -*-
"""
Every signal the master may receive, and what it does with it.  Nothing
kills the master silently:

    TERM, INT, QUIT      graceful stop (a second one: stop now)
    HUP                  rolling restart
    TTIN, TTOU           one worker more, one fewer
    USR1                 reopen the log file, and pass it on to the workers
    USR2                 the master upgrade
    ABRT, SEGV, BUS,     faults: faulthandler writes the master's stack to
    ILL, FPE             stderr, then the process dies of the signal
    KILL, STOP           cannot be caught
    CHLD, CONT, TSTP,    their usual meaning (CHLD is the reactor's; TSTP
    WINCH, URG, PIPE     and CONT are job control; the others are ignored)
    any other            (ALRM, VTALRM, PROF, IO, PWR, STKFLT, XCPU, XFSZ,
                         SYS, TRAP, the real-time signals): logged, ignored

(L{twistcluster._master.signaldispatch} does what each asks.)  Handlers are
Python functions, not C{SIG_IGN}: a disposition set to C{SIG_IGN} survives
C{exec}, and would be the workers' too.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

STOP = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})
COMMANDS = frozenset({signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2})
FAULTS = frozenset({signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE})
#: Left as they are: uncatchable, the reactor's, job control, or ignored by
#: default already.
LEFT_ALONE = frozenset(
    {
        signal.SIGKILL,
        signal.SIGSTOP,
        signal.SIGCHLD,
        signal.SIGCONT,
        signal.SIGTSTP,
        signal.SIGWINCH,
        signal.SIGURG,
        signal.SIGPIPE,
    }
)


def otherSignals() -> list[signal.Signals | int]:
    """
    The signals whose default action would end the master and which mean
    nothing to it: each is logged and ignored.
    """
    return sorted(signal.valid_signals() - STOP - COMMANDS - FAULTS - LEFT_ALONE)


def signalName(signum: int) -> str:
    """
    C{SIGHUP}, or C{SIGRTMIN+3} for a real-time signal.
    """
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIGRTMIN+{signum - signal.SIGRTMIN}"


def installMasterHandlers(handler: Callable[[int, Any], object]) -> None:
    """
    Route every signal the master handles (all but L{FAULTS} and
    L{LEFT_ALONE}) to C{handler}, a Python signal handler.
    """
    for signum in sorted(STOP | COMMANDS) + otherSignals():
        signal.signal(signum, handler)


#: The master's signals that reach the workers too when sent to the whole
#: process group, and which a worker ignores.
GROUP_SIGNALS = frozenset(
    {
        signal.SIGINT,
        signal.SIGQUIT,
        signal.SIGHUP,
        signal.SIGUSR2,
        signal.SIGTTIN,
        signal.SIGTTOU,
        signal.SIGUSR1,
    }
)


@contextmanager
def heldForChild() -> Iterator[None]:
    """
    Block L{GROUP_SIGNALS} while a worker is spawned: the child inherits the
    blocked mask across C{exec}, so one of them sent to the group while the
    worker boots waits until it ignores them (and unblocks them), instead of
    killing it.  The master gets any that arrived meanwhile right after.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, GROUP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
