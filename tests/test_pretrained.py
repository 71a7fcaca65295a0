"""Loading official VideoMAE / MAE-DFER checkpoints through timm (``pretrained_cfg_overlay=dict(file=...)``).

The checkpoints are written here with random weights under the official key names and wrappers. The reference
forward passes below are a minimal re-implementation of VideoMAE's published architecture (Tong et al., 2022:
tube embedding, fixed sinusoid positions, pre-norm ViT blocks with q/v biases, mean pool + fc_norm + linear
head for fine-tuning; LayerNorm'd visible tokens for the pre-training encoder), written with plain tensor ops.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from adatosk.config import load_config
from adatosk.models import create_model_from_config
from adatosk.models.masking import tube_mask
from adatosk.models.pretrained import resample_pos_embed

WIDTH, DEPTH, HEADS, PATCH, TUBELET = 192, 4, 3, 16, 2  # the registered tiny arch
IMG, FRAMES = 32, 4  # 2 slots x 4 positions


# ----------------------------------------------------------------------------------- the VideoMAE reference

def sinusoid_table(n_position: int, dim: int) -> torch.Tensor:
    angles = np.array([[pos / np.power(10000, 2 * (j // 2) / dim) for j in range(dim)]
                       for pos in range(n_position)])
    angles[:, 0::2] = np.sin(angles[:, 0::2])
    angles[:, 1::2] = np.cos(angles[:, 1::2])
    return torch.FloatTensor(angles).unsqueeze(0)


def layer_norm(x, sd, name):
    return F.layer_norm(x, x.shape[-1:], sd[name + ".weight"], sd[name + ".bias"], eps=1e-6)


def reference_block(x, sd, prefix, heads):
    b, n, c = x.shape
    h = layer_norm(x, sd, prefix + "norm1")
    bias = torch.cat([sd[prefix + "attn.q_bias"], torch.zeros(c), sd[prefix + "attn.v_bias"]])
    qkv = (h @ sd[prefix + "attn.qkv.weight"].T + bias).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * (c // heads) ** -0.5, qkv[1], qkv[2]
    attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(b, n, c)
    x = x + out @ sd[prefix + "attn.proj.weight"].T + sd[prefix + "attn.proj.bias"]
    h = layer_norm(x, sd, prefix + "norm2")
    h = F.gelu(h @ sd[prefix + "mlp.fc1.weight"].T + sd[prefix + "mlp.fc1.bias"])
    return x + h @ sd[prefix + "mlp.fc2.weight"].T + sd[prefix + "mlp.fc2.bias"]


def reference_tokens(video, sd, prefix=""):
    x = F.conv3d(video, sd[prefix + "patch_embed.proj.weight"], sd[prefix + "patch_embed.proj.bias"],
                 stride=(TUBELET, PATCH, PATCH))
    x = x.flatten(2).transpose(1, 2)
    return x + sinusoid_table(x.shape[1], x.shape[2])


def reference_finetune_logits(video, sd):
    """VideoMAE's fine-tuning model (use_mean_pooling=True): blocks, norm = Identity, fc_norm(mean), head."""
    x = reference_tokens(video, sd)
    for i in range(DEPTH):
        x = reference_block(x, sd, f"blocks.{i}.", HEADS)
    return layer_norm(x.mean(1), sd, "fc_norm") @ sd["head.weight"].T + sd["head.bias"]


def reference_pretrain_encoder(video, sd, masked):
    """VideoMAE's pre-training encoder: ``x[~mask]`` (mask True = masked), blocks, encoder.norm."""
    x = reference_tokens(video, sd, "encoder.")
    x = x[~masked].reshape(x.shape[0], -1, x.shape[-1])
    for i in range(DEPTH):
        x = reference_block(x, sd, f"encoder.blocks.{i}.", HEADS)
    return layer_norm(x, sd, "encoder.norm")


# ------------------------------------------------------------------------------- checkpoints with official keys

