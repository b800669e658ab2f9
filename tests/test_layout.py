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


#: Twisted's own objects' states, read where Twisted's private names live.
_TWISTEDS_OWN = "twistcluster/_common/twistedinternals.py"


def _words(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_words(element) for element in node.elts)
    return False


def _anotherObjects(node: ast.expr) -> str | None:
    """
    C{"x.state"} when C{node} reads the state or phase of an object other
    than C{self}.
    """
    if not isinstance(node, ast.Attribute) or node.attr.lstrip("_") not in ("state", "phase"):
        return None
    if isinstance(node.value, ast.Name) and node.value.id == "self":
        return None
    return ast.unparse(node)


def statesComparedToWords(source: str, name: str) -> list[str]:
    """
    Where C{source} compares another object's C{state} or C{phase} to a
    string (or a collection of strings): only the owner of a state knows
    its words, the others ask it.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        read = next(filter(None, map(_anotherObjects, sides)), None)
        if read is not None and any(_words(side) for side in sides):
            found.append(f"{name}:{node.lineno}: {read}")
    return found


class StateOwnerTests(SynchronousTestCase):
    """
    A worker's state stays inside its lifecycle, the master's and the
    upgrade's phases inside their owners: nothing compares another object's
    state to a word.
    """

    def test_findsEachKind(self) -> None:
        source = (
            "if worker.state == 'listening': pass\n"
            "if self._master.phase != 'running': pass\n"
            "if upgrade.phase in ('checking', 'handing over'): pass\n"
            "if self.state == 'online': pass\n"
            "if master.phase is MasterPhase.RUNNING: pass\n"
            "if worker.state == other.state: pass\n"
        )
        self.assertEqual(
            statesComparedToWords(source, "m.py"),
            ["m.py:1: worker.state", "m.py:2: self._master.phase", "m.py:3: upgrade.phase"],
        )

    def test_noneInTwistcluster(self) -> None:
        found = []
        for path in sorted((PROJECT / "twistcluster").rglob("*.py")):
            name = str(path.relative_to(PROJECT))
            if name != _TWISTEDS_OWN:
                found += statesComparedToWords(path.read_text(), name)
        self.assertEqual(found, [])
