from __future__ import annotations

from twisted.internet.interfaces import IProtocolFactory
from twisted.trial.unittest import SynchronousTestCase

from tests import clusterapps
from twistcluster._common.factory import BadFactory, loadFactory


class LoadFactoryTests(SynchronousTestCase):
    def test_instance(self) -> None:
        self.assertIs(loadFactory("tests.clusterapps.whoAmI"), clusterapps.whoAmI)

    def test_classAndCallable(self) -> None:
        for name in ("tests.clusterapps.WhoAmIFactory", "tests.clusterapps.makeWhoAmI"):
            factory = loadFactory(name)
            self.assertTrue(IProtocolFactory.providedBy(factory))
            self.assertIsInstance(factory, clusterapps.WhoAmIFactory)

    def test_errorsNameTheCulprit(self) -> None:
        cases = {
            "nosuchmodule.Factory": "cannot import 'nosuchmodule.Factory'",
            "tests.clusterapps.nosuch": "cannot import 'tests.clusterapps.nosuch'",
            "tests.clusterapps.notAFactory": "is not a protocol factory (it is a builtins.int)",
            "tests.clusterapps.brokenCallable": "brokenCallable() failed: RuntimeError: no factory today",
            "os.getcwd": "os.getcwd() did not return a protocol factory (it returned a builtins.str)",
            "nodots": "is not a dotted name",
        }
        for name, message in cases.items():
            error = self.assertRaises(BadFactory, loadFactory, name)
            self.assertIn(message, str(error))
            self.assertNotIn("\n", str(error))
