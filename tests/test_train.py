"""End-to-end training on a few clips of the real demo data with the tiny model at 8 x 64 x 64."""

import json
from pathlib import Path

import pytest
import torch
from helpers import demo_overrides

from adatosk.config import load_config
from adatosk.errors import AdatoskError, ConfigError
from adatosk.train import engine


def run_dir_of(overrides: list[str]) -> Path:
    return Path(load_config(overrides).run_dir)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> list[str]:
    return demo_overrides(tmp_path_factory.mktemp("demo"))


def weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"weights differ: {different[:5]}"


def fixed_batch_loss(model: torch.nn.Module, cfg) -> tuple[float, float]:
    """(loss, loss_cls) of ``model`` on 8 un-augmented training clips with one fixed tube mask."""
    from adatosk.data.dataset import ClipDataset
    from adatosk.models.masking import tube_mask

    clips = ClipDataset(Path(cfg.data.manifest_dir) / "manifest.csv", cfg.data, fold=cfg.data.fold, split="train",
                        train=False, temporal_views=1)
    video = torch.stack([clips[i]["video"][0] for i in range(8)])  # [8, 3, T, H, W]
    labels = torch.tensor([clips[i]["label"] for i in range(8)])
    visible = tube_mask(8, model.num_patches, model.mask_ratio, generator=torch.Generator().manual_seed(0))
    model.train()
    with torch.no_grad():
        out = model(video, labels, visible=visible)
    return float(out.loss), float(out.loss_cls)


def test_training_lowers_the_loss_and_writes_the_run_directory(demo, tmp_path):
    from adatosk.models.checkpoint import load_model
    from adatosk.train.machine import describe_machine

    overrides = demo + [f"output_root={tmp_path}", "train.epochs=6", "train.base_lr=0.1", "train.mixup=0",
                        "train.cutmix=0", "train.clip_grad=1.0", "data.augment.rand_augment=null",
                        "data.augment.reprob=0", "data.augment.scale=[1.0,1.0]",
                        "data.augment.ratio=[1.0,1.0]", "data.augment.hflip=0"]
    cfg = load_config(overrides)
    torch.manual_seed(cfg.seed)
    initial = engine.build_model(cfg)                         # the weights training starts from
    history = engine.train(cfg)
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5, 6]
    assert all(row["steps"] == 3 for row in history)          # 14 clips // batch 4, last partial batch dropped
    run = run_dir_of(overrides)
    trained, meta = load_model(run / "checkpoint" / "last")
    assert meta["class_names"] == list(cfg.data.class_names)
    assert meta["extra"]["stride"] == cfg.data.sampling.stride  # predict samples as training did
    assert meta["extra"]["machine"] == describe_machine(torch.device("cpu"))   # single seeds differ between machines
    before, after = fixed_batch_loss(initial, cfg), fixed_batch_loss(trained, cfg)
    assert after[0] < 0.9 * before[0] and after[1] < before[1], (before, after)
    assert history[-1]["loss"] < history[0]["loss"], [round(r["loss"], 4) for r in history]

    assert json.loads((run / "log.jsonl").read_text().splitlines()[-1])["epoch"] == 6
    assert (run / "log.csv").read_text().splitlines()[0].startswith("epoch,steps,lr,loss,loss_cls,loss_rec")
    for name in ("last", "best"):
        assert (run / "checkpoint" / name / "model.safetensors").is_file()
        assert (run / "checkpoint" / name / "model.json").is_file()
    assert torch.load(run / "train_state.pt", weights_only=True)["epoch"] == 6


def test_max_steps_caps_the_run(demo, tmp_path):
    cfg = load_config(demo + [f"output_root={tmp_path}", "train.epochs=5"])
    history = engine.train(cfg, max_steps=4)
    assert [(row["epoch"], row["steps"]) for row in history] == [(1, 3), (2, 1)]
    # --restart: a fresh run leaves nothing of the old one behind (stale metrics, the old model)
    run = Path(cfg.run_dir)
    (run / "metrics.json").write_text("{}")
    history = engine.train(cfg, resume="never", max_steps=1)
    assert [(row["epoch"], row["steps"]) for row in history] == [(1, 1)]
    assert not (run / "metrics.json").exists()
    assert torch.load(run / "train_state.pt", weights_only=True)["epoch"] == 1


