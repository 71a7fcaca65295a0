"""The demo pipeline end to end on a reduced grid, in a temporary copy of the repository.

The copy gets an experiment `smoke` (the demo at 8x64x64, one epoch, a 28-clip demo set, folds 1-2, two variants)
made the default in its params/config.yaml, so that `dvc exp run -S ...` composes it too. Then: `make demo` runs the
DAG (Snakemake, stages side by side, then `dvc commit`), Fig. 3 of one run included, and a `dvc repro` after it does
nothing; a changed param marks exactly the stages that read it, a seed added to the grid adds its runs' stages only;
push to a local remote, fresh clone, pull, nothing to rerun for DVC nor Snakemake; `dvc exp run -S` (DVC runs the
stages) + `dvc exp show`. The tests share one repository and run in this order. (tests/test_pipeline_slurm.py runs
the same DAG under `snakemake --profile slurm`.)
"""

import json
import re
from pathlib import Path

import pytest
import yaml
from helpers import BIN, compose, make_pull, make_smoke_repo, run

from workflow.dvc_stages import rule_name

pytestmark = pytest.mark.slow

MAIN_STAGES = {f"{s}@split{k}-{v}-0" for s in ("train", "evaluate") for k in (0, 1)
               for v in ("videomae", "adatosk_dagger")}
DATA_STAGES = {"demo_data@demo", "download_verify@demo", "face_crop@demo", "manifest@demo"}
FIGURES = "explain@split0-adatosk_dagger-0"


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def ran_rules(output: str) -> set[str]:
    """The jobs Snakemake finished (`--quiet rules` prints one line per job), the target rule `all` aside."""
    return set(re.findall(r"\(Rule: (\w+)\)", output)) - {"all"}


def changed_stages(root: Path) -> set[str]:
    status = json.loads(run([BIN / "dvc", "status", "--json"], root).stdout or "{}")
    return {name.split(":")[-1] for name in status}


def check_figures(root: Path, variant: str, fold: int) -> None:
    """The explain stage drew the first test clip of every class of the run, each a PNG of the figure's size."""
    from PIL import Image

    from adatosk.data.manifest import read_manifest
    from adatosk.explain import FigureLayout

    params = yaml.safe_load((root / "params.yaml").read_text())
    model = params["variants"][variant]
    grid = model["img_size"] // 16                                   # vit_tiny_patch16: 16 px patches
    size = list(FigureLayout.create(model["num_frames"], model["tubelet_size"], grid).size)
    manifest = read_manifest(root / "manifests/demo/manifest.csv")
    test = manifest[(manifest.fold == fold) & (manifest.split == "test")]
    figures = root / f"results/figures/demo/{variant}/fold{fold}/seed0"
    summaries = [json.loads(path.read_text()) for path in sorted(figures.glob("*.json"))]
    assert sorted(s["label"] for s in summaries) == sorted(set(test.label))   # one clip per class
    for summary in summaries:
        assert summary["source"] in set(test.clip_id)
        assert (summary["variant"], summary["fold"], summary["seed"]) == (variant, fold, 0)
        with Image.open(figures / summary["image"]) as image:
            assert (image.format, list(image.size)) == ("PNG", size) and summary["image_size"] == size


@pytest.fixture(scope="module")
def repro(tmp_path_factory):
    """The smoke repository after one `make demo` (this environment's tools; not the repository's .venv), and that
    run's output."""
    root = make_smoke_repo(tmp_path_factory.mktemp("smoke"))
    first = run(["make", "-o", ".venv/.installed", "demo", f"BIN={BIN}", "CORES=2"], root, timeout=900)
    return root, first.stdout + first.stderr                                  # Snakemake reports on stderr


def test_make_demo_runs_the_demo_dag_once_and_dvc_finds_it_current(repro):
    root, output = repro
    everything = DATA_STAGES | MAIN_STAGES | {FIGURES, "flops", "bench", "tables"}
    assert ran_rules(output) == {rule_name(stage) for stage in everything}
    for variant in ("videomae", "adatosk_dagger"):
        for fold in (1, 2):
            run_dir = root / "runs" / "demo" / variant / f"fold{fold}" / "seed0"
            metrics = json.loads((run_dir / "metrics.json").read_text())
            assert (metrics["data"], metrics["variant"], metrics["fold"]) == ("demo", variant, fold)
            assert (run_dir / "checkpoint" / "last" / "model.safetensors").is_file()
            assert (run_dir / "train_state.pt").is_file()           # kept for resumption, not an output
    table1 = (root / "results/tables/table1.md").read_text()
    war = [json.loads((root / f"runs/demo/videomae/fold{k}/seed0/metrics.json").read_text())["war"] for k in (1, 2)]
    assert f"{sum(war) / 2:.2f} ± " in next(line for line in table1.splitlines() if line.startswith("| VideoMAE |"))
    assert table1 in output and "every token" in output                       # make demo prints the tables
    assert "| 66.76 | 77.54 | 46.28 | 56.52 | 44.15 | 57.92 |" in table1        # AdaTosk-dagger, quoted
    assert (root / "results/tables/confusion/demo_adatosk_dagger.png").is_file()
    check_figures(root, "adatosk_dagger", fold=1)
    second = run([BIN / "dvc", "repro"], root)
    assert ran_stages(second.stdout) == set()
    assert "up to date" in run([BIN / "dvc", "status"], root).stdout
    metrics = run([BIN / "dvc", "metrics", "show", "--json"], root).stdout
    assert "results/metrics.json" in metrics and "runs/demo/videomae/fold1/seed0/metrics.json" not in metrics
    plots = run([BIN / "dvc", "plots", "show", "--json"], root).stdout
    assert "results/plots/loss/demo_adatosk_dagger.csv" in plots and "results/plots/confusion" in plots


