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


REACTOR_NAME = re.compile(r"reactor|clock", re.IGNORECASE)


def _mentionsAny(annotation: ast.expr | None) -> bool:
    if annotation is None:
        return False
    for node in ast.walk(annotation):
        if (isinstance(node, ast.Name) and node.id == "Any") or (
            isinstance(node, ast.Attribute) and node.attr == "Any"
        ):
            return True
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            # A quoted annotation, or part of one.
            try:
                quoted = ast.parse(node.value, mode="eval").body
            except SyntaxError:
                continue
            if _mentionsAny(quoted):
                return True
    return False


def reactorsTypedAny(source: str, name: str) -> list[str]:
    """
    Every reactor or clock in C{source} (a parameter, an attribute, a
    property or function named for one) typed C{Any}, as C{name:line}.
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            arguments = node.args
            for argument in [
                *arguments.posonlyargs,
                *arguments.args,
                *arguments.kwonlyargs,
                *filter(None, [arguments.vararg, arguments.kwarg]),
            ]:
                if REACTOR_NAME.search(argument.arg) and _mentionsAny(argument.annotation):
                    found.append((argument.lineno, f"parameter {argument.arg}"))
            if REACTOR_NAME.search(node.name) and _mentionsAny(node.returns):
                found.append((node.lineno, f"{node.name}() returns"))
        elif isinstance(node, ast.AnnAssign):
            target = node.target
            named = target.id if isinstance(target, ast.Name) else getattr(target, "attr", "")
            if REACTOR_NAME.search(named) and _mentionsAny(node.annotation):
                found.append((node.lineno, f"attribute {named}"))
    return [f"{name}:{line}: {what}" for line, what in sorted(found)]


class ReactorTypeTests(SynchronousTestCase):
    """
    Reactors are typed by the narrow interface they are used through
    (C{IReactorTime}, an intersection of L{twistcluster._common.reactors}),
    never C{Any}.
    """

    def test_findsEachKind(self) -> None:
        """
        A parameter, an attribute and a property typed C{Any} are each found,
        by line; a narrow interface, or another parameter typed C{Any}, is not.
        """
        source = (
            "from typing import Any\n"
            "import typing\n"
            "class C:\n"
            "    _clock: Any\n"
            "    def __init__(self, reactor: Any = None, other: Any = None) -> None:\n"
            "        self._givenReactor: 'Any | None' = reactor\n"
            "    @property\n"
            "    def _reactor(self) -> typing.Any: ...\n"
            "def f(clock: IReactorTime, *, masterReactor: list[Any]) -> None: ...\n"
        )
        self.assertEqual(
            reactorsTypedAny(source, "m.py"),
            [
                "m.py:4: attribute _clock",
                "m.py:5: parameter reactor",
                "m.py:6: attribute _givenReactor",
                "m.py:8: _reactor() returns",
                "m.py:9: parameter masterReactor",
            ],
        )

    def test_noReactorTypedAny(self) -> None:
        """
        No reactor or clock of twistcluster is typed C{Any}.
        """
        found = []
        for path in sorted((PROJECT / "twistcluster").rglob("*.py")):
            found += reactorsTypedAny(path.read_text(), str(path.relative_to(PROJECT)))
        self.assertEqual(found, [])