def block_weights(prefix, dim, depth, gen):
    sd = {}
    for i in range(depth):
        p = f"{prefix}blocks.{i}."
        shapes = {"norm1.weight": (dim,), "norm1.bias": (dim,), "attn.q_bias": (dim,), "attn.v_bias": (dim,),
                  "attn.qkv.weight": (3 * dim, dim), "attn.proj.weight": (dim, dim), "attn.proj.bias": (dim,),
                  "norm2.weight": (dim,), "norm2.bias": (dim,), "mlp.fc1.weight": (4 * dim, dim),
                  "mlp.fc1.bias": (4 * dim,), "mlp.fc2.weight": (dim, 4 * dim), "mlp.fc2.bias": (dim,)}
        for name, shape in shapes.items():
            scale = 1.0 if name.startswith("norm") and name.endswith("weight") else 0.0
            sd[p + name] = scale + torch.randn(shape, generator=gen) * (0.1 if scale else dim ** -0.5)
    return sd


def finetune_state(num_classes=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    sd = {"patch_embed.proj.weight": torch.randn(WIDTH, 3, TUBELET, PATCH, PATCH, generator=gen) * 0.02,
          "patch_embed.proj.bias": torch.randn(WIDTH, generator=gen) * 0.02}
    sd.update(block_weights("", WIDTH, DEPTH, gen))
    sd.update({"fc_norm.weight": 1 + 0.1 * torch.randn(WIDTH, generator=gen),
               "fc_norm.bias": 0.1 * torch.randn(WIDTH, generator=gen),
               "head.weight": torch.randn(num_classes, WIDTH, generator=gen) * 0.1,
               "head.bias": torch.randn(num_classes, generator=gen) * 0.1})
    return sd


def pretrain_state(seed=1):
    gen = torch.Generator().manual_seed(seed)
    sd = {"encoder." + k: v for k, v in finetune_state(seed=seed).items() if not k.startswith(("fc_norm", "head"))}
    sd.update({"encoder.norm.weight": 1 + 0.1 * torch.randn(WIDTH, generator=gen),
               "encoder.norm.bias": 0.1 * torch.randn(WIDTH, generator=gen),
               "encoder_to_decoder.weight": torch.randn(384, WIDTH, generator=gen),
               "mask_token": torch.randn(1, 1, 384, generator=gen),
               "decoder.norm.weight": torch.ones(384), "decoder.norm.bias": torch.zeros(384),
               "decoder.head.weight": torch.randn(1536, 384, generator=gen), "decoder.head.bias": torch.zeros(1536)})
    sd.update(block_weights("decoder.", 384, 2, gen))
    return sd


def write(path, wrapper, sd):
    """As the official scripts save: the weights under ``model`` (pre-training) or ``module`` (fine-tuning, with
    DeepSpeed), beside training metadata such as the argparse namespace."""
    torch.save({wrapper: sd, "epoch": 99, "args": argparse.Namespace(model="vit_base_patch16_160")}, path)
    return str(path)


def create(name, path, **kwargs):
    kwargs = {"img_size": IMG, "num_frames": FRAMES, "num_classes": 7, **kwargs}
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs).eval()


def video(frames=FRAMES, size=IMG, seed=0):
    return torch.randn(2, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------------ tests

def test_finetune_checkpoint_gives_videomae_logits(tmp_path):
    sd = finetune_state()
    model = create("videomae_vit_tiny_patch16_64", write(tmp_path / "ft.pth", "module", sd))
    assert model.pretrained_report["missing"] == []
    x = video()
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_finetune_logits(x, sd), atol=1e-4, rtol=1e-4)


def test_pretrain_checkpoint_gives_videomae_encoder_features_in_adatosk(tmp_path):
    sd = pretrain_state()
    model = create("adatosk_vit_tiny_patch16_64", write(tmp_path / "pt.pth", "model", sd), mask_ratio=0.5)
    report = model.pretrained_report
    assert not [k for k in report["missing"] if k.startswith("encoder.")]
    assert any(k.startswith("decoder.blocks.0.attn") for k in report["unused"])  # VideoMAE's decoder is not used
    assert "mask_token" in report["unused"] and "encoder_to_decoder.weight" in report["unused"]
    x = video()
    visible = tube_mask(2, model.num_patches, 0.5, generator=torch.Generator().manual_seed(0))
    masked = (~visible).repeat(1, model.num_slots)  # VideoMAE's convention: True = masked, over all T' x N
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x, visible).tokens, reference_pretrain_encoder(x, sd, masked),
                                   atol=1e-4, rtol=1e-4)


