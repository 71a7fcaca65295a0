"""The pipeline's one DAG: DVC's stages and the Snakefile's rules agree, and the paths agree with the config.

Fast (no stage runs): DVC's resolved stages vs Snakemake's DAG for the demo and the paper profile, the GPU
resources of the paper grid, and each stage's outputs against what its command will write (adatosk/grid.py).
"""

import os
import re
from pathlib import Path

import pytest
from helpers import BIN, REPO, copy_repo, run

from workflow.dvc_stages import RuleSpec, rule_specs, shell_command


def dvc_stages(root: Path) -> dict:
    """address -> (cmd, file deps, params keys, outs) from DVC itself."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    out = {}
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            if not stage.cmd:
                continue
            deps = {os.path.relpath(d.fs_path, root) for d in stage.deps if not isinstance(d, ParamsDependency)}
            params = {k for d in stage.deps if isinstance(d, ParamsDependency) for k in d.params}
            out[stage.name] = (stage.cmd, deps, params, {os.path.relpath(o.fs_path, root) for o in stage.outs})
    return out


def snakemake_jobs(root: Path, *config) -> dict:
    """rule -> (inputs, outputs, resources, shell command, priority) of every job of Snakemake's DAG (a dry run)."""
    args = [BIN / "snakemake", "-n", "-p", "--forceall", "--cores", "2"] + (["--config", *config] if config else [])
    text = run(args, root).stdout
    jobs = {}
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", text):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if not rule:
            continue
        fields = dict(re.findall(r"^    (\w+): (.*)$", block, re.M))
        shell = re.search(r"^Shell command: (.*)$", block, re.M)
        resources = dict(item.split("=", 1) for item in fields.get("resources", "").split(", ") if "=" in item)
        jobs[rule.group(1)] = (fields.get("input", "").split(", ") if fields.get("input") else [],
                               fields.get("output", "").split(", ") if fields.get("output") else [],
                               resources, shell.group(1) if shell else "", int(fields.get("priority", 0)))
    return jobs


def command_selection(cmd: str) -> dict[str, str]:
    """The run a stage's command selects: its select.* overrides and its run options (``--split.dataset demo``)."""
    overrides = re.findall(r"select\.(\w+)=(\S+)", cmd)
    return dict(overrides + re.findall(r"--(?:split\.)?(dataset|fold|variant|seed) (\S+)", cmd))


