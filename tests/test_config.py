import pytest
import yaml
from helpers import REPO, copy_repo

from adatosk.config import load_config, params_dir, to_container
from adatosk.errors import ConfigError


def test_default_config_is_the_demo_experiment():
    cfg = load_config()
    assert cfg.model.variant == "adatosk_dagger"
    assert cfg.model.arch == "vit_tiny_patch16_64"  # experiment=demo shrinks every variant
    assert cfg.data.name == "demo"
    assert cfg.data.img_size == cfg.model.img_size
    assert cfg.run_dir == f"runs/demo/adatosk_dagger/fold{cfg.data.fold}/seed0"


def test_paper_experiment_holds_the_paper_values():
    cfg = load_config(["experiment=paper", "data=dfew"])
    m, t = cfg.model, cfg.train
    assert (m.arch, m.img_size, m.num_frames, m.tubelet_size) == ("vit_base_patch16_160", 160, 16, 2)
    assert (m.mask_ratio, m.top_k, m.r, m.tau, m.lambda_rec, m.lambda_cls) == (0.7, 4, 2, 0.1, 1.0, 0.1)
    assert (m.soft_mask, m.diff, m.scores) == ("ca+cs", "l1", "both")
    assert (t.epochs, t.warmup_epochs, t.batch_size, t.base_lr, t.weight_decay) == (100, 10, 128, 1.5e-4, 0.05)
    assert list(t.betas) == [0.9, 0.95]


def test_the_committed_params_yaml_is_the_composition_of_params(tmp_path):
    """params.yaml is what `make params` (and `dvc exp run`) composes from params/: `dvc repro` and Snakemake read
    the committed file, so a params/ edit without `make params` would run the old values."""
    root = copy_repo(tmp_path / "repo")                      # composes params.yaml as `make params` does
    assert (root / "params.yaml").read_text() == (REPO / "params.yaml").read_text(), "run `make params`"


def test_group_and_value_overrides():
    cfg = load_config(["model=videomae", "data.fold=3", "train.epochs=2"])
    assert cfg.model.family == "videomae" and "soft_mask" not in cfg.model
    assert cfg.data.fold == 3 and cfg.train.epochs == 2
    assert cfg.run_dir.endswith("videomae/fold3/seed0")


def test_composed_file_takes_value_overrides_not_group_switches(tmp_path):
    composed = tmp_path / "params.yaml"
    composed.write_text(yaml.safe_dump(to_container(load_config())))  # run_dir resolved, as DVC writes it
    cfg = load_config(["train.epochs=1", "output_root=elsewhere", "+notes.why=test"], config_file=composed)
    assert cfg.train.epochs == 1 and cfg.output_root == "elsewhere" and cfg.notes.why == "test"
    assert cfg.run_dir == f"elsewhere/demo/adatosk_dagger/fold{cfg.data.fold}/seed0"  # follows its keys
    assert load_config(["data.fold=2"], config_file=composed).run_dir == "runs/demo/adatosk_dagger/fold2/seed0"
    assert load_config(["run_dir=mine"], config_file=composed).run_dir == "mine"
    with pytest.raises(ConfigError, match=f"{composed}: is an already composed config: the group switches "
                                          r"\['model=videomae'\]"):
        load_config(["model=videomae"], config_file=composed)


@pytest.mark.parametrize("composed", [False, True])
@pytest.mark.parametrize("override, message", [
    ("train.epcohs=3", r"train.epcohs: no such key \(did you mean train.epochs\? add a new key with \+train"),
    ("+train.epochs=3", "train.epochs exists already"),
    ("train.epochs=abc", r"train.epochs=abc: train.epochs must be an integer \(it is \d+\), not 'abc'"),
    ("train.epochs=2.5", "train.epochs must be an integer"),
    ("train.deterministic=1", "train.deterministic must be true/false"),
    ("train.betas=0.9", "train.betas must be a list"),
    ("model.mask_ratio=1.0", r"model.mask_ratio=1.0 must be a number in \[0, 1\)"),
    ("model.mask_ratio=-0.1", r"model.mask_ratio=-0.1 must be a number in \[0, 1\)"),
    ("train.base_lr=-1e-3", "train.base_lr=-0.001 must be a number > 0"),
    ("train.epochs=0", "train.epochs=0 must be an integer >= 1"),
    ("data.fold=9", r"data.fold=9 is not one of data.folds \[1, 2, 3, 4, 5\]"),
    ("train.epochs=1,2", "a sweep"),
    ("~train.epochs", "train.epochs is missing"),
])
def test_bad_overrides_are_refused_naming_the_key(tmp_path, composed, override, message):
    """Under Hydra composition and under --config alike, before any command runs."""
    config_file = None
    if composed:
        config_file = tmp_path / "params.yaml"
        config_file.write_text(yaml.safe_dump(to_container(load_config())))
    with pytest.raises(ConfigError, match=message) as caught:
        load_config([override], config_file=config_file)
    assert caught.value.path == str(config_file or params_dir())
    assert caught.value.exit_code == 2


def test_a_bad_value_in_the_composed_file_is_refused(tmp_path):
    composed = tmp_path / "params.yaml"
    cfg = to_container(load_config())
    cfg["variants"]["adatosk"]["mask_ratio"] = 1.5  # the pipeline's run of that variant reads it
    composed.write_text(yaml.safe_dump(cfg))
    load_config([], config_file=composed)  # the single run of the file (adatosk_dagger) is fine
    with pytest.raises(ConfigError, match=r"model.mask_ratio=1.5 must be a number in \[0, 1\)"):
        load_config(["select.variant=adatosk"], config_file=composed)
    composed.write_text("train: [1,\n")
    with pytest.raises(ConfigError, match=f"{composed}: not a readable YAML config"):
        load_config([], config_file=composed)
    with pytest.raises(ConfigError, match=f"{tmp_path / 'none.yaml'}: no such config file"):
        load_config([], config_file=tmp_path / "none.yaml")


def test_params_dir_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("ADATOSK_PARAMS", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert params_dir() != tmp_path  # no config.yaml there: falls back to the repository's params/
    (tmp_path / "config.yaml").write_text("seed: 1\n")
    assert params_dir() == tmp_path
