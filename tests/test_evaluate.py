"""`adatosk evaluate`: the metrics contract, seeded multi-view masks, reproducibility."""

import csv
import json
import sys
from pathlib import Path

import pytest
import torch

from adatosk.cli import main as cli_main
from adatosk.config import load_config
from adatosk.evaluate import view_masks
from adatosk.models.checkpoint import read_meta
from adatosk.train import engine

METRICS_KEYS = {"unit", "uar", "war", "per_class_recall", "confusion_matrix", "class_names", "n_clips", "views",
                "eval_mask_ratio", "all_tokens", "data", "fold", "seed", "variant", "experiment", "model", "img_size"}


def test_evaluate_writes_the_metrics_contract_and_is_reproducible(trained):
    run = Path(load_config(trained).run_dir)
    assert cli_main(["evaluate", *trained]) == 0
    first = json.loads((run / "metrics.json").read_text())
    predictions = (run / "predictions.csv").read_text()
    assert cli_main(["evaluate", *trained]) == 0
    assert json.loads((run / "metrics.json").read_text()) == first
    assert (run / "predictions.csv").read_text() == predictions

    assert METRICS_KEYS <= first.keys()
    cfg = load_config(trained)
    assert first["class_names"] == list(cfg.data.class_names)
    assert first["n_clips"] == 7                                     # fold 1's test split
    assert first["views"] == {"temporal": 2, "mask": 2, "total": 4}
    assert (first["unit"], first["seed"], first["eval_mask_ratio"]) == ("percent", cfg.seed, cfg.model.eval_mask_ratio)
    assert (first["experiment"], first["model"], first["img_size"]) == ("demo", "adatosk_vit_tiny_patch16_64", 64)
    assert first["trained_on"] == read_meta(run / "checkpoint" / "last")[0]["extra"]["machine"]
    cm = first["confusion_matrix"]
    assert len(cm) == 7 and sum(map(sum, cm)) == 7
    rows = list(csv.DictReader(predictions.splitlines()))
    assert [r.keys() for r in rows][0] == {"clip_id", "label", "pred", "probs"}
    assert len(rows) == 7 and len({r["clip_id"] for r in rows}) == 7
    for r in rows:
        probs = [float(p) for p in r["probs"].split()]
        assert len(probs) == 7 and sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert int(r["pred"]) == max(range(7), key=probs.__getitem__)
    assert 100 * sum(int(r["label"]) == int(r["pred"]) for r in rows) / 7 == pytest.approx(first["war"])


def test_all_tokens_scores_the_same_clips_with_every_token_visible(trained):
    """evaluate.all_tokens: one unmasked view per temporal clip, the model's forward with an all-visible mask."""
    from adatosk.evaluate import load_test_split
    from adatosk.models.checkpoint import load_model

    cfg = load_config(trained)
    assert cli_main(["evaluate", *trained]) == 0
    every = json.loads((Path(cfg.run_dir) / "metrics.json").read_text())["all_tokens"]
    assert every["views"] == {"temporal": 2, "mask": 1, "total": 2} and every["eval_mask_ratio"] == 0.0
    model, _ = load_model(Path(cfg.run_dir) / "checkpoint" / "last")
    model.eval()
    dataset = load_test_split(cfg)
    right = 0
    with torch.inference_mode():
        for i in range(len(dataset)):
            clip = dataset[i]["video"]                                    # [V, 3, T, S, S]
            visible = torch.ones(len(clip), model.num_patches, dtype=torch.bool)
            pred = int(model(clip, visible=visible).softmax(-1).mean(0).argmax())
            right += pred == dataset.labels[i]
            assert every["confusion_matrix"][dataset.labels[i]][pred] >= 1
    assert every["war"] == pytest.approx(100 * right / len(dataset))
    assert cli_main(["evaluate", *trained, "evaluate.all_tokens=false"]) == 0
    assert "all_tokens" not in json.loads((Path(cfg.run_dir) / "metrics.json").read_text())


def test_masks_are_seeded_by_clip_and_view():
    model = type("M", (), {"eval_mask_ratio": 0.5, "num_patches": 16})()
    cpu = torch.device("cpu")
    a = view_masks(model, torch.tensor([3, 4]), 0, mask_seed=0, device=cpu)
    assert a.shape == (2, 16) and a.dtype == torch.bool and a.sum(1).tolist() == [8, 8]
    assert torch.equal(a, view_masks(model, torch.tensor([3, 4]), 0, mask_seed=0, device=cpu))
    assert torch.equal(a[1:], view_masks(model, torch.tensor([4]), 0, mask_seed=0, device=cpu))  # batch-independent
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(a, view_masks(model, torch.tensor([3, 4]), 1, mask_seed=0, device=cpu))
    assert not torch.equal(a, view_masks(model, torch.tensor([3, 4]), 0, mask_seed=1, device=cpu))
    assert view_masks(model, torch.tensor([3, 4]), 0, mask_seed=0, device=cpu, ratio=0.75).sum(1).tolist() == [4, 4]
    model.eval_mask_ratio = 0.0
    assert view_masks(model, torch.tensor([3]), 0, mask_seed=0, device=cpu).tolist() == [[True] * 16]


def test_a_model_without_eval_mask_uses_one_mask_view(trained, tmp_path):
    overrides = trained + ["model.eval_mask_ratio=0.0", f"output_root={tmp_path}"]
    engine.train(load_config(overrides), max_steps=1)
    assert cli_main(["evaluate", *overrides]) == 0
    metrics = json.loads((Path(load_config(overrides).run_dir) / "metrics.json").read_text())
    assert metrics["views"] == {"temporal": 2, "mask": 1, "total": 2}
    assert metrics["eval_mask_ratio"] == 0.0
    assert metrics["all_tokens"] == {k: metrics[k] for k in metrics["all_tokens"]}   # the same views, not rerun


def test_evaluate_without_a_checkpoint_says_what_to_do(trained, tmp_path, capsys):
    assert cli_main(["evaluate", *trained, f"output_root={tmp_path}"]) != 0
    err = capsys.readouterr().err
    assert f"no checkpoint at {tmp_path}/demo/adatosk_dagger/fold1/seed0/checkpoint/last" in err
    assert "train first (adatosk train)" in err and "Traceback" not in err


def test_evaluate_does_not_import_fvcore(trained, monkeypatch):
    """fvcore.nn scripts a function with the deprecated torch.jit.script when imported (a FutureWarning on every
    evaluate): evaluate runs without it; FLOPs are the `flops` stage's (flops.json)."""
    for module in ("fvcore", "fvcore.nn", "adatosk.flops", "adatosk.flop_count"):
        monkeypatch.setitem(sys.modules, module, None)  # importing it now raises ImportError
    assert cli_main(["evaluate", *trained, "evaluate.temporal_views=1", "evaluate.mask_views=1"]) == 0
