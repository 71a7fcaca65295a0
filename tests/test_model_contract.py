"""timm's model contract for every registered model, and the registered models against the params/ groups."""

from __future__ import annotations

import pytest
import timm
import torch

import adatosk.models  # noqa: F401  (registers the models)
from adatosk.config import load_config, to_container
from adatosk.models import ModelOutput, create_model_from_config
from adatosk.models.masking import tube_mask
from adatosk.models.registry import create_model

# ViT-B at 160 px is too slow for a unit test on a CPU: every model at 2 blocks of width 32, 8 frames of 32x32
# (T' = 4 slots of N = 4 positions); the sizes only, every other default as registered
SMALL = dict(img_size=32, num_frames=8, embed_dim=32, depth=2, num_heads=2)
ADATOSK_SMALL = dict(decoder_dim=16, decoder_num_heads=2, head_hidden_dim=48)
REGISTERED = timm.list_models("adatosk_*") + timm.list_models("videomae_*")


def small(name: str, num_classes: int = 5) -> torch.nn.Module:
    kwargs = dict(SMALL, **(ADATOSK_SMALL if name.startswith("adatosk") else {}))
    return timm.create_model(name, num_classes=num_classes, **kwargs)


def clip(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0))  # [B, 3, T, H, W]


def test_the_registry_lists_both_families_at_both_sizes():
    assert sorted(REGISTERED) == ["adatosk_vit_base_patch16_160", "adatosk_vit_tiny_patch16_64",
                                  "videomae_vit_base_patch16_160", "videomae_vit_tiny_patch16_64"]