@pytest.fixture(scope="module")
def demo_repo(tmp_path_factory):
    return copy_repo(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def paper_repo(tmp_path_factory):
    root = copy_repo(tmp_path_factory.mktemp("paper"), experiment="paper")
    for dataset in ("dfew", "ferv39k", "mafw"):           # the licensed data a user brings (data.dvc)
        (root / "data" / dataset).mkdir(parents=True)
    return root


def test_snakemake_builds_exactly_the_dvc_stages(demo_repo):
    stages = dvc_stages(demo_repo)
    specs = {spec.stage: spec for spec in rule_specs(demo_repo)}
    assert set(specs) == set(stages)
    jobs = snakemake_jobs(demo_repo)
    assert set(jobs) == {spec.name for spec in specs.values()} | {"all"}
    produced = {o for (_, _, _, outs) in stages.values() for o in outs}
    for address, (cmd, deps, params, outs) in stages.items():
        spec = specs[address]
        inputs, outputs, _, shell, priority = jobs[spec.name]
        assert set(outputs) == outs, address
        # a dep that holds other stages' outputs (tables: runs) stands for those outputs
        expected = set()
        for dep in deps:
            inside = {o for o in produced if o.startswith(dep + "/")}
            expected |= inside or {dep}
        assert set(inputs) == expected | {"params.yaml"}, address
        assert set(spec.params) == params, address
        assert cmd in shell, address
        assert priority == spec.priority, address
    assert set(jobs["all"][0]) == produced
    trainings = [address for address in stages if address.split("@")[0] in ("train", "train_ablation")]
    assert trainings and all("weights" in stages[address][1] for address in trainings)  # model.pretrained's folder
    # of the jobs that are ready, Snakemake runs the data chain first, then Table 1's trainings, then the rest
    priority = {address.split("@")[0]: spec.priority for address, spec in specs.items()}
    assert priority["demo_data"] == priority["manifest"] > priority["train"] > priority["train_ablation"] == 0
    assert priority["flops"] == priority["evaluate"] == 0


@pytest.mark.parametrize("profile", ["demo_repo", "paper_repo"])
def test_every_command_writes_where_its_stage_declares(profile, request):
    """The run a stage's command selects (select.*, or the options DVC unpacks from a matrix's ${item}) builds the
    config whose run_dir / manifest_dir / cache_dir are its outputs."""
    from omegaconf import OmegaConf

    from adatosk.grid import select_run

    root = request.getfixturevalue(profile)
    params = OmegaConf.load(root / "params.yaml")
    for address, (cmd, deps, _, outs) in dvc_stages(root).items():
        select = command_selection(cmd)
        if not select:
            continue
        cfg = select_run(OmegaConf.merge(params, {"select": select}))
        if "dataset" in select:
            assert cfg.data.name == select["dataset"]
            if address.startswith("manifest@"):
                assert f"{cfg.data.manifest_dir}/manifest.csv" in outs
            if address.startswith("face_crop@"):
                assert cfg.data.cache_dir in outs
            if address.startswith(("train", "evaluate", "explain")):
                assert {f"{cfg.data.manifest_dir}/manifest.csv", cfg.data.cache_dir} <= deps
        if address.startswith(("train", "evaluate", "explain")):
            assert cfg.model.variant == select["variant"] and cfg.data.fold == int(select["fold"])
            assert cfg.seed == int(select["seed"]) and cfg.run_dir.endswith(f"/seed{cfg.seed}")
        if address.startswith(("train", "evaluate")):
            assert all(o.startswith(cfg.run_dir + "/") for o in outs), (address, cfg.run_dir)
        if address.startswith("explain@"):
            # explain reads the run's reported model; its figures stay out of runs/, which `tables` reads whole
            assert f"{cfg.run_dir}/checkpoint/last" in deps, (address, cfg.run_dir)
            out = f"results/figures/{cfg.data.name}/{cfg.model.variant}/fold{cfg.data.fold}/seed{cfg.seed}"
            assert outs == {out} and "--figures-root results/figures" in cmd, address
        if address.startswith("demo_data@"):
            assert cfg.data.root in outs


def test_run_dir_pattern_matches_params_config():
    from adatosk.config import load_config
    from adatosk.grid import run_dir

    for overrides in ([], ["model=videomae", "data.fold=3", "seed=4"]):
        cfg = load_config(overrides)
        assert cfg.run_dir == run_dir(cfg.output_root, cfg.data.name, cfg.model.variant, cfg.data.fold, cfg.seed)


def test_paper_profile_dry_run_lists_the_paper_grid_on_gpus(paper_repo):
    jobs = snakemake_jobs(paper_repo, "gpus_per_job=8", "gpu_partition=a100", "cpu_partition=short")
    assert jobs["bench"][2]["gpu"] == "1"                     # a throughput benchmark: one GPU
    train = sorted(name for name in jobs if name.startswith("train__"))
    runs = {re.search(r"--split.dataset (\w+) --split.fold (\d) --variant (\w+) --seed (\d+)",
                      jobs[n][3]).groups() for n in train}
    expected = {(d, str(k), v, "0") for d, folds in (("dfew", range(1, 6)), ("ferv39k", [1]), ("mafw", range(1, 6)))
                for k in folds for v in ("videomae", "adatosk", "adatosk_dagger")}         # the paper: seed 0
    assert runs == expected and len(train) == 33
    assert len([n for n in jobs if n.startswith("evaluate__")]) == 33
    ablation = [n for n in jobs if n.startswith("train_ablation__")]
    assert len(ablation) == 18 * 5
    for name in train + ablation:
        _, _, res, shell, _ = jobs[name]
        assert res["gpu"] == "8" and res["slurm_partition"] == "a100", name
        assert "torchrun --standalone --nproc-per-node=8 -m adatosk train --config params.yaml" in shell
    explain = [n for n in jobs if n.startswith("explain__")]
    assert explain == ["explain__split0_adatosk_dagger_0"]
    assert "--split.dataset dfew --split.fold 1 --variant adatosk_dagger --seed 0" in jobs[explain[0]][3]
    for name in ("manifest__dfew", "face_crop__mafw", "explain__split0_adatosk_dagger_0", "tables"):
        _, _, res, shell, _ = jobs[name]
        assert "gpu" not in res and res["slurm_partition"] == "short", name
        assert "torchrun" not in shell
    assert not any(n.startswith("demo_data") for n in jobs)


@pytest.mark.parametrize("profile", ["demo_repo", "paper_repo"])
def test_figures_draw_trained_runs_of_adatosk_variants(profile, request):
    from omegaconf import OmegaConf

    params = OmegaConf.load(request.getfixturevalue(profile) / "params.yaml")
    grid = params.grid

    def runs(group: str) -> set[tuple[str, int, str]]:
        return {(s.dataset, s.fold, v) for s in grid[group].splits for v in grid[group].variants}

    assert runs("figures") and runs("figures") <= runs("main") | runs("ablation")
    assert {params.variants[v].family for v in grid.figures.variants} == {"adatosk"}


def test_explain_of_a_run_without_soft_mask_names_the_grid_to_fix(tmp_path, capsys, monkeypatch):
    from omegaconf import OmegaConf

    from adatosk import cli
    from adatosk.grid import run_dir
    from adatosk.models import create_model_from_config
    from adatosk.models.checkpoint import save_model

    params = OmegaConf.to_container(OmegaConf.load(REPO / "params.yaml"), resolve=True)
    model_cfg, classes = params["variants"]["videomae"], params["datasets"]["demo"]["class_names"]
    monkeypatch.chdir(tmp_path)                           # the run directory is relative: runs/...
    checkpoint = Path(run_dir(params["output_root"], "demo", "videomae", 1, 0)) / "checkpoint" / "last"
    save_model(checkpoint, create_model_from_config(model_cfg, len(classes)), model_cfg, len(classes), classes)
    code = cli.main(["explain", "--config", str(REPO / "params.yaml"), "select.dataset=demo", "select.fold=1",
                     "select.variant=videomae", "--per-class", "1", "--out", "figures"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"{checkpoint} holds a videomae_vit_tiny_patch16_64 model (variant videomae)" in err
    assert "no soft mask" in err and "grid.figures.variants" in err
    assert not (tmp_path / "figures").exists()


def test_shell_command_uses_torchrun_only_with_gpus():
    spec = RuleSpec(name="t", stage="t", cmd="adatosk train --config params.yaml select.fold=1", inputs=(),
                    outputs=(), directories=frozenset(), torchrun=True)
    assert shell_command(spec, 0) == spec.cmd
    assert shell_command(spec, 4) == ("torchrun --standalone --nproc-per-node=4 -m adatosk train --config "
                                      "params.yaml select.fold=1")


def test_select_run_builds_one_run_of_the_grid_and_refuses_what_is_not_in_it():
    from omegaconf import OmegaConf

    from adatosk.config import load_config, to_container
    from adatosk.grid import select_run

    demo = to_container(load_config())

    def select(cfg=demo, **keys):
        return select_run(OmegaConf.merge(OmegaConf.create(cfg), {"select": keys}), "params.yaml")

    cfg = select(dataset="demo", fold=3, variant="adatosk_cs_semantic")
    assert (cfg.run_dir, cfg.data.fold, cfg.seed) == ("runs/demo/adatosk_cs_semantic/fold3/seed0", 3, 0)
    cfg = select(dataset="demo", fold=3, variant="adatosk_cs_semantic", seed=2)
    assert (cfg.run_dir, cfg.seed) == ("runs/demo/adatosk_cs_semantic/fold3/seed2", 2)
    assert (cfg.model.soft_mask, cfg.model.scores, cfg.model.arch) == ("cs", "semantic", "vit_tiny_patch16_64")
    assert select().run_dir == demo["run_dir"]                                  # nothing selected: unchanged
    with pytest.raises(KeyError, match="variants.nope"):
        select(variant="nope")
    with pytest.raises(ValueError, match="select.fold=9"):
        select(dataset="demo", fold=9)
    renamed = OmegaConf.merge(OmegaConf.create(demo), {"variants": {"adatosk": {"variant": "other"}}})
    with pytest.raises(ValueError, match="variants.adatosk.variant is 'other'"):
        select(to_container(renamed), variant="adatosk")
    resized = OmegaConf.merge(OmegaConf.create(demo), {"variants": {"adatosk": {"img_size": 96}}})
    with pytest.raises(ValueError, match="data.img_size=64 differs from model.img_size=96"):
        select(to_container(resized), variant="adatosk")
    crossed = OmegaConf.merge(OmegaConf.create(demo), {"datasets": {"dfew": dict(demo["datasets"]["demo"],
                                                                                 name="dfew")}})
    with pytest.raises(ValueError, match="datasets.dfew.manifest_dir is 'manifests/demo'"):
        select(to_container(crossed), dataset="dfew")


def test_select_on_the_hydra_groups_equals_select_on_the_composed_params(tmp_path):
    """`adatosk <cmd> select.variant=...` without --config composes params/ itself: its variant entries refer to
    `model` and `data` (`${model.arch}`, `datasets.demo: ${data}`), and the run is the one params.yaml selects."""
    import yaml

    from adatosk.config import load_config, to_container

    selected = ["select.dataset=demo", "select.fold=2", "select.variant=adatosk_ca", "select.seed=1"]
    composed = tmp_path / "params.yaml"
    composed.write_text(yaml.safe_dump(to_container(load_config())))
    from_groups, from_file = to_container(load_config(selected)), to_container(load_config(selected, composed))
    for key in ("model", "data", "seed", "run_dir", "train", "evaluate"):  # what the run reads
        assert from_groups[key] == from_file[key], key
    assert (from_groups["model"]["soft_mask"], from_groups["model"]["arch"]) == ("ca", "vit_tiny_patch16_64")
    assert from_groups["run_dir"] == "runs/demo/adatosk_ca/fold2/seed1"


# Modules every command imports that decide no result: the CLI and config plumbing, one-line errors, atomic writes,
# progress bars, the pick of a run out of params.yaml, the forkserver of worker processes, the package's version,
# and face-crop's opt-in timing (`--bench`, which no stage passes).
PLUMBING = {"adatosk/__init__.py", "adatosk/cli.py", "adatosk/config.py", "adatosk/errors.py", "adatosk/io.py",
            "adatosk/progress.py", "adatosk/grid.py", "adatosk/data/workers.py", "adatosk/benchmarks/facecrop.py"}


def module_file(module: str) -> Path | None:
    path = REPO / Path(*module.split("."))
    return next((p for p in (path.with_suffix(".py"), path / "__init__.py") if p.is_file()), None)


def imported_files(module: str) -> set[str]:
    """The package's files that ``module`` imports, at module or function level, transitively (read, not run)."""
    import ast

    found, todo = set(), [module]
    while todo:
        path = module_file(todo.pop())
        if path is None or str(path.relative_to(REPO)) in found:
            continue
        found.add(str(path.relative_to(REPO)))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "adatosk":
                todo += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names if alias.name.split(".")[0] == "adatosk"]
    return found


def test_every_stage_depends_on_the_code_that_decides_its_outputs():
    """A stage's deps cover every module its command imports, bar PLUMBING: otherwise a change to, say, the demo's
    renderer or the tables' statistics would leave `dvc repro` and Snakemake trusting the stale outputs."""
    from adatosk.cli import COMMANDS

    gaps = {}
    for address, (cmd, deps, _, _) in dvc_stages(REPO).items():
        words = cmd.split()
        assert words[0] == "adatosk" and words[1] in COMMANDS, (address, cmd)
        code = imported_files(COMMANDS[words[1]][0]) - PLUMBING
        missing = sorted(f for f in code if not any(f == d or f.startswith(f"{d}/") for d in deps))
        if missing:
            gaps[address.split("@")[0]] = missing
    assert not gaps, f"dvc.yaml deps miss code their stages run: {gaps}"
