"""The ``adatosk`` command line: every command's help, what start-up imports, the commands that are cheap on the
default config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adatosk.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def child_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter that imports this checkout; its stdout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_help_lists_every_command_without_importing_torch():
    out = child_python(
        "import contextlib, io, sys\n"
        "from adatosk.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as help_text:\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit as exit:\n"
        "        code = exit.code\n"
        "heavy = sorted(m for m in ('torch', 'timm', 'numpy', 'cv2', 'pandas') if m in sys.modules)\n"
        "print(code, heavy)\n"
        "print(help_text.getvalue())\n")
    status, rest = out.split("\n", 1)
    assert status == "0 []"  # exit status 0, none of the heavy modules imported
    for command in COMMANDS:
        assert command in rest


@pytest.mark.slow  # two interpreters import timm: ~15 s on 2 busy cores
def test_import_adatosk_models_registers_the_models_in_timm():
    out = child_python(
        "import sys\n"
        "import adatosk\n"
        "assert 'torch' not in sys.modules and 'timm' not in sys.modules\n"
        "import adatosk.models, timm\n"
        "print(timm.list_models('adatosk_*') + timm.list_models('videomae_*'))\n"
        "print(type(timm.create_model('adatosk_vit_tiny_patch16_64', num_classes=3)).__name__)\n")
    assert out.splitlines() == [str(["adatosk_vit_base_patch16_160", "adatosk_vit_tiny_patch16_64",
                                     "videomae_vit_base_patch16_160", "videomae_vit_tiny_patch16_64"]), "AdaTosk"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: adatosk {command}") and COMMANDS[command][1] in " ".join(out.split())


def test_no_command_prints_the_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


@pytest.mark.slow  # ~7 s on 2 busy cores
def test_flops_runs_on_the_default_config(tmp_path, capsys):
    """The default config (the demo): parameters and FLOPs of its tiny model against the baseline."""
    out = tmp_path / "flops.json"
    assert main(["flops", "--arch", "config", "--frames", "4", "--variants", "config", "--out", str(out)]) == 0
    rows = {row["name"]: row for row in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["videomae", "adatosk_dagger"]
    assert 0 < rows["adatosk_dagger"]["gflops_inference"] < rows["videomae"]["gflops_inference"]
    assert "adatosk_dagger" in capsys.readouterr().out


def test_tables_runs_on_the_default_config_before_any_run(tmp_path, capsys):
    """No evaluated run yet: every table is written, its cells marked as not run."""
    out = tmp_path / "tables"
    assert main(["tables", "--runs", str(tmp_path / "runs"), "--efficiency", str(tmp_path / "efficiency"),
                 "--out", str(out), "--metrics", str(tmp_path / "metrics.json")]) == 0
    assert {"table1.md", "table2.md", "table3.md", "table4.md"} <= {p.name for p in out.iterdir()}
    assert "not run" in (out / "table3.md").read_text()  # the paper's numbers beside no measured one
    assert (tmp_path / "metrics.json").is_file()
    assert f"wrote {len(list(out.iterdir()))} files to {out}" in capsys.readouterr().out


def test_the_run_options_select_as_the_select_overrides_do():
    """`--split.dataset demo --split.fold 2 --variant adatosk_ca --seed 1` (DVC's unpacking of a matrix stage's
    ${item}) is `select.dataset=demo select.fold=2 ...`; an option and an override naming different runs fail."""
    from adatosk.cli import build_parser, run_selection
    from adatosk.config import load_config, to_container
    from adatosk.errors import ConfigError

    args = build_parser("evaluate").parse_args(["evaluate", "--split.dataset", "demo", "--split.fold", "2",
                                                "--variant", "adatosk_ca", "--seed", "1", "select.fold=2"])
    by_options = to_container(load_config(args.overrides, None, run_selection(args)))
    by_overrides = to_container(load_config(["select.dataset=demo", "select.fold=2", "select.variant=adatosk_ca",
                                             "select.seed=1"]))
    assert by_options == by_overrides and by_options["run_dir"] == "runs/demo/adatosk_ca/fold2/seed1"
    with pytest.raises(ConfigError, match="--variant adatosk_ca and select.variant=adatosk name different runs"):
        load_config(["select.variant=adatosk"], None, {"variant": "adatosk_ca"})