@pytest.mark.parametrize("name", REGISTERED)
def test_contract(name):
    torch.manual_seed(0)
    model = small(name)
    x, target = clip(), torch.tensor([0, 4])
    visible = tube_mask(2, model.num_patches, model.eval_mask_ratio, generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        logits = model(x, visible=visible)
        assert logits.shape == (2, 5)
        features = model.forward_features(x, visible)
        assert torch.equal(model.forward_head(features), logits)
        hidden = model.forward_head(features, pre_logits=True)  # [B, head_hidden_size]: what the classifier reads
        assert hidden.shape == (2, getattr(model, "head_hidden_size", model.num_features))
        torch.testing.assert_close(model.get_classifier()(hidden), logits)
    model.train()
    out = model(x, target)
    assert isinstance(out, ModelOutput) and out.logits.shape == (2, 5) and out.loss.shape == ()
    out.loss.backward()
    assert torch.isfinite(out.loss)
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused == [], f"parameters without gradient: {unused}"
    assert model.get_classifier().out_features == 5
    model.reset_classifier(3)
    assert model.num_classes == 3 and model.get_classifier().out_features == 3
    with torch.no_grad():
        assert model.eval()(x, visible=visible).shape == (2, 3)
        hidden = model.forward_head(model.forward_features(x, visible), pre_logits=True)  # BatchNorm has trained
    model.reset_classifier(0)
    with torch.no_grad():  # no classifier: forward returns the pre-logits features
        assert torch.equal(model(x, visible=visible), hidden)


@torch.no_grad()
def test_adatosk_forward_features_runs_the_whole_encoder_with_the_pruning():
    """exclude_at = 0 (the registered default): the soft mask scores the embedded tokens and the kept tokens run
    every block; forward_head only pools and classifies."""
    model = small("adatosk_vit_base_patch16_160").eval()
    assert model.exclude_at == 0
    x = clip()
    visible = tube_mask(2, model.num_patches, 0.5, generator=torch.Generator().manual_seed(1))
    features = model.forward_features(x, visible)
    embedded = model.encoder.embed(x, visible)  # [B, T' * N_v, C], block 0's input
    torch.testing.assert_close(features.scored.flatten(1, 2), model.encoder.norm(embedded))
    kept = ~features.excluded.flatten(1)  # [B, T' * N_v]
    assert features.excluded.any() and kept.any()
    for b in range(2):
        tokens = model.encoder.norm(model.encoder.run_blocks(embedded[b][kept[b]][None]))[0]  # all blocks
        torch.testing.assert_close(features.tokens[b][kept[b]], tokens, atol=1e-5, rtol=1e-5)
    blocks = []
    hooks = [block.register_forward_hook(lambda *_: blocks.append(1)) for block in model.encoder.blocks]
    model.forward_head(features)
    assert blocks == []  # the head runs no encoder block
    for hook in hooks:
        hook.remove()


BASE_SIZE = pytest.mark.slow  # builds ViT-B twice: 3-8 s on 2 busy cores


@pytest.mark.parametrize("name,group,experiment", [
    pytest.param("adatosk_vit_base_patch16_160", "adatosk_dagger", "paper", marks=BASE_SIZE),
    ("adatosk_vit_tiny_patch16_64", "tiny", "demo"),
    pytest.param("videomae_vit_base_patch16_160", "videomae", "paper", marks=BASE_SIZE),
])
def test_registered_model_is_the_params_group(name, group, experiment):
    """timm.create_model(name) builds the model of params/model/<group>.yaml: same modules, same hyper-parameters,
    the same outputs from the same weights (training's drop_path_rate aside, timm's convention: 0 unless given).
    The clips are short and small (4 frames of 32x32) to keep ViT-B fast; the sizes are passed to both."""
    cfg = to_container(load_config([f"model={group}", f"experiment={experiment}", "model.img_size=32",
                                    "model.num_frames=4"]).model)
    assert f"{cfg['family']}_{cfg['arch']}" == name
    sizes = {k: cfg[k] for k in ("img_size", "num_frames")}
    registered = timm.create_model(name, num_classes=7, **sizes).eval()
    configured = create_model_from_config({**cfg, "drop_path_rate": 0.0, "pretrained": None}, 7).eval()
    configured.load_state_dict(registered.state_dict())
    for attribute in ("exclude_at", "mask_ratio", "eval_mask_ratio", "pool_mode", "combine", "lambda_cls"):
        assert getattr(registered, attribute, None) == getattr(configured, attribute, None), attribute
    if group != "videomae":
        assert (registered.ca.gate, registered.cs.norm, registered.head.init_scale) == ("cosine", "slot", 0.01)
        assert registered.cs.exclude_fraction == configured.cs.exclude_fraction == cfg["exclude_fraction"]
        assert registered.cs.r == configured.cs.r
    x = torch.randn(1, 3, cfg["num_frames"], cfg["img_size"], cfg["img_size"],
                    generator=torch.Generator().manual_seed(0))
    visible = tube_mask(1, registered.num_patches, registered.eval_mask_ratio,
                        generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(registered(x, visible=visible), configured(x, visible=visible))


def test_the_literal_reading_is_one_config_group():
    literal = to_container(load_config(["model=adatosk_literal", "model.img_size=32", "model.num_frames=4"]).model)
    model = create_model_from_config(literal, 7)
    assert (model.pool_mode, model.ca.gate, model.cs.norm, model.head.init_scale) == ("mean", "dot", "clip", 1.0)
    measured = to_container(load_config(["model=adatosk_dagger"]).model)
    differs = {k for k in measured if literal[k] != measured[k]} - {"img_size", "num_frames"}
    assert differs == {"variant", "pool", "ca_gate", "cs_norm", "head_init_scale"}


def test_create_model_keeps_a_none_that_timm_create_model_drops():
    """timm.create_model drops None kwargs (the registered default stays); create_model passes them on."""
    kwargs = dict(SMALL, **ADATOSK_SMALL)
    assert timm.create_model("adatosk_vit_base_patch16_160", exclude_at=None, **kwargs).exclude_at == 0
    assert create_model("adatosk_vit_base_patch16_160", 7, exclude_at=None, **kwargs).exclude_at == 2  # depth
    tiny = dict(kwargs, mask_ratio=0.5)  # N_v = 2 of 4 positions: the fraction rounds to 0, r does not
    assert timm.create_model("adatosk_vit_tiny_patch16_64", **tiny).cs.exclude_fraction == 0.0667
    with_r = timm.create_model("adatosk_vit_tiny_patch16_64", r=1, **tiny).cs  # an explicit r replaces the fraction
    assert (with_r.r, with_r.exclude_fraction, with_r.schedule(4, 2)) == (1, None, [1, 0, 0])
