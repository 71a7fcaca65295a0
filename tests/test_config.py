import pytest
import yaml

from adatosk.config import load_config, params_dir, to_container


def test_default_config_is_the_demo_experiment():
    cfg = load_config()
    assert cfg.model.variant == "adatosk_dagger"
    assert cfg.model.arch == "vit_tiny_patch16_64"  # experiment=demo shrinks every variant
    assert cfg.data.name == "demo"
    assert cfg.data.img_size == cfg.model.img_size
    assert cfg.run_dir == f"runs/demo/adatosk_dagger/fold{cfg.data.fold}"


def test_paper_experiment_holds_the_paper_values():
    cfg = load_config(["experiment=paper", "data=dfew"])
    m, t = cfg.model, cfg.train
    assert (m.arch, m.img_size, m.num_frames, m.tubelet_size) == ("vit_base_patch16_160", 160, 16, 2)
    assert (m.mask_ratio, m.top_k, m.r, m.tau, m.lambda_rec, m.lambda_cls) == (0.7, 4, 2, 0.1, 1.0, 0.1)
    assert (m.soft_mask, m.diff, m.scores) == ("ca+cs", "l1", "both")
    assert (t.epochs, t.warmup_epochs, t.batch_size, t.base_lr, t.weight_decay) == (100, 10, 128, 1.5e-4, 0.05)
    assert list(t.betas) == [0.9, 0.95]


def test_group_and_value_overrides():
    cfg = load_config(["model=videomae", "data.fold=3", "train.epochs=2"])
    assert cfg.model.family == "videomae" and "soft_mask" not in cfg.model
    assert cfg.data.fold == 3 and cfg.train.epochs == 2
    assert cfg.run_dir.endswith("videomae/fold3")


def test_composed_file_accepts_dotted_overrides_only(tmp_path):
    composed = tmp_path / "params.yaml"
    composed.write_text(yaml.safe_dump(to_container(load_config())))
    cfg = load_config(["train.epochs=1"], config_file=composed)
    assert cfg.train.epochs == 1
    with pytest.raises(ValueError, match="group overrides"):
        load_config(["model=videomae"], config_file=composed)


def test_params_dir_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("ADATOSK_PARAMS", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert params_dir() != tmp_path  # no config.yaml there: falls back to the repository's params/
    (tmp_path / "config.yaml").write_text("seed: 1\n")
    assert params_dir() == tmp_path
