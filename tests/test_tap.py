"""
The master's command line, in process (the multi-process tests are in
tests.test_bad_input and tests.test_endpoint_kinds).
"""

from __future__ import annotations

from types import ModuleType

from twisted.trial.unittest import SynchronousTestCase

from twistcluster._cli.options import leaveOutTLS


class LeaveOutTLSTests(SynchronousTestCase):
    def test_notImported(self) -> None:
        """
        Nothing imported pyOpenSSL yet: it is blocked, the way the import
        system documents (a None entry in sys.modules).
        """
        modules: dict[str, object] = {}
        self.assertTrue(leaveOutTLS(modules))
        self.assertEqual(modules, {"OpenSSL": None})

    def test_alreadyImported(self) -> None:
        """
        Something needed it first (the FACTORY, or twist --reactor): it
        stays.
        """
        module = ModuleType("OpenSSL")
        modules: dict[str, object] = {"OpenSSL": module}
        self.assertFalse(leaveOutTLS(modules))
        self.assertIs(modules["OpenSSL"], module)

    def test_reactorInstalled(self) -> None:
        """
        With a reactor installed (twist --reactor, or any process but a
        fresh master), it is too late: nothing is left out.
        """
        modules: dict[str, object] = {"twisted.internet.reactor": ModuleType("reactor")}
        self.assertFalse(leaveOutTLS(modules))
        self.assertNotIn("OpenSSL", modules)

    def test_alreadyLeftOut(self) -> None:
        modules: dict[str, object] = {"OpenSSL": None}
        self.assertTrue(leaveOutTLS(modules))
        self.assertEqual(modules, {"OpenSSL": None})
