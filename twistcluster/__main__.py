"""
C{python -m twistcluster}: the C{twistcluster} command.
"""

from twistcluster._ctl.main import main

main()
