"""
C{python -m twistcluster}: the C{twistcluster} command.
"""

from __future__ import annotations

from twistcluster._ctl.main import main

main()
