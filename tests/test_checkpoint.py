"""Our checkpoint format: ``model.safetensors`` + ``model.json``, rebuilt exactly, corruption caught by name."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adatosk.config import load_config, to_container
from adatosk.io import TEMPORARY_NAME, remove_stale_temporaries
from adatosk.models import create_model_from_config
from adatosk.models.checkpoint import CheckpointError, load_model, save_model
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


@pytest.mark.parametrize("edit, message", [
    (lambda names: names[:2], r"class_names must be 3 distinct class names, one per output of the model"),
    (lambda names: names + ["fear"], r"class_names must be 3 distinct class names"),
    (lambda names: [names[0]] * 3, r"class_names must be 3 distinct class names"),
])
def test_class_names_that_do_not_fit_the_model_are_refused_by_name(saved, edit, message):
    meta_path = saved / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["class_names"] = edit(meta["class_names"])
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=f"{meta_path}: {message}"):
        load_model(saved)


def test_class_names_in_another_order_than_the_datas_are_refused(saved):
    meta_path = saved / "model.json"
    assert load_model(saved, class_names=CLASSES)[1]["class_names"] == CLASSES
    with pytest.raises(CheckpointError, match=rf"{meta_path}: class_names \['happy', 'sad', 'neutral'\] differ from "
                                              r"the data's \['neutral', 'sad', 'happy'\]"):
        load_model(saved, class_names=CLASSES[::-1])


# save_model in a child process whose files may grow to 64 KiB (the weights need more): with SIGXFSZ at the kernel's
# default the child is killed in the middle of writing the weights, as by kill -9; ignored, the write fails (EFBIG)
# as on a full disk.
SAVE_UNDER_A_FILE_SIZE_LIMIT = """
import json, resource, signal, sys
from adatosk.models import create_model_from_config
from adatosk.models.checkpoint import save_model
cfg, CLASSES = json.loads(sys.argv[3])  # model_cfg("videomae") and CLASSES of the test
model = create_model_from_config(cfg, num_classes=3)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN if sys.argv[2] == "full" else signal.SIG_DFL)  # Python ignores it
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, resource.RLIM_INFINITY))
save_model(sys.argv[1], model, cfg, 3, CLASSES)
"""


def save_in_child(directory, how: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.run([sys.executable, "-c", SAVE_UNDER_A_FILE_SIZE_LIMIT, str(directory), how,
                           json.dumps([model_cfg("videomae"), CLASSES])],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.slow
def test_weights_killed_mid_write_leave_a_temporary_that_is_removed_and_dvcignored(tmp_path):
    directory = tmp_path / "checkpoint" / "last"
    result = save_in_child(directory, "killed")
    assert result.returncode == -signal.SIGXFSZ, result.stderr
    left = [p.name for p in directory.iterdir()]
    assert len(left) == 1 and TEMPORARY_NAME.fullmatch(left[0]), left  # named as every atomic write's temporary
    assert [p.name for p in remove_stale_temporaries(tmp_path)] == left  # so the next run removes it
    assert not any(directory.iterdir())


@pytest.mark.slow
def test_weights_on_a_full_disk_name_the_file_and_leave_nothing(tmp_path):
    directory = tmp_path / "checkpoint" / "last"
    result = save_in_child(directory, "full")
    assert result.returncode == 1
    assert f"OSError: [Errno {errno.EFBIG}] File too large: '{directory / 'model.safetensors'}'" in result.stderr
    assert not any(directory.iterdir())
