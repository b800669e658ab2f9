"""
Another twist plugin as the cluster's subcommand: which one, its options,
and the endpoints the master grants.
"""

from __future__ import annotations

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from twistcluster._cli.options import Options
from twistcluster._cli.subcommand import BadSubcommand, endpointsOf, parseSubcommand, plugins


class SubcommandTests(SynchronousTestCase):
    def test_webListens(self) -> None:
        """
        web's --listen (repeatable) and its default, tcp:8080, are what the
        master grants.
        """
        options = parseSubcommand(
            "web", ["--listen", "tcp:9000", "--listen", "unix:/tmp/w.sock", "--path", "."]
        )
        self.assertEqual(endpointsOf(options), ["tcp:9000", "unix:/tmp/w.sock"])
        self.assertEqual(endpointsOf(parseSubcommand("web", [])), ["tcp:8080"])

    def test_unknownEndpointsGrantAny(self) -> None:
        class Other(usage.Options):
            optParameters = [["port", "p", 53, "A DNS port", int]]

        options = Other()
        options.parseOptions([])
        self.assertIsNone(endpointsOf(options))

    def test_badSubcommands(self) -> None:
        error = self.assertRaises(BadSubcommand, parseSubcommand, "nosuch", [])
        self.assertIn("no twist plugin is called 'nosuch' (installed: ", str(error))
        self.assertIn("web", str(error))
        self.assertNotIn("cluster", plugins())
        error = self.assertRaises(BadSubcommand, parseSubcommand, "web", ["--bogus"])
        self.assertEqual(str(error), "web: option --bogus not recognized")


class CommandLineTests(SynchronousTestCase):
    def parse(self, *arguments: str) -> Options:
        options = Options()
        options.parseOptions(list(arguments))
        return options

    def test_factoryOrSubcommand(self) -> None:
        factory = self.parse("--workers", "2", "tests.clusterapps.WhoAmIFactory")
        self.assertEqual(
            (factory["factory"], factory["subcommand"]), ("tests.clusterapps.WhoAmIFactory", None)
        )
        self.assertEqual(factory["listen"], ["tcp:8080"])
        for arguments in (["--", "web", "--path", "/srv"], ["web", "--path", "/srv"]):
            sub = self.parse("--workers", "2", *arguments)
            self.assertEqual((sub["factory"], sub["subcommand"]), (None, "web"))
            self.assertEqual(sub["subArguments"], ["--path", "/srv"])
            self.assertEqual(sub["listen"], [])
