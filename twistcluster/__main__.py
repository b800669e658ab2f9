# -*- test-case-name: tests.test_ctl -*-
"""
C{python -m twistcluster}: the C{twistcluster} command.
"""

from __future__ import annotations

from twistcluster._ctl.main import main

main()
