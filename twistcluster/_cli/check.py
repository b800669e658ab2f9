# -*- test-case-name: tests.test_privileges -*-
"""
The check C{twist cluster} makes of user code before it binds anything,
when it runs as root but will serve as another user (C{--user}): FACTORY
loads (for its listens), or the subcommand's options parse (and name the
endpoints it listens on).  It runs as the target user, in a child process,
so that user code never runs as root:

    python -m twistcluster._cli.check --factory NAME [--datagram N]
    python -m twistcluster._cli.check --subcommand NAME [ITS OPTIONS]

It prints one JSON line: C{{"endpoints": [...] or null}} when the code
loads, C{{"error": "..."}} (the one-line error the master gives) when not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any


def check(arguments: Sequence[str]) -> dict[str, Any]:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    kind, name, *rest = arguments
    if kind == "--factory":
        from .._common.factory import BadFactory, loadDatagramProtocols, loadFactory

        try:
            if rest[:1] == ["--datagram"]:
                loadDatagramProtocols(name, int(rest[1]))
            else:
                loadFactory(name)
        except BadFactory as e:
            return {"error": f"FACTORY: {e}"}
        return {"endpoints": None}
    from .subcommand import BadSubcommand, endpointsOf, parseSubcommand

    try:
        return {"endpoints": endpointsOf(parseSubcommand(name, rest))}
    except BadSubcommand as e:
        return {"error": str(e)}


def checkAs(
    credentials: Any, arguments: Sequence[str], environ: Mapping[str, str], umask: int = -1
) -> dict[str, Any]:
    """
    Run the check as C{credentials} (a L{twistcluster._master.privileges.Credentials}).

    @return: Its answer; an C{"error"} if it could not even run.
    """
    env = dict(environ, PYTHONPATH=os.pathsep.join(sys.path))
    try:
        done = subprocess.run(
            [sys.executable, "-m", __name__, *arguments],
            env=env,
            cwd=os.getcwd(),
            user=credentials.uid,
            group=credentials.gid,
            extra_groups=list(credentials.groups),
            umask=umask,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return {"error": f"--user {credentials.name}: cannot check the code as that user: {e}"}
    lines = done.stdout.strip().splitlines()
    try:
        answer: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        last = (done.stderr.strip().splitlines() or ["nothing"])[-1]
        return {"error": f"--user {credentials.name}: the code does not load as that user: {last}"}
    return answer


def main() -> None:
    answer = check(sys.argv[1:])
    sys.stdout.flush()
    # The last line is the answer, whatever the code printed before it.
    print(json.dumps(answer))


if __name__ == "__main__":
    main()
