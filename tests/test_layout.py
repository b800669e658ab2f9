"""
The source tree's own rules: every module of twistcluster names the tests
that test it (its C{test-case-name} pragma, which C{trial --testmodule} and
editors read), and they exist.
"""

from __future__ import annotations

import ast
import re

from twisted.trial.unittest import SynchronousTestCase

from tests._cluster import PROJECT

PRAGMA = re.compile(r"^# -\*- test-case-name: (.+) -\*-$")


class TestCaseNameTests(SynchronousTestCase):
    def test_everyModuleNamesTestsThatExist(self) -> None:
        """
        Every module with code has a pragma on its first line, naming test
        modules that exist.
        """
        problems = []
        for path in sorted((PROJECT / "twistcluster").rglob("*.py")):
            source = path.read_text()
            if path.name == "__init__.py" and "def " not in source:
                continue
            relative = path.relative_to(PROJECT)
            found = PRAGMA.match(source.split("\n", 1)[0])
            if found is None:
                problems.append(f"{relative}: no test-case-name pragma on its first line")
                continue
            for name in (n.strip() for n in found.group(1).split(",")):
                test = PROJECT / (name.replace(".", "/") + ".py")
                if not test.exists():
                    problems.append(f"{relative}: {name} does not exist")
        self.assertEqual(problems, [])


class TestNameTests(SynchronousTestCase):
    def test_oneNamingStylePerKind(self) -> None:
        """
        Unit tests are methods of trial test case classes, named in Twisted's
        camelCase (C{test_closedByTheRead}); integration tests are pytest
        functions named as a sentence (C{test_ctrl_c_leaves_no_process_behind}).
        """
        problems = []
        for path in sorted((PROJECT / "tests").glob("test_*.py")):
            tree = ast.parse(path.read_text())
            for node in tree.body:
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_"):
                    if not re.fullmatch(r"test_[a-z0-9_]+", node.name):
                        problems.append(f"{path.name}: function {node.name} is not snake_case")
                elif isinstance(node, ast.ClassDef):
                    for method in node.body:
                        name = getattr(method, "name", "")
                        if name.startswith("test_") and not re.fullmatch(r"test_[a-z][a-zA-Z0-9]*", name):
                            problems.append(f"{path.name}: method {node.name}.{name} is not camelCase")
        self.assertEqual(problems, [])
