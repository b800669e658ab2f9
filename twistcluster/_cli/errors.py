# -*- test-case-name: tests.test_tap -*-
"""
How C{twist cluster} stops on bad input: one line naming the culprit, and an
exit status from the README's table.
"""

from __future__ import annotations

import sys
from typing import NoReturn

#: The exit status for a bad command line (BSD's EX_USAGE, as twist uses).
EX_USAGE = 64
#: The exit status when the master cannot start (an address in use, ...).
EX_START = 1


def fail(message: str, status: int = EX_USAGE) -> NoReturn:
    """
    Stop with a one-line error naming the culprit, and a non-zero status.
    """
    sys.stderr.write(f"twist cluster: error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(status)