def test_pretrain_checkpoint_into_the_baseline_and_finetune_into_adatosk(tmp_path):
    baseline = create("videomae_vit_tiny_patch16_64", write(tmp_path / "pt.pth", "model", pretrain_state()))
    report = baseline.pretrained_report
    # as VideoMAE's own fine-tuning: the encoder loads, fc_norm and head start fresh, encoder.norm is not used
    assert report["missing"] == ["fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"]
    assert "encoder.norm.weight" in report["unused"]
    sd = finetune_state()
    model = create("adatosk_vit_tiny_patch16_64", write(tmp_path / "ft.pth", "module", sd))
    assert [k for k in model.pretrained_report["missing"] if k.startswith("encoder.")] == \
        ["encoder.norm.weight", "encoder.norm.bias"]
    torch.testing.assert_close(model.encoder.blocks[3].mlp.fc2.weight, sd["blocks.3.mlp.fc2.weight"])


def test_create_model_from_config_loads_the_pretrained_file(tmp_path):
    path = write(tmp_path / "ft.pth", "module", finetune_state())
    cfg = load_config(["model=videomae", "model.arch=vit_tiny_patch16_64", f"model.img_size={IMG}",
                       f"model.num_frames={FRAMES}", f"model.pretrained={path}"])
    model = create_model_from_config(cfg.model, num_classes=7)
    assert model.pretrained_report["missing"] == []


def test_classifier_for_another_class_count_is_left_at_init(tmp_path):
    model = create("videomae_vit_tiny_patch16_64", write(tmp_path / "ft.pth", "module", finetune_state(400)))
    assert model.pretrained_report["missing"] == ["head.weight", "head.bias"]
    assert any(k.startswith("head.weight (shape") for k in model.pretrained_report["unused"])


def test_fixed_table_is_regenerated_for_another_resolution_and_frame_count(tmp_path):
    sd = finetune_state()
    path = write(tmp_path / "ft.pth", "module", sd)
    model = create("videomae_vit_tiny_patch16_64", path, img_size=48, num_frames=8)  # 4 slots x 9 positions
    assert model.encoder.pos_embed.shape == (1, 36, WIDTH)
    torch.testing.assert_close(model.encoder.pos_embed, sinusoid_table(36, WIDTH))
    x = video(frames=8, size=48)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_finetune_logits(x, sd), atol=1e-4, rtol=1e-4)
    # a checkpoint that stores the fixed table (some re-saved copies do) is regenerated too, not interpolated
    stored = dict(sd, pos_embed=sinusoid_table(8, WIDTH))
    model = create("videomae_vit_tiny_patch16_64", write(tmp_path / "s.pth", "module", stored), img_size=48,
                   num_frames=8)
    torch.testing.assert_close(model.encoder.pos_embed, sinusoid_table(36, WIDTH))


def test_learned_table_is_kept_or_resampled(tmp_path):
    # a learned table over 2 slots x 2 x 2 positions that depends on the slot only: v_t = t * ramp
    ramp = torch.linspace(-1, 1, WIDTH)
    learned = torch.stack([t * ramp for t in range(2) for _ in range(4)]).unsqueeze(0)  # [1, 8, C]
    path = write(tmp_path / "ft.pth", "module", dict(finetune_state(), pos_embed=learned))
    same = create("videomae_vit_tiny_patch16_64", path)
    torch.testing.assert_close(same.encoder.pos_embed, learned)
    assert same.pretrained_report["pos_embed"] == "stored table"
    # 2 -> 1 slot (2 frames): half-pixel trilinear sampling averages the two source slots
    fewer = create("videomae_vit_tiny_patch16_64", path, num_frames=2)
    torch.testing.assert_close(fewer.encoder.pos_embed, (0.5 * ramp).expand(1, 4, WIDTH))
    # another resolution: a table constant over space stays constant over the new 3 x 3 grid
    wider = create("videomae_vit_tiny_patch16_64", path, img_size=48)
    expected = torch.stack([t * ramp for t in range(2) for _ in range(9)]).unsqueeze(0)
    torch.testing.assert_close(wider.encoder.pos_embed, expected)
    assert "resampled" in wider.pretrained_report["pos_embed"]


