"""The ``adatosk`` command line: one sub-command per pipeline stage.

Each sub-command lives in its own module, which defines ``add_arguments(parser)`` and ``main(args) -> int``.
Modules are imported only when their command runs, so ``adatosk --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from adatosk.errors import AdatoskError, describe

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo-data": ("adatosk.data.demo", "generate the embedded synthetic demo dataset (DFEW layout)"),
    "verify": ("adatosk.data.download", "fetch or copy a dataset's licensed sources and verify their checksums"),
    "face-crop": ("adatosk.data.facecrop", "detect, track and crop faces; write frames and the packed cache"),
    "manifest": ("adatosk.data.manifest", "parse the official split files into the manifest of all folds"),
    "train": ("adatosk.train.engine", "train a model (single process or under torchrun)"),
    "evaluate": ("adatosk.evaluate", "evaluate a checkpoint: UAR, WAR, per-class recall, confusion matrix"),
    "flops": ("adatosk.flops", "parameters and fvcore FLOPs per clip of registered models"),
    "bench": ("adatosk.benchmarks.efficiency", "efficiency: FLOPs, throughput and memory against the baseline"),
    "bench-data": ("adatosk.benchmarks.data_loader", "data-loader throughput: clips per second per worker"),
    "tables": ("adatosk.tables", "render the paper's tables from the evaluated runs"),
    "predict": ("adatosk.predict", "classify the expressions in raw videos with a trained checkpoint"),
    "explain": ("adatosk.explain", "draw the soft masks of one clip (the paper's Fig. 3)"),
    "selfcheck": ("adatosk.selfcheck", "check the GPU path: bf16 training steps, a torchrun epoch, bench ratios"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adatosk", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--debug", action="store_true",
                         help="show the traceback of an error (also ADATOSK_DEBUG=1)")
        if name == command:
            importlib.import_module(module_name).add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(command).parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return 2
    debug = args.debug or os.environ.get("ADATOSK_DEBUG", "") not in ("", "0")
    try:
        module = importlib.import_module(COMMANDS[args.command][0])
        return int(module.main(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"adatosk {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one line for the user; the traceback behind --debug
        if debug:
            raise
        hint = "" if isinstance(error, AdatoskError) else " (rerun with --debug for the traceback)"
        print(f"adatosk {args.command}: {describe(error)}{hint}", file=sys.stderr)
        return error.exit_code if isinstance(error, AdatoskError) else 1


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The config options shared by every command that reads the run configuration."""
    parser.add_argument(
        "--config", default=None, metavar="FILE",
        help="an already composed config (params.yaml); default: compose the Hydra groups in params/",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="Hydra overrides, e.g. model=videomae data.fold=2 train.epochs=1",
    )


# The run of the pipeline's grid as options, one per select.* key (adatosk/grid.py): the matrix stages of dvc.yaml
# pass `${item}`, which DVC unpacks to `--split.dataset 'demo' --split.fold 1 --variant 'adatosk' --seed 0`, quoting
# every value for the shell whatever params.yaml holds.
RUN_OPTIONS: dict[str, tuple[tuple[str, ...], type]] = {
    "dataset": (("--dataset", "--split.dataset"), str),
    "fold": (("--fold", "--split.fold"), int),
    "variant": (("--variant",), str),
    "seed": (("--seed",), int),
}


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dataset``/``--split.dataset``, ``--fold``/``--split.fold``, ``--variant``, ``--seed``: the run of the grid
    that a command reads, as the overrides ``select.dataset=...`` etc. pick it (:func:`run_selection`)."""
    group = parser.add_argument_group("the run of the grid (the same as the select.* overrides)")
    for key, (flags, kind) in RUN_OPTIONS.items():
        group.add_argument(*flags, dest=f"select_{key}", type=kind, default=None, metavar=key.upper(),
                           help=f"the same as select.{key}=...")


def run_selection(args: argparse.Namespace) -> dict[str, Any]:
    """The select.* keys (dataset, fold, variant, seed) that the options of :func:`add_run_arguments` set."""
    values = {key: getattr(args, f"select_{key}", None) for key in RUN_OPTIONS}
    return {key: value for key, value in values.items() if value is not None}
