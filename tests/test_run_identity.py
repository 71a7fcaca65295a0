"""What a run is: its config and the content of its inputs (manifest, clips, pre-trained weights). A changed input
retrains, an unchanged one resumes, a code edit alone resumes, and nothing trained is thrown away without a flag:
a run of another config is refused, and ``--restart`` replaces a run only once the new one has trained an epoch."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import demo_overrides

from adatosk.cli import main as cli_main
from adatosk.config import load_config
from adatosk.data import facecrop
from adatosk.data.cache import open_clip, pack_clip
from adatosk.errors import ConfigError
from adatosk.models import create_model_from_config
from adatosk.train import engine, identity

STEPS = 2  # optimiser steps of every run here: one epoch of 3 steps would do, two keep the runs short


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> list[str]:
    """The data overrides of a small demo set whose clips are packed (fold 1: 14 train / 7 test clips)."""
    overrides = demo_overrides(tmp_path_factory.mktemp("identity"))
    facecrop.run(load_config(overrides).data)
    return overrides


def write_weights(path: Path, seed: int) -> Path:
    """A pre-trained checkpoint for the tiny model (its own state dict, the layout of a fine-tuned VideoMAE .pth)."""
    torch.manual_seed(seed)
    model = create_model_from_config(load_config(["model=tiny", "model.img_size=64", "model.num_frames=8"]).model,
                                     num_classes=7)
    torch.save({"model": model.state_dict()}, path)
    return path


def state(run: Path) -> dict:
    return torch.load(run / engine.STATE_FILE, map_location="cpu", weights_only=True)


def files(run: Path) -> dict[str, bytes]:
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


class Interrupted(Exception):
    """What kills a run in its first epoch."""


def interrupt_first_epoch(monkeypatch) -> None:
    def killed(self, network, epoch):
        raise Interrupted(f"killed in epoch {epoch + 1}")
    monkeypatch.setattr(engine.Trainer, "train_one_epoch", killed)


def test_replaced_pretrained_weights_retrain_and_unchanged_ones_resume(data, tmp_path, caplog):
    weights = write_weights(tmp_path / "W.pth", seed=1)
    cfg = load_config(data + [f"output_root={tmp_path / 'runs'}", f"model.pretrained={weights}"])
    run = Path(cfg.run_dir)
    first = engine.train(cfg, max_steps=STEPS)
    assert engine.train(cfg, max_steps=STEPS) == first  # unchanged: the finished run returns as it is
    old_model = (run / "checkpoint/last/model.safetensors").read_bytes()

    write_weights(weights, seed=2)  # the same file name, other weights
    with caplog.at_level(logging.WARNING):
        second = engine.train(cfg, max_steps=STEPS)
    assert "a run of other pretrained; training afresh" in caplog.text
    assert second != first
    assert (run / "checkpoint/last/model.safetensors").read_bytes() != old_model
    assert state(run)["identity"]["inputs"]["pretrained"] == identity.pretrained_digest(str(weights))
    with pytest.raises(ConfigError, match=r"--resume: belongs to another run \(pretrained\)"):
        engine.train(load_config(data + [f"output_root={tmp_path / 'runs'}",
                                          f"model.pretrained={write_weights(weights, seed=3)}"]),
                     resume="require", max_steps=STEPS)


def test_rewritten_clips_retrain(data, tmp_path):
    cfg = load_config(data + [f"output_root={tmp_path / 'runs'}"])
    first = engine.train(cfg, max_steps=STEPS)
    run = Path(cfg.run_dir)
    old_identity = state(run)["identity"]
    for clip in sorted(Path(cfg.data.cache_dir).glob("*.npy")):  # every clip inverted: same names, same sizes
        pack_clip(255 - np.asarray(open_clip(clip)), clip)
    second = engine.train(cfg, max_steps=STEPS)
    assert [row["loss"] for row in second] != [row["loss"] for row in first]
    old_inputs, new_inputs = old_identity["inputs"], state(run)["identity"]["inputs"]
    assert new_inputs["clips"] != old_inputs["clips"]
    assert new_inputs["manifest"] == old_inputs["manifest"] and new_inputs["pretrained"] == old_inputs["pretrained"]


def test_a_code_edit_alone_resumes_an_unfinished_run(data, tmp_path, monkeypatch, caplog):
    cfg = load_config(data + [f"output_root={tmp_path / 'runs'}", "train.epochs=2"])
    run = Path(cfg.run_dir)
    real = engine.Trainer.train_one_epoch

    def killed_in_epoch_2(self, network, epoch):
        if epoch == 1:
            raise Interrupted("killed in epoch 2")
        return real(self, network, epoch)

    monkeypatch.setattr(engine.Trainer, "train_one_epoch", killed_in_epoch_2)
    with pytest.raises(Interrupted):
        engine.train(cfg)
    monkeypatch.undo()
    assert state(run)["epoch"] == 1
    monkeypatch.setattr(identity, "code_fingerprint", lambda: "the package after a comment was added to metrics.py")
    with caplog.at_level(logging.INFO):
        history = engine.train(cfg)
    assert "written by other package code: resuming" in caplog.text
    assert "resuming" in caplog.text and "after epoch 1/2" in caplog.text
    assert [row["epoch"] for row in history] == [1, 2]
    assert state(run)["epoch"] == 2


def test_another_config_on_an_unfinished_run_is_refused_and_kept(data, tmp_path, monkeypatch):
    overrides = data + [f"output_root={tmp_path / 'runs'}", "train.epochs=2"]
    run = Path(load_config(overrides).run_dir)
    real = engine.Trainer.train_one_epoch
    monkeypatch.setattr(engine.Trainer, "train_one_epoch",
                        lambda self, network, epoch: (_ for _ in ()).throw(Interrupted()) if epoch == 1
                        else real(self, network, epoch))
    with pytest.raises(Interrupted):
        engine.train(load_config(overrides))
    monkeypatch.undo()
    before = files(run)
    with pytest.raises(ConfigError, match=r"holds an unfinished run of another config \(.*train.epochs: 2 -> 4.*\): "
                                          r"pass --restart to replace it"):
        engine.train(load_config(overrides + ["train.epochs=4"]))
    assert files(run) == before
    # --restart and --replace keep it while the new run has not trained its first epoch
    interrupt_first_epoch(monkeypatch)
    for mode in ("never", "replace"):
        with pytest.raises(Interrupted):
            engine.train(load_config(overrides + ["train.epochs=4"]), resume=mode)
        assert files(run) == before
    monkeypatch.undo()
    history = engine.train(load_config(overrides + ["train.epochs=4"]), resume="replace", max_steps=STEPS)
    assert [row["epoch"] for row in history] == [1]
    assert state(run)["identity"]["config"]["train"]["epochs"] == 4


def test_restart_replaces_a_finished_run_only_once_the_new_one_has_trained_an_epoch(data, tmp_path, monkeypatch):
    cfg = load_config(data + [f"output_root={tmp_path / 'runs'}"])
    run = Path(cfg.run_dir)
    engine.train(cfg, max_steps=STEPS)
    (run / "metrics.json").write_text("{}")  # as evaluate left it
    before = files(run)
    interrupt_first_epoch(monkeypatch)
    with pytest.raises(Interrupted):
        engine.train(cfg, resume="never", max_steps=STEPS)
    assert files(run) == before
    monkeypatch.undo()
    engine.train(cfg, resume="never", max_steps=STEPS)
    assert not (run / "metrics.json").exists()  # nothing of the old run outlives the new one's first epoch
    assert (run / "checkpoint/last/model.json").is_file()
    assert files(run)["train_state.pt"] != before["train_state.pt"]


def test_the_default_demo_experiment_is_refused_on_another_dataset(tmp_path, capsys):
    dfew = ["data=dfew", f"data.root={tmp_path / 'dfew'}", f"output_root={tmp_path / 'runs'}"]
    assert cli_main(["train", *dfew, "data.fold=1"]) == 2
    err = capsys.readouterr().err
    assert "data=dfew under the default experiment 'demo' would train the demo's tiny model (vit_tiny_patch16_64 " \
           "at 64 px)" in err and "add experiment=paper" in err
    assert not (tmp_path / "runs").exists()
    engine.check_experiment(load_config(dfew + ["experiment=demo"]), dfew + ["experiment=demo"])  # on purpose
    engine.check_experiment(load_config(["experiment=paper", "data=dfew"]), ["experiment=paper", "data=dfew"])
    assert load_config(["experiment=paper"]).experiment == "paper"


def test_the_checkpoint_says_what_the_run_is(trained):
    meta = json.loads((Path(load_config(trained).run_dir) / "checkpoint/last/model.json").read_text())
    assert meta["experiment"] == "demo" and meta["model"] == "adatosk_vit_tiny_patch16_64"


@pytest.mark.slow
def test_replaced_pretrained_weights_retrain_under_dvc_repro(data, tmp_path):
    """DVC reruns the stage when the weights file changes: the run must be trained from the new weights, not
    returned from the old state (dvc.lock would pair the new weights' hash with the old model)."""
    weights = write_weights(tmp_path / "W.pth", seed=1)
    overrides = data + ["output_root=runs", f"model.pretrained={weights}"]
    run = tmp_path / load_config(overrides).run_dir
    command = " ".join(["adatosk", "train", *overrides, "--replace", "--max-steps", str(STEPS)])
    stage = {"cmd": command, "deps": ["W.pth"], "outs": [str(run.relative_to(tmp_path) / "checkpoint" / "last")]}
    (tmp_path / "dvc.yaml").write_text(json.dumps({"stages": {"train": stage}}))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "DVC_NO_ANALYTICS": "1"}
    dvc = [str(Path(sys.executable).parent / "dvc")]
    subprocess.run(dvc + ["init", "--no-scm", "-q"], cwd=tmp_path, env=env, check=True)
    subprocess.run(dvc + ["repro", "-q"], cwd=tmp_path, env=env, check=True)
    first = (run / "checkpoint/last/model.safetensors").read_bytes()

    write_weights(weights, seed=2)
    subprocess.run(dvc + ["repro", "-q"], cwd=tmp_path, env=env, check=True)
    assert (run / "checkpoint/last/model.safetensors").read_bytes() != first
    assert state(run)["identity"]["inputs"]["pretrained"] == identity.pretrained_digest(str(weights))
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]["train"]
    assert lock["deps"][0]["md5"] == hashlib.md5(weights.read_bytes()).hexdigest()