def test_resample_pos_embed_infers_the_source_grid():
    table = torch.randn(1, 8 * 4, 6)
    assert resample_pos_embed(table, (8, 2, 2)).shape == (1, 32, 6)
    torch.testing.assert_close(resample_pos_embed(table, (8, 2, 2)), table)  # identity at the same grid
    assert resample_pos_embed(torch.randn(1, 2 * 9, 6), (2, 4, 4)).shape == (1, 32, 6)  # spatial 3x3 -> 4x4
    with pytest.raises(ValueError, match="grid"):
        resample_pos_embed(torch.randn(1, 7, 6), (2, 2, 2))


def test_mismatched_checkpoints_fail_with_a_clear_error(tmp_path):
    lgi = dict(finetune_state(), lg_region_tokens=torch.zeros(4, WIDTH))
    lgi["blocks.0.first_attn.q.weight"] = torch.zeros(WIDTH, WIDTH)
    with pytest.raises(ValueError, match="MAE-DFER LGI-Former"):
        create("videomae_vit_tiny_patch16_64", write(tmp_path / "lgi.pth", "module", lgi))
    with pytest.raises(ValueError, match=r"has shape \(192, .*the model expects \(96, "):
        create("videomae_vit_tiny_patch16_64", write(tmp_path / "ft.pth", "module", finetune_state()), embed_dim=96)
    with pytest.raises(ValueError, match="another depth"):
        create("videomae_vit_tiny_patch16_64", write(tmp_path / "d.pth", "module", finetune_state()), depth=2)


def test_the_sinusoid_reference_is_the_models_table():
    from adatosk.models.vit import get_sinusoid_encoding_table
    torch.testing.assert_close(get_sinusoid_encoding_table(800, 768), sinusoid_table(800, 768))
    assert math.isclose(float(sinusoid_table(3, 4)[0, 2, 0]), math.sin(2.0), rel_tol=1e-6)


# ------------------------------------------------------------------- Hugging Face snapshots and the paper's check

def hf_config(**kwargs):
    from transformers import VideoMAEConfig

    return VideoMAEConfig(image_size=IMG, patch_size=PATCH, num_frames=FRAMES, tubelet_size=TUBELET,
                          hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
                          intermediate_size=4 * WIDTH, layer_norm_eps=1e-6, num_labels=7, **kwargs)


