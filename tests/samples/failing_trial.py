"""
A trial test that fails while its cluster runs (tests/test_testing.py runs
it with trial): the cluster must be stopped all the same.
"""

import os
import sys

from twisted.internet import defer
from twisted.trial import unittest

from twistcluster.testing import startCluster


class Failing(unittest.TestCase):
    @defer.inlineCallbacks
    def test_fails(self):
        running = yield startCluster(
            self, "tests.clusterapps.WhoAmIFactory", workers=2, cwd=os.environ["PROJECT"]
        )
        sys.stdout.write(f"pids {running.masterPid} {' '.join(map(str, running.pids.values()))}\n")
        self.fail("on purpose")
