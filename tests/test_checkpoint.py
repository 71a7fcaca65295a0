"""Our checkpoint format: ``model.safetensors`` + ``model.json``, rebuilt exactly, corruption caught by name."""

from __future__ import annotations

import json

import pytest
import torch

from adatosk.config import load_config, to_container
from adatosk.models import create_model_from_config
from adatosk.models.checkpoint import load_model, save_model
from adatosk.models.masking import tube_mask

CLASSES = ["happy", "sad", "neutral"]


def model_cfg(variant: str) -> dict:
    cfg = load_config([f"model={variant}", "model.arch=vit_tiny_patch16_64", "model.img_size=32",
                       "model.num_frames=4"])
    return to_container(cfg.model)


def trained_looking(model: torch.nn.Module) -> torch.nn.Module:
    """Random parameters and BatchNorm statistics, so that every tensor of the state dict matters."""
    torch.manual_seed(0)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5)
    return model.eval()


@pytest.mark.parametrize("variant", ["adatosk_dagger", "videomae"])
def test_round_trip_gives_identical_logits(tmp_path, variant):
    cfg = model_cfg(variant)
    model = trained_looking(create_model_from_config(cfg, num_classes=3))
    directory = save_model(tmp_path / "last", model, cfg, 3, CLASSES, extra={"epoch": 4})
    assert sorted(p.name for p in directory.iterdir()) == ["model.json", "model.safetensors"]
    loaded, meta = load_model(directory)
    assert not loaded.training and type(loaded) is type(model)
    assert meta["class_names"] == CLASSES and meta["extra"] == {"epoch": 4} and meta["model_cfg"] == cfg
    x = torch.randn(2, 3, 4, 32, 32)
    visible = tube_mask(2, model.num_patches, model.eval_mask_ratio, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(x, visible=visible), model(x, visible=visible))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    # the weights file or the JSON may be given instead of the directory
    assert load_model(directory / "model.safetensors")[1] == meta


def test_save_rejects_inconsistent_class_names(tmp_path):
    cfg = model_cfg("videomae")
    model = create_model_from_config(cfg, num_classes=3)
    with pytest.raises(ValueError, match="class names"):
        save_model(tmp_path, model, cfg, 3, CLASSES[:2])


@pytest.fixture
def saved(tmp_path):
    cfg = model_cfg("videomae")
    return save_model(tmp_path / "ckpt", create_model_from_config(cfg, num_classes=3), cfg, 3, CLASSES)


def test_truncated_weights_are_reported_by_name(saved):
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=f"{weights}.*corrupt or truncated"):
        load_model(saved)


def test_unreadable_weights_are_reported_by_name(saved):
    from adatosk.io import sha256_file
    weights = saved / "model.safetensors"
    weights.write_bytes(b"\x00" * 64)
    meta = json.loads((saved / "model.json").read_text())
    meta["sha256"] = sha256_file(weights)  # a consistent description of a broken file
    (saved / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=f"{weights}: not a readable safetensors file"):
        load_model(saved)


def test_corrupt_or_missing_json_is_reported_by_name(saved):
    meta_path = saved / "model.json"
    meta_path.write_text(meta_path.read_text()[:40])
    with pytest.raises(ValueError, match=f"{meta_path}: not valid JSON"):
        load_model(saved)
    meta_path.unlink()
    with pytest.raises(FileNotFoundError, match=str(meta_path)):
        load_model(saved)


def test_weights_of_another_model_are_reported_by_name(saved):
    meta_path = saved / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["model_cfg"]["family"] = "adatosk"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=f"{saved / 'model.safetensors'}: does not fit the model"):
        load_model(saved)
