"""Shell injection through params: a value or dict key that dvc.yaml puts into a stage's command line unquoted must
be a name.

DVC's composition of params.yaml (`dvc exp run -S`, compose_params.py) fails on one, through the resolver of
params/config.yaml, the Snakefile's adapter refuses to load one, and a stage's names are checked again where a
command resolves them; the matrix stages take their run, and the efficiency stages their options, as a dict, whose
values DVC quotes, so that even a params.yaml edited by hand runs no injected value under `dvc repro`.
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
    ("grid.main.splits[0]: key 'fold|touch'", lambda p: p["grid"]["main"]["splits"][0].update({"fold|touch": 1})),
    ("grid.efficiency.bench: key '$(touch INJECTED)'",
     lambda p: p["grid"]["efficiency"]["bench"].update({"$(touch INJECTED)": 1})),
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


def test_a_dict_unpacked_into_a_command_is_checked_by_its_keys_and_strings():
    """`${item}` of a matrix is unpacked: DVC writes its keys raw and quotes its values, which must be names all the
    same (they name runs and paths); numbers pass."""
    dvc_yaml = {"stages": {"train": {"matrix": {"split": "${grid.splits}", "seed": [0]}, "cmd": "adatosk ${item}"}}}
    splits = [{"dataset": "demo", "fold": 1}, {"dataset": "demo", "fold;touch INJECTED": 1},
              {"dataset": "demo; touch INJECTED", "fold": 2}]
    assert unsafe_command_values(dvc_yaml, {"grid": {"splits": splits[:1]}}) == []
    problems = unsafe_command_values(dvc_yaml, {"grid": {"splits": splits}})
    assert [problem.split(": stage train")[0] for problem in problems] == [
        "grid.splits[1]: key 'fold;touch INJECTED' = 'fold;touch INJECTED'",
        "grid.splits[2].dataset = 'demo; touch INJECTED'"]


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


def _repo_with_run_inputs(root: Path, dataset: str = "demo") -> Path:
    """A small repository (with the package) whose data chain for ``dataset`` is done: its outputs exist, and for
    the repository's own dataset they are recorded in dvc.lock, so that `dvc exp run -s train` runs the trainings."""
    _small_repo(root)
    shutil.copytree(REPO / "adatosk", root / "adatosk", ignore=shutil.ignore_patterns("__pycache__"))
    for path in (f"generated/{dataset}/x", f"results/verify/{dataset}.json", f"cache/{dataset}/64/x",
                 f"manifests/{dataset}/manifest.csv", "weights/x"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("{}")
    if dataset == "demo":
        run([BIN / "dvc", "commit", "-f", "-q", "demo_data", "download_verify", "face_crop", "manifest"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "inputs"], root)
    return root


@pytest.mark.slow  # DVC's start-up, twice
@pytest.mark.parametrize(("overrides", "target", "named"), [
    (["grid.main.variants=['adatosk|touch INJECTED|true']", "++variants={adatosk|touch INJECTED|true: {x: 1}}"],
     "train", "grid.main.variants[0] = 'adatosk|touch INJECTED|true'"),
    (["++grid.generate={demo|touch INJECTED: generated/x}",
      "++datasets={demo|touch INJECTED: {folds: [1], generator: {x: 1}, root: generated/x}}"],
     "demo_data@demo|touch INJECTED",
     "grid.generate: key 'demo|touch INJECTED'"),
])
def test_dvc_exp_run_refuses_an_injected_value_or_key_before_any_stage(tmp_path, overrides, target, named):
    root = _repo_with_run_inputs(tmp_path / "repo")
    sets = [arg for override in overrides for arg in ("-S", override)]
    result = run([BIN / "dvc", "exp", "run", "-s", *sets, target], root, check=False)
    assert not (root / "INJECTED").exists() and not (root / "runs").exists()
    assert result.returncode != 0 and named in result.stdout + result.stderr, result.stdout + result.stderr


@pytest.mark.slow  # DVC's start-up; `adatosk train` refuses the names
@pytest.mark.parametrize(("key", "value", "stage"), [
    ("variants", ["adatosk $(touch INJECTED)"], "train@split0-adatosk $(touch INJECTED)-0"),
    ("seeds", ["0; touch INJECTED;"], "train@split0-videomae-0; touch INJECTED;"),
    ("splits", [{"dataset": "demo`touch INJECTED`", "fold": 1}], "train@split0-videomae-0"),
])
def test_dvc_repro_of_a_hand_edited_run_runs_no_injected_command(tmp_path, key, value, stage):
    dataset = value[0]["dataset"] if key == "splits" else "demo"
    root = _repo_with_run_inputs(tmp_path / "repo", dataset)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["grid"]["main"].update({"variants": ["videomae"], key: value})
    params["datasets"][dataset] = params["datasets"]["demo"]                # the run's params exist: its stage runs
    params["variants"][params["grid"]["main"]["variants"][0]] = params["variants"]["videomae"]
    (root / "params.yaml").write_text(yaml.safe_dump(params))               # edited by hand: nothing checked it
    result = run([BIN / "dvc", "repro", "-s", stage], root, check=False)
    assert not (root / "INJECTED").exists()
    assert result.returncode != 0 and "touch INJECTED" in result.stdout + result.stderr
