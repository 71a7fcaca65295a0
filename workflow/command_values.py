"""The params values that dvc.yaml interpolates into its stages' shell commands, and the check that they are names.

DVC pastes ``${...}`` values into a command line unquoted, and the shell parses that line before any program of
ours runs: a value such as ``videomae; touch X #`` would run ``touch X``. Every value a command interpolates must
therefore be a name, ``[A-Za-z0-9_.-]+``: a ``${key}`` of a foreach, an ``${item.*}`` of a foreach or matrix; a
``${a.b.c}`` of params.yaml may also be several names separated by single spaces (``grid.efficiency.flops``).
Numbers are safe, and so is a dict (DVC renders it quoted). compose_params.py refuses to write a params.yaml that
breaks this, and the Snakefile refuses to load one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

NAME = re.compile(r"[A-Za-z0-9_.-]+")
NAMES = re.compile(r"[A-Za-z0-9_.-]+( [A-Za-z0-9_.-]+)*")
EXPRESSION = re.compile(r"\$\{\s*([^}]*?)\s*\}")


def _lookup(node: Any, dotted: str) -> Any:
    for part in filter(None, dotted.split(".")):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _source(params: Mapping[str, Any], value: Any) -> tuple[str, Any]:
    """A foreach or matrix source: ``${a.b}`` (its key and value in params) or a literal list or dict."""
    match = EXPRESSION.fullmatch(value) if isinstance(value, str) else None
    return (match.group(1), _lookup(params, match.group(1))) if match else ("a literal", value)


def _values(expression: str, stage: Mapping[str, Any], params: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """(where, value) of every value ``${expression}`` takes in the stages generated from ``stage``; ``where`` ends
    with the key of params.yaml for a plain expression."""
    head, _, rest = expression.partition(".")
    if "foreach" in stage and head in ("key", "item"):
        where, items = _source(params, stage["foreach"])
        pairs = items.items() if isinstance(items, Mapping) else enumerate(items)
        for key, item in pairs:
            yield (f"{where}: key {key!r}", key) if head == "key" else (f"{where}.{key}.{rest}", _lookup(item, rest))
    elif "matrix" in stage and head == "item":
        name, _, rest = rest.partition(".")
        where, items = _source(params, stage["matrix"][name])
        for index, item in enumerate(items):
            yield f"{where}[{index}]{'.' + rest if rest else ''}", _lookup(item, rest)
    else:
        yield expression, _lookup(params, expression)


def unsafe_command_values(dvc_yaml: Mapping[str, Any], params: Mapping[str, Any]) -> list[str]:
    """One line per value that a stage's command would interpolate and that is not a name (see the module)."""
    problems = []
    for name, stage in (dvc_yaml.get("stages") or {}).items():
        body = stage.get("do", stage)
        commands = body.get("cmd") or []
        for command in [commands] if isinstance(commands, str) else commands:
            for expression in EXPRESSION.findall(command):
                for where, value in _values(expression, stage, params):
                    pattern, what = (NAMES, "names separated by single spaces") if where == expression else \
                        (NAME, "a name")
                    if isinstance(value, (Mapping, int, float)):
                        continue
                    if not isinstance(value, str) or not pattern.fullmatch(value):
                        problems.append(f"{where} = {value!r}: stage {name} puts it into a shell command; it must be "
                                        f"{what} ([A-Za-z0-9_.-]+)")
    return list(dict.fromkeys(problems))