def randomise(model):
    """Every parameter random (HF initialises biases and LayerNorms to constants, which would hide a swap)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=gen) * 0.05 + (parameter == 1).float())
    return model.eval()


def test_hf_video_classification_snapshot_gives_its_logits(tmp_path):
    """A transformers VideoMAEForVideoClassification snapshot (config.json + model.safetensors) loads into the
    baseline, query/key/value fused into qkv, and gives the same logits."""
    transformers = pytest.importorskip("transformers")
    hf = randomise(transformers.VideoMAEForVideoClassification(hf_config(use_mean_pooling=True)))
    hf.fc_norm.eps = 1e-6  # transformers builds fc_norm with torch's default eps; VideoMAE's is 1e-6
    hf.save_pretrained(tmp_path / "snapshot")
    assert (tmp_path / "snapshot" / "model.safetensors").is_file()
    cfg = load_config(["model=videomae", "model.arch=vit_tiny_patch16_64", f"model.img_size={IMG}",
                       f"model.num_frames={FRAMES}", f"model.pretrained={tmp_path / 'snapshot'}"])
    model = create_model_from_config(cfg.model, num_classes=7).eval()
    assert model.pretrained_report["missing"] == []
    x = video()
    with torch.no_grad():
        expected = hf(pixel_values=x.transpose(1, 2)).logits  # transformers takes [B, T, C, H, W]
        torch.testing.assert_close(model(x), expected, atol=1e-4, rtol=1e-4)


def test_hf_videomae_model_snapshot_initialises_the_adatosk_encoder(tmp_path):
    """A VideoMAEModel snapshot (final layernorm, no head), as pytorch_model.bin, gives the AdaTosk encoder its
    features on every token."""
    transformers = pytest.importorskip("transformers")
    hf = randomise(transformers.VideoMAEModel(hf_config(use_mean_pooling=False)))
    folder = tmp_path / "snapshot"
    hf.config.save_pretrained(folder)
    torch.save(hf.state_dict(), folder / "pytorch_model.bin")
    cfg = load_config(["model=tiny", f"model.img_size={IMG}", f"model.num_frames={FRAMES}",
                       f"model.pretrained={folder}"])
    model = create_model_from_config(cfg.model, num_classes=7).eval()
    assert not [k for k in model.pretrained_report["missing"] if k.startswith("encoder.")]
    x = video()
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(x), hf(pixel_values=x.transpose(1, 2)).last_hidden_state,
                                   atol=1e-4, rtol=1e-4)


def test_hf_key_names_map_onto_the_official_layout():
    """transformers 4 stores VideoMAE's q_bias/v_bias, transformers 5 query/value biases: both map."""
    from adatosk.models.pretrained import hf_to_official

    w = {n: torch.full((4, 4), float(i)) for i, n in enumerate(("query", "key", "value"))}
    old = {f"videomae.encoder.layer.0.attention.attention.{n}.weight": t for n, t in w.items()}
    old.update({"videomae.encoder.layer.0.attention.attention.q_bias": torch.ones(4),
                "videomae.encoder.layer.0.attention.attention.v_bias": torch.zeros(4),
                "videomae.encoder.layer.0.output.dense.weight": torch.ones(4, 16),
                "videomae.embeddings.patch_embeddings.projection.bias": torch.ones(4),
                "classifier.weight": torch.ones(7, 4), "decoder.head.weight": torch.ones(3, 4)})
    new = {k.replace("q_bias", "query.bias").replace("v_bias", "value.bias"): v for k, v in old.items()}
    for state in (old, new):
        mapped = hf_to_official(state)
        assert sorted(mapped) == ["blocks.0.attn.q_bias", "blocks.0.attn.qkv.weight", "blocks.0.attn.v_bias",
                                  "blocks.0.mlp.fc2.weight", "decoder.head.weight", "head.weight",
                                  "patch_embed.proj.bias"]
        assert mapped["blocks.0.attn.qkv.weight"][:, 0].tolist() == [0.0] * 4 + [1.0] * 4 + [2.0] * 4


def test_a_folder_that_is_not_a_videomae_snapshot_is_refused(tmp_path):
    from adatosk.errors import AdatoskError

    folder = tmp_path / "snapshot"
    folder.mkdir()
    cfg = load_config(["model=tiny", f"model.pretrained={folder}"])
    with pytest.raises(AdatoskError, match="config.json is missing"):
        create_model_from_config(cfg.model, num_classes=7)
    (folder / "config.json").write_text('{"model_type": "vit"}')
    with pytest.raises(AdatoskError, match="model_type 'vit'"):
        create_model_from_config(cfg.model, num_classes=7)
    (folder / "config.json").write_text('{"model_type": "videomae"}')
    with pytest.raises(AdatoskError, match="no weights file"):
        create_model_from_config(cfg.model, num_classes=7)


def test_the_paper_experiment_refuses_to_train_without_weights(tmp_path, capsys):
    from adatosk.cli import main

    code = main(["train", "experiment=paper", f"output_root={tmp_path}", "train.epochs=1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "model.pretrained is required" in err
    for hint in ("MODEL_ZOO", "MCG-NJU/videomae-base", "LGI-Former", "model.pretrained=scratch"):
        assert hint in err
    assert not any(tmp_path.iterdir())  # nothing written
    # scratch, said explicitly, passes the check (small sizes keep this fast)
    small = ["experiment=paper", "model.pretrained=scratch", "model.img_size=32", "model.num_frames=4"]
    model = create_model_from_config(load_config(small).model, num_classes=7)
    assert model.num_patches == 4
    # the paper's grid variants inherit the requirement
    assert load_config(["experiment=paper"]).variants.adatosk.pretrained == "required"
