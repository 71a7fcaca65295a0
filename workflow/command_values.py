"""The params that dvc.yaml interpolates into its stages' shell commands, and the check that they cannot inject.

DVC pastes a ``${...}`` value into a command line unquoted, and the shell parses that line before any program of
ours runs: a value such as ``videomae; touch X #`` would run ``touch X``. A dict is unpacked instead
(``--key 'value'``): DVC quotes its values but not its keys, flattened with dots. So every value a command
interpolates must be a name, ``[A-Za-z0-9_.-]+`` (a ``${key}`` of a foreach, an ``${item.*}`` of a foreach or
matrix; a ``${a.b.c}`` of params.yaml may also be several names separated by single spaces), or a number, or a
dict whose keys are names (the matrix stages' ``${item}``, the efficiency stages' options). A dict's strings must
be names too, though DVC quotes them: they name runs and paths, and a composition that breaks this fails before any
stage runs; the quoting is what guards a params.yaml edited by hand.

DVC's composition of params.yaml (``dvc exp run``, ``make params``) fails on a problem found here, through the
resolver of params/config.yaml (workflow/hydra_plugins/adatosk_command_values.py); the Snakefile refuses to load
such a params.yaml.
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


def _matrix_items(matrix: Mapping[str, Any], name: str, rest: str,
                  params: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """(where, value) of ``${item.<name>.<rest>}`` over the matrix's source ``name``."""
    where, items = _source(params, matrix[name])
    for index, item in enumerate(items):
        yield f"{where}[{index}]{'.' + rest if rest else ''}", _lookup(item, rest)


def _values(expression: str, stage: Mapping[str, Any], params: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """(where, value) of every value ``${expression}`` takes in the stages generated from ``stage``; ``where`` ends
    with the key of params.yaml for a plain expression. A matrix's ``${item}`` (a dict of one item per source)
    yields the items of every source."""
    head, _, rest = expression.partition(".")
    if "foreach" in stage and head in ("key", "item"):
        where, items = _source(params, stage["foreach"])
        pairs = items.items() if isinstance(items, Mapping) else enumerate(items)
        for key, item in pairs:
            yield (f"{where}: key {key!r}", key) if head == "key" else (f"{where}.{key}.{rest}", _lookup(item, rest))
    elif "matrix" in stage and head == "item":
        name, _, rest = rest.partition(".")
        for source in [name] if name else stage["matrix"]:
            yield from _matrix_items(stage["matrix"], source, rest, params)
    else:
        yield expression, _lookup(params, expression)


def _unsafe_parts(where: str, value: Any) -> Iterator[tuple[str, Any]]:
    """(where, part) of every key, nested or not, and every string of a dict that DVC unpacks into a command and that
    is not a name: DVC writes the keys raw (``--a.b``); it quotes the values, which are names of runs and paths all
    the same."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if NAME.fullmatch(str(key)):
                yield from _unsafe_parts(f"{where}.{key}", item)
            else:
                yield f"{where}: key {key!r}", key
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _unsafe_parts(f"{where}[{index}]", item)
    elif not isinstance(value, (int, float)) and not (isinstance(value, str) and NAME.fullmatch(value)):
        yield where, value


def _problem(where: str, value: Any, stage: str, what: str) -> str:
    return f"{where} = {value!r}: stage {stage} puts it into a shell command; it must be {what} ([A-Za-z0-9_.-]+)"


def _stage_problems(name: str, stage: Mapping[str, Any], params: Mapping[str, Any]) -> Iterator[str]:
    body = stage.get("do", stage)
    commands = body.get("cmd") or []
    for command in [commands] if isinstance(commands, str) else commands:
        for expression in EXPRESSION.findall(command):
            for where, value in _values(expression, stage, params):
                if isinstance(value, Mapping):
                    for part_where, part in _unsafe_parts(where, value):
                        yield _problem(part_where, part, name, "a name")
                elif not isinstance(value, (int, float)):
                    pattern, what = (NAMES, "names separated by single spaces") if where == expression else \
                        (NAME, "a name")
                    if not isinstance(value, str) or not pattern.fullmatch(value):
                        yield _problem(where, value, name, what)


def unsafe_command_values(dvc_yaml: Mapping[str, Any], params: Mapping[str, Any]) -> list[str]:
    """One line per value or dict key that a stage's command would interpolate unquoted and that is not a name
    (see the module), naming its place in params.yaml and the stage."""
    problems = [problem for name, stage in (dvc_yaml.get("stages") or {}).items()
                for problem in _stage_problems(name, stage, params)]
    return list(dict.fromkeys(problems))
