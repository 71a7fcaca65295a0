"""The documents' claims point at tests that exist: every test that docs/reliability.md names is defined."""

import ast
import re
from pathlib import Path

from helpers import REPO

# `test_io.py::test_name`, or `::test_name` for another test of the file named before it in the same cell
TEST_REFERENCE = re.compile(r"`(?:(tests/)?(test_\w+\.py))?::(\w+)(?:\[[^\]]*\])?`")


def defined_tests(module: Path) -> set[str]:
    tree = ast.parse(module.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def references(text: str) -> list[tuple[str, str]]:
    """(test file, test name) of every reference, the file carried over from the previous one in a table cell."""
    found = []
    for row in text.splitlines():
        current = None
        for _, module, name in TEST_REFERENCE.findall(row):
            current = module or current
            assert current, f"docs/reliability.md: '::{name}' names no file before it: {row[:80]}"
            found.append((current, name))
    return found


def test_every_test_the_reliability_table_names_exists():
    found = references((REPO / "docs" / "reliability.md").read_text())
    assert len(found) >= 40                                          # the table's rows were read, not skipped
    missing = [f"{module}::{name}" for module, name in found
               if not (REPO / "tests" / module).is_file() or name not in defined_tests(REPO / "tests" / module)]
    assert not missing, f"docs/reliability.md names tests that do not exist: {missing}"


def test_references_carry_the_file_over_within_a_row():
    assert references("| x | y | `test_io.py::test_a` and `::test_b[case]` |") == [("test_io.py", "test_a"),
                                                                                   ("test_io.py", "test_b")]