def test_a_param_marks_exactly_the_stages_that_read_it(repro):
    root, _ = repro
    cases = [
        (["variants.videomae.drop_path_rate=0.05"], {"train@split0-videomae-0", "train@split1-videomae-0"}),
        (["train.epochs=2"], {s for s in MAIN_STAGES if s.startswith("train@")}),
        (["evaluate.mask_seed=3"], {s for s in MAIN_STAGES if s.startswith("evaluate@")} | {FIGURES}),
        (["evaluate.batch_size=2"], {s for s in MAIN_STAGES if s.startswith("evaluate@")}),
        (["grid.efficiency.bench.iters=2"], {"flops", "bench"}),
        (["data.generator.noise=4.0"], {"demo_data@demo"}),
        (["data.sampling.stride=3"], MAIN_STAGES | {FIGURES}),
        (["grid.main.seeds=[0,1]"], {s.replace("-0", "-1") for s in MAIN_STAGES} | {"tables"}),
    ]
    try:
        for overrides, expected in cases:
            compose(root, overrides)
            assert changed_stages(root) == expected, overrides
    finally:
        run(["git", "checkout", "params.yaml"], root)
    assert changed_stages(root) == set()
    weights = root / "weights" / "videomae_base.pth"  # model.pretrained's folder: a new file retrains every run
    weights.write_bytes(b"pre-trained weights")
    try:
        assert changed_stages(root) == {s for s in MAIN_STAGES if s.startswith("train@")}
    finally:
        weights.unlink()
    assert changed_stages(root) == set()


def test_push_clone_pull_leaves_nothing_to_rerun(repro, tmp_path):
    root, _ = repro
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "DFEW.zip").write_bytes(b"a licensed archive stands here")  # what `dvc add data` shares
    run([BIN / "dvc", "add", "data"], root)
    remote = tmp_path / "remote"
    run([BIN / "dvc", "remote", "add", "-d", "shared", str(remote)], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "results"], root)
    run([BIN / "dvc", "push"], root)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(root), str(clone)], tmp_path)
    make_pull(clone)  # README: `dvc pull`, then `snakemake --touch`: Snakemake judges by mtimes
    assert (clone / "data/DFEW.zip").read_bytes() == b"a licensed archive stands here"
    assert (clone / "runs/demo/adatosk_dagger/fold1/seed0/checkpoint/last/model.safetensors").is_file()
    assert "up to date" in run([BIN / "dvc", "status"], clone).stdout
    assert "Nothing to be done" in run([BIN / "snakemake", "-n", "--cores", "1"], clone).stdout


def test_exp_run_trains_again_on_the_narrowed_grid_and_exp_show_lists_it(repro):
    root, _ = repro
    overrides = ["train.epochs=2", "grid.main.splits=[{dataset:demo,fold:1}]", "grid.main.variants=[adatosk_dagger]"]
    result = run([BIN / "dvc", "exp", "run"] + [a for o in overrides for a in ("-S", o)], root, timeout=600)
    # the old state (one epoch) belongs to another run: the engine starts afresh and trains two epochs
    assert ran_stages(result.stdout) == {"train@split0-adatosk_dagger-0", "evaluate@split0-adatosk_dagger-0", FIGURES,
                                         "tables"}
    log = (root / "runs/demo/adatosk_dagger/fold1/seed0/log.csv").read_text().splitlines()
    assert len(log) == 1 + 2
    assert yaml.safe_load((root / "params.yaml").read_text())["train"]["epochs"] == 2
    shown = run([BIN / "dvc", "exp", "show", "--json"], root).stdout
    assert '"epochs": 2' in shown and "results/metrics.json" in shown
    # the metrics columns are the headline results (results/metrics.json), the changed params stand beside them
    columns = run([BIN / "dvc", "exp", "show", "--csv"], root).stdout.splitlines()[0].split(",")
    assert 0 < len([c for c in columns if c.startswith(("results.", "efficiency."))]) <= 40
    assert not [c for c in columns if "metrics.json" in c or c.startswith(("setup.", "paper_table"))]
    changed = run([BIN / "dvc", "exp", "show", "--csv", "--only-changed"], root).stdout.splitlines()[0].split(",")
    assert {"train.epochs", "grid.main.variants"} <= set(changed)