def test_a_finished_run_resumes_only_on_the_same_manifest(demo, tmp_path):
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    source = Path(load_config(demo).data.manifest_dir) / "manifest.csv"
    (manifests / "manifest.csv").write_bytes(source.read_bytes())
    cfg = load_config(demo + [f"output_root={tmp_path}", f"data.manifest_dir={manifests}"])
    first = engine.train(cfg, max_steps=1)
    (Path(cfg.run_dir) / "log.csv").unlink()  # a resubmitted job's runner removed its outputs
    assert engine.train(cfg, max_steps=1) == first  # same data: nothing left to train, logs rewritten
    assert (Path(cfg.run_dir) / "log.csv").is_file()
    lines = source.read_text().splitlines(keepends=True)
    (manifests / "manifest.csv").write_text("".join(lines[:-1]))  # other data: the old state is not this run's
    with pytest.raises(ConfigError, match="--resume: belongs to another run .*manifest"):
        engine.train(cfg, resume="require", max_steps=1)


@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(demo, tmp_path, monkeypatch):
    """Deterministic mode on CPU: a crash while saving epoch 2's checkpoint, then a resumption, gives the same weights,
    optimiser state and logged metrics as one uninterrupted run; the logs never run ahead of the checkpoint."""
    common = demo + ["train.epochs=3", "train.deterministic=true", "train.num_workers=1", "model.drop_path_rate=0.1",
                     "train.mixup=0.8", "train.cutmix=1.0"]
    straight = common + [f"output_root={tmp_path / 'straight'}"]
    resumed = common + [f"output_root={tmp_path / 'resumed'}"]
    reference = engine.train(load_config(straight))

    real_save = torch.save
    saves = []

    def crash_on_second_save(obj, f):
        saves.append(f)
        if len(saves) == 2:
            Path(f).write_bytes(b"half a checkpoint")
            raise KeyboardInterrupt("killed while checkpointing epoch 2")
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", crash_on_second_save)
    with pytest.raises(KeyboardInterrupt):
        engine.train(load_config(resumed))
    monkeypatch.undo()
    run = run_dir_of(resumed)
    assert torch.load(run / "train_state.pt", weights_only=True)["epoch"] == 1
    assert len((run / "log.jsonl").read_text().splitlines()) == 1, "the log claims an epoch without checkpoint"
    assert not (run / "checkpoint" / "last").exists()
    assert not list(run.glob(".*.tmp")), "a temporary file survived the crash"

    history = engine.train(load_config(resumed))              # automatic resumption from train_state.pt
    strip = [{k: v for k, v in row.items() if k != "time"} for row in history]
    assert strip == [{k: v for k, v in row.items() if k != "time"} for row in reference]
    a = torch.load(run_dir_of(straight) / "train_state.pt", weights_only=True)
    b = torch.load(run / "train_state.pt", weights_only=True)
    assert_same_weights(a["model"], b["model"])
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for param in a["optimizer"]["state"]:                      # AdamW moments and step counts of every parameter
        assert_same_weights(a["optimizer"]["state"][param], b["optimizer"]["state"][param])
    assert a["rng"][0]["mixup"] == b["rng"][0]["mixup"] and torch.equal(a["rng"][0]["torch"], b["rng"][0]["torch"])
    assert (run_dir_of(straight) / "checkpoint/last/model.safetensors").read_bytes() == \
        (run / "checkpoint/last/model.safetensors").read_bytes()

    # a finished run returns at once; --resume needs a state of this very run; another recipe overwrites the
    # finished run only with --restart
    assert engine.train(load_config(resumed), resume="require") == history
    with pytest.raises(AdatoskError, match="--resume: there is no train_state.pt"):
        engine.train(load_config(common + [f"output_root={tmp_path / 'none'}"]), resume="require")
    with pytest.raises(ConfigError, match=r"--resume: belongs to another run \(train.base_lr: 0.0\d+ -> 0.001\)"):
        engine.train(load_config(resumed + ["train.base_lr=1e-3"]), resume="require")
    with pytest.raises(ConfigError, match=r"finished run of another config \(train.base_lr: .*--restart"):
        engine.train(load_config(resumed + ["train.base_lr=1e-3"]))
    assert (run / "checkpoint/last/model.safetensors").is_file()
    assert [row["epoch"] for row in engine.train(load_config(resumed + ["train.base_lr=1e-3"]), resume="never")] \
        == [1, 2, 3]
