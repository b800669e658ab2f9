"""
A pytest test that fails while its cluster runs (tests/test_testing.py runs
it with pytest): the cluster must be stopped all the same.
"""

import os


def test_fails(twistcluster):
    running = twistcluster("tests.clusterapps.WhoAmIFactory", workers=2, cwd=os.environ["PROJECT"])
    print("pids", running.masterPid, *running.pids.values())
    raise AssertionError("on purpose")
