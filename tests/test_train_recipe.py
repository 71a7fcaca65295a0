"""Units of the training recipe: mixup/cutmix on video, optimiser groups, lr schedule, AMP settings, atomic saves."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from adatosk.train.distributed import amp_settings
from adatosk.train.engine import save_atomic, write_logs
from adatosk.train.mixup import VideoMixup, smooth_one_hot
from adatosk.train.optim import WarmupCosine, build_optimizer, build_scheduler, param_groups, scaled_lr


def test_cutmix_cuts_the_same_spatial_box_in_every_frame():
    torch.manual_seed(0)
    b, c, t, h, w = 4, 3, 6, 32, 40
    x = torch.randn(b, c, t, h, w)
    mix = VideoMixup(num_classes=5, mixup_alpha=0.0, cutmix_alpha=1.0, prob=1.0, label_smoothing=0.0,
                     rng=np.random.default_rng(3))
    out, target = mix(x, torch.tensor([0, 1, 2, 3]))
    pasted = out != x                             # [B, C, T, H, W]
    assert pasted.any(), "cutmix changed nothing"
    box = pasted[0, 0, 0]                         # [H, W]
    for i in range(b):                            # every clip, channel and frame: the same H x W box ...
        for j in range(c):
            for k in range(t):
                assert torch.equal(pasted[i, j, k], box), (i, j, k)
    rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
    assert box[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all(), "the cut region is not a box"
    # ... filled from the mirrored clip, every frame of it
    inside = (slice(None), slice(None), slice(None), slice(rows.min(), rows.max() + 1),
              slice(cols.min(), cols.max() + 1))
    assert torch.equal(out[inside], x.flip(0)[inside])
    # lambda is the exact uncut area, and the soft targets carry it
    lam = 1 - box.sum().item() / (h * w)
    assert target[0].tolist() == pytest.approx([lam, 0, 0, 1 - lam, 0])
    assert torch.allclose(target.sum(1), torch.ones(b))


def test_mixup_blends_clips_and_targets_with_one_lambda():
    x = torch.randn(2, 3, 4, 8, 8)
    mix = VideoMixup(num_classes=3, mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.0,
                     rng=np.random.default_rng(0))
    out, target = mix(x, torch.tensor([0, 2]))
    lam = target[0, 0].item()
    assert 0 < lam < 1
    assert torch.allclose(out, lam * x + (1 - lam) * x.flip(0), atol=1e-6)
    assert target[1].tolist() == pytest.approx([1 - lam, 0, lam])


def test_without_mixing_targets_are_label_smoothed():
    mix = VideoMixup(num_classes=4, mixup_alpha=0.0, cutmix_alpha=0.0, label_smoothing=0.1)
    x = torch.randn(2, 3, 2, 4, 4)
    out, target = mix(x, torch.tensor([1, 3]))
    assert out is x
    assert target[0].tolist() == pytest.approx([0.025, 0.925, 0.025, 0.025])
    assert torch.equal(smooth_one_hot(torch.tensor([2]), 3, 0.0), torch.tensor([[0.0, 0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"\[B, C, T, H, W\]"):
        mix(torch.randn(2, 3, 4, 4), torch.tensor([0, 1]))


class TinyViT(nn.Module):
    """Parameter names as in the timm / VideoMAE encoder (patch_embed, cls_token, blocks.i, norm, head)."""

    def __init__(self, depth: int = 3, dim: int = 8) -> None:
        super().__init__()
        self.patch_embed = nn.Linear(4, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 2, dim))
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim)) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 3)


def test_no_weight_decay_on_biases_norms_positions_and_tokens():
    groups = param_groups(TinyViT(), weight_decay=0.05)
    decay = {n for g in groups if g["weight_decay"] > 0 for n in g["names"]}
    no_decay = {n for g in groups if g["weight_decay"] == 0 for n in g["names"]}
    assert decay == {"patch_embed.weight", "head.weight"} | {f"blocks.{i}.1.weight" for i in range(3)}
    assert {"cls_token", "pos_embed", "norm.weight", "norm.bias", "head.bias", "blocks.0.0.weight",
            "blocks.2.1.bias"} <= no_decay
    assert all(g["lr_scale"] == 1.0 for g in groups)


def test_layer_decay_scales_lr_by_depth():
    model = TinyViT(depth=3)
    opt = build_optimizer(model, lr=1.0, weight_decay=0.05, betas=(0.9, 0.95), layer_decay=0.5)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert lr_of[id(model.head.weight)] == 1.0 and lr_of[id(model.norm.weight)] == 1.0
    assert lr_of[id(model.blocks[2][1].weight)] == 0.5
    assert lr_of[id(model.blocks[0][1].weight)] == 0.5 ** 3
    assert lr_of[id(model.patch_embed.weight)] == lr_of[id(model.cls_token)] == 0.5 ** 4
    assert opt.defaults["betas"] == (0.9, 0.95)


def test_fused_adamw_on_cpu_makes_the_per_parameter_update_of_adamw():
    """build_optimizer picks torch's fused kernel on the CPU; its steps equal the reference (for-loop) AdamW's."""
    fused_model = TinyViT(depth=2)
    reference_model = TinyViT(depth=2)
    reference_model.load_state_dict(fused_model.state_dict())
    start = fused_model.head.weight.detach().clone()
    fused = build_optimizer(fused_model, lr=1e-2, weight_decay=0.05, betas=(0.9, 0.95), layer_decay=0.75)
    groups = param_groups(reference_model, weight_decay=0.05, layer_decay=0.75)
    for group in groups:
        group["lr"] = 1e-2 * group.pop("lr_scale")
        del group["names"]
    reference = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.05, foreach=False)
    assert fused.defaults["fused"] and not reference.defaults["fused"]
    x = torch.randn(5, 4)
    for _ in range(3):
        for model, opt in ((fused_model, fused), (reference_model, reference)):
            opt.zero_grad()
            model.head(model.norm(model.blocks[1](model.blocks[0](model.patch_embed(x)) + model.cls_token[0])
                                  + model.pos_embed[0, :1])).square().sum().backward()
            opt.step()
    for (name, got), want in zip(fused_model.named_parameters(), reference_model.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)
    assert (fused_model.head.weight - start).abs().min() > 0  # every weight moved: the steps were taken


def test_linear_scaling_and_warmup_cosine_schedule():
    assert scaled_lr(1.5e-4, 128) == pytest.approx(7.5e-5)
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, lr=0.1, weight_decay=0.05, betas=(0.9, 0.999))
    sched = build_scheduler(opt, lr=0.1, min_lr=0.001, warmup_steps=4, total_steps=14)
    lrs = []
    for _ in range(14):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])           # linear warm-up, no wasted lr=0 step
    assert lrs[4] == pytest.approx(0.1)                                  # peak
    assert all(a > b for a, b in zip(lrs[4:], lrs[5:]))                  # cosine decreases ...
    assert opt.param_groups[0]["lr"] == pytest.approx(0.001)             # ... to min_lr at the end
    halfway = WarmupCosine(4, 14, 0.01)(9)
    assert halfway == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_amp_is_gpu_only_and_fp16_gets_a_scaler():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert not amp_settings("bf16", cpu).enabled and not amp_settings("fp16", cpu).use_scaler
    bf16, fp16 = amp_settings("bf16", gpu), amp_settings("fp16", gpu)
    assert bf16.enabled and bf16.dtype == torch.bfloat16 and not bf16.use_scaler
    assert fp16.enabled and fp16.dtype == torch.float16 and fp16.use_scaler
    assert not amp_settings("none", gpu).enabled
    with pytest.raises(ValueError, match="train.amp"):
        amp_settings("fp8", gpu)


def test_a_crash_mid_save_leaves_no_half_written_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "train_state.pt"
    save_atomic({"epoch": 1}, path)

    def crashing_save(obj, f):
        with open(f, "wb") as handle:
            handle.write(b"half a checkpoint")
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_state.pt"]


def test_logs_are_rewritten_whole_from_the_history(tmp_path):
    rows = [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.5, "val_uar": 0.4}]
    write_logs(tmp_path, rows[:1])
    write_logs(tmp_path, rows)
    assert (tmp_path / "log.csv").read_text().splitlines() == ["epoch,loss,val_uar", "1,2.0,", "2,1.5,0.4"]
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 2



def test_layer_decay_follows_the_real_encoder_layout():
    from adatosk.config import load_config
    from adatosk.models import create_model_from_config

    cfg = load_config(["model=tiny", "model.img_size=32", "model.num_frames=4"])
    model = create_model_from_config(cfg.model, num_classes=7)
    depth = len(model.encoder.blocks)
    scale = {n: g["lr_scale"] for g in param_groups(model, 0.05, layer_decay=0.75) for n in g["names"]}
    assert scale["encoder.patch_embed.proj.weight"] == pytest.approx(0.75 ** (depth + 1))
    assert scale["encoder.blocks.0.attn.qkv.weight"] == pytest.approx(0.75 ** depth)
    assert scale[f"encoder.blocks.{depth - 1}.mlp.fc2.weight"] == pytest.approx(0.75)
    for name in ("decoder.blocks.0.attn.qkv.weight", "head.fc2.weight", "encoder.norm.weight"):
        assert scale[name] == 1.0, name
