"""
Start a command as systemd's socket activation would: the given inherited
descriptors become 3, 4, ..., LISTEN_FDS counts them and LISTEN_PID names
the command, which this process becomes (exec keeps the pid).

    python tests/_activate.py FD [FD ...] -- COMMAND [ARGUMENT ...]
"""

import os
import sys


def main(argv: list[str]) -> None:
    split = argv.index("--")
    inherited, command = [int(fd) for fd in argv[:split]], argv[split + 1 :]
    assert all(fd > 2 + len(inherited) for fd in inherited), "pass descriptors above the targets"
    for target, fd in enumerate(inherited, start=3):
        os.dup2(fd, target)
        os.close(fd)
    os.environ["LISTEN_FDS"] = str(len(inherited))
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
