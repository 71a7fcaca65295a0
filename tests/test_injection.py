"""Shell injection through params: a value that dvc.yaml puts into a stage's command line must be a name.

compose_params.py refuses to write such a params.yaml, the Snakefile's adapter refuses to load one, and a stage's
``select.*`` names are checked again where a command resolves them; the efficiency stages take their options as a
dict, which DVC quotes, so that even a params.yaml edited by hand runs no injected command under `dvc repro`.
"""

import shutil
from pathlib import Path

import pytest
import yaml
from helpers import BIN, REPO, run
from omegaconf import OmegaConf

from adatosk.grid import select_run
from workflow.command_values import unsafe_command_values
from workflow.dvc_stages import rule_specs

INJECTED = "videomae; touch INJECTED #"


def _repository() -> tuple[dict, dict]:
    return (yaml.safe_load((REPO / "dvc.yaml").read_text()), yaml.safe_load((REPO / "params.yaml").read_text()))


def test_the_repositorys_params_put_only_names_into_commands():
    assert unsafe_command_values(*_repository()) == []


@pytest.mark.parametrize(("where", "edit"), [
    ("grid.efficiency.flops", lambda p: p["grid"]["efficiency"].update(flops=INJECTED)),
    ("grid.main.seeds[0]", lambda p: p["grid"]["main"]["seeds"].__setitem__(0, "0\ntouch INJECTED")),
    ("grid.main.variants[0]", lambda p: p["grid"]["main"]["variants"].__setitem__(0, "adatosk $(touch INJECTED)")),
    ("grid.main.splits[0].dataset", lambda p: p["grid"]["main"]["splits"][0].update(dataset="demo`touch INJECTED`")),
    ("datasets: key 'x y'", lambda p: p["datasets"].update({"x y": p["datasets"]["demo"]})),
    ("grid.generate: key 'demo&&touch'", lambda p: p["grid"]["generate"].update({"demo&&touch": "x"})),
])
def test_every_interpolated_value_is_checked(where, edit):
    dvc_yaml, params = _repository()
    edit(params)
    problems = unsafe_command_values(dvc_yaml, params)
    assert problems and all(problem.startswith(where) for problem in problems), problems


def _small_repo(root: Path) -> Path:
    """params/, the workflow package, dvc.yaml and .dvc/config of the repository, composed."""
    root.mkdir()
    for name in ("params", "workflow", ".dvc"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache"))
    shutil.copy2(REPO / "dvc.yaml", root / "dvc.yaml")
    run(["git", "init", "-q"], root)
    run([BIN / "python", "workflow/scripts/compose_params.py"], root)
    return root


@pytest.mark.slow  # DVC's start-up, twice
def test_compose_params_and_the_snakefile_refuse_an_injected_value(tmp_path):
    root = _small_repo(tmp_path / "repo")
    good = (root / "params.yaml").read_text()
    result = run([BIN / "python", "workflow/scripts/compose_params.py", f"grid.efficiency.flops='{INJECTED}'"], root,
                 check=False)
    assert result.returncode != 0 and "grid.efficiency.flops = 'videomae; touch INJECTED #'" in result.stderr
    assert (root / "params.yaml").read_text() == good and sorted(p.name for p in root.glob(".params*")) == []

    params = yaml.safe_load(good)
    params["grid"]["efficiency"]["flops"] = INJECTED                    # params.yaml edited by hand
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match="grid.efficiency.flops = 'videomae; touch INJECTED #'"):
        rule_specs(root)
    assert not (root / "INJECTED").exists()


def test_a_stage_selecting_a_name_with_shell_syntax_is_refused():
    cfg = OmegaConf.create({"datasets": {"demo; touch INJECTED": {"name": "demo; touch INJECTED"}},
                            "select": {"dataset": "demo; touch INJECTED"}})
    with pytest.raises(ValueError, match="select.dataset='demo; touch INJECTED' is not a name"):
        select_run(cfg)


@pytest.mark.slow  # DVC's start-up; `adatosk flops` refuses the names
def test_dvc_repro_of_the_efficiency_stages_runs_no_injected_command(tmp_path):
    root = _small_repo(tmp_path / "repo")
    shutil.copytree(REPO / "adatosk", root / "adatosk", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((root / "params.yaml").read_text())
    efficiency = params["grid"]["efficiency"]
    efficiency["flops"].update(arch="tiny; touch INJECTED #", variants=["videomae; touch INJECTED #"])
    efficiency["bench"].update(variants=["$(touch INJECTED)"], iters="1`touch INJECTED`", frames="16 && touch INJECTED")
    (root / "params.yaml").write_text(yaml.safe_dump(params))               # edited by hand: nothing checked it
    for stage in ("flops", "bench"):
        result = run([BIN / "dvc", "repro", "-s", stage], root, check=False)
        assert result.returncode != 0 and "touch INJECTED" in result.stdout + result.stderr, stage
    assert not (root / "INJECTED").exists()
