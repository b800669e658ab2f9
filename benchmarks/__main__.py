"""
C{python -m benchmarks --help}.
"""

from __future__ import annotations

import sys

from ._cli import main

try:
    sys.exit(main())
except KeyboardInterrupt:
    # Every process was stopped on the way out (finally blocks, atexit).
    sys.stderr.write("benchmarks: interrupted\n")
    sys.exit(130)
