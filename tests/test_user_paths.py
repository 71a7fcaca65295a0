"""A user's own experiment (params/experiment/own_data.yaml, selected in params/config.yaml) survives `dvc exp run
-S ...`, and the real pipeline resolves it; compose_params.py says which of its overrides `dvc exp run` drops;
`dvc exp show --only-changed` shows the columns that differ.

The repository is a small one: the real params/, .dvc/config's Hydra settings and workflow/ (compose_params.py),
with a one-stage dvc.yaml that copies the params it reads (no training).
"""

import shutil
from pathlib import Path

import pytest
import yaml
from helpers import BIN, REPO, copy_repo, run

pytestmark = pytest.mark.slow

DVC_YAML = """stages:
  seen:
    cmd: python -c "import shutil; shutil.copy('params.yaml', 'seen.yaml')"
    params: [train.epochs, datasets.mine.root, grid.main]
    outs: [seen.yaml]
"""


def own_experiment_repo(root: Path) -> Path:
    """What the template's header tells a user to do: copy it, edit it, select it in params/config.yaml."""
    root.mkdir()
    shutil.copytree(REPO / "params", root / "params")
    shutil.copytree(REPO / "workflow", root / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
    template = (root / "params/experiment/own_data.yaml").read_text()
    edited = (template.replace("mydata", "mine").replace("root: data/mine ", "root: /srv/data/mine ")
              .replace("folds: [1] ", "folds: [1, 2] ")
              .replace("      - {dataset: mine, fold: 1}    # EDIT: one entry per fold of `folds`",
                       "      - {dataset: mine, fold: 1}\n      - {dataset: mine, fold: 2}"))
    assert edited.count("/srv/data/mine") == 1 and edited.count("fold: 2") == 1
    (root / "params/experiment/mine.yaml").write_text(edited)
    config = root / "params/config.yaml"
    config.write_text(config.read_text().replace("  - experiment: demo\n", "  - experiment: mine\n"))
    (root / "dvc.yaml").write_text(DVC_YAML)
    run(["git", "init", "-q", "-b", "main"], root)
    run([BIN / "dvc", "init", "-q"], root)
    for key, value in (("core.analytics", "false"), ("hydra.enabled", "true"), ("hydra.config_dir", "params"),
                       ("hydra.config_name", "config"), ("hydra.plugins_path", "workflow")):
        run([BIN / "dvc", "config", key, value], root)
    run([BIN / "python", "workflow/scripts/compose_params.py"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "my experiment"], root)
    return root


@pytest.fixture(scope="module")
def own_repo(tmp_path_factory) -> Path:
    return own_experiment_repo(tmp_path_factory.mktemp("own") / "repo")


def test_compose_params_says_exp_run_does_not_keep_its_overrides(own_repo):
    result = run([BIN / "python", "workflow/scripts/compose_params.py", "experiment=paper"], own_repo)
    assert "does not keep experiment=paper" in result.stderr and "params/config.yaml" in result.stderr
    assert "note:" not in run([BIN / "python", "workflow/scripts/compose_params.py"], own_repo).stderr


def test_own_experiment_survives_exp_run_and_the_pipeline_resolves_it(own_repo, tmp_path):
    root = own_repo
    run([BIN / "dvc", "exp", "run", "-S", "train.epochs=3"], root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert params["train"]["epochs"] == 3                                       # the -S override
    assert params["datasets"]["mine"]["root"] == "/srv/data/mine"               # the user's setup, kept
    assert params["datasets"]["mine"]["expected_fold_sizes"] is None
    assert params["grid"]["main"]["splits"] == [{"dataset": "mine", "fold": 1}, {"dataset": "mine", "fold": 2}]
    assert "demo" not in params["datasets"]
    assert yaml.safe_load((root / "seen.yaml").read_text())["datasets"]["mine"]["folds"] == [1, 2]
    # params.yaml has ~750 keys: `dvc exp show` is read with --only-changed (workflow/README.md)
    every = run([BIN / "dvc", "exp", "show", "--csv"], root).stdout.splitlines()[0].split(",")
    changed = run([BIN / "dvc", "exp", "show", "--only-changed", "--csv"], root).stdout.splitlines()[0].split(",")
    assert len(every) > 500 and changed == ["Experiment", "rev", "typ", "Created", "train.epochs"]

    # the repository's dvc.yaml resolves that params.yaml into the user's grid
    from dvc.repo import Repo

    pipeline = tmp_path / "pipeline"
    pipeline.mkdir()
    shutil.copy2(REPO / "dvc.yaml", pipeline / "dvc.yaml")
    shutil.copy2(root / "params.yaml", pipeline / "params.yaml")
    run([BIN / "dvc", "init", "-q", "--no-scm"], pipeline)
    with Repo(str(pipeline)) as repo:
        stages = {stage.name for stage in repo.index.stages}
    assert {"download_verify@mine", "face_crop@mine", "manifest@mine", "tables"} <= stages
    for run_stage in (f"{s}@split{k}-{v}" for s in ("train", "evaluate") for k in (0, 1)
                      for v in ("videomae", "adatosk", "adatosk_dagger")):
        assert any(name == run_stage or name.startswith(run_stage + "-") for name in stages), run_stage  # -<seed>
    assert not any("demo" in name for name in stages)



def test_raw_video_own_data_is_clean_after_one_dvc_repro(tmp_path):
    """The template with raw videos (face_crop.precropped: false) on a `dvc add`ed tree: the first `dvc repro` of
    the data stages writes nothing into the tree (crops, receipt), so the second has nothing to do."""
    from adatosk.data.video import read_video, write_video

    root = copy_repo(tmp_path / "repo")
    template = (root / "params/experiment/own_data.yaml").read_text()
    raw = template.replace("    # face_crop: {precropped: false}\n", "    face_crop: {precropped: false}\n")
    assert raw != template
    (root / "params/experiment/mine.yaml").write_text(raw)
    config = root / "params/config.yaml"
    config.write_text(config.read_text().replace("  - experiment: demo\n", "  - experiment: mine\n"))
    run([BIN / "python", "workflow/scripts/compose_params.py"], root)
    tree = root / "data/mydata"
    (tree / "Clip/original").mkdir(parents=True)
    frames = read_video(REPO / "tests/data/single_face.mp4")[:6]
    for video in (1, 2):
        write_video(tree / f"Clip/original/{video:05d}.mp4", frames)
    for split, video in (("train", 1), ("test", 2)):
        folder = tree / f"EmoLabel_DataSplit/{split}(single-labeled)"
        folder.mkdir(parents=True)
        (folder / "set_1.csv").write_text(f"video_name,label\n{video},1\n")
    run([BIN / "dvc", "add", "-q", "data"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "my data"], root)
    data_dvc = (root / "data.dvc").read_text()

    first = run([BIN / "dvc", "repro", "manifest@mydata"], root).stdout
    assert "Running stage 'face_crop@mydata'" in first
    assert sorted(p.name for p in (root / "cache/mydata/crops").iterdir() if p.is_dir()) == ["00001", "00002"]
    second = run([BIN / "dvc", "repro", "manifest@mydata"], root).stdout
    assert "Running stage" not in second, second
    assert (root / "data.dvc").read_text() == data_dvc
    status = run([BIN / "dvc", "status", "data.dvc", "download_verify@mydata", "face_crop@mydata",
                  "manifest@mydata"], root).stdout
    assert "up to date" in status, status
