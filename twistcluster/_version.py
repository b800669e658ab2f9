# -*- test-case-name: tests.test_service -*-
"""
twistcluster's version: the one place it is written (setup.cfg reads it from
here, C{twist cluster --version}, C{twistcluster --version} and the status
the master reports print it).
"""

from __future__ import annotations

__version__ = "0.1.0"
